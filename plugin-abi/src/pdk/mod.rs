//! The Kong PDK, as seen from a Rust plugin: one type per group of Kong's PDK.
//!
//! Every method is one round trip to Kong: the handler stops, the daemon passes the call to
//! Kong, and Kong's answer resumes it. Methods are named after Kong's own
//! (`kong.request.get_header` is `kong.request().get_header(..)`), so Kong's PDK reference
//! reads straight across. Each group is a small borrowing wrapper around [`Kong`] in its
//! own module; `docs/pdk.md` has the full table with result types and phases.
//!
//! Results follow what Kong really sends: `Option` wherever Kong may answer nil (the call
//! failed on Kong's side, or the value is absent); a non-`Option` result that Kong answers
//! with nil is a [`PdkError::NoValue`](crate::PdkError::NoValue) naming the function.
//!
//! Each group's example runs against the simulated Kong of `kong-rust-pdk-testkit`
//! (`TestRequest::run_handler`), so it doubles as a test.

mod client;
mod ctx;
mod ip;
mod log;
mod nginx;
mod node;
mod request;
mod response;
mod router;
mod service;
mod telemetry;
#[cfg(test)]
mod unpack_tests;
mod vault;

use std::{borrow::Cow, future::poll_fn, sync::Arc};

use serde::{Serialize, de::DeserializeOwned};

pub use client::{Client, ClientTls};
pub use ctx::{Ctx, CtxShared};
pub use ip::Ip;
pub use log::{Log, SerializeMode};
pub use nginx::{Nginx, NginxStatistics};
pub use node::{Cluster, Node, PluginEntity};
pub use request::{QueryArg, Request};
pub use response::Response;
pub use router::Router;
pub use service::{Service, ServiceRequest, ServiceResponse};
pub use telemetry::Telemetry;
pub use vault::{Vault, VaultReference};

use crate::{InstanceInfo, Phase, error::PdkResult, exchange::Exchange, value::Value};

/// Arguments of a call that takes none: an empty MessagePack array.
pub(crate) const NO_ARGS: [(); 0] = [];

/// The handle a phase handler uses to talk to Kong for the current request.
///
/// ```
/// # use {kong_rust_pdk::prelude::*, kong_rust_pdk_testkit::TestRequest};
/// async fn access(kong: &Kong) -> PdkResult<()> {
///     let host = kong.request().get_header("host").await?.unwrap_or_default();
///     kong.service().request().set_header("x-original-host", &host).await?;
///     kong.log().info(format!("proxying for {host}")).await
/// }
///
/// let sim = TestRequest::get("/").header("host", "example.com")
///     .run_handler(Phase::Access, |kong| Box::pin(access(kong)));
/// assert_eq!(sim.upstream_request.header("x-original-host"), Some("example.com"));
/// ```
pub struct Kong {
    exchange: Arc<Exchange>,
    instance: Arc<InstanceInfo>,
    phase: Phase,
}

impl Kong {
    pub(crate) fn new(exchange: Arc<Exchange>, instance: Arc<InstanceInfo>, phase: Phase) -> Kong {
        Kong {
            exchange,
            instance,
            phase,
        }
    }

    /// The phase this handler runs in.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The Kong plugin instance this event runs for: its id, plugin entity id, scoping ids.
    /// Known without a round trip to Kong.
    pub fn instance(&self) -> &InstanceInfo {
        &self.instance
    }

    /// `kong.client`: the downstream client (address, consumer, credential, TLS).
    pub fn client(&self) -> Client<'_> {
        Client { kong: self }
    }

    /// `kong.ctx`: per-request context shared between plugins.
    pub fn ctx(&self) -> Ctx<'_> {
        Ctx { kong: self }
    }

    /// `kong.ip`: trusted-address checks.
    pub fn ip(&self) -> Ip<'_> {
        Ip { kong: self }
    }

    /// `kong.log`: Kong's error log, in the plugin's namespace, and the serialized request.
    pub fn log(&self) -> Log<'_> {
        Log { kong: self }
    }

    /// `kong.nginx`: nginx variables, `ngx.ctx`, the subsystem.
    pub fn nginx(&self) -> Nginx<'_> {
        Nginx { kong: self }
    }

    /// `kong.node`: this Kong node.
    pub fn node(&self) -> Node<'_> {
        Node { kong: self }
    }

    /// `kong.cluster`: the Kong cluster.
    pub fn cluster(&self) -> Cluster<'_> {
        Cluster { kong: self }
    }

    /// `kong.plugin`: the running plugin entity.
    pub fn plugin(&self) -> PluginEntity<'_> {
        PluginEntity { kong: self }
    }

    /// `kong.request`: the client's request.
    pub fn request(&self) -> Request<'_> {
        Request { kong: self }
    }

    /// `kong.response`: the response Kong sends to the client.
    pub fn response(&self) -> Response<'_> {
        Response { kong: self }
    }

    /// `kong.router`: the matched route and service.
    pub fn router(&self) -> Router<'_> {
        Router { kong: self }
    }

    /// `kong.service`: the upstream service, and through it `kong.service.request` and
    /// `kong.service.response`.
    pub fn service(&self) -> Service<'_> {
        Service { kong: self }
    }

    /// `kong.telemetry`: log entries for Kong's OpenTelemetry plugin (Kong 3.8+).
    pub fn telemetry(&self) -> Telemetry<'_> {
        Telemetry { kong: self }
    }

    /// `kong.vault`: secret references.
    pub fn vault(&self) -> Vault<'_> {
        Vault { kong: self }
    }

    /// Calls any Kong PDK function by name, for functions this crate does not wrap.
    ///
    /// `args` must serialize to a MessagePack array (a tuple such as `("host",)`, or
    /// `[(); 0]` for none; structs inside are sent as maps); the answer is decoded into `R`
    /// (use `Option<_>` where Kong may return nil, [`Value`] when the shape is dynamic).
    pub async fn call<R, A>(&self, method: impl Into<Cow<'static, str>>, args: &A) -> PdkResult<R>
    where
        R: DeserializeOwned,
        A: Serialize + ?Sized,
    {
        self.exchange.submit(method.into(), args)?;
        poll_fn(|_| self.exchange.poll_reply::<R>()).await
    }

    /// Calls a PDK function whose result is not used (Kong answers nil).
    pub(crate) async fn call_unit<A>(&self, method: &'static str, args: &A) -> PdkResult<()>
    where
        A: Serialize + ?Sized,
    {
        self.call::<serde::de::IgnoredAny, A>(method, args)
            .await
            .map(|_| ())
    }

    /// Hands out a call Kong never answers (`kong.response.exit`/`error`). On success the
    /// returned future never completes: the driver finishes the event and drops the
    /// handler, so no code after it runs. It completes only with an encoding error, or
    /// with the daemon's refusal of the call (the protocol in use may not carry it).
    pub(crate) async fn call_ending<A>(
        &self,
        method: &'static str,
        args: &A,
    ) -> PdkResult<crate::Never>
    where
        A: Serialize + ?Sized,
    {
        self.exchange.submit(method.into(), args)?;
        // Kong never answers; only a refusal from the daemon arrives here.
        poll_fn(|_| self.exchange.poll_reply::<serde::de::IgnoredAny>()).await?;
        Err(crate::PdkError::Decode {
            method: method.into(),
            reason: "answered, but it ends the request and is never answered".into(),
        })
    }
}

/// Positional arguments with optional trailing ones: trailing `None`s are dropped, so Kong
/// sees the call as if they were omitted.
///
/// Kong calls `method(unpack(args))`, and LuaJIT's `#` ends the list at a border: a nil
/// before a value may cut every later argument (`[m, nil, x]` arrives as `m` alone). So a
/// wrapper never leaves a nil before a value: it sends the value Kong's function would use
/// for the missing argument instead (`tests` check every wrapper against LuaJIT's rule).
pub(crate) fn args(items: impl IntoIterator<Item = Value>) -> Vec<Value> {
    let mut items: Vec<Value> = items.into_iter().collect();
    while items.last().is_some_and(Value::is_nil) {
        items.pop();
    }
    items
}
