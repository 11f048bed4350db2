//! A plugin for the end-to-end tests: its `mode` config picks what the access handler does.

use std::sync::atomic::{AtomicU64, Ordering};

use kong_rust_pdk::prelude::*;
use schemars::JsonSchema;
use serde::Deserialize;

/// What the handler does.
#[derive(Debug, Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq)]
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

/// Probe configuration. Unknown keys are refused, so the tests notice if Kong's
/// bookkeeping keys reach the plugin.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What the access handler does.
    pub mode: Mode,
    /// Panic in the constructor.
    #[serde(default)]
    pub panic_in_new: bool,
}

/// Counts constructor runs, so the tests can see when instances are shared.
static CONSTRUCTED: AtomicU64 = AtomicU64::new(0);

/// The probe plugin.
pub struct Probe {
    mode: Mode,
    /// Which construction this is (1, 2, ...).
    serial: u64,
}

#[kong_rust_pdk::plugin]
impl Plugin for Probe {
    type Config = Config;
    const PRIORITY: i64 = 10;

    fn new(config: Config) -> Result<Self, ConfigError> {
        if config.panic_in_new {
            panic!("probe constructor panic");
        }
        Ok(Probe {
            mode: config.mode,
            serial: CONSTRUCTED.fetch_add(1, Ordering::SeqCst) + 1,
        })
    }

    async fn access(&self, kong: &Kong) -> PdkResult<()> {
        let probe = kong.request().get_header("x-probe").await?;
        match self.mode {
            Mode::Echo => {
                kong.response()
                    .set_header("x-echo", probe.as_deref().unwrap_or("(none)"))
                    .await?;
                let instance = kong.instance();
                let described = format!(
                    "serial={} id={} plugin_id={} route_id={} seq={}",
                    self.serial,
                    instance.id,
                    instance.plugin_id.as_deref().unwrap_or("-"),
                    instance.route_id.as_deref().unwrap_or("-"),
                    instance.seq.map_or("-".to_owned(), |s| s.to_string()),
                );
                kong.response().set_header("x-instance", &described).await
            }
            Mode::Exit => kong.response().exit(403, Some("denied"), None).await,
            Mode::Panic => panic!("probe handler panic"),
            Mode::Fail => Err(PdkError::plugin("probe failure")),
        }
    }
}
