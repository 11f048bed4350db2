//! `rust-hello`: the Rust twin of Kong's go-hello / py-hello / js-hello test plugins.
//!
//! In the `access` phase it reads the request's `host` header and sets two response headers:
//! `x-hello-from-rust: Rust says <message> to <host>` and `x-rust-pid: <daemon pid>`.
//! Three PDK calls per request.

use kong_rust_pdk::prelude::*;
use schemars::JsonSchema;
use serde::Deserialize;

/// The plugin configuration (`config` of the plugin entity in Kong).
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Config {
    /// Who to greet with; `hello` when unset.
    #[serde(default)]
    pub message: Option<String>,
}

/// One instance per distinct configuration.
pub struct RustHello {
    message: String,
    pid: String,
}

#[kong_rust_pdk::plugin]
impl Plugin for RustHello {
    type Config = Config;
    const PRIORITY: i64 = 1000;

    fn new(config: Config) -> Result<Self, ConfigError> {
        Ok(RustHello {
            message: config.message.unwrap_or_else(|| "hello".to_owned()),
            pid: std::process::id().to_string(),
        })
    }

    async fn access(&self, kong: &Kong) -> PdkResult<()> {
        let host = kong.request().get_header("host").await?.unwrap_or_default();
        let greeting = format!("Rust says {} to {host}", self.message);
        kong.response()
            .set_header("x-hello-from-rust", &greeting)
            .await?;
        kong.response().set_header("x-rust-pid", &self.pid).await
    }
}
