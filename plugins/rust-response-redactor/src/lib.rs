//! `rust-response-redactor`: masks sensitive fields of JSON responses before they leave
//! Kong.
//!
//! In the `response` phase (Kong buffers the whole upstream response for it), when the
//! upstream's `Content-Type` is JSON (`application/json` or any `+json` type):
//!
//! 1. reads the body with `kong.service.response.get_raw_body`;
//! 2. replaces with `mask` the value of every object member named in `fields`, at any depth,
//!    and every value a JSON pointer in `pointers` reaches (`*` matching every array element
//!    or object member: `/items/*/card`);
//! 3. if anything changed, sends the new body with `kong.response.exit(status, body,
//!    {Content-Length})`, keeping the status (`kong.response.get_status`) and every other
//!    header of the response.
//!
//! `kong.response.exit` is how a `response` handler replaces the body over the external
//! plugin protocol: `kong.response.set_raw_body` only works in `body_filter`, a phase
//! external plugins do not have. A response with nothing to redact is left to Kong as it
//! is (no exit): one read for a non-JSON response, three for a JSON one.
//!
//! Not redacted, with a warning in Kong's error.log: bodies that are not valid JSON and
//! compressed bodies (`Content-Encoding` other than `identity`; remove `Accept-Encoding`
//! from the upstream request, e.g. with rust-request-transformer, to get them plain).
//! Numbers are written back as `serde_json` prints them (`1.0e3` becomes `1000.0`); key
//! order and everything else is kept.
//!
//! ```json
//! {"fields": ["password", "ssn"], "pointers": ["/payment/card", "/items/*/token"], "mask": "***"}
//! ```

use std::collections::HashSet;

use kong_rust_pdk::{prelude::*, types::Multimap};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value as Json;

/// The plugin configuration (`config` of the plugin entity in Kong).
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Config {
    /// Names of object members whose values are masked wherever they appear, at any depth
    /// (exact, case-sensitive match).
    #[serde(default)]
    pub fields: Vec<String>,
    /// JSON pointers (RFC 6901) of values to mask, e.g. `/user/ssn`; a `*` segment matches
    /// every array element or object member, e.g. `/items/*/card`.
    #[serde(default)]
    pub pointers: Vec<String>,
    /// The string that replaces each redacted value, whatever the value's type.
    #[serde(default = "default_mask")]
    pub mask: String,
}

fn default_mask() -> String {
    "***".to_owned()
}

/// One step of a JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// An object member, or an array index when it is a number.
    Key(String),
    /// `*`: every element or member.
    Any,
}

/// Parses a JSON pointer; `Err` says what is wrong with it.
fn parse_pointer(pointer: &str) -> Result<Vec<Segment>, String> {
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err("must start with `/` (the whole document cannot be redacted)".into());
    };
    rest.split('/')
        .map(|raw| {
            if raw == "*" {
                return Ok(Segment::Any);
            }
            let mut key = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    key.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => key.push('~'),
                    Some('1') => key.push('/'),
                    _ => return Err(format!("`{raw}`: `~` must be followed by 0 or 1")),
                }
            }
            Ok(Segment::Key(key))
        })
        .collect()
}

/// Replaces `value` with `mask`; 1 if that changed it.
fn mask_value(value: &mut Json, mask: &Json) -> usize {
    if value == mask {
        return 0;
    }
    *value = mask.clone();
    1
}

/// Masks the members named in `names` everywhere in `value`; how many values changed.
fn redact_names(value: &mut Json, names: &HashSet<String>, mask: &Json) -> usize {
    match value {
        Json::Object(members) => members
            .iter_mut()
            .map(|(name, member)| {
                if names.contains(name) {
                    mask_value(member, mask)
                } else {
                    redact_names(member, names, mask)
                }
            })
            .sum(),
        Json::Array(items) => items
            .iter_mut()
            .map(|item| redact_names(item, names, mask))
            .sum(),
        _ => 0,
    }
}

/// Masks what the pointer `path` reaches in `value`; how many values changed.
fn redact_path(value: &mut Json, path: &[Segment], mask: &Json) -> usize {
    let Some((segment, rest)) = path.split_first() else {
        return mask_value(value, mask);
    };
    match (segment, value) {
        (Segment::Any, Json::Object(members)) => members
            .values_mut()
            .map(|member| redact_path(member, rest, mask))
            .sum(),
        (Segment::Any, Json::Array(items)) => items
            .iter_mut()
            .map(|item| redact_path(item, rest, mask))
            .sum(),
        (Segment::Key(key), Json::Object(members)) => members
            .get_mut(key)
            .map_or(0, |member| redact_path(member, rest, mask)),
        (Segment::Key(key), Json::Array(items)) => key
            .parse::<usize>()
            .ok()
            .and_then(|i| items.get_mut(i))
            .map_or(0, |item| redact_path(item, rest, mask)),
        _ => 0,
    }
}

/// Whether a `Content-Type` is JSON: `application/json` or a `+json` type, any parameters.
fn is_json(content_type: &str) -> bool {
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    media_type == "application/json"
        || (media_type.starts_with("application/") && media_type.ends_with("+json"))
}

/// One instance per distinct configuration.
pub struct ResponseRedactor {
    fields: HashSet<String>,
    pointers: Vec<Vec<Segment>>,
    mask: Json,
}

impl ResponseRedactor {
    /// Masks everything configured in `doc`; how many values changed.
    fn redact(&self, doc: &mut Json) -> usize {
        let mut changed = 0;
        if !self.fields.is_empty() {
            changed += redact_names(doc, &self.fields, &self.mask);
        }
        for pointer in &self.pointers {
            changed += redact_path(doc, pointer, &self.mask);
        }
        changed
    }
}

#[kong_rust_pdk::plugin]
impl Plugin for ResponseRedactor {
    type Config = Config;
    /// Low, so the response is redacted after other plugins' `response` handlers ran.
    const PRIORITY: i64 = 100;

    fn new(config: Config) -> Result<Self, ConfigError> {
        if config.fields.is_empty() && config.pointers.is_empty() {
            return Err(ConfigError::rejected(
                "nothing to redact: set `fields`, `pointers` or both",
            ));
        }
        if config.fields.iter().any(String::is_empty) {
            return Err(ConfigError::rejected("fields: a name cannot be empty"));
        }
        let pointers = config
            .pointers
            .iter()
            .map(|p| {
                parse_pointer(p).map_err(|e| ConfigError::rejected(format!("pointers: `{p}` {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(ResponseRedactor {
            fields: config.fields.into_iter().collect(),
            pointers,
            mask: Json::String(config.mask),
        })
    }

    async fn response(&self, kong: &Kong) -> PdkResult<()> {
        let upstream = kong.service().response();
        let content_type = upstream.get_header("content-type").await?;
        if !content_type.as_deref().is_some_and(is_json) {
            return Ok(());
        }
        if let Some(encoding) = upstream
            .get_header("content-encoding")
            .await?
            .filter(|e| !e.eq_ignore_ascii_case("identity"))
        {
            let message = format!("a {encoding}-encoded JSON body is passed on unredacted");
            return kong.log().warn(&message).await;
        }
        let body = upstream.get_raw_body().await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let mut doc: Json = match serde_json::from_slice(&body) {
            Ok(doc) => doc,
            Err(e) => {
                let message = format!("the JSON body is invalid ({e}) and passed on unredacted");
                return kong.log().warn(&message).await;
            }
        };
        if self.redact(&mut doc) == 0 {
            return Ok(());
        }
        let body = serde_json::to_vec(&doc).map_err(PdkError::plugin)?;
        let status = kong.response().get_status().await?;
        let headers = Multimap::new().with("content-length", body.len().to_string());
        kong.response()
            .exit_with_headers(status, body, &headers)
            .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kong_rust_pdk_testkit::{Simulation, TestRequest, UpstreamResponse, instance};
    use serde_json::json;

    fn plugin(config: Json) -> std::sync::Arc<ResponseRedactor> {
        instance::<ResponseRedactor>(config).unwrap()
    }

    fn json_response(status: u16, body: &str) -> UpstreamResponse {
        UpstreamResponse::new(status)
            .header("Content-Type", "application/json; charset=utf-8")
            .header("Content-Length", &body.len().to_string())
            .header("X-Upstream", "orders")
            .body(body)
    }

    fn run(plugin: &std::sync::Arc<ResponseRedactor>, response: UpstreamResponse) -> Simulation {
        TestRequest::get("/orders/7")
            .upstream_response(response)
            .run(plugin, Phase::Response)
    }

    #[test]
    fn masks_fields_at_any_depth_and_pointers_keeping_status_headers_and_order() {
        let plugin = plugin(json!({
            "fields": ["password", "ssn"],
            "pointers": ["/payment/card", "/items/*/token", "/tags/1"],
            "mask": "[redacted]",
        }));
        let body = r#"{"id":7,"user":{"name":"ann","ssn":"123-45-6789","auth":{"password":42}},"payment":{"card":"4111","amount":10},"items":[{"token":"a","n":1},{"n":2},{"token":{"x":1}}],"tags":["a","b"]}"#;
        let sim = run(&plugin, json_response(201, body));
        let exit = sim.exit.as_ref().expect("the body is replaced");
        assert_eq!(exit.method, "kong.response.exit");
        assert_eq!(exit.status, 201);
        let expected = r#"{"id":7,"user":{"name":"ann","ssn":"[redacted]","auth":{"password":"[redacted]"}},"payment":{"card":"[redacted]","amount":10},"items":[{"token":"[redacted]","n":1},{"n":2},{"token":"[redacted]"}],"tags":["a","[redacted]"]}"#;
        assert_eq!(String::from_utf8_lossy(&sim.response.body), expected);
        assert_eq!(sim.response.status, 201);
        let length = expected.len().to_string();
        assert_eq!(sim.response.header("content-length"), Some(length.as_str()));
        assert_eq!(sim.response.header("x-upstream"), Some("orders"));
        assert_eq!(
            sim.methods(),
            [
                "kong.service.response.get_header",
                "kong.service.response.get_header",
                "kong.service.response.get_raw_body",
                "kong.response.get_status",
                "kong.response.exit",
            ]
        );
    }

    #[test]
    fn json_subtypes_count_and_other_types_are_not_read() {
        let plugin = plugin(json!({"fields": ["secret"]}));
        let problem = UpstreamResponse::new(400)
            .header("content-type", "application/problem+json")
            .body(r#"{"secret":"s"}"#);
        assert!(run(&plugin, problem).exit.is_some());

        let html = UpstreamResponse::new(200)
            .header("content-type", "text/html")
            .body(r#"{"secret":"s"}"#);
        let sim = run(&plugin, html);
        assert!(sim.exit.is_none());
        assert_eq!(sim.methods(), ["kong.service.response.get_header"]);

        let untyped = UpstreamResponse::new(200).body(r#"{"secret":"s"}"#);
        assert!(run(&plugin, untyped).exit.is_none());
    }

    #[test]
    fn a_body_with_nothing_to_redact_is_left_to_kong() {
        let plugin = plugin(json!({"fields": ["password"], "pointers": ["/a/b"]}));
        for body in [
            r#"{"a":{"c":1},"list":[1,2]}"#,
            r#"{"password":"***"}"#,
            "",
            " \n",
        ] {
            let sim = run(&plugin, json_response(200, body));
            assert!(sim.exit.is_none(), "{body:?}");
            assert!(!sim.methods().contains(&"kong.response.get_status"));
            assert!(sim.logs.is_empty());
        }
    }

    #[test]
    fn invalid_json_is_passed_on_with_a_warning() {
        let plugin = plugin(json!({"fields": ["password"]}));
        let sim = run(&plugin, json_response(200, r#"{"password": "#));
        assert!(sim.exit.is_none());
        assert!(sim.logged("warn", "invalid"), "{:?}", sim.logs);
    }

    #[test]
    fn compressed_bodies_are_not_read() {
        let plugin = plugin(json!({"fields": ["password"]}));
        let gzip = json_response(200, r#"{"password":"p"}"#).header("content-encoding", "gzip");
        let sim = run(&plugin, gzip);
        assert!(sim.exit.is_none());
        assert!(sim.logged("warn", "gzip-encoded"), "{:?}", sim.logs);
        assert!(
            !sim.methods()
                .contains(&"kong.service.response.get_raw_body")
        );

        let identity =
            json_response(200, r#"{"password":"p"}"#).header("content-encoding", "identity");
        assert!(run(&plugin, identity).exit.is_some());
    }

    #[test]
    fn pointers_follow_rfc_6901_escapes() {
        assert_eq!(
            parse_pointer("/a~1b/~0c/*/0").unwrap(),
            [
                Segment::Key("a/b".into()),
                Segment::Key("~c".into()),
                Segment::Any,
                Segment::Key("0".into())
            ]
        );
        let mut doc = json!({"a/b": {"~c": [[1, 2], [3]]}});
        let path = parse_pointer("/a~1b/~0c/*/0").unwrap();
        assert_eq!(redact_path(&mut doc, &path, &json!("x")), 2);
        assert_eq!(doc, json!({"a/b": {"~c": [["x", 2], ["x"]]}}));
        assert_eq!(
            redact_path(&mut doc, &parse_pointer("/nope/x").unwrap(), &json!("x")),
            0
        );
    }

    #[test]
    fn only_the_response_phase_is_implemented() {
        assert_eq!(ResponseRedactor::PHASES, [Phase::Response]);
    }

    #[test]
    fn useless_or_broken_configs_are_refused() {
        for (config, reason) in [
            (json!({}), "nothing to redact"),
            (
                json!({"fields": [], "pointers": [], "mask": "x"}),
                "nothing to redact",
            ),
            (json!({"fields": [""]}), "cannot be empty"),
            (json!({"pointers": ["user/ssn"]}), "must start with `/`"),
            (json!({"pointers": ["/a~2"]}), "followed by 0 or 1"),
        ] {
            let err = instance::<ResponseRedactor>(config).err().expect("refused");
            assert!(err.to_string().contains(reason), "{err}");
        }
    }
}
