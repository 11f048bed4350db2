//! `kong.log`: write to Kong's error log, and the serialized request of the log phase.
//!
//! ```
//! # use {kong_rust_pdk::prelude::*, kong_rust_pdk_testkit::{Simulation, TestRequest}};
//! async fn access(kong: &Kong) -> PdkResult<()> {
//!     kong.log().set_serialize_value("rust.seen", true, None).await
//! }
//!
//! async fn log(kong: &Kong) -> PdkResult<()> {
//!     let entry = kong.log().serialize().await?;
//!     let status = entry["response"]["status"].as_u64().unwrap_or(0);
//!     let seen = entry["rust"]["seen"].as_bool().unwrap_or(false);
//!     kong.log().notice(&format!("served {status}, seen={seen}")).await
//! }
//!
//! let mut sim = Simulation::new(TestRequest::get("/"));
//! sim.run_handler(Phase::Access, |k| Box::pin(access(k))).result.unwrap();
//! sim.run_handler(Phase::Log, |k| Box::pin(log(k))).result.unwrap();
//! assert!(sim.logged("notice", "served 200, seen=true"));
//! ```

use serde::{Serialize, de::DeserializeOwned};

use super::{Kong, NO_ARGS};
use crate::{
    error::{PdkError, PdkResult},
    value::Value,
};

/// `kong.log`, from [`Kong::log`]. Every level works in every phase; in `log` Kong first
/// switches the namespace to the plugin's name.
pub struct Log<'k> {
    pub(crate) kong: &'k Kong,
}

/// How [`Log::set_serialize_value`] treats an existing key (Kong's `options.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SerializeMode {
    /// Set the key, whether present or not (Kong's default).
    Set,
    /// Set the key only if absent.
    Add,
    /// Set the key only if present.
    Replace,
}

#[derive(Serialize)]
struct SerializeOptions {
    mode: SerializeMode,
}

macro_rules! levels {
    ($($(#[$doc:meta])* $name:ident => $method:literal),* $(,)?) => {$(
        $(#[$doc])*
        pub async fn $name(&self, message: &str) -> PdkResult<()> {
            self.kong.call_unit($method, &(message,)).await
        }
    )*};
}

impl Log<'_> {
    levels! {
        /// `kong.log.alert(message)`. All phases.
        alert => "kong.log.alert",
        /// `kong.log.crit(message)`. All phases.
        crit => "kong.log.crit",
        /// `kong.log.err(message)`. All phases.
        err => "kong.log.err",
        /// `kong.log.warn(message)`. All phases.
        warn => "kong.log.warn",
        /// `kong.log.notice(message)`. All phases.
        notice => "kong.log.notice",
        /// `kong.log.info(message)`. All phases.
        info => "kong.log.info",
        /// `kong.log.debug(message)`. All phases.
        debug => "kong.log.debug",
        /// `kong.log.emerg(message)`. All phases.
        emerg => "kong.log.emerg",
        /// `kong.log.deprecation(message)`: a deprecation warning. All phases.
        deprecation => "kong.log.deprecation",
    }

    /// `kong.log.set_serialize_value(key, value, {mode})`: adds to what
    /// [`serialize`](Self::serialize) (and logging plugins) report; `key` may be dotted
    /// (`a.b.c`). Phases: certificate, rewrite, access, response, log.
    pub async fn set_serialize_value(
        &self,
        key: &str,
        value: impl Into<Value>,
        mode: Option<SerializeMode>,
    ) -> PdkResult<()> {
        let value = value.into();
        match mode {
            None => {
                self.kong
                    .call_unit("kong.log.set_serialize_value", &(key, value))
                    .await
            }
            Some(mode) => {
                self.kong
                    .call_unit(
                        "kong.log.set_serialize_value",
                        &(key, value, SerializeOptions { mode }),
                    )
                    .await
            }
        }
    }

    /// `kong.log.serialize()`: the request summary logging plugins send (request,
    /// response, route, service, consumer, latencies...). Kong answers with JSON text;
    /// this parses it. Phase: log (answered from the data Kong saved for the log timer).
    pub async fn serialize(&self) -> PdkResult<serde_json::Value> {
        self.serialize_as().await
    }

    /// [`serialize`](Self::serialize), parsed into your own type.
    pub async fn serialize_as<T: DeserializeOwned>(&self) -> PdkResult<T> {
        const METHOD: &str = "kong.log.serialize";
        let text: String = self.kong.call(METHOD, &NO_ARGS).await?;
        serde_json::from_str(&text).map_err(|e| PdkError::Decode {
            method: METHOD.into(),
            reason: format!("not the expected JSON: {e}"),
        })
    }
}
