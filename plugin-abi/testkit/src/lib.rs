//! A simulated Kong for unit tests of kong-rust-pdk plugins.
//!
//! Describe a request with [`TestRequest`], build your plugin with [`instance`], and run
//! its phase handlers in-process with [`TestRequest::run`] or a [`Simulation`]. Every PDK
//! call is answered from the described request, the way Kong would answer it (same
//! shapes, same nils, the same Lua errors outside a call's phases, from the phase table of
//! `kong_rust_pdk::kong_versions` that `docs/pdk.md` is generated from; Kong's
//! development branch unless [`TestRequest::kong_version`] names a release), and everything the
//! plugin did is recorded: the client response, an exit, the upstream request, ctx
//! values, log lines and every call with its arguments. No daemon, no socket. Handlers
//! may await tokio futures (timers, sockets, clients built on tokio) as in the daemon:
//! the PDK provides the runtime.
//!
//! ```toml
//! [dev-dependencies]
//! kong-rust-pdk-testkit = "0.1"
//! ```
//!
//! ```
//! use kong_rust_pdk::prelude::*;
//! use kong_rust_pdk_testkit::{TestRequest, instance};
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! struct Config {}
//!
//! struct Deny;
//!
//! #[kong_rust_pdk::plugin]
//! impl Plugin for Deny {
//!     type Config = Config;
//!     const PRIORITY: i64 = 10;
//!     fn new(_: Config) -> Result<Self, ConfigError> { Ok(Deny) }
//!     async fn access(&self, kong: &Kong) -> PdkResult<()> {
//!         if kong.request().get_header("x-token").await?.is_none() {
//!             kong.response().exit(401, "token required").await?;
//!         }
//!         kong.service().request().set_header("x-checked", "1").await
//!     }
//! }
//!
//! let plugin = instance::<Deny>(serde_json::json!({})).unwrap();
//!
//! let denied = TestRequest::get("/").run(&plugin, Phase::Access);
//! assert_eq!(denied.response.status, 401);
//! assert_eq!(denied.exit.as_ref().unwrap().body_str(), Some("token required"));
//!
//! let allowed = TestRequest::get("/").header("x-token", "t").run(&plugin, Phase::Access);
//! assert!(allowed.exit.is_none());
//! assert_eq!(allowed.upstream_request.header("x-checked"), Some("1"));
//! ```
//!
//! The kit answers every function [`Kong`](kong_rust_pdk::Kong) wraps; unknown functions (through
//! [`Kong::call`](kong_rust_pdk::Kong::call)) are recorded and answered nil, as Kong answers a
//! function it cannot find. [`TestRequest::answer`] forces any answer, e.g. nil to test a
//! call failing on Kong's side.

mod answer;
mod block_on;
mod handler;
mod record;
mod request;
mod sim;

use std::sync::Arc;

pub use answer::{HOSTNAME, NODE_ID, PLUGIN_ID, START_TIME};
pub use handler::HandlerFn;
pub use record::{
    Call, ClientResponse, Exit, LogLine, PhaseOutcome, Recorded, TelemetryLog, UpstreamRequest,
};
pub use request::{TestRequest, UpstreamResponse};
pub use sim::Simulation;

use kong_rust_pdk::{ConfigError, Phase, Plugin};

/// Builds an instance from a configuration, as the daemon does for Kong's
/// `StartInstance` (the same decoding, the same errors).
pub fn instance<P: Plugin>(config: serde_json::Value) -> Result<Arc<P>, ConfigError> {
    // In the runtime's context, as the daemon constructs plugins.
    kong_rust_pdk::__private::runtime::Lease::process_wide()
        .enter(|| kong_rust_pdk::__private::construct::<P>(&config.to_string()))
        .map(Arc::new)
}

impl TestRequest {
    /// Runs one phase of `plugin` on this request. Panics if the handler fails (use a
    /// [`Simulation`] to test failures); returns the simulation to inspect.
    pub fn run<P: Plugin>(self, plugin: &Arc<P>, phase: Phase) -> Simulation {
        let mut sim = Simulation::new(self);
        let outcome = sim.run(plugin, phase);
        if let Err(reason) = outcome.result {
            panic!("the {phase} handler failed: {reason}");
        }
        sim
    }
}

#[cfg(test)]
mod tests;
