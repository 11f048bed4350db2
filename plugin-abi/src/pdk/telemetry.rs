//! `kong.telemetry`: structured log entries for Kong's OpenTelemetry plugin (Kong 3.8+).
//!
//! ```
//! # use {kong_rust_pdk::prelude::*, kong_rust_pdk_testkit::TestRequest};
//! async fn access(kong: &Kong) -> PdkResult<()> {
//!     let attributes = Value::map([("user", Value::from("alice"))]);
//!     let recorded = kong
//!         .telemetry()
//!         .log("my-plugin", "decision", Some("allowed"), Some(&attributes))
//!         .await?;
//!     if !recorded {
//!         kong.log().debug("OpenTelemetry logs are off").await?;
//!     }
//!     Ok(())
//! }
//!
//! let sim = TestRequest::get("/").run_handler(Phase::Access, |k| Box::pin(access(k)));
//! assert_eq!(sim.telemetry_logs.len(), 1);
//! ```

use serde::Serialize;

use super::{Kong, args};
use crate::{error::PdkResult, value::Value};

/// `kong.telemetry`, from [`Kong::telemetry`].
pub struct Telemetry<'k> {
    pub(crate) kong: &'k Kong,
}

/// What Kong reads of the `plugin_config` argument: the instance's identity.
#[derive(Serialize)]
struct PluginConfig<'a> {
    #[serde(rename = "__plugin_id", skip_serializing_if = "Option::is_none")]
    plugin_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plugin_instance_name: Option<&'a str>,
}

impl Telemetry<'_> {
    /// `kong.telemetry.log(plugin_name, plugin_config, message_type, message, attributes)`:
    /// records a log entry that Kong's OpenTelemetry plugin reports, tagged with this
    /// plugin instance (its id and instance name stand in for `plugin_config`). Returns
    /// whether Kong recorded it: `false` when the OpenTelemetry plugin does not report
    /// logs. A `message` of `None` before `attributes` goes as `""`, which Kong logs the
    /// same (a nil would end Lua's argument list). Kong 3.8+; all phases.
    pub async fn log(
        &self,
        plugin_name: &str,
        message_type: &str,
        message: Option<&str>,
        attributes: Option<&Value>,
    ) -> PdkResult<bool> {
        let instance = self.kong.instance();
        let config = Value::encode(&PluginConfig {
            plugin_id: instance.plugin_id.as_deref(),
            plugin_instance_name: instance.instance_name.as_deref(),
        })
        .unwrap_or_default();
        let message = match (message, attributes) {
            (None, Some(_)) => Value::from(""),
            (given, _) => Value::from(given),
        };
        let recorded: Option<bool> = self
            .kong
            .call(
                "kong.telemetry.log",
                &args([
                    Value::from(plugin_name),
                    config,
                    Value::from(message_type),
                    message,
                    attributes.cloned().unwrap_or_default(),
                ]),
            )
            .await?;
        Ok(recorded.unwrap_or(false))
    }
}
