//! A newer build of `rust-hello`: same name, version 0.2.0, another greeting.

use kong_rust_pdk::prelude::*;
use schemars::JsonSchema;
use serde::Deserialize;

/// Same configuration as rust-hello.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Config {
    /// Who to greet with; `hello` when unset.
    #[serde(default)]
    pub message: Option<String>,
}

/// The upgraded plugin.
pub struct HelloV2 {
    message: String,
}

#[kong_rust_pdk::plugin]
impl Plugin for HelloV2 {
    type Config = Config;
    const NAME: &'static str = "rust-hello";
    const PRIORITY: i64 = 1000;

    fn new(config: Config) -> Result<Self, ConfigError> {
        Ok(HelloV2 {
            message: config.message.unwrap_or_else(|| "hello".to_owned()),
        })
    }

    async fn access(&self, kong: &Kong) -> PdkResult<()> {
        kong.response()
            .set_header("x-hello-from-rust", &format!("v2 says {}", self.message))
            .await
    }
}
