//! JSON Schema (as schemars writes it) → Kong typedefs.

use schemars::{JsonSchema, generate::SchemaSettings};
use serde_json::{Map, Value, json};

/// The largest integer Kong's Lua numbers hold exactly; bounds one-sided integer ranges.
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Kong's bounds on a field `description`, in bytes.
const MIN_DESCRIPTION: usize = 10;
const MAX_DESCRIPTION: usize = 500;

/// Why a config type has no Kong schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config schema, at `{path}`: {reason}")]
pub struct SchemaError {
    /// Where in the config type, e.g. `limits.minute` (`.` for the type itself).
    pub path: String,
    /// What cannot be expressed.
    pub reason: String,
}

/// The Kong schema record (`{"type": "record", "fields": [...]}`) of config type `T`.
pub fn config_record<T: JsonSchema>() -> Result<Value, SchemaError> {
    let schema = SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<T>();
    record_from_json_schema(schema.as_value())
}

/// Translates a JSON Schema of an object into a Kong schema record.
pub fn record_from_json_schema(schema: &Value) -> Result<Value, SchemaError> {
    let field = translate(schema, ".")?;
    if field.typedef.get("type") != Some(&json!("record")) {
        return Err(error(
            ".",
            "the config type must be a struct (a Kong record)",
        ));
    }
    Ok(field.typedef)
}

fn error(path: &str, reason: impl Into<String>) -> SchemaError {
    SchemaError {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn join(path: &str, name: &str) -> String {
    if path == "." {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// A translated schema: the Kong typedef, and whether `null` was allowed.
struct Field {
    typedef: Value,
    nullable: bool,
}

fn translate(schema: &Value, path: &str) -> Result<Field, SchemaError> {
    let Some(obj) = schema.as_object() else {
        return Err(error(
            path,
            "an untyped value (`true` schema) has no Kong type",
        ));
    };
    if obj.contains_key("$ref") {
        return Err(error(path, "recursive config types are not supported"));
    }
    if let Some(Value::Array(enumerated)) = obj.get("enum") {
        return one_of(obj, enumerated.clone(), path);
    }
    if let Some(Value::Array(branches)) = obj.get("oneOf").or_else(|| obj.get("anyOf")) {
        return branches_of(obj, branches, path);
    }
    let (ty, nullable) = match obj.get("type") {
        Some(Value::String(t)) => (t.as_str(), false),
        Some(Value::Array(types)) => {
            let non_null: Vec<&str> = types
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect();
            match non_null[..] {
                [t] => (t, non_null.len() < types.len()),
                _ => return Err(error(path, format!("a value of several types ({types:?})"))),
            }
        }
        Some(other) => return Err(error(path, format!("unexpected type {other}"))),
        None if obj.contains_key("const") => {
            return one_of(obj, vec![obj["const"].clone()], path);
        }
        None => {
            return Err(error(
                path,
                "an untyped value (serde_json::Value?) has no Kong type",
            ));
        }
    };
    let mut typedef = match ty {
        "string" => string(obj, path)?,
        "boolean" => json!({"type": "boolean"}),
        "integer" => number(obj, "integer", path)?,
        "number" => number(obj, "number", path)?,
        "array" => array(obj, path)?,
        "object" => object(obj, path)?,
        other => return Err(error(path, format!("JSON type {other} has no Kong type"))),
    };
    common_attributes(obj, &mut typedef, path)?;
    Ok(Field { typedef, nullable })
}

fn string(obj: &Map<String, Value>, path: &str) -> Result<Value, SchemaError> {
    if obj.contains_key("pattern") {
        return Err(error(
            path,
            "JSON Schema regex patterns cannot be translated to Kong's `match` (a Lua pattern); \
             use #[schemars(extend(\"x-kong-match\" = \"<lua pattern>\"))] instead",
        ));
    }
    let mut typedef = json!({"type": "string"});
    if let Some(min) = obj.get("minLength") {
        typedef["len_min"] = min.clone();
    }
    if let Some(max) = obj.get("maxLength") {
        typedef["len_max"] = max.clone();
    }
    if obj.get("format").and_then(Value::as_str) == Some("uuid") {
        typedef["uuid"] = json!(true);
    }
    Ok(typedef)
}

fn number(obj: &Map<String, Value>, ty: &str, path: &str) -> Result<Value, SchemaError> {
    let mut typedef = json!({ "type": ty });
    let (lowest, highest) = if ty == "integer" {
        (json!(-MAX_SAFE_INTEGER), json!(MAX_SAFE_INTEGER))
    } else {
        (json!(f64::MIN), json!(f64::MAX))
    };
    let min = obj.get("minimum").cloned();
    let max = obj.get("maximum").cloned();
    // Integer types carry their own range (u8: 0..=255); wider ones reach past what Lua
    // numbers hold, so clamp to the safe range.
    let clamp = |v: Value, fallback: &Value| match (v.as_f64(), fallback.as_f64()) {
        (Some(x), Some(limit)) if x.abs() > limit.abs() => fallback.clone(),
        _ => v,
    };
    match (min, max) {
        (None, None) => {}
        (min, max) => {
            let min = min.map_or(lowest.clone(), |m| clamp(m, &lowest));
            let max = max.map_or(highest.clone(), |m| clamp(m, &highest));
            typedef["between"] = json!([min, max]);
        }
    }
    if let Some(gt) = obj.get("exclusiveMinimum") {
        typedef["gt"] = gt.clone();
    }
    if obj.contains_key("exclusiveMaximum") || obj.contains_key("multipleOf") {
        return Err(error(
            path,
            "exclusive maximums and multipleOf have no Kong equivalent",
        ));
    }
    Ok(typedef)
}

fn array(obj: &Map<String, Value>, path: &str) -> Result<Value, SchemaError> {
    let items = match obj.get("items") {
        Some(items) => items,
        None if obj.contains_key("prefixItems") => {
            return Err(error(path, "tuples have no Kong type; use a struct"));
        }
        None => return Err(error(path, "an array without an element type")),
    };
    let element = translate(items, &join(path, "[]"))?;
    let set = obj.get("uniqueItems") == Some(&json!(true));
    let mut typedef = json!({
        "type": if set { "set" } else { "array" },
        "elements": element.typedef,
    });
    if let Some(min) = obj.get("minItems") {
        typedef["len_min"] = min.clone();
    }
    if let Some(max) = obj.get("maxItems") {
        typedef["len_max"] = max.clone();
    }
    Ok(typedef)
}

fn object(obj: &Map<String, Value>, path: &str) -> Result<Value, SchemaError> {
    let properties = obj.get("properties").and_then(Value::as_object);
    match (properties, obj.get("additionalProperties")) {
        (Some(properties), _) => record(obj, properties, path),
        (None, Some(values @ Value::Object(_))) => {
            let values = translate(values, &join(path, "{}"))?;
            Ok(json!({
                "type": "map",
                "keys": {"type": "string"},
                "values": values.typedef,
            }))
        }
        (None, _) => Err(error(
            path,
            "a map without a value type (serde_json::Value?) has no Kong type",
        )),
    }
}

fn record(
    obj: &Map<String, Value>,
    properties: &Map<String, Value>,
    path: &str,
) -> Result<Value, SchemaError> {
    let required: Vec<&str> = obj
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    // A struct-level default (#[serde(default)] on a struct field) is pushed down into the
    // fields: Kong builds a missing record from its fields' defaults.
    let record_default = obj.get("default").and_then(Value::as_object);
    let mut fields = Vec::with_capacity(properties.len());
    for (name, schema) in properties {
        let field_path = join(path, name);
        let mut field = translate(schema, &field_path)?;
        if let Some(default) = record_default.and_then(|d| d.get(name))
            && !default.is_null()
            && field.typedef.get("default").is_none()
        {
            set_default(&mut field.typedef, default.clone(), &field_path)?;
        }
        let is_required = required.contains(&name.as_str());
        if is_required && !field.nullable {
            field.typedef["required"] = json!(true);
        }
        if !is_required
            && !field.nullable
            && field.typedef.get("one_of").is_some()
            && field.typedef.get("default").is_none()
        {
            // schemars writes a `#[serde(default)]` value only for types that implement
            // Serialize, and drops it silently otherwise: Kong would never see the default.
            let shown = field.typedef["one_of"][0].clone();
            return Err(error(
                &field_path,
                format!(
                    "this enum field has #[serde(default)], but its default cannot be written \
                     into Kong's schema because the enum does not implement serde::Serialize: \
                     add `serde::Serialize` to the enum's #[derive] (keeping its #[serde(rename_all)]), \
                     or give the default by hand with #[schemars(extend(\"default\" = {shown}))]"
                ),
            ));
        }
        fields.push(json!({ name.as_str(): field.typedef }));
    }
    Ok(json!({"type": "record", "fields": fields}))
}

/// Unit-variant enums and constants: a string (or number) with `one_of`.
fn one_of(obj: &Map<String, Value>, values: Vec<Value>, path: &str) -> Result<Field, SchemaError> {
    let nullable = values.iter().any(Value::is_null);
    let values: Vec<Value> = values.into_iter().filter(|v| !v.is_null()).collect();
    let ty = match values.first() {
        Some(Value::String(_)) => "string",
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => "integer",
        Some(Value::Number(_)) => "number",
        _ => return Err(error(path, "enums must have string (unit variant) values")),
    };
    if !values.iter().all(|v| json_type_matches(ty, v)) {
        return Err(error(path, "enum values of mixed types"));
    }
    let mut typedef = json!({"type": ty, "one_of": values});
    common_attributes(obj, &mut typedef, path)?;
    Ok(Field { typedef, nullable })
}

/// `oneOf`/`anyOf`: an enum whose variants are documented (one `const` or `enum` per
/// branch), or `Option<T>` of a struct (`T` or null).
fn branches_of(
    obj: &Map<String, Value>,
    branches: &[Value],
    path: &str,
) -> Result<Field, SchemaError> {
    let is_null = |b: &Value| b.get("type") == Some(&json!("null"));
    let non_null: Vec<&Value> = branches.iter().filter(|b| !is_null(b)).collect();
    let nullable = non_null.len() < branches.len();
    let mut values = Vec::new();
    for branch in &non_null {
        match (branch.get("const"), branch.get("enum")) {
            (Some(v), _) => values.push(v.clone()),
            (None, Some(Value::Array(vs))) => values.extend(vs.iter().cloned()),
            _ if non_null.len() == 1 => {
                let mut field = translate(branch, path)?;
                common_attributes(obj, &mut field.typedef, path)?;
                field.nullable |= nullable;
                return Ok(field);
            }
            _ => {
                return Err(error(
                    path,
                    "enums with data (or untagged unions) have no Kong type; use unit variants",
                ));
            }
        }
    }
    let mut field = one_of(obj, values, path)?;
    field.nullable |= nullable;
    Ok(field)
}

/// `default`, `description` and `x-kong-*` attributes, for any type.
fn common_attributes(
    obj: &Map<String, Value>,
    typedef: &mut Value,
    path: &str,
) -> Result<(), SchemaError> {
    if let Some(default) = obj.get("default") {
        let is_record = typedef.get("type") == Some(&json!("record"));
        if !default.is_null() && !is_record {
            set_default(typedef, default.clone(), path)?;
        }
    }
    if let Some(description) = obj.get("description").and_then(Value::as_str) {
        let mut description = description.trim();
        // Kong's meta-schema refuses descriptions outside 10..=500 bytes (Lua's `#`): cut
        // long ones at a character boundary, leave out short ones.
        if description.len() > MAX_DESCRIPTION {
            let mut cut = MAX_DESCRIPTION;
            while !description.is_char_boundary(cut) {
                cut -= 1;
            }
            description = description[..cut].trim_end();
        }
        if description.len() >= MIN_DESCRIPTION {
            typedef["description"] = json!(description);
        }
    }
    for (key, value) in obj {
        if let Some(attribute) = key.strip_prefix("x-kong-") {
            typedef[attribute] = value.clone();
        }
    }
    Ok(())
}

fn set_default(typedef: &mut Value, default: Value, path: &str) -> Result<(), SchemaError> {
    let ty = typedef["type"].as_str().unwrap_or_default().to_owned();
    if !json_type_matches(&ty, &default) {
        return Err(error(
            path,
            format!("default {default} does not match the field type {ty}"),
        ));
    }
    typedef["default"] = default;
    Ok(())
}

/// Whether a JSON value fits a Kong type.
pub(super) fn json_type_matches(kong_type: &str, value: &Value) -> bool {
    match kong_type {
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.as_f64().is_some_and(|f| f.fract() == 0.0),
        "number" => value.is_number(),
        "array" | "set" => value.is_array(),
        "map" | "record" => value.is_object(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    use super::*;

    /// How requests are counted.
    #[derive(JsonSchema, Deserialize, Serialize)]
    #[serde(rename_all = "snake_case")]
    #[allow(dead_code)]
    enum Policy {
        /// Kept in the daemon.
        Local,
        Redis,
    }

    #[derive(JsonSchema, Deserialize, Serialize, Default)]
    #[allow(dead_code)]
    struct Redis {
        #[serde(default = "default_host")]
        host: String,
        port: u16,
        timeout: Option<f64>,
    }

    fn default_host() -> String {
        "127.0.0.1".into()
    }

    fn default_limit() -> u32 {
        10
    }

    #[derive(JsonSchema, Deserialize)]
    #[allow(dead_code)]
    struct Config {
        /// Greeting to send to every client.
        #[serde(default)]
        message: Option<String>,
        /// Short.
        #[serde(default = "default_limit")]
        #[schemars(range(min = 1, max = 100))]
        limit: u32,
        policy: Policy,
        #[schemars(length(min = 1, max = 5), extend("x-kong-match" = "^%w+$"))]
        name: String,
        tags: Vec<String>,
        methods: BTreeSet<String>,
        headers: BTreeMap<String, String>,
        #[serde(default)]
        redis: Redis,
        backups: Vec<Redis>,
        enabled: bool,
        ratio: f32,
        offset: i64,
        count: u64,
    }

    #[test]
    fn every_kind_of_field_translates() {
        let record = config_record::<Config>().unwrap();
        let expected = json!({"type": "record", "fields": [
            {"message": {"type": "string", "description": "Greeting to send to every client."}},
            {"limit": {"type": "integer", "between": [1, 100], "default": 10}},
            {"policy": {"type": "string", "one_of": ["redis", "local"], "required": true,
                        "description": "How requests are counted."}},
            {"name": {"type": "string", "len_min": 1, "len_max": 5, "match": "^%w+$", "required": true}},
            {"tags": {"type": "array", "elements": {"type": "string"}, "required": true}},
            {"methods": {"type": "set", "elements": {"type": "string"}, "required": true}},
            {"headers": {"type": "map", "keys": {"type": "string"}, "values": {"type": "string"},
                         "required": true}},
            {"redis": {"type": "record", "fields": [
                {"host": {"type": "string", "default": "127.0.0.1"}},
                {"port": {"type": "integer", "between": [0, 65535], "required": true, "default": 0}},
                {"timeout": {"type": "number"}},
            ]}},
            {"backups": {"type": "array", "required": true, "elements": {"type": "record", "fields": [
                {"host": {"type": "string", "default": "127.0.0.1"}},
                {"port": {"type": "integer", "between": [0, 65535], "required": true}},
                {"timeout": {"type": "number"}},
            ]}}},
            {"enabled": {"type": "boolean", "required": true}},
            {"ratio": {"type": "number", "required": true}},
            {"offset": {"type": "integer", "required": true}},
            {"count": {"type": "integer", "between": [0, MAX_SAFE_INTEGER], "required": true}},
        ]});
        assert_eq!(record, expected, "{record:#}");
        super::super::validate_record(&record).unwrap();
    }

    #[test]
    fn untranslatable_types_are_refused_with_the_field() {
        #[derive(JsonSchema)]
        #[allow(dead_code)]
        struct Untyped {
            extra: serde_json::Value,
        }
        let err = config_record::<Untyped>().unwrap_err();
        assert_eq!(err.path, "extra");

        #[derive(JsonSchema)]
        #[allow(dead_code)]
        enum WithData {
            A(u32),
            B { x: String },
        }
        #[derive(JsonSchema)]
        #[allow(dead_code)]
        struct Outer {
            inner: Vec<WithData>,
        }
        let err = config_record::<Outer>().unwrap_err();
        assert_eq!(err.path, "inner.[]");
        assert!(err.reason.contains("enums with data"), "{err}");

        #[derive(JsonSchema)]
        #[allow(dead_code)]
        struct Regex {
            #[schemars(regex(pattern = r"^\d+$"))]
            digits: String,
        }
        let err = config_record::<Regex>().unwrap_err();
        assert!(err.reason.contains("x-kong-match"), "{err}");

        let err = config_record::<Vec<String>>().unwrap_err();
        assert!(err.reason.contains("must be a struct"), "{err}");
    }

    #[test]
    fn enum_defaults_reach_the_schema_or_say_what_to_add() {
        #[derive(JsonSchema, Deserialize, Default)]
        #[serde(rename_all = "snake_case")]
        #[allow(dead_code)]
        enum Mode {
            #[default]
            Fast,
            Safe,
        }
        #[derive(JsonSchema, Deserialize)]
        #[allow(dead_code)]
        struct Unserializable {
            #[serde(default)]
            mode: Mode,
        }
        let err = config_record::<Unserializable>().unwrap_err();
        assert_eq!(err.path, "mode");
        assert!(err.reason.contains("add `serde::Serialize`"), "{err}");

        #[derive(JsonSchema, Deserialize)]
        #[allow(dead_code)]
        struct ByHand {
            #[serde(default)]
            #[schemars(extend("default" = "fast"))]
            mode: Mode,
        }
        let record = config_record::<ByHand>().unwrap();
        assert_eq!(record["fields"][0]["mode"]["default"], "fast");

        #[derive(JsonSchema, Deserialize, Serialize, Default)]
        #[serde(rename_all = "snake_case")]
        #[allow(dead_code)]
        enum Serializable {
            Fast,
            #[default]
            Safe,
        }
        #[derive(JsonSchema, Deserialize)]
        #[allow(dead_code)]
        struct Derived {
            #[serde(default)]
            mode: Serializable,
        }
        let record = config_record::<Derived>().unwrap();
        assert_eq!(record["fields"][0]["mode"]["default"], "safe");
    }

    #[test]
    fn descriptions_are_cut_in_bytes() {
        /// Ééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé.
        #[derive(JsonSchema)]
        #[allow(dead_code)]
        struct Long {
            /// Ééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé.
            text: String,
            /// Ééééé
            short: String,
        }
        let record = config_record::<Long>().unwrap();
        let description = record["fields"][0]["text"]["description"].as_str().unwrap();
        assert!(
            description.len() <= 500 && description.len() >= 498,
            "{}",
            description.len()
        );
        // 5 characters, 10 bytes: enough for Kong.
        assert_eq!(record["fields"][1]["short"]["description"], "Ééééé");
        super::super::validate_record(&record).unwrap();
    }
}
