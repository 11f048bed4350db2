//! A plugin whose work the request can do without (it adds a header), so it declares
//! `OnFailure::FailOpen`: when it fails, the daemon lets the request continue.

use kong_rust_pdk::prelude::*;
use schemars::JsonSchema;
use serde::Deserialize;

/// What the access handler does.
#[derive(Debug, Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Sets `x-decorated: yes`.
    Decorate,
    /// Returns an error after one PDK call.
    Fail,
    /// Panics after one PDK call.
    Panic,
}

/// Configuration.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Config {
    /// What the handler does.
    pub mode: Mode,
}

/// The plugin.
pub struct Lenient {
    mode: Mode,
}

#[kong_rust_pdk::plugin]
impl Plugin for Lenient {
    type Config = Config;
    const PRIORITY: i64 = 5;
    const ON_FAILURE: OnFailure = OnFailure::FailOpen;

    fn new(config: Config) -> Result<Self, ConfigError> {
        Ok(Lenient { mode: config.mode })
    }

    async fn access(&self, kong: &Kong) -> PdkResult<()> {
        kong.response().set_header("x-decorated", "yes").await?;
        match self.mode {
            Mode::Decorate => Ok(()),
            Mode::Fail => Err(PdkError::plugin("decoration failed")),
            Mode::Panic => panic!("decoration panicked"),
        }
    }
}
