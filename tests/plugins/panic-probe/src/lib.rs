//! A plugin for the e2e tests of panic containment: its `mode` config picks how it panics.

use kong_rust_pdk::prelude::*;
use schemars::JsonSchema;
use serde::Deserialize;

/// How the plugin panics.
#[derive(Debug, Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Never panics: reads `x-probe` and returns.
    Calm,
    /// An ordinary `panic!` in the access handler.
    Plain,
    /// The access handler panics with a payload whose `Drop` panics.
    PayloadDropPanics,
    /// The access handler panics while a local whose `Drop` panics is alive: that second
    /// panic happens during unwinding, which Rust cannot recover from.
    PanicWhileUnwinding,
    /// The constructor panics with a payload whose `Drop` panics.
    PayloadDropPanicsInNew,
    /// The constructed plugin's destructor panics with a payload whose `Drop` panics (runs
    /// when its last instance is closed).
    DropPanics,
}

/// Configuration.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Config {
    /// How to panic.
    pub mode: Mode,
}

/// Panics when dropped.
pub struct Bomb(&'static str);

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("{}", self.0);
    }
}

/// The plugin.
pub struct PanicProbe {
    mode: Mode,
}

impl Drop for PanicProbe {
    fn drop(&mut self) {
        if self.mode == Mode::DropPanics {
            std::panic::panic_any(Bomb("the payload of a destructor panic panicked on drop"));
        }
    }
}

#[kong_rust_pdk::plugin]
impl Plugin for PanicProbe {
    type Config = Config;
    const PRIORITY: i64 = 10;

    fn new(config: Config) -> Result<Self, ConfigError> {
        if config.mode == Mode::PayloadDropPanicsInNew {
            std::panic::panic_any(Bomb("the payload of a constructor panic panicked on drop"));
        }
        Ok(PanicProbe { mode: config.mode })
    }

    async fn access(&self, kong: &Kong) -> PdkResult<()> {
        kong.request().get_header("x-probe").await?;
        match self.mode {
            Mode::Plain => panic!("panic-probe plain panic"),
            Mode::PayloadDropPanics => {
                std::panic::panic_any(Bomb("the payload of a handler panic panicked on drop"))
            }
            Mode::PanicWhileUnwinding => {
                let _armed = Bomb("a destructor panicked while unwinding");
                panic!("panic-probe first panic");
            }
            _ => Ok(()),
        }
    }
}
