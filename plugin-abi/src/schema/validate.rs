//! Kong's rules for plugin schemas, checked before Kong sees them.
//!
//! Kong validates the `Schema` of every external plugin against its meta-schema when it
//! loads the dump, and refuses to start on a violation. These checks mirror the rules that a
//! generated or hand-written schema can break, so the daemon refuses such a plugin at load
//! time with a message naming the field, instead of Kong failing to start.
//!
//! The rules changed between Kong releases (`description` only from 3.4, type `json` from
//! 3.5...): [`validate_plugin_schema_for`] checks against one release's meta-schema, as the
//! table in [`kong_versions`](crate::kong_versions) records it, and [`for_kong`] adapts a
//! schema to a release (it drops the descriptions a release before 3.4 would refuse).

use serde_json::{Value, json};

use super::translate::json_type_matches;
use crate::kong_versions::{KongVersion, SchemaRules};

/// A broken rule, with the path of the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schema field `{path}`: {rule}")]
pub struct SchemaViolation {
    /// Path of the field, e.g. `config.redis.port`.
    pub path: String,
    /// The rule it breaks.
    pub rule: String,
}

/// Checks a whole plugin schema, `{"name": .., "fields": [{"config": <record>}, ..]}`, against
/// the meta-schema of Kong's development branch ([`KongVersion::HEAD`]).
pub fn validate_plugin_schema(schema: &Value) -> Result<(), SchemaViolation> {
    validate_plugin_schema_for(schema, KongVersion::HEAD)
}

/// Checks a whole plugin schema against the meta-schema of Kong `version`: what that
/// release would refuse to start on.
pub fn validate_plugin_schema_for(
    schema: &Value,
    version: KongVersion,
) -> Result<(), SchemaViolation> {
    let rules = &version.behaviour().schema;
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
    if let Some(extra) = schema
        .as_object()
        .and_then(|o| o.keys().find(|k| !["name", "fields"].contains(&k.as_str())))
    {
        return Err(violation(&format!(
            "`{extra}` is not allowed at the top of a plugin schema (Kong takes `name` and `fields`)"
        )));
    }
    check_fields(fields, "", rules, version)?;
    let config = fields.iter().find_map(|f| f.get("config"));
    match config {
        Some(c) if c.get("type") == Some(&json!("record")) => Ok(()),
        _ => Err(violation("a plugin schema needs a `config` record field")),
    }
}

/// Checks the typedef of a `config` record against Kong's development branch.
pub fn validate_record(record: &Value) -> Result<(), SchemaViolation> {
    let version = KongVersion::HEAD;
    check_typedef(record, "config", &version.behaviour().schema, version)
}

/// `schema` as Kong `version` must get it: without the field descriptions a release before
/// 3.4 refuses (`description` is documentation only; every other attribute is kept, and a
/// release that refuses it refuses the plugin).
pub fn for_kong(schema: &Value, version: KongVersion) -> Value {
    let mut schema = schema.clone();
    if !version.behaviour().schema.description
        && let Some(fields) = schema.get_mut("fields")
    {
        strip_descriptions(fields);
    }
    schema
}

/// Removes `description` from the typedefs of a `fields` array (a field may itself be
/// *named* `description`: only the attribute goes).
fn strip_descriptions(fields: &mut Value) {
    let Some(entries) = fields.as_array_mut() else {
        return;
    };
    for typedef in entries
        .iter_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|entry| entry.values_mut())
    {
        strip_typedef_description(typedef);
    }
}

fn strip_typedef_description(typedef: &mut Value) {
    let Some(obj) = typedef.as_object_mut() else {
        return;
    };
    obj.remove("description");
    for nested in ["elements", "keys", "values"] {
        if let Some(sub) = obj.get_mut(nested) {
            strip_typedef_description(sub);
        }
    }
    if let Some(fields) = obj.get_mut("fields") {
        strip_descriptions(fields);
    }
}

fn check_fields(
    fields: &[Value],
    path: &str,
    rules: &SchemaRules,
    version: KongVersion,
) -> Result<(), SchemaViolation> {
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
        check_typedef(typedef, &field_path, rules, version)?;
    }
    Ok(())
}

/// Kong's `attribute_types`: attributes that only some types may carry.
fn attribute_fits(attribute: &str, ty: &str) -> bool {
    let types: &[&str] = match attribute {
        "between" | "timestamp" => &["integer", "number"],
        "len_eq" | "len_min" | "len_max" => &["array", "set", "string", "map"],
        "match" | "is_regex" | "uuid" => &["string"],
        "one_of" => &["string", "number", "integer"],
        "contains" => &["array", "set"],
        "unique" | "unique_across_ws" => &["string", "number", "integer", "foreign"],
        "json_schema" => &["json"],
        "transient" => &["string", "number", "integer", "array", "set", "boolean"],
        _ => return true,
    };
    types.contains(&ty)
}

fn check_typedef(
    typedef: &Value,
    path: &str,
    rules: &SchemaRules,
    version: KongVersion,
) -> Result<(), SchemaViolation> {
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
    if !rules.allows_type(ty) || ty == "function" {
        return Err(violation(if ty == "json" {
            format!("type \"json\" exists from Kong 3.5 on (Kong {version} refuses it)")
        } else {
            format!("unknown type {ty:?}")
        }));
    }
    for attribute in obj.keys() {
        if !rules.allows_attribute(attribute) {
            let known_later = KongVersion::HEAD
                .behaviour()
                .schema
                .allows_attribute(attribute);
            return Err(violation(if known_later {
                format!("attribute `{attribute}` is unknown to Kong {version}'s meta-schema")
            } else {
                format!("`{attribute}` is not a Kong field attribute")
            }));
        }
        if !attribute_fits(attribute, ty) {
            return Err(violation(format!(
                "a field of type {ty} cannot have attribute `{attribute}`"
            )));
        }
    }
    match ty {
        "array" | "set" => check_typedef(
            obj.get("elements")
                .ok_or_else(|| violation(format!("{ty} needs `elements`")))?,
            &format!("{path}[]"),
            rules,
            version,
        )?,
        "map" => {
            for key in ["keys", "values"] {
                let sub = obj
                    .get(key)
                    .ok_or_else(|| violation(format!("map needs `{key}`")))?;
                check_typedef(sub, &format!("{path}.<{key}>"), rules, version)?;
            }
        }
        "record" => {
            let fields = obj
                .get("fields")
                .and_then(Value::as_array)
                .ok_or_else(|| violation("record needs a `fields` array".into()))?;
            check_fields(fields, path, rules, version)?;
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
        let fractional = between.as_array().into_iter().flatten().any(|bound| {
            bound
                .as_f64()
                .is_some_and(|b| b.fract() != 0.0 || !b.is_finite())
        });
        if fractional && !rules.fractional_between {
            return Err(violation(format!(
                "`between` bounds must be integers before Kong 3.4 (Kong {version})"
            )));
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
        // Kong measures with Lua's `#`: bytes, not characters.
        let len = description.as_str().map(str::len);
        if !len.is_some_and(|n| (10..=500).contains(&n)) {
            return Err(violation(
                "`description` is a string of 10 to 500 bytes".into(),
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
                "10 to 500 bytes",
            ),
            (
                json!({"type": "record", "fields": [{"a": {"type": "string", "descripton": "a typo here"}}]}),
                "not a Kong field attribute",
            ),
            (
                json!({"type": "record", "fields": [{"a": {"type": "boolean", "one_of": [true]}}]}),
                "cannot have attribute `one_of`",
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

    #[test]
    fn each_release_gets_its_own_rules() {
        let described = json!({"name": "p", "fields": [{"config": {"type": "record", "fields": [
            {"description": {"type": "string", "description": "A field named description.",
                             "default": "x"}},
            {"list": {"type": "array", "elements": {"type": "record", "fields": [
                {"n": {"type": "integer", "description": "Nested and documented."}}]}}},
        ]}}]});
        validate_plugin_schema_for(&described, KongVersion::V3_4).unwrap();
        let err = validate_plugin_schema_for(&described, KongVersion::V3_3).unwrap_err();
        assert_eq!(err.path, "config.description");
        assert!(err.rule.contains("unknown to Kong 3.3"), "{err}");
        let for_3_3 = for_kong(&described, KongVersion::V3_3);
        validate_plugin_schema_for(&for_3_3, KongVersion::V3_0).unwrap();
        let text = for_3_3.to_string();
        assert!(
            !text.contains("documented") && text.contains(r#""description":{"#),
            "{text}"
        );
        assert_eq!(for_kong(&described, KongVersion::V3_4), described);

        let json_field = plugin(json!({"type": "record", "fields": [
            {"j": {"type": "json", "json_schema": {"inline": {}}}}]}));
        validate_plugin_schema_for(&json_field, KongVersion::V3_5).unwrap();
        let err = validate_plugin_schema_for(&json_field, KongVersion::V3_4).unwrap_err();
        assert!(err.rule.contains("from Kong 3.5 on"), "{err}");

        let ratio = plugin(json!({"type": "record", "fields": [
            {"r": {"type": "number", "between": [0, 0.5]}}]}));
        validate_plugin_schema_for(&ratio, KongVersion::V3_4).unwrap();
        assert!(validate_plugin_schema_for(&ratio, KongVersion::V3_3).is_err());

        // What Kong's own schema loading said (bin/kong-schema-check, each release's Lua):
        // `examples` unknown before 3.6; the f64 range of a `number` is integral enough for
        // 3.0-3.3's integer-only `between`.
        let examples = plugin(json!({"type": "record", "fields": [
            {"a": {"type": "string", "examples": ["x"]}}]}));
        assert!(validate_plugin_schema_for(&examples, KongVersion::V3_4).is_err());
        validate_plugin_schema_for(&examples, KongVersion::V3_6).unwrap();
        let f64_range = plugin(json!({"type": "record", "fields": [
            {"r": {"type": "number", "between": [f64::MIN, f64::MAX]}}]}));
        validate_plugin_schema_for(&f64_range, KongVersion::V3_0).unwrap();

        // 4 characters, 12 bytes: Kong counts bytes.
        let cjk = plugin(json!({"type": "record", "fields": [
            {"a": {"type": "string", "description": "説明説明"}}]}));
        validate_plugin_schema(&cjk).unwrap();
        let long = plugin(json!({"type": "record", "fields": [
            {"a": {"type": "string", "description": "é".repeat(251)}}]}));
        assert!(
            validate_plugin_schema(&long)
                .unwrap_err()
                .rule
                .contains("bytes")
        );
    }
}
