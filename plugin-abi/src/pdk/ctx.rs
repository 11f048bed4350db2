//! `kong.ctx.shared`: values shared by the plugins of one request.
//!
//! Values are dynamic ([`Value`]); the typed helpers decode them for you.
//!
//! ```
//! # use {kong_rust_pdk::prelude::*, kong_rust_pdk_testkit::TestRequest};
//! async fn access(kong: &Kong) -> PdkResult<()> {
//!     let hits = kong.ctx().shared().get_as::<i64>("hits").await?.unwrap_or(0);
//!     kong.ctx().shared().set("hits", hits + 1).await?;
//!     let tenant = kong.ctx().shared().get("tenant").await?;
//!     let tenant = tenant.as_ref().and_then(Value::as_str).unwrap_or("none");
//!     kong.service().request().set_header("x-tenant", tenant).await
//! }
//!
//! let sim = TestRequest::get("/")
//!     .ctx_shared("tenant", "acme")
//!     .ctx_shared("hits", 2)
//!     .run_handler(Phase::Access, |k| Box::pin(access(k)));
//! assert_eq!(sim.ctx_shared["hits"], Value::Int(3));
//! assert_eq!(sim.upstream_request.header("x-tenant"), Some("acme"));
//! ```

use serde::de::DeserializeOwned;

use super::Kong;
use crate::{
    error::{PdkError, PdkResult},
    value::Value,
};

/// `kong.ctx`, from [`Kong::ctx`].
pub struct Ctx<'k> {
    pub(crate) kong: &'k Kong,
}

impl<'k> Ctx<'k> {
    /// `kong.ctx.shared`: the table every plugin of the request sees.
    pub fn shared(&self) -> CtxShared<'k> {
        CtxShared { kong: self.kong }
    }
}

/// `kong.ctx.shared`, from [`Ctx::shared`].
pub struct CtxShared<'k> {
    pub(crate) kong: &'k Kong,
}

impl CtxShared<'_> {
    /// `kong.ctx.shared.get(key)`: the value, `None` if unset.
    /// Phases: all (in `log`, the request's saved table).
    pub async fn get(&self, key: &str) -> PdkResult<Option<Value>> {
        self.kong.call("kong.ctx.shared.get", &(key,)).await
    }

    /// [`get`](Self::get), decoded into `T` (a string, number, struct...).
    pub async fn get_as<T: DeserializeOwned>(&self, key: &str) -> PdkResult<Option<T>> {
        let Some(value) = self.get(key).await? else {
            return Ok(None);
        };
        value.decode().map(Some).map_err(|reason| PdkError::Decode {
            method: "kong.ctx.shared.get".into(),
            reason: format!("{key}: {reason}"),
        })
    }

    /// `kong.ctx.shared.set(key, value)`. Phases: all (in `log`, the request's saved table).
    pub async fn set(&self, key: &str, value: impl Into<Value>) -> PdkResult<()> {
        self.kong
            .call_unit("kong.ctx.shared.set", &(key, value.into()))
            .await
    }
}
