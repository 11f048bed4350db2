//! Bodies a plugin hands to Kong: `kong.response.exit`, `kong.service.request.set_raw_body`.

use serde::{Serialize, Serializer};

use crate::value::Value;

/// The `Content-Type` Kong itself gives a body it JSON-encodes.
pub const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// A response body for `kong.response.exit`.
///
/// A string or byte body is sent as is. [`Body::json`] builds a JSON body from any
/// serializable value: it goes to Kong as JSON *text* with
/// `Content-Type: application/json; charset=utf-8` (unless the headers name another
/// type), not as a table for Kong to encode, because Kong's cjson writes an empty list as
/// `{}` (`{"items":[]}` would reach the client as `{"items":{}}`), drops `null` members and
/// prints numbers with 14 significant digits before Kong 3.6.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Body {
    /// No body.
    #[default]
    Empty,
    /// A text body.
    Text(String),
    /// A binary body (MessagePack `bin`; Kong sends the bytes unchanged).
    Bytes(Vec<u8>),
    /// A JSON body, sent as JSON text.
    Json(Value),
}

impl Body {
    /// A JSON body, from any serializable value (structs become objects).
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Body, crate::PdkError> {
        Value::encode(value)
            .map(Body::Json)
            .map_err(|reason| crate::PdkError::Encode {
                method: "kong.response.exit".into(),
                reason,
            })
    }

    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Body::Empty)
    }

    /// What goes to Kong: the body as a string or `bin`, and for JSON the content type
    /// Kong would have set.
    pub(crate) fn to_wire(&self, method: &'static str) -> Result<WireBody, crate::PdkError> {
        Ok(match self {
            // Sent as "" rather than nil where an argument follows: a nil before the
            // headers argument would end Kong's argument list there.
            Body::Empty => WireBody::Text(String::new()),
            Body::Text(t) => WireBody::Text(t.clone()),
            Body::Bytes(b) => WireBody::Bytes(b.clone()),
            Body::Json(v) => {
                WireBody::Json(json_text(v).map_err(|reason| crate::PdkError::Encode {
                    method: method.into(),
                    reason,
                })?)
            }
        })
    }
}

/// A [`Body`] ready to be sent.
pub(crate) enum WireBody {
    Text(String),
    Bytes(Vec<u8>),
    /// JSON text, which needs a JSON content type.
    Json(String),
}

impl Serialize for WireBody {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            WireBody::Text(t) | WireBody::Json(t) => s.serialize_str(t),
            WireBody::Bytes(b) => s.serialize_bytes(b),
        }
    }
}

/// `value` as JSON text, the way a JSON encoder (not cjson) writes it: arrays stay arrays,
/// nils are `null`. Byte strings must be UTF-8; map keys must be strings or numbers.
pub(crate) fn json_text(value: &Value) -> Result<String, String> {
    serde_json::to_string(&to_json(value)?).map_err(|e| e.to_string())
}

fn to_json(value: &Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match value {
        Value::Nil => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .ok_or_else(|| format!("{f} has no JSON form"))?,
        Value::Str(s) => J::from(s.as_str()),
        Value::Bytes(b) => J::from(
            std::str::from_utf8(b)
                .map_err(|_| "a byte string that is not UTF-8 has no JSON form".to_owned())?,
        ),
        Value::Array(items) => J::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Value::Map(entries) => {
            let mut object = serde_json::Map::with_capacity(entries.len());
            for (key, item) in entries {
                let key = match key {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    other => return Err(format!("a map key {other:?} has no JSON form")),
                };
                object.insert(key, to_json(item)?);
            }
            J::Object(object)
        }
    })
}

/// The body as [`exit`](crate::pdk::Response::exit) sends it: nothing as `""`, JSON as
/// text (the content type is `exit`'s to add).
impl Serialize for Body {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_wire("kong.response.exit")
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }
}

impl From<&str> for Body {
    fn from(s: &str) -> Body {
        Body::Text(s.to_owned())
    }
}

impl From<String> for Body {
    fn from(s: String) -> Body {
        Body::Text(s)
    }
}

impl From<Vec<u8>> for Body {
    fn from(b: Vec<u8>) -> Body {
        Body::Bytes(b)
    }
}

impl From<&[u8]> for Body {
    fn from(b: &[u8]) -> Body {
        Body::Bytes(b.to_vec())
    }
}

impl From<()> for Body {
    fn from(_: ()) -> Body {
        Body::Empty
    }
}

impl From<serde_json::Value> for Body {
    fn from(v: serde_json::Value) -> Body {
        // A JSON value always encodes.
        Body::Json(Value::encode(&v).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_keep_empty_lists_and_nulls() {
        let body = Body::json(&serde_json::json!({"items": [], "next": null, "n": 1.5})).unwrap();
        let WireBody::Json(text) = body.to_wire("kong.response.exit").unwrap() else {
            panic!("not JSON")
        };
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back,
            serde_json::json!({"items": [], "next": null, "n": 1.5})
        );
        let bad = Body::Json(Value::Bytes(vec![0xff]));
        assert!(bad.to_wire("kong.response.exit").is_err());
    }
}
