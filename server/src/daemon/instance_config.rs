//! The configuration Kong sends with `plugin.StartInstance`, taken apart.
//!
//! Kong adds bookkeeping keys to every plugin configuration. They differ between instances
//! of one configuration (every nginx worker and every config reload starts its own), so they
//! are split off: the rest, written canonically (object keys sorted, whatever order Kong's
//! JSON encoder used), identifies the configuration, and identical configurations share one
//! constructed plugin. The bookkeeping keys become the instance's metadata.

use kong_rust_plugin_abi::InstanceInfo;
use serde::Serialize;
use serde_json::{Map, Value};

/// Keys Kong's plugins iterator adds to a plugin's configuration.
pub const BOOKKEEPING_KEYS: [&str; 8] = [
    "__seq__",
    "__key__",
    "__plugin_id",
    "__ws_id",
    "route_id",
    "service_id",
    "consumer_id",
    "plugin_instance_name",
];

/// A configuration, split.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceConfig {
    /// The plugin's own configuration as canonical JSON text: the sharing key, and what the
    /// plugin decodes.
    pub canonical: String,
    /// What Kong told about the instance (its `id` is set once allocated).
    pub meta: InstanceInfo,
}

/// Splits Kong's configuration object into the plugin's part and the bookkeeping keys.
pub fn split(config: &Value) -> Result<InstanceConfig, String> {
    let Value::Object(object) = config else {
        return Err(format!("Config must be a JSON object, found {config}"));
    };
    let text = |key: &str| object.get(key).and_then(Value::as_str).map(str::to_owned);
    let mut meta = InstanceInfo::default();
    meta.plugin_id = text("__plugin_id");
    meta.workspace_id = text("__ws_id");
    meta.route_id = text("route_id");
    meta.service_id = text("service_id");
    meta.consumer_id = text("consumer_id");
    meta.instance_name = text("plugin_instance_name");
    meta.seq = object.get("__seq__").and_then(Value::as_u64);
    meta.cache_key = text("__key__");
    let own: Map<String, Value> = object
        .iter()
        .filter(|(key, _)| !BOOKKEEPING_KEYS.contains(&key.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let canonical = serde_json::to_string(&Canonical(&Value::Object(own)))
        .map_err(|e| format!("cannot re-encode Config: {e}"))?;
    Ok(InstanceConfig { canonical, meta })
}

/// Serializes a JSON value with every object's keys in sorted order.
struct Canonical<'a>(&'a Value);

impl Serialize for Canonical<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Value::Object(object) => {
                let mut entries: Vec<(&String, &Value)> = object.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(key, &Canonical(value))?;
                }
                map.end()
            }
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Canonical(item))?;
                }
                seq.end()
            }
            other => other.serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn bookkeeping_keys_are_split_off_and_key_order_does_not_matter() {
        let a = split(&json!({
            "b": {"y": 1, "x": [{"q": 1, "p": 2}]}, "a": "s",
            "__seq__": 7, "__key__": "plugins:p:r1::::ws", "__plugin_id": "pid-1",
            "__ws_id": "ws", "route_id": "r1", "plugin_instance_name": "named",
        }))
        .unwrap();
        let b = split(&json!({
            "a": "s", "b": {"x": [{"p": 2, "q": 1}], "y": 1},
            "__seq__": 9, "__plugin_id": "pid-2", "service_id": "s1",
        }))
        .unwrap();
        assert_eq!(a.canonical, r#"{"a":"s","b":{"x":[{"p":2,"q":1}],"y":1}}"#);
        assert_eq!(a.canonical, b.canonical);
        assert_eq!(a.meta.plugin_id.as_deref(), Some("pid-1"));
        assert_eq!(a.meta.route_id.as_deref(), Some("r1"));
        assert_eq!(a.meta.instance_name.as_deref(), Some("named"));
        assert_eq!(a.meta.seq, Some(7));
        assert_eq!(b.meta.service_id.as_deref(), Some("s1"));
        assert_eq!(b.meta.route_id, None);
        assert!(split(&json!([1])).is_err());
    }
}
