//! `rust-key-auth`: API-key authentication against keys listed in the configuration.
//!
//! In the `access` phase it looks for the key in the request headers named by `key_names`
//! (and, with `key_in_query`, in query arguments of the same names), in order, and:
//!
//! - no key: ends the request with `401 {"message":"No API key found in request"}`;
//! - a key not in `credentials`: `401 {"message":"Invalid authentication credentials"}`;
//!
//! both with `WWW-Authenticate: Key realm="<realm>"`. A known key authenticates the request
//! as the key's consumer (`kong.client.authenticate`, so consumer-scoped plugins and
//! `kong.client.get_consumer` see it) and tells the upstream who called through
//! `X-Consumer-ID`, `X-Consumer-Username` and `X-Credential-Identifier` (a client-sent
//! `X-Consumer-Username` is removed when the consumer has no username, so it cannot be
//! forged). With `hide_credentials` the key itself is removed from the upstream request.
//!
//! Consumers come from the configuration, not from Kong's database: no consumer or
//! credential entity has to exist in Kong.
//!
//! ```json
//! {
//!   "key_names": ["apikey"],
//!   "key_in_header": true,
//!   "key_in_query": false,
//!   "hide_credentials": true,
//!   "realm": "kong",
//!   "credentials": [
//!     {"key": "s3cr3t", "consumer": {"id": "8f0b…", "username": "alice"}, "id": null}
//!   ]
//! }
//! ```

use std::collections::HashSet;

use kong_rust_pdk::{
    pdk::QueryArg,
    prelude::*,
    types::{Body, Consumer, Credential, ForeignKey, Multimap},
};
use schemars::JsonSchema;
use serde::Deserialize;

/// The plugin configuration (`config` of the plugin entity in Kong).
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Config {
    /// Names of the header (and, with `key_in_query`, the query argument) carrying the API
    /// key, tried in order.
    #[serde(default = "default_key_names")]
    #[schemars(length(min = 1))]
    pub key_names: Vec<String>,
    /// Whether to look for the key in the request headers.
    #[serde(default = "yes")]
    pub key_in_header: bool,
    /// Whether to look for the key in the query string; off by default because URLs,
    /// with their keys, end up in access logs.
    #[serde(default)]
    pub key_in_query: bool,
    /// Whether to remove the key from the request before it is proxied upstream.
    #[serde(default)]
    pub hide_credentials: bool,
    /// The realm announced in the `WWW-Authenticate` header of rejections.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// The accepted keys, each with the consumer it authenticates.
    pub credentials: Vec<ApiKey>,
}

fn default_key_names() -> Vec<String> {
    vec!["apikey".to_owned()]
}

fn default_realm() -> String {
    "kong".to_owned()
}

fn yes() -> bool {
    true
}

/// One accepted key.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ApiKey {
    /// The secret key clients present.
    #[schemars(length(min = 1))]
    pub key: String,
    /// The consumer this key authenticates.
    pub consumer: ConsumerRef,
    /// The credential id other plugins see (`X-Credential-Identifier`, rate limiting by
    /// credential); the consumer id when unset.
    #[serde(default)]
    pub id: Option<String>,
}

/// A consumer, as handed to `kong.client.authenticate`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ConsumerRef {
    /// The consumer id (a Kong consumer's UUID when consumer-scoped plugins must apply).
    #[schemars(length(min = 1))]
    pub id: String,
    /// The consumer's username, sent upstream as `X-Consumer-Username`.
    #[serde(default)]
    pub username: Option<String>,
}

/// A key with the identities it stands for, ready to hand to Kong.
struct Entry {
    key: Vec<u8>,
    consumer: Consumer,
    credential: Credential,
}

/// Where the key was found, so `hide_credentials` removes it from the right place.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Header(String),
    Query(String),
}

/// One instance per distinct configuration.
pub struct KeyAuth {
    key_names: Vec<String>,
    key_in_header: bool,
    key_in_query: bool,
    hide_credentials: bool,
    challenge: String,
    entries: Vec<Entry>,
}

/// Compares without stopping at the first differing byte, so response times do not tell
/// a client how much of a guessed key was right.
fn same_key(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the request presents as its key. Everything here comes from the client, so
/// nothing about it may fail the handler: a failing handler is no answer to a client that
/// sends garbage (the daemon would end the request with a 500, and a plugin that failed open
/// would let it through); a key that cannot be read is an invalid key.
enum Presented {
    /// No key at all.
    Nothing,
    /// A key, as raw bytes (header values need not be UTF-8).
    Key(Vec<u8>, Source),
    /// Something in a key's place that no configured key can match (a query value Kong
    /// decoded into something that is not text).
    Unreadable,
}

impl KeyAuth {
    /// The first key the request carries, and where.
    async fn find_key(&self, kong: &Kong) -> PdkResult<Presented> {
        let request = kong.request();
        for name in &self.key_names {
            if self.key_in_header
                && let Some(key) = request.get_header_bytes(name).await?
                && !key.is_empty()
            {
                return Ok(Presented::Key(key.into_vec(), Source::Header(name.clone())));
            }
            if self.key_in_query {
                match request.get_query_arg(name).await {
                    // A flag without value (`?apikey`) carries no key.
                    Ok(Some(QueryArg::Value(key))) if !key.is_empty() => {
                        return Ok(Presented::Key(
                            key.into_bytes(),
                            Source::Query(name.clone()),
                        ));
                    }
                    Ok(_) => {}
                    Err(PdkError::Decode { .. }) => return Ok(Presented::Unreadable),
                    Err(other) => return Err(other),
                }
            }
        }
        Ok(Presented::Nothing)
    }

    /// The entry of `key`, comparing against every configured key.
    fn lookup(&self, key: &[u8]) -> Option<&Entry> {
        let mut found = None;
        for entry in &self.entries {
            if same_key(&entry.key, key) && found.is_none() {
                found = Some(entry);
            }
        }
        found
    }

    /// Ends the request with a 401 and Kong's JSON error body.
    async fn reject(&self, kong: &Kong, message: &str) -> PdkResult<()> {
        let headers = Multimap::new().with("WWW-Authenticate", self.challenge.as_str());
        let body = Body::from(serde_json::json!({ "message": message }));
        kong.response()
            .exit_with_headers(401, body, &headers)
            .await?
    }
}

#[kong_rust_pdk::plugin]
impl Plugin for KeyAuth {
    type Config = Config;
    /// Authentication runs before the plugins that depend on the consumer (rate limiting,
    /// transformations), as Kong's own key-auth does.
    const PRIORITY: i64 = 1250;

    fn new(config: Config) -> Result<Self, ConfigError> {
        if !(config.key_in_header || config.key_in_query) {
            return Err(ConfigError::rejected(
                "key_in_header and key_in_query are both off: no key could ever be found",
            ));
        }
        if config.key_names.is_empty() || config.key_names.iter().any(|n| n.trim().is_empty()) {
            return Err(ConfigError::rejected(
                "key_names: at least one name, and no empty name",
            ));
        }
        let mut seen = HashSet::new();
        let mut entries = Vec::with_capacity(config.credentials.len());
        for (i, api_key) in config.credentials.into_iter().enumerate() {
            if api_key.key.is_empty() || api_key.consumer.id.is_empty() {
                return Err(ConfigError::rejected(format!(
                    "credentials[{i}]: the key and the consumer id cannot be empty"
                )));
            }
            // Two consumers behind one key would make the authenticated identity a guess.
            if !seen.insert(api_key.key.clone()) {
                return Err(ConfigError::rejected(format!(
                    "credentials[{i}]: the same key is listed twice"
                )));
            }
            let consumer = Consumer {
                id: api_key.consumer.id.clone(),
                username: api_key.consumer.username,
                ..Consumer::default()
            };
            let credential = Credential {
                id: api_key.id.unwrap_or_else(|| api_key.consumer.id.clone()),
                consumer: Some(ForeignKey {
                    id: api_key.consumer.id,
                }),
                ..Credential::default()
            };
            entries.push(Entry {
                key: api_key.key.into_bytes(),
                consumer,
                credential,
            });
        }
        Ok(KeyAuth {
            key_names: config.key_names,
            key_in_header: config.key_in_header,
            key_in_query: config.key_in_query,
            hide_credentials: config.hide_credentials,
            challenge: format!("Key realm=\"{}\"", config.realm),
            entries,
        })
    }

    async fn access(&self, kong: &Kong) -> PdkResult<()> {
        let (key, source) = match self.find_key(kong).await? {
            Presented::Key(key, source) => (key, source),
            Presented::Nothing => {
                return self.reject(kong, "No API key found in request").await;
            }
            Presented::Unreadable => {
                return self
                    .reject(kong, "Invalid authentication credentials")
                    .await;
            }
        };
        let Some(entry) = self.lookup(&key) else {
            return self
                .reject(kong, "Invalid authentication credentials")
                .await;
        };
        let upstream = kong.service().request();
        if self.hide_credentials {
            match &source {
                Source::Header(name) => upstream.clear_header(name).await?,
                Source::Query(name) => upstream.clear_query_arg(name).await?,
            }
        }
        kong.client()
            .authenticate(Some(&entry.consumer), Some(&entry.credential))
            .await?;
        upstream
            .set_header("x-consumer-id", &entry.consumer.id)
            .await?;
        match &entry.consumer.username {
            Some(username) => upstream.set_header("x-consumer-username", username).await?,
            None => upstream.clear_header("x-consumer-username").await?,
        }
        upstream
            .set_header("x-credential-identifier", &entry.credential.id)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kong_rust_pdk_testkit::{Simulation, TestRequest, instance};
    use serde_json::json;

    const ALICE: &str = "8f0b5b8e-0000-4000-8000-0000000000a1";
    const BOB: &str = "8f0b5b8e-0000-4000-8000-0000000000b2";

    fn plugin(extra: serde_json::Value) -> std::sync::Arc<KeyAuth> {
        let mut config = json!({
            "credentials": [
                {"key": "alice-key", "consumer": {"id": ALICE, "username": "alice"}, "id": "cred-a"},
                {"key": "bob-key", "consumer": {"id": BOB}},
            ],
        });
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        instance::<KeyAuth>(config).unwrap()
    }

    fn assert_rejected(sim: &Simulation, message: &str) {
        let exit = sim.exit.as_ref().expect("the request is rejected");
        assert_eq!(exit.status, 401);
        assert_eq!(
            exit.headers.get("WWW-Authenticate"),
            Some("Key realm=\"kong\"")
        );
        let body: serde_json::Value = serde_json::from_slice(&sim.response.body).unwrap();
        assert_eq!(body, json!({ "message": message }));
        assert!(sim.authenticated.is_none());
        assert_eq!(sim.upstream_request.header("x-consumer-id"), None);
    }

    #[test]
    fn a_request_without_a_key_is_rejected() {
        let plugin = plugin(json!({}));
        let sim = TestRequest::get("/").run(&plugin, Phase::Access);
        assert_rejected(&sim, "No API key found in request");
        assert_eq!(
            sim.methods(),
            ["kong.request.get_header", "kong.response.exit"]
        );
    }

    #[test]
    fn a_wrong_key_is_rejected() {
        let plugin = plugin(json!({}));
        let sim = TestRequest::get("/")
            .header("apikey", "alice-kez")
            .run(&plugin, Phase::Access);
        assert_rejected(&sim, "Invalid authentication credentials");
    }

    #[test]
    fn keys_that_are_not_text_are_invalid_keys_never_failures() {
        // nginx passes header bytes >= 0x80 as they are: a client controls them.
        let in_header = plugin(json!({}));
        let sim = TestRequest::get("/")
            .answer(
                "kong.request.get_header",
                Some(Value::Bytes(vec![0xff, 0xfe])),
            )
            .run(&in_header, Phase::Access);
        assert_rejected(&sim, "Invalid authentication credentials");
        // A query value Kong hands over as something other than text.
        let in_query = plugin(json!({"key_in_header": false, "key_in_query": true}));
        let sim = TestRequest::get("/")
            .answer(
                "kong.request.get_query_arg",
                Some(Value::Array(vec![Value::Bool(true)])),
            )
            .run(&in_query, Phase::Access);
        assert_rejected(&sim, "Invalid authentication credentials");
    }

    #[test]
    fn a_good_key_authenticates_its_consumer() {
        let plugin = plugin(json!({}));
        let sim = TestRequest::get("/")
            .header("apikey", "alice-key")
            .run(&plugin, Phase::Access);
        assert!(sim.exit.is_none());
        let (consumer, credential) = sim.authenticated.clone().expect("authenticated");
        let consumer = consumer.unwrap();
        assert_eq!(consumer.get("id").and_then(Value::as_str), Some(ALICE));
        assert_eq!(
            consumer.get("username").and_then(Value::as_str),
            Some("alice")
        );
        let credential = credential.unwrap();
        assert_eq!(credential.get("id").and_then(Value::as_str), Some("cred-a"));
        assert_eq!(
            credential
                .get("consumer")
                .and_then(|c| c.get("id"))
                .and_then(Value::as_str),
            Some(ALICE)
        );
        let up = &sim.upstream_request;
        assert_eq!(up.header("x-consumer-id"), Some(ALICE));
        assert_eq!(up.header("x-consumer-username"), Some("alice"));
        assert_eq!(up.header("x-credential-identifier"), Some("cred-a"));
        // Without hide_credentials the upstream sees the key.
        assert_eq!(up.header("apikey"), Some("alice-key"));
    }

    #[test]
    fn a_consumer_without_username_cannot_be_impersonated_by_a_header() {
        let plugin = plugin(json!({}));
        let sim = TestRequest::get("/")
            .header("apikey", "bob-key")
            .header("x-consumer-username", "alice")
            .run(&plugin, Phase::Access);
        let up = &sim.upstream_request;
        assert_eq!(up.header("x-consumer-id"), Some(BOB));
        assert_eq!(up.header("x-consumer-username"), None);
        // The credential id defaults to the consumer id.
        assert_eq!(up.header("x-credential-identifier"), Some(BOB));
    }

    #[test]
    fn hide_credentials_removes_the_key_header() {
        let plugin = plugin(json!({"hide_credentials": true}));
        let sim = TestRequest::get("/")
            .header("apikey", "alice-key")
            .run(&plugin, Phase::Access);
        assert_eq!(sim.upstream_request.header("apikey"), None);
        assert_eq!(sim.calls[1].method, "kong.service.request.clear_header");
        assert_eq!(sim.calls[1].args, [Value::from("apikey")]);
        assert!(sim.authenticated.is_some());
    }

    #[test]
    fn keys_in_the_query_are_read_only_when_enabled() {
        let request = || TestRequest::get("/items?x-key=bob-key&page=2");
        let off = plugin(json!({"key_names": ["x-key"]}));
        assert_rejected(
            &request().run(&off, Phase::Access),
            "No API key found in request",
        );

        let on = plugin(json!({
            "key_names": ["x-key"], "key_in_query": true, "hide_credentials": true,
        }));
        let sim = request().run(&on, Phase::Access);
        assert!(sim.exit.is_none());
        assert_eq!(sim.upstream_request.raw_query, "page=2");
        assert_eq!(sim.upstream_request.header("x-consumer-id"), Some(BOB));
        assert_eq!(
            &sim.methods()[..3],
            [
                "kong.request.get_header",
                "kong.request.get_query_arg",
                "kong.service.request.clear_query_arg"
            ]
        );
    }

    #[test]
    fn key_names_are_tried_in_order_and_a_query_flag_is_no_key() {
        let plugin = plugin(json!({
            "key_names": ["apikey", "x-api-key"], "key_in_query": true,
        }));
        let sim = TestRequest::get("/?apikey")
            .header("x-api-key", "bob-key")
            .run(&plugin, Phase::Access);
        assert_eq!(sim.upstream_request.header("x-consumer-id"), Some(BOB));
        assert_eq!(
            &sim.methods()[..3],
            [
                "kong.request.get_header",
                "kong.request.get_query_arg",
                "kong.request.get_header"
            ]
        );
    }

    #[test]
    fn the_realm_is_configurable() {
        let plugin = plugin(json!({"realm": "payments"}));
        let sim = TestRequest::get("/").run(&plugin, Phase::Access);
        assert_eq!(
            sim.exit.as_ref().unwrap().headers.get("WWW-Authenticate"),
            Some("Key realm=\"payments\"")
        );
    }

    #[test]
    fn comparing_keys_needs_every_byte_equal() {
        assert!(same_key(b"abc", b"abc"));
        assert!(!same_key(b"abc", b"abd"));
        assert!(!same_key(b"abc", b"abcd"));
        assert!(same_key(b"", b""));
    }

    #[test]
    fn ambiguous_or_useless_configs_are_refused() {
        for (config, reason) in [
            (
                json!({"credentials": [
                    {"key": "k", "consumer": {"id": ALICE}},
                    {"key": "k", "consumer": {"id": BOB}},
                ]}),
                "listed twice",
            ),
            (
                json!({"key_in_header": false, "credentials": []}),
                "both off",
            ),
            (json!({"key_names": [], "credentials": []}), "key_names"),
            (json!({"key_names": ["apikey"]}), "credentials"),
        ] {
            let err = instance::<KeyAuth>(config).err().expect("refused");
            assert!(err.to_string().contains(reason), "{err}");
        }
    }

    #[test]
    fn the_schema_has_kongs_defaults_and_requirements() {
        let text = KeyAuth::config_schema().unwrap().to_string();
        for expected in [
            r#""key_names":{"type":"array","elements":{"type":"string"},"len_min":1,"default":["apikey"]"#,
            r#""key_in_query":{"type":"boolean","default":false"#,
            r#""credentials":{"type":"array","elements":{"type":"record""#,
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
    }
}
