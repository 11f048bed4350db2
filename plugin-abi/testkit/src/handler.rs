//! Runs a bare handler function, without a plugin type: for doc examples and for testing
//! helper functions a plugin's phases share.

use std::{future::Future, pin::Pin, sync::Arc};

use super::{Simulation, TestRequest};
use kong_rust_pdk::{ConfigError, Kong, PdkResult, Phase, Plugin};

/// A handler: `|kong| Box::pin(my_handler(kong))` for an `async fn my_handler(kong: &Kong)
/// -> PdkResult<()>`.
pub type HandlerFn =
    for<'k> fn(&'k Kong) -> Pin<Box<dyn Future<Output = PdkResult<()>> + Send + 'k>>;

/// A plugin whose every phase is one handler function.
struct FnPlugin(HandlerFn);

impl Plugin for FnPlugin {
    const NAME: &'static str = "testkit-handler";
    const VERSION: &'static str = "0.0.0";
    const PRIORITY: i64 = 0;
    const PHASES: &'static [Phase] = &Phase::ALL;
    type Config = ();

    fn config_schema() -> Result<serde_json::Value, kong_rust_pdk::schema::SchemaError> {
        Ok(serde_json::json!({"type": "record", "fields": []}))
    }

    fn new(_: Self::Config) -> Result<Self, ConfigError> {
        Err(ConfigError::rejected("built by the test kit only"))
    }

    fn certificate(&self, kong: &Kong) -> impl Future<Output = PdkResult<()>> + Send {
        (self.0)(kong)
    }
    fn rewrite(&self, kong: &Kong) -> impl Future<Output = PdkResult<()>> + Send {
        (self.0)(kong)
    }
    fn access(&self, kong: &Kong) -> impl Future<Output = PdkResult<()>> + Send {
        (self.0)(kong)
    }
    fn response(&self, kong: &Kong) -> impl Future<Output = PdkResult<()>> + Send {
        (self.0)(kong)
    }
    fn preread(&self, kong: &Kong) -> impl Future<Output = PdkResult<()>> + Send {
        (self.0)(kong)
    }
    fn log(&self, kong: &Kong) -> impl Future<Output = PdkResult<()>> + Send {
        (self.0)(kong)
    }
}

impl TestRequest {
    /// Runs `handler` as the `phase` handler on this request. Panics if it fails, like
    /// [`run`](TestRequest::run).
    ///
    /// ```
    /// use kong_rust_pdk::prelude::*;
    /// use kong_rust_pdk_testkit::TestRequest;
    ///
    /// async fn tag(kong: &Kong) -> PdkResult<()> {
    ///     kong.response().set_header("x-tag", "1").await
    /// }
    ///
    /// let sim = TestRequest::get("/").run_handler(Phase::Access, |kong| Box::pin(tag(kong)));
    /// assert_eq!(sim.response.header("x-tag"), Some("1"));
    /// ```
    pub fn run_handler(self, phase: Phase, handler: HandlerFn) -> Simulation {
        let mut sim = Simulation::new(self);
        let outcome = sim.run_handler(phase, handler);
        if let Err(reason) = outcome.result {
            panic!("the {phase} handler failed: {reason}");
        }
        sim
    }
}

impl Simulation {
    /// Runs `handler` as the `phase` handler and reports how it ended.
    pub fn run_handler(&mut self, phase: Phase, handler: HandlerFn) -> super::PhaseOutcome {
        self.run(&Arc::new(FnPlugin(handler)), phase)
    }
}
