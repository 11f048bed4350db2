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
//!     kong.log().notice(format!("served {status}, seen={seen}")).await
//! }
//!
//! let mut sim = Simulation::new(TestRequest::get("/"));
//! sim.run_handler(Phase::Access, |k| Box::pin(access(k))).result.unwrap();
//! sim.run_handler(Phase::Log, |k| Box::pin(log(k))).result.unwrap();
//! assert!(sim.logged("notice", "served 200, seen=true"));
//! ```

use serde::{Serialize, de::DeserializeOwned};

use super::{Kong, NO_ARGS, args};
use crate::{
    error::{PdkError, PdkResult},
    value::Value,
};

/// `kong.log`, from [`Kong::log`]. Every level works in every phase.
///
/// Lines are tagged with a plugin namespace (`[kong] ... [<plugin>]`), but not always this
/// plugin's: Kong's bridge resolves `kong.log.<level>` once per nginx worker and caches the
/// function, and `kong.log` resolves to the namespaced logger of the plugin running at
/// that moment. So every line an external plugin logs through a worker carries the
/// namespace of the first external plugin that logged that level in that worker. Put the
/// plugin's name in the message when several external plugins log.
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
        pub async fn $name(&self, message: impl AsRef<str>) -> PdkResult<()> {
            self.kong.call_unit($method, &(message.as_ref(),)).await
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

    /// `kong.log(message)`: Kong's call form of `kong.log`, a line at `notice` level.
    /// All phases.
    pub async fn call(&self, message: impl AsRef<str>) -> PdkResult<()> {
        self.kong.call_unit("kong.log", &(message.as_ref(),)).await
    }

    /// `kong.log.trace(message)`: a `debug` line when Kong runs with `KONG_IS_TESTING=1`,
    /// nothing otherwise. Only Kong's development branch (3.10-dev) has it. All phases.
    pub async fn trace(&self, message: impl AsRef<str>) -> PdkResult<()> {
        self.kong
            .call_unit("kong.log.trace", &(message.as_ref(),))
            .await
    }

    /// `kong.log.inspect(value)`: a `notice` line with `value` pretty-printed (Lua's
    /// `inspect`), while inspection is on (Kong's default). All phases.
    pub async fn inspect(&self, value: impl Into<Value>) -> PdkResult<()> {
        self.kong
            .call_unit("kong.log.inspect", &(value.into(),))
            .await
    }

    /// `kong.log.inspect.on()`: turns `inspect` lines on for the namespace. All phases.
    pub async fn inspect_on(&self) -> PdkResult<()> {
        self.kong.call_unit("kong.log.inspect.on", &NO_ARGS).await
    }

    /// `kong.log.inspect.off()`: turns `inspect` lines off for the namespace. All phases.
    pub async fn inspect_off(&self) -> PdkResult<()> {
        self.kong.call_unit("kong.log.inspect.off", &NO_ARGS).await
    }

    /// `kong.log.set_format(format)`: the line format of the namespace's logger
    /// (`%namespace`, `%file_src`, `%line_src`, `%func_name`, `%message`); `None` restores
    /// Kong's default. Kong's bridge caches the level functions it already resolved in a
    /// worker, so the new format reaches only the levels not yet used there. All phases.
    pub async fn set_format(&self, format: Option<&str>) -> PdkResult<()> {
        self.kong
            .call_unit("kong.log.set_format", &args([Value::from(format)]))
            .await
    }

    /// `kong.log.set_serialize_value(key, value, {mode})`: adds to what
    /// [`serialize`](Self::serialize) (and logging plugins) report; `key` may be dotted
    /// (`a.b.c`; `\.` escapes a dot). A nil `value` removes the key. Phases: rewrite,
    /// access, response, log (not certificate).
    ///
    /// Lua drops the arguments after a nil, so a nil `value` cannot carry a mode: with
    /// [`SerializeMode::Set`] (or `None`) it removes the key; with `Replace` on an undotted
    /// key it does the same (removing an absent key changes nothing); `Replace` on a
    /// dotted key and `Add` are refused with [`PdkError::Encode`] rather than sent without
    /// their mode.
    pub async fn set_serialize_value(
        &self,
        key: &str,
        value: impl Into<Value>,
        mode: Option<SerializeMode>,
    ) -> PdkResult<()> {
        const METHOD: &str = "kong.log.set_serialize_value";
        let value = value.into();
        match (value.is_nil(), mode) {
            (true, None | Some(SerializeMode::Set)) => self.kong.call_unit(METHOD, &(key,)).await,
            (true, Some(SerializeMode::Replace)) if !has_unescaped_dot(key) => {
                self.kong.call_unit(METHOD, &(key,)).await
            }
            (true, Some(mode)) => Err(PdkError::Encode {
                method: METHOD.into(),
                reason: format!(
                    "a nil value with mode {mode:?} cannot reach Kong: Lua drops every argument \
                     after a nil, so the mode would be lost (remove a key with SerializeMode::Set)"
                ),
            }),
            (false, None) => self.kong.call_unit(METHOD, &(key, value)).await,
            (false, Some(mode)) => {
                self.kong
                    .call_unit(METHOD, &(key, value, SerializeOptions { mode }))
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

/// Whether Kong splits `key` into a path (a `.` not escaped with `\`).
fn has_unescaped_dot(key: &str) -> bool {
    let bytes = key.as_bytes();
    (1..bytes.len()).any(|i| bytes[i] == b'.' && bytes[i - 1] != b'\\')
}
