//! A plugin for the end-to-end tests: its `mode` config picks what the access handler does.

use kong_rust_pdk::prelude::*;
use serde::Deserialize;

/// What the handler does.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Reads `x-probe` and echoes it as response header `x-echo`, then returns.
    Echo,
    /// Ends the request with `kong.response.exit(403, "denied")`.
    Exit,
    /// Panics after one PDK call.
    Panic,
    /// Returns an error after one PDK call.
    Fail,
}

/// Probe configuration.
#[derive(Debug, Deserialize)]
pub struct Config {
    /// What the access handler does.
    pub mode: Mode,
    /// Panic in the constructor.
    #[serde(default)]
    pub panic_in_new: bool,
}

/// The probe plugin.
pub struct Probe {
    mode: Mode,
}

#[kong_rust_pdk::plugin]
impl Plugin for Probe {
    type Config = Config;
    const PRIORITY: i64 = 10;

    fn config_schema() -> serde_json::Value {
        serde_json::json!({
            "type": "record",
            "fields": [
                {"mode": {"type": "string", "required": true,
                          "one_of": ["echo", "exit", "panic", "fail"]}},
                {"panic_in_new": {"type": "boolean", "default": false}},
            ],
        })
    }

    fn new(config: Config) -> Result<Self, ConfigError> {
        if config.panic_in_new {
            panic!("probe constructor panic");
        }
        Ok(Probe { mode: config.mode })
    }

    async fn access(&self, kong: &Kong) -> PdkResult<()> {
        let probe = kong.request().get_header("x-probe").await?;
        match self.mode {
            Mode::Echo => {
                kong.response()
                    .set_header("x-echo", probe.as_deref().unwrap_or("(none)"))
                    .await
            }
            Mode::Exit => kong.response().exit(403, "denied").await,
            Mode::Panic => panic!("probe handler panic"),
            Mode::Fail => Err(PdkError::plugin("probe failure")),
        }
    }
}
