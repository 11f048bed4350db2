//! Kong entities as PDK calls return them: consumers, credentials, routes, services,
//! memory statistics.
//!
//! Kong sends an entity as a map of its Lua fields (snake_case). Fields change between
//! Kong versions and some are `null` (sent as nil): every field here is optional or has a
//! default, missing ones decode as `None`, and fields this crate does not name are kept in
//! `extra` rather than refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{types::Multimap, value::Value};

/// A reference to another entity: `{"id": "..."}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ForeignKey {
    /// The referenced entity's id.
    pub id: String,
}

/// A consumer (`kong.client.get_consumer`, `kong.client.load_consumer`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Consumer {
    /// UUID.
    pub id: String,
    /// Username, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Custom id, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    /// Creation time, unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// Last update, unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
    /// Tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Fields not named above.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A credential (`kong.client.get_credential`); its fields depend on the auth plugin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Credential {
    /// UUID.
    pub id: String,
    /// The owning consumer, as most auth plugins store it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<ForeignKey>,
    /// The owning consumer's id, as some plugins store it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_id: Option<String>,
    /// Creation time, unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// Tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Fields not named above (e.g. `key`, `username`).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A route (`kong.router.get_route`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Route {
    /// UUID.
    pub id: String,
    /// Name, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Protocols, e.g. `["http", "https"]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<String>>,
    /// Methods matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Hosts matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// Paths matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// Headers matched.
    #[serde(deserialize_with = "crate::value::lenient_map")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Multimap>,
    /// Whether the matched path prefix is stripped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strip_path: Option<bool>,
    /// Whether the client's Host header is sent upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preserve_host: Option<bool>,
    /// Regex priority.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex_priority: Option<i64>,
    /// Path handling (`v0`, `v1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_handling: Option<String>,
    /// Status of https redirects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https_redirect_status_code: Option<i64>,
    /// The service it proxies to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<ForeignKey>,
    /// Tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Creation time, unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// Last update, unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
    /// Fields not named above.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A service (`kong.router.get_service`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Service {
    /// UUID.
    pub id: String,
    /// Name, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `http`, `https`, `grpc`, `tcp`...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Upstream host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Upstream port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// Upstream path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    /// Connect timeout, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<i64>,
    /// Write timeout, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_timeout: Option<i64>,
    /// Read timeout, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_timeout: Option<i64>,
    /// Whether the service is enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Whether the upstream TLS certificate is verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_verify: Option<bool>,
    /// Tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Creation time, unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// Last update, unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
    /// Fields not named above.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A memory size: bytes, or text such as `"12.0 KiB"` when a unit was asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Size {
    /// A number of bytes (or of the unit asked for, scaled).
    Number(f64),
    /// A size with its unit, e.g. `"12.0 KiB"`.
    Text(String),
}

/// `kong.node.get_memory_stats()`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryStats {
    /// Shared dictionaries by name.
    #[serde(deserialize_with = "crate::value::lenient_map")]
    pub lua_shared_dicts: BTreeMap<String, SharedDictStats>,
    /// One entry per nginx worker.
    pub workers_lua_vms: Vec<WorkerStats>,
    /// Fields not named above.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Memory of one shared dictionary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedDictStats {
    /// Its capacity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Size>,
    /// Its allocated slabs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated_slabs: Option<Size>,
}

/// Memory of one worker's Lua VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerStats {
    /// Worker pid.
    pub pid: i64,
    /// Lua GC memory, when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_allocated_gc: Option<Size>,
    /// Why it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub err: Option<String>,
}

/// `kong.request.get_uri_captures()`: the regex captures of the matched route path.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UriCaptures {
    /// Positional captures; index 0 is the whole match when present. Kong may send them as
    /// a map with integer keys, which is read back into positions here.
    #[serde(deserialize_with = "unnamed_captures")]
    pub unnamed: Vec<String>,
    /// Named captures.
    #[serde(deserialize_with = "crate::value::lenient_map")]
    pub named: BTreeMap<String, String>,
}

fn unnamed_captures<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    use serde::de::Error;
    let text = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| D::Error::custom("a capture is not a string"))
    };
    match Value::deserialize(d)? {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) => items.iter().map(text).collect(),
        Value::Map(entries) => {
            let mut indexed = entries
                .iter()
                .map(|(k, v)| {
                    let i = k
                        .as_i64()
                        .ok_or_else(|| D::Error::custom("a capture index is not a number"))?;
                    Ok((i, text(v)?))
                })
                .collect::<Result<Vec<_>, D::Error>>()?;
            indexed.sort_by_key(|(i, _)| *i);
            Ok(indexed.into_iter().map(|(_, v)| v).collect())
        }
        _ => Err(D::Error::custom("expected a list or map of captures")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode<T: serde::de::DeserializeOwned>(v: Value) -> T {
        rmp_serde::from_slice(&rmp_serde::to_vec(&v).unwrap()).unwrap()
    }

    #[test]
    fn entities_tolerate_missing_null_and_unknown_fields() {
        let c: Consumer = decode(Value::map([
            ("id", Value::from("c1")),
            ("username", Value::Nil),
            ("tags", Value::Array(vec![])),
            ("brand_new", Value::Int(1)),
        ]));
        assert_eq!(c.id, "c1");
        assert_eq!(c.username, None);
        assert_eq!(c.extra["brand_new"], Value::Int(1));
        let r: Route = decode(Value::map([
            ("id", Value::from("r1")),
            ("headers", Value::Array(vec![])),
            ("service", Value::map([("id", Value::from("s1"))])),
        ]));
        assert_eq!(r.service.unwrap().id, "s1");
        assert!(r.headers.unwrap_or_default().is_empty());
    }

    #[test]
    fn captures_from_a_map_with_integer_keys_are_positional() {
        let caps: UriCaptures = decode(Value::map([(
            "unnamed",
            Value::Map(vec![
                (Value::Int(1), Value::from("b")),
                (Value::Int(0), Value::from("a")),
            ]),
        )]));
        assert_eq!(caps.unnamed, ["a", "b"]);
        assert!(caps.named.is_empty());
    }
}
