//! `kong.nginx`: nginx variables, `ngx.ctx` and the subsystem.
//!
//! ```
//! # use {kong_rust_pdk::prelude::*, kong_rust_pdk_testkit::TestRequest};
//! async fn access(kong: &Kong) -> PdkResult<()> {
//!     let id = kong.nginx().get_var("request_id").await?.unwrap_or_default();
//!     kong.nginx().set_ctx("rust_request_id", id.as_str()).await?;
//!     let started = kong.nginx().req_start_time().await?;
//!     kong.log().debug(&format!("{id} started at {started}")).await
//! }
//!
//! let sim = TestRequest::get("/").nginx_var("request_id", "r-1")
//!     .run_handler(Phase::Access, |k| Box::pin(access(k)));
//! assert_eq!(sim.nginx_ctx["rust_request_id"], Value::from("r-1"));
//! assert!(sim.logged("debug", "r-1 started at"));
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{Kong, NO_ARGS};
use crate::{
    error::{PdkError, PdkResult},
    value::Value,
};

/// `kong.nginx`, from [`Kong::nginx`].
pub struct Nginx<'k> {
    pub(crate) kong: &'k Kong,
}

/// `kong.nginx.get_statistics()`: nginx connection and request counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NginxStatistics {
    /// Active client connections.
    pub connections_active: Option<i64>,
    /// Connections reading a request.
    pub connections_reading: Option<i64>,
    /// Connections writing a response.
    pub connections_writing: Option<i64>,
    /// Idle keepalive connections.
    pub connections_waiting: Option<i64>,
    /// Connections accepted.
    pub connections_accepted: Option<i64>,
    /// Connections handled.
    pub connections_handled: Option<i64>,
    /// Requests served.
    pub total_requests: Option<i64>,
    /// Fields not named above.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Nginx<'_> {
    /// `kong.nginx.get_var(name)`: `ngx.var[name]`, `None` if unset.
    /// Phases: all (not in the log timer, which has no request).
    pub async fn get_var(&self, name: &str) -> PdkResult<Option<String>> {
        self.kong.call("kong.nginx.get_var", &(name,)).await
    }

    /// `kong.nginx.get_tls1_version_str()`: `TLSv1.2`, `TLSv1.3`..., `None` without TLS.
    /// Phases: certificate, rewrite, access, response, preread, log.
    pub async fn get_tls1_version_str(&self) -> PdkResult<Option<String>> {
        self.kong
            .call("kong.nginx.get_tls1_version_str", &NO_ARGS)
            .await
    }

    /// `kong.nginx.get_ctx(key)`: `ngx.ctx[key]`, `None` if unset.
    /// Phases: all (in `log`, a copy saved for the timer).
    pub async fn get_ctx(&self, key: &str) -> PdkResult<Option<Value>> {
        self.kong.call("kong.nginx.get_ctx", &(key,)).await
    }

    /// [`get_ctx`](Self::get_ctx), decoded into `T` (a string, number, struct...).
    pub async fn get_ctx_as<T: DeserializeOwned>(&self, key: &str) -> PdkResult<Option<T>> {
        let Some(value) = self.get_ctx(key).await? else {
            return Ok(None);
        };
        value.decode().map(Some).map_err(|reason| PdkError::Decode {
            method: "kong.nginx.get_ctx".into(),
            reason: format!("{key}: {reason}"),
        })
    }

    /// `kong.nginx.set_ctx(key, value)`: sets `ngx.ctx[key]`.
    /// Phases: all (in `log`, only the timer's copy changes).
    pub async fn set_ctx(&self, key: &str, value: impl Into<Value>) -> PdkResult<()> {
        self.kong
            .call_unit("kong.nginx.set_ctx", &(key, value.into()))
            .await
    }

    /// `kong.nginx.req_start_time()`: when the request started, unix seconds with a
    /// fraction. All phases (in `log`, saved for the timer).
    pub async fn req_start_time(&self) -> PdkResult<f64> {
        self.kong.call("kong.nginx.req_start_time", &NO_ARGS).await
    }

    /// `kong.nginx.get_subsystem()`: `http` or `stream`. All phases.
    pub async fn get_subsystem(&self) -> PdkResult<String> {
        self.kong.call("kong.nginx.get_subsystem", &NO_ARGS).await
    }

    /// `kong.nginx.get_statistics()`: nginx connection and request counters. All phases.
    pub async fn get_statistics(&self) -> PdkResult<NginxStatistics> {
        self.kong.call("kong.nginx.get_statistics", &NO_ARGS).await
    }
}
