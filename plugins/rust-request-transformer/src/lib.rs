//! `rust-request-transformer`: reshapes the request Kong sends upstream.
//!
//! In the `access` phase, in this order:
//!
//! 1. `remove`: drops the named headers and query arguments;
//! 2. `rename`: renames headers and query arguments (`old → new`), keeping their values;
//! 3. `add`: sets headers and query arguments the request does not carry yet (an existing
//!    value is never overwritten, so clients and earlier steps win);
//! 4. `path_prefix`: if the client's path starts with `from` (at a segment boundary), the
//!    upstream path becomes `to` followed by the rest of the path.
//!
//! Reads go through `kong.request.*` (one `get_headers` when a header rule is configured,
//! one `get_raw_query` for query rules, one `get_path` for the path rule); changes go
//! through `kong.service.request.*`, one call per header actually changed and at most one
//! `set_raw_query` and one `set_path`. A request the rules do not touch costs only the
//! reads.
//!
//! ```json
//! {
//!   "remove": {"headers": ["x-debug"], "querystring": ["token"]},
//!   "rename": {"headers": {"x-user": "x-upstream-user"}, "querystring": {"q": "query"}},
//!   "add": {"headers": {"x-via": "kong"}, "querystring": {"version": "2"}},
//!   "path_prefix": {"from": "/api/v1", "to": "/v1"}
//! }
//! ```

mod query;

use std::collections::BTreeMap;

use kong_rust_pdk::{prelude::*, types::Multimap};
use schemars::JsonSchema;
use serde::Deserialize;

use query::Query;

/// The plugin configuration (`config` of the plugin entity in Kong).
///
/// The rule groups are `Option`s so that a group left out arrives as either nothing or
/// JSON `null`, whichever Kong sends for an unset record, and means "no rule".
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct Config {
    /// Headers and query arguments removed from the upstream request (applied first).
    #[serde(default)]
    pub remove: Option<Remove>,
    /// Headers and query arguments renamed, old name to new name (applied after `remove`).
    #[serde(default)]
    pub rename: Option<Rename>,
    /// Headers and query arguments added when the request does not carry them (applied
    /// after `rename`).
    #[serde(default)]
    pub add: Option<Add>,
    /// Replaces the beginning of the upstream path; unset leaves the path alone.
    #[serde(default)]
    pub path_prefix: Option<PathPrefix>,
}

/// What to remove.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct Remove {
    /// Names of the request headers to remove (case-insensitive).
    #[serde(default)]
    pub headers: Vec<String>,
    /// Names of the query arguments to remove.
    #[serde(default)]
    pub querystring: Vec<String>,
}

/// What to rename.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct Rename {
    /// Request headers to rename: old name (case-insensitive) to new name.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Query arguments to rename: old name to new name.
    #[serde(default)]
    pub querystring: BTreeMap<String, String>,
}

/// What to add.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct Add {
    /// Request headers to add when absent: name to value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Query arguments to add when absent: name to value.
    #[serde(default)]
    pub querystring: BTreeMap<String, String>,
}

/// A path prefix rewrite.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct PathPrefix {
    /// The prefix of the client's path to replace, e.g. `/api/v1`.
    #[schemars(extend("x-kong-starts_with" = "/"))]
    pub from: String,
    /// What replaces it in the upstream path, e.g. `/v1` (`/` drops the prefix).
    #[schemars(extend("x-kong-starts_with" = "/"))]
    pub to: String,
}

impl PathPrefix {
    /// The upstream path for client path `path`, if the prefix applies. `from` must end at
    /// a segment boundary, so `/api` rewrites `/api/x` and `/api` but not `/apix`.
    fn rewrite(&self, path: &str) -> Option<String> {
        let from = self.from.trim_end_matches('/');
        let rest = path.strip_prefix(from)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        let to = self.to.trim_end_matches('/');
        Some(match (to, rest) {
            ("", "") => "/".to_owned(),
            _ => format!("{to}{rest}"),
        })
    }
}

/// One instance per distinct configuration. Header names are kept lowercase, as nginx
/// reports request headers.
pub struct RequestTransformer {
    remove_headers: Vec<String>,
    rename_headers: Vec<(String, String)>,
    add_headers: Vec<(String, String)>,
    remove_query: Vec<String>,
    rename_query: Vec<(String, String)>,
    add_query: Vec<(String, String)>,
    path_prefix: Option<PathPrefix>,
}

impl RequestTransformer {
    fn touches_headers(&self) -> bool {
        !(self.remove_headers.is_empty()
            && self.rename_headers.is_empty()
            && self.add_headers.is_empty())
    }

    fn touches_query(&self) -> bool {
        !(self.remove_query.is_empty() && self.rename_query.is_empty() && self.add_query.is_empty())
    }

    /// Applies the header rules to the request's `headers`, changing the upstream request
    /// only where a rule matches.
    async fn transform_headers(&self, kong: &Kong, mut headers: Multimap) -> PdkResult<()> {
        let upstream = kong.service().request();
        for name in &self.remove_headers {
            if headers.0.remove(name).is_some() {
                upstream.clear_header(name).await?;
            }
        }
        for (from, to) in &self.rename_headers {
            let Some(values) = headers.0.remove(from).filter(|v| !v.is_empty()) else {
                continue;
            };
            upstream.clear_header(from).await?;
            for (i, value) in values.iter().enumerate() {
                if i == 0 {
                    upstream.set_header(to, value).await?;
                } else {
                    upstream.add_header(to, value).await?;
                }
            }
            headers.0.insert(to.clone(), values);
        }
        for (name, value) in &self.add_headers {
            if !headers.contains(name) {
                upstream.set_header(name, value).await?;
                headers.set(name.clone(), value.clone());
            }
        }
        Ok(())
    }

    /// The new raw query, or `None` when the rules leave `raw` as it is.
    fn transform_query(&self, raw: &str) -> Option<String> {
        let mut query = Query::parse(raw);
        for name in &self.remove_query {
            query.remove(name);
        }
        for (from, to) in &self.rename_query {
            query.rename(from, to);
        }
        for (name, value) in &self.add_query {
            if !query.contains(name) {
                query.push(name, value);
            }
        }
        let new = query.to_string();
        (new != raw).then_some(new)
    }
}

/// A header name from the configuration: trimmed, lowercase, and not empty.
fn header_name(field: &str, name: &str) -> Result<String, ConfigError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ConfigError::rejected(format!(
            "{field}: a header name cannot be empty"
        )));
    }
    Ok(name.to_ascii_lowercase())
}

fn query_name(field: &str, name: &str) -> Result<String, ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::rejected(format!(
            "{field}: a query argument name cannot be empty"
        )));
    }
    Ok(name.to_owned())
}

#[kong_rust_pdk::plugin]
impl Plugin for RequestTransformer {
    type Config = Config;
    /// After authentication plugins (so they see the client's headers), like Kong's own
    /// request-transformer.
    const PRIORITY: i64 = 801;

    fn new(config: Config) -> Result<Self, ConfigError> {
        let Config {
            remove,
            rename,
            add,
            path_prefix,
        } = config;
        let (remove, rename, add) = (
            remove.unwrap_or_default(),
            rename.unwrap_or_default(),
            add.unwrap_or_default(),
        );
        let pairs = |field: &str,
                     map: BTreeMap<String, String>,
                     name: fn(&str, &str) -> Result<String, ConfigError>|
         -> Result<Vec<(String, String)>, ConfigError> {
            map.into_iter()
                .map(|(k, v)| Ok((name(field, &k)?, v)))
                .collect()
        };
        let rename_headers = rename
            .headers
            .into_iter()
            .map(|(from, to)| {
                Ok((
                    header_name("rename.headers", &from)?,
                    header_name("rename.headers", &to)?,
                ))
            })
            .collect::<Result<_, ConfigError>>()?;
        let rename_query = rename
            .querystring
            .into_iter()
            .map(|(from, to)| {
                Ok((
                    query_name("rename.querystring", &from)?,
                    query_name("rename.querystring", &to)?,
                ))
            })
            .collect::<Result<_, ConfigError>>()?;
        if let Some(prefix) = &path_prefix
            && !(prefix.from.starts_with('/') && prefix.to.starts_with('/'))
        {
            return Err(ConfigError::rejected(
                "path_prefix: `from` and `to` must start with `/`",
            ));
        }
        Ok(RequestTransformer {
            remove_headers: remove
                .headers
                .iter()
                .map(|n| header_name("remove.headers", n))
                .collect::<Result<_, _>>()?,
            rename_headers,
            add_headers: pairs("add.headers", add.headers, header_name)?,
            remove_query: remove
                .querystring
                .iter()
                .map(|n| query_name("remove.querystring", n))
                .collect::<Result<_, _>>()?,
            rename_query,
            add_query: pairs("add.querystring", add.querystring, query_name)?,
            path_prefix,
        })
    }

    async fn access(&self, kong: &Kong) -> PdkResult<()> {
        if self.touches_headers() {
            let headers = kong.request().get_headers(None).await?;
            self.transform_headers(kong, headers).await?;
        }
        if self.touches_query() {
            let raw = kong.request().get_raw_query().await?;
            if let Some(query) = self.transform_query(&raw) {
                kong.service().request().set_raw_query(&query).await?;
            }
        }
        if let Some(prefix) = &self.path_prefix {
            let path = kong.request().get_path().await?;
            if let Some(path) = prefix.rewrite(&path) {
                kong.service().request().set_path(&path).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kong_rust_pdk_testkit::{Simulation, TestRequest, instance};
    use serde_json::json;

    fn plugin(config: serde_json::Value) -> std::sync::Arc<RequestTransformer> {
        instance::<RequestTransformer>(config).unwrap()
    }

    #[test]
    fn removes_renames_and_adds_headers() {
        let plugin = plugin(json!({
            "remove": {"headers": ["X-Debug"]},
            "rename": {"headers": {"X-User": "X-Upstream-User"}},
            "add": {"headers": {"x-via": "kong", "x-user": "default"}},
        }));
        let sim = TestRequest::get("/")
            .header("x-debug", "1")
            .header("x-user", "alice")
            .header("x-user", "bob")
            .header("accept", "*/*")
            .run(&plugin, Phase::Access);
        let up = &sim.upstream_request;
        assert_eq!(up.header("x-debug"), None);
        assert_eq!(up.headers.get_all("x-upstream-user"), ["alice", "bob"]);
        // `x-user` was renamed away, so `add` puts the default back.
        assert_eq!(up.header("x-user"), Some("default"));
        assert_eq!(up.header("x-via"), Some("kong"));
        assert_eq!(up.header("accept"), Some("*/*"));
        assert_eq!(
            sim.methods(),
            [
                "kong.request.get_headers",
                "kong.service.request.clear_header",
                "kong.service.request.clear_header",
                "kong.service.request.set_header",
                "kong.service.request.add_header",
                "kong.service.request.set_header",
                "kong.service.request.set_header",
            ]
        );
        assert!(sim.exit.is_none());
    }

    #[test]
    fn add_never_overwrites_a_header_the_client_sent() {
        let plugin = plugin(json!({"add": {"headers": {"x-via": "kong"}}}));
        let sim = TestRequest::get("/")
            .header("X-Via", "client")
            .run(&plugin, Phase::Access);
        assert_eq!(sim.upstream_request.header("x-via"), Some("client"));
        assert_eq!(sim.methods(), ["kong.request.get_headers"]);
    }

    #[test]
    fn rewrites_the_query_keeping_other_arguments_as_sent() {
        let plugin = plugin(json!({
            "remove": {"querystring": ["token"]},
            "rename": {"querystring": {"q": "query"}},
            "add": {"querystring": {"version": "2", "page": "1"}},
        }));
        let sim = TestRequest::get("/search?q=rust&token=s3cr3t&debug&page=3")
            .run(&plugin, Phase::Access);
        assert_eq!(
            sim.upstream_request.raw_query,
            "query=rust&debug&page=3&version=2"
        );
        assert_eq!(
            sim.methods(),
            [
                "kong.request.get_raw_query",
                "kong.service.request.set_raw_query"
            ]
        );
    }

    #[test]
    fn an_untouched_query_is_not_sent_back() {
        let plugin = plugin(json!({"remove": {"querystring": ["token"]}}));
        let sim = TestRequest::get("/?a=1").run(&plugin, Phase::Access);
        assert_eq!(sim.methods(), ["kong.request.get_raw_query"]);
        assert_eq!(sim.upstream_request.raw_query, "a=1");
    }

    #[test]
    fn rewrites_the_path_prefix_at_segment_boundaries() {
        let plugin = plugin(json!({"path_prefix": {"from": "/api/v1/", "to": "/v1"}}));
        let rewritten = |path: &str| {
            let sim = TestRequest::get(path).run(&plugin, Phase::Access);
            sim.upstream_request.path.clone()
        };
        assert_eq!(rewritten("/api/v1/users/7"), "/v1/users/7");
        assert_eq!(rewritten("/api/v1"), "/v1");
        assert_eq!(rewritten("/api/v10/users"), "/api/v10/users");
        assert_eq!(rewritten("/other"), "/other");

        let strip = PathPrefix {
            from: "/api".into(),
            to: "/".into(),
        };
        assert_eq!(strip.rewrite("/api").as_deref(), Some("/"));
        assert_eq!(strip.rewrite("/api/x").as_deref(), Some("/x"));
    }

    #[test]
    fn an_empty_config_reads_and_changes_nothing() {
        let plugin = plugin(json!({}));
        let mut sim = Simulation::new(TestRequest::get("/x?a=1").header("h", "v"));
        let outcome = sim.run(&plugin, Phase::Access);
        assert_eq!(outcome.result, Ok(()));
        assert!(sim.calls.is_empty());
    }

    #[test]
    fn a_failing_pdk_call_fails_the_handler() {
        let plugin = plugin(json!({"remove": {"headers": ["x-debug"]}}));
        let mut sim =
            Simulation::new(TestRequest::get("/").answer("kong.request.get_headers", None));
        let outcome = sim.run(&plugin, Phase::Access);
        assert!(
            outcome
                .result
                .unwrap_err()
                .contains("kong.request.get_headers"),
            "a nil multimap is reported"
        );
    }

    #[test]
    fn invalid_configs_are_refused_with_the_reason() {
        for (config, reason) in [
            (json!({"remove": {"headers": [" "]}}), "remove.headers"),
            (
                json!({"rename": {"querystring": {"a": ""}}}),
                "rename.querystring",
            ),
            (
                json!({"path_prefix": {"from": "api", "to": "/"}}),
                "must start with `/`",
            ),
            (json!({"add": {"headers": ["x-a:1"]}}), "add.headers"),
        ] {
            let err = instance::<RequestTransformer>(config)
                .err()
                .expect("refused");
            assert!(err.to_string().contains(reason), "{err}");
        }
    }

    #[test]
    fn accepts_the_configs_kong_may_send_for_unset_groups() {
        for config in [
            json!({
                "remove": {"headers": [], "querystring": []},
                "rename": {"headers": {}, "querystring": {}},
                "add": {"headers": {}, "querystring": {}},
                "path_prefix": null,
            }),
            json!({"remove": null, "rename": null, "add": null, "path_prefix": null}),
            json!({"add": {"headers": {"x-a": "1"}}}),
        ] {
            let plugin = instance::<RequestTransformer>(config.clone());
            assert!(plugin.is_ok(), "{config}: {:?}", plugin.err());
        }
    }

    #[test]
    fn the_schema_has_kongs_types_and_defaults() {
        let schema = RequestTransformer::config_schema().unwrap();
        let text = schema.to_string();
        for expected in [
            r#""remove":{"type":"record""#,
            r#""headers":{"type":"array","elements":{"type":"string"},"default":[]"#,
            r#""type":"map","keys":{"type":"string"},"values":{"type":"string"}"#,
            r#""starts_with":"/""#,
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
    }
}
