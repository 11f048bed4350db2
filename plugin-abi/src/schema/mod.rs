//! Kong config schemas from Rust types.
//!
//! A plugin declares its configuration once, as a Rust type deriving `serde::Deserialize`
//! and `schemars::JsonSchema`. [`config_record`] turns the type's JSON Schema into the Kong
//! schema record Kong validates configurations against (Kong applies defaults and checks
//! every value *before* the plugin sees it, so this is where users get their errors).
//!
//! | Rust | Kong |
//! |---|---|
//! | `String`, `&str` | `string` |
//! | `bool` | `boolean` |
//! | integers | `integer`, with `between` from the type's range |
//! | `f32`, `f64` | `number` |
//! | `Vec<T>`, arrays | `array` with `elements` |
//! | `HashSet<T>`, `BTreeSet<T>` | `set` with `elements` |
//! | `HashMap<String, T>`, `BTreeMap<String, T>` | `map` with `keys`/`values` |
//! | structs | `record` with `fields`, in declaration order |
//! | enums of unit variants | `string` with `one_of` |
//! | `Option<T>` | `T`, not required |
//!
//! Attributes: a field is `required` unless it is an `Option` or has `#[serde(default)]`;
//! serde defaults become `default` (nested records get their fields' defaults; an enum's
//! default needs the enum to implement `Serialize`, or the translation says what to add);
//! doc comments become `description` (Kong takes 10 to 500 bytes: longer ones are cut,
//! shorter ones left out; the daemon drops them all for Kong 3.0–3.3, see [`for_kong`]); `#[schemars(range(min, max))]`
//! becomes `between`; `#[schemars(length(min, max))]` becomes `len_min`/`len_max`. Any other
//! Kong attribute is written as `#[schemars(extend("x-kong-<attribute>" = value))]`, for
//! example `extend("x-kong-match" = "^%w+$")` (Kong's `match` takes a *Lua* pattern, so
//! `#[schemars(regex(..))]` is refused rather than silently mistranslated).

mod config;
mod translate;
mod validate;

pub use config::{
    ConfigProblem, ConfigViolation, ConfigViolations, check_config, config_record_of,
};
pub use translate::{SchemaError, config_record, record_from_json_schema};
pub use validate::{
    SchemaViolation, for_kong, validate_plugin_schema, validate_plugin_schema_for, validate_record,
};
