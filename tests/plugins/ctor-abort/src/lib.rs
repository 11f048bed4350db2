//! A plugin whose library aborts the process that loads it, from a load-time constructor
//! (what a C++ static initializer, a `#[ctor]` or a bad linker script can do): the daemon
//! must refuse it without loading it itself.
//!
//! Only loading the `.so` runs the constructor: a crate that depends on this one without
//! naming it (the e2e tests) does not link it.

use kong_rust_pdk::prelude::*;
use schemars::JsonSchema;
use serde::Deserialize;

/// No settings.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Config {}

/// Never gets to run.
pub struct CtorAbort;

#[kong_rust_pdk::plugin]
impl Plugin for CtorAbort {
    type Config = Config;
    const PRIORITY: i64 = 1;

    fn new(_config: Config) -> Result<Self, ConfigError> {
        Ok(CtorAbort)
    }

    async fn access(&self, _kong: &Kong) -> PdkResult<()> {
        Ok(())
    }
}

extern "C" fn abort_on_load() {
    std::process::abort();
}

/// Run by the dynamic loader when the library is loaded.
#[used]
#[unsafe(link_section = ".init_array")]
static ABORT_ON_LOAD: extern "C" fn() = abort_on_load;
