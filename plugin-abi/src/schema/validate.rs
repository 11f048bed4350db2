//! Kong's rules for plugin schemas, checked before Kong sees them.
//!
//! Kong validates the `Schema` of every external plugin against its meta-schema when it
//! loads the dump, and refuses to start on a violation. These checks mirror the rules that a
//! generated or hand-written schema can break, so the daemon refuses such a plugin at load
//! time with a message naming the field, instead of Kong failing to start.

use serde_json::{Value, json};

use super::translate::json_type_matches;

/// A broken rule, with the path of the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schema field `{path}`: {rule}")]
pub struct SchemaViolation {
    /// Path of the field, e.g. `config.redis.port`.
    pub path: String,
    /// The rule it breaks.
    pub rule: String,
}

const TYPES: [&str; 10] = [
    "string", "number", "integer", "boolean", "array", "set", "map", "record", "foreign", "json",
];

/// Checks a whole plugin schema: `{"name": .., "fields": [{"config": <record>}, ..]}`.
pub fn validate_plugin_schema(schema: &Value) -> Result<(), SchemaViolation> {
    let violation = |rule: &str| SchemaViolation {
        path: ".".into(),
        rule: rule.into(),
    };
    if !schema.get("name").is_some_and(Value::is_string) {
        return Err(violation("a plugin schema needs a string `name`"));
    }
    let fields = schema
        .get("fields")
        .and_then(Value::as_array)
        .ok_or_else(|| violation("a plugin schema needs a `fields` array"))?;
    check_fields(fields, "")?;
    let config = fields.iter().find_map(|f| f.get("config"));
    match config {
        Some(c) if c.get("type") == Some(&json!("record")) => Ok(()),
        _ => Err(violation("a plugin schema needs a `config` record field")),
    }
}

/// Checks the typedef of a `config` record.
pub fn validate_record(record: &Value) -> Result<(), SchemaViolation> {
    check_typedef(record, "config")
}

fn check_fields(fields: &[Value], path: &str) -> Result<(), SchemaViolation> {
    for entry in fields {
        let Some(obj) = entry.as_object().filter(|o| o.len() == 1) else {
            return Err(SchemaViolation {
                path: if path.is_empty() {
                    ".".into()
                } else {
                    path.into()
                },
                rule: format!("field entries must be objects with exactly one key, found {entry}"),
            });
        };
        let (name, typedef) = obj.iter().next().expect("one key");
        let field_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        check_typedef(typedef, &field_path)?;
    }
    Ok(())
}

fn check_typedef(typedef: &Value, path: &str) -> Result<(), SchemaViolation> {
    let violation = |rule: String| SchemaViolation {
        path: path.to_owned(),
        rule,
    };
    let obj = typedef
        .as_object()
        .ok_or_else(|| violation(format!("a typedef must be an object, found {typedef}")))?;
    let ty = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| violation("`type` is required".into()))?;
    if !TYPES.contains(&ty) {
        return Err(violation(format!("unknown type {ty:?}")));
    }
    match ty {
        "array" | "set" => check_typedef(
            obj.get("elements")
                .ok_or_else(|| violation(format!("{ty} needs `elements`")))?,
            &format!("{path}[]"),
        )?,
        "map" => {
            for key in ["keys", "values"] {
                let sub = obj
                    .get(key)
                    .ok_or_else(|| violation(format!("map needs `{key}`")))?;
                check_typedef(sub, &format!("{path}.<{key}>"))?;
            }
        }
        "record" => {
            let fields = obj
                .get("fields")
                .and_then(Value::as_array)
                .ok_or_else(|| violation("record needs a `fields` array".into()))?;
            check_fields(fields, path)?;
        }
        "json" if !obj.contains_key("json_schema") => {
            return Err(violation("json needs `json_schema`".into()));
        }
        _ => {}
    }
    if let Some(required) = obj.get("required")
        && !required.is_boolean()
    {
        return Err(violation("`required` must be a boolean".into()));
    }
    if let Some(default) = obj.get("default")
        && !json_type_matches(ty, default)
    {
        return Err(violation(format!("default {default} is not a {ty}")));
    }
    if let Some(one_of) = obj.get("one_of") {
        let values = one_of
            .as_array()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| violation("`one_of` must be a non-empty array".into()))?;
        if let Some(bad) = values.iter().find(|v| !json_type_matches(ty, v)) {
            return Err(violation(format!("one_of value {bad} is not a {ty}")));
        }
    }
    if let Some(between) = obj.get("between") {
        let ok = matches!(ty, "integer" | "number")
            && between
                .as_array()
                .is_some_and(|b| b.len() == 2 && b.iter().all(Value::is_number));
        if !ok {
            return Err(violation(
                "`between` is [min, max] on a number or integer".into(),
            ));
        }
    }
    for key in ["len_min", "len_max", "len_eq"] {
        if let Some(v) = obj.get(key)
            && (!matches!(ty, "string" | "array" | "set" | "map") || !v.is_u64())
        {
            return Err(violation(format!(
                "`{key}` is a non-negative integer on a string, array, set or map"
            )));
        }
    }
    if let Some(description) = obj.get("description") {
        let len = description.as_str().map(|d| d.chars().count());
        if !len.is_some_and(|n| (10..=500).contains(&n)) {
            return Err(violation(
                "`description` is a string of 10 to 500 characters".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(config: Value) -> Value {
        json!({"name": "p", "fields": [{"config": config}]})
    }

    #[test]
    fn kongs_rules_are_enforced() {
        let ok = plugin(json!({"type": "record", "fields": [
            {"a": {"type": "string", "default": "x", "one_of": ["x", "y"]}},
            {"b": {"type": "map", "keys": {"type": "string"}, "values": {"type": "integer"}}},
        ]}));
        validate_plugin_schema(&ok).unwrap();

        let cases = [
            (
                json!({"type": "record", "fields": [{"a": {"type": "string"}, "b": {"type": "string"}}]}),
                "exactly one key",
            ),
            (
                json!({"type": "record", "fields": [{"a": {"type": "array"}}]}),
                "needs `elements`",
            ),
            (
                json!({"type": "record", "fields": [{"a": {"type": "map", "keys": {"type": "string"}}}]}),
                "map needs `values`",
            ),
            (
                json!({"type": "record", "fields": [{"a": {"type": "record"}}]}),
                "`fields` array",
            ),
            (
                json!({"type": "record", "fields": [{"a": {"type": "integer", "default": "1"}}]}),
                "is not a integer",
            ),
            (
                json!({"type": "record", "fields": [{"a": {"type": "string", "one_of": [1]}}]}),
                "one_of value",
            ),
            (
                json!({"type": "record", "fields": [{"a": {"type": "string", "between": [1, 2]}}]}),
                "between",
            ),
            (
                json!({"type": "record", "fields": [{"a": {"type": "string", "description": "short"}}]}),
                "10 to 500",
            ),
            (
                json!({"type": "record", "fields": [{"a": {"type": "strin"}}]}),
                "unknown type",
            ),
        ];
        for (config, rule) in cases {
            let err = validate_plugin_schema(&plugin(config.clone())).unwrap_err();
            assert!(err.rule.contains(rule), "{config}: {err}");
            assert!(err.path.starts_with("config"), "{err}");
        }
    }
}
