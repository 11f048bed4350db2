//! The trait a plugin implements.

use std::future::Future;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use kong_rust_plugin_abi::{OnFailure, Phase};

use crate::{
    error::{ConfigError, PdkError, PdkResult},
    pdk::Kong,
    schema::SchemaError,
};

/// A Kong plugin written in Rust.
///
/// Implement the phases you need as `async fn`s and put `#[kong_rust_pdk::plugin]` on the
/// `impl` block: it records which phases you implemented (Kong is told only about those),
/// fills in `NAME` and `VERSION` from `Cargo.toml` unless you set them, and exports the
/// plugin from the library.
///
/// ```
/// use kong_rust_pdk::prelude::*;
/// use schemars::JsonSchema;
///
/// #[derive(serde::Deserialize, JsonSchema)]
/// pub struct Config {
///     /// Who to greet; `hello` when unset.
///     message: Option<String>,
/// }
///
/// pub struct Hello { message: String }
///
/// #[kong_rust_pdk::plugin]
/// impl Plugin for Hello {
///     type Config = Config;
///     const PRIORITY: i64 = 1000;
///
///     fn new(config: Config) -> Result<Self, ConfigError> {
///         Ok(Hello { message: config.message.unwrap_or_else(|| "hello".into()) })
///     }
///
///     async fn access(&self, kong: &Kong) -> PdkResult<()> {
///         kong.response().set_header("x-hello", &self.message).await
///     }
/// }
/// ```
///
/// One instance is built per distinct configuration and shared by every request that uses
/// it, concurrently: keep per-request state in the handler, not in `self`.
pub trait Plugin: Sized + Send + Sync + 'static {
    /// The plugin name, as listed in kong.conf's `plugins`. Defaults to the package name.
    const NAME: &'static str;
    /// The plugin version (`x.y.z`). Defaults to the package version.
    const VERSION: &'static str;
    /// Kong runs the plugins of a phase from the highest priority down.
    const PRIORITY: i64;
    /// The phases this plugin implements; filled in by `#[kong_rust_pdk::plugin]`.
    const PHASES: &'static [Phase];

    /// What happens to the request when a handler of this plugin fails: it returns an
    /// error, panics, or gets an answer from Kong it cannot decode; also when the daemon
    /// cannot run it (overloaded, restarting).
    ///
    /// The default, [`OnFailure::FailClosed`], ends the request with a 500 (503 when the
    /// daemon is overloaded). Keep it for any plugin that decides whether a request may
    /// pass (authentication, authorization, rate limiting, validation): Kong itself only
    /// logs a pluginserver's error and proxies the request as if the plugin had not run, so
    /// a failing guard would otherwise let every request through.
    ///
    /// Set [`OnFailure::FailOpen`] for plugins whose work the request can do without (a log
    /// shipper, a decorating header, metrics): a failure is then logged and counted, and the
    /// request continues. `log` and `certificate` handlers never end a request either way.
    /// `kong-rust-pluginserver status` shows each plugin's policy.
    const ON_FAILURE: OnFailure = OnFailure::FailClosed;

    /// The plugin's configuration, decoded from the JSON Kong sends. Its `JsonSchema` is
    /// translated into the Kong schema Kong validates configurations with (see
    /// [`schema`](crate::schema) for the mapping and the attributes).
    type Config: DeserializeOwned + JsonSchema;

    /// The Kong schema of the `config` record: `{"type": "record", "fields": [...]}`.
    /// Derived from [`Config`](Plugin::Config); override only to hand-write it.
    fn config_schema() -> Result<serde_json::Value, SchemaError> {
        crate::schema::config_record::<Self::Config>()
    }

    /// Builds an instance for one configuration.
    fn new(config: Self::Config) -> Result<Self, ConfigError>;

    /// `certificate` phase: during the TLS handshake (global plugins only). No request
    /// exists yet: `kong.client`, `kong.client.tls`, `kong.log`, `kong.nginx` and the
    /// node/ctx functions work; `kong.request` and `kong.response` do not.
    fn certificate(&self, kong: &Kong) -> impl Future<Output = PdkResult<()>> + Send {
        not_implemented(kong)
    }

    /// `rewrite` phase: before routing (global plugins only): `kong.router` answers
    /// nothing yet; the request, the upstream request and `exit` are available.
    fn rewrite(&self, kong: &Kong) -> impl Future<Output = PdkResult<()>> + Send {
        not_implemented(kong)
    }

    /// `access` phase: after routing, before the request is proxied. Everything about the
    /// request, the route, the consumer and the upstream request is available;
    /// `kong.response.exit` ends the request here without proxying.
    fn access(&self, kong: &Kong) -> impl Future<Output = PdkResult<()>> + Send {
        not_implemented(kong)
    }

    /// `response` phase: after the whole upstream response was received, before it is
    /// sent: `kong.service.response.*` reads it, `kong.response.*` changes it.
    ///
    /// Implementing it makes Kong buffer every response this plugin applies to (no
    /// streaming, the whole body in memory): `#[kong_rust_pdk::plugin]` lists it only if
    /// you define it, so define it only when you need it.
    fn response(&self, kong: &Kong) -> impl Future<Output = PdkResult<()>> + Send {
        not_implemented(kong)
    }

    /// `preread` phase: stream (TCP/TLS) routes, before proxying. No HTTP request:
    /// `kong.client`, `kong.nginx`, `kong.service` TLS settings and `kong.response.exit`
    /// (which closes the connection) work.
    fn preread(&self, kong: &Kong) -> impl Future<Output = PdkResult<()>> + Send {
        not_implemented(kong)
    }

    /// `log` phase: after the response was sent, from saved request data.
    ///
    /// Kong runs it in a timer once the client has its response, answering from a
    /// snapshot: `kong.log.serialize`, `kong.ctx.shared`, `kong.nginx.get_ctx`, request and
    /// response headers, the response status and `kong.nginx.req_start_time` work, as do
    /// functions that only read the request context (`kong.router.get_route`,
    /// `kong.client.get_consumer`...). Functions that touch the live request
    /// (`kong.client.get_ip`, `kong.request.get_path`, `kong.nginx.get_var`) are expected
    /// to fail; use `kong.log().serialize()` instead. Nothing here changes the response.
    fn log(&self, kong: &Kong) -> impl Future<Output = PdkResult<()>> + Send {
        not_implemented(kong)
    }
}

fn not_implemented(kong: &Kong) -> impl Future<Output = PdkResult<()>> + Send + 'static {
    let phase = kong.phase();
    async move {
        Err(PdkError::plugin(format_args!(
            "the {phase} phase is not implemented by this plugin"
        )))
    }
}

/// Decodes a configuration and builds an instance, naming the offending field on failure.
pub fn construct<P: Plugin>(config_json: &str) -> Result<P, ConfigError> {
    let mut de = serde_json::Deserializer::from_str(config_json);
    let config: P::Config =
        serde_path_to_error::deserialize(&mut de).map_err(|e| ConfigError::Invalid {
            path: e.path().to_string(),
            reason: e.inner().to_string(),
        })?;
    P::new(config)
}

/// Translates `P`'s config schema and checks it against Kong's rules, as the daemon does
/// when it loads the plugin. `#[kong_rust_pdk::plugin]` runs it as a unit test of the
/// plugin crate, so `cargo test` reports a schema Kong would refuse (an enum default that
/// cannot be written, a bad attribute) with the translation's own message.
pub fn check_schema<P: Plugin>() -> Result<(), String> {
    let record = P::config_schema().map_err(|e| e.to_string())?;
    crate::schema::validate_record(&record).map_err(|e| format!("Kong would refuse the {e}"))
}
