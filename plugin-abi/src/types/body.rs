//! Bodies a plugin hands to Kong: `kong.response.exit`, `kong.service.request.set_raw_body`.

use serde::{Serialize, Serializer};

use crate::value::Value;

/// A response body for `kong.response.exit`.
///
/// Kong sends a string or byte body as is, and JSON-encodes a table body (setting
/// `Content-Type: application/json` unless given): [`Body::json`] builds the latter from
/// any serializable value, encoded as a MessagePack map that Kong decodes into that table.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Body {
    /// No body.
    #[default]
    Empty,
    /// A text body.
    Text(String),
    /// A binary body (MessagePack `bin`; Kong sends the bytes unchanged).
    Bytes(Vec<u8>),
    /// A body Kong JSON-encodes.
    Json(Value),
}

impl Body {
    /// A body Kong JSON-encodes, from any serializable value (structs become objects).
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

impl Serialize for Body {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            // Sent as "" rather than nil: a nil before the headers argument would leave a
            // hole in Kong's argument list.
            Body::Empty => s.serialize_str(""),
            Body::Text(t) => s.serialize_str(t),
            Body::Bytes(b) => s.serialize_bytes(b),
            Body::Json(v) => v.serialize(s),
        }
    }
}
