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
        // Any bytes a client sends are fine to greet: read them raw, show them lossily.
        let host = kong.request().get_header_bytes("host").await?;
        let host = host
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let greeting = format!("Rust says {} to {host}", self.message);
        kong.response()
            .set_header("x-hello-from-rust", &greeting)
            .await?;
        kong.response().set_header("x-rust-pid", &self.pid).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kong_rust_pdk_testkit::{Simulation, TestRequest, instance};
    use serde_json::json;

    #[test]
    fn greets_the_host_with_the_configured_message() {
        let plugin = instance::<RustHello>(json!({"message": "Kong!"})).unwrap();
        let sim = TestRequest::get("/")
            .header("Host", "example.com")
            .run(&plugin, Phase::Access);
        assert_eq!(
            sim.response.header("x-hello-from-rust"),
            Some("Rust says Kong! to example.com")
        );
        let pid = std::process::id().to_string();
        assert_eq!(sim.response.header("x-rust-pid"), Some(pid.as_str()));
        assert_eq!(
            sim.methods(),
            [
                "kong.request.get_header",
                "kong.response.set_header",
                "kong.response.set_header"
            ]
        );
        assert!(sim.exit.is_none());
    }

    #[test]
    fn says_hello_to_nobody_without_a_message_or_host() {
        let plugin = instance::<RustHello>(json!({"message": null})).unwrap();
        let sim = TestRequest::get("/").run(&plugin, Phase::Access);
        assert_eq!(
            sim.response.header("x-hello-from-rust"),
            Some("Rust says hello to ")
        );
    }

    #[test]
    fn implements_only_access() {
        assert_eq!(RustHello::PHASES, [Phase::Access]);
        let plugin = instance::<RustHello>(json!({})).unwrap();
        let mut sim = Simulation::new(TestRequest::get("/"));
        let outcome = sim.run(&plugin, Phase::Log);
        assert!(
            outcome.result.unwrap_err().contains("not implemented"),
            "the log phase is not implemented"
        );
    }

    #[test]
    fn a_config_of_the_wrong_type_is_refused_with_the_field() {
        let err = instance::<RustHello>(json!({"message": 42}))
            .err()
            .expect("a number is not a message");
        assert!(err.to_string().contains("message"), "{err}");
    }
}
