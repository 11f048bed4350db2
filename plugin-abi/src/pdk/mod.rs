//! The Kong PDK, as seen from a Rust plugin.
//!
//! Every method is one round trip to Kong: the handler stops, the daemon passes the call to
//! Kong, and Kong's answer resumes it. Methods are named after Kong's own
//! (`kong.request.get_header` is `kong.request().get_header(..)`), so Kong's PDK reference
//! reads straight across.

mod log;
mod request;
mod response;

use std::{borrow::Cow, future::poll_fn, sync::Arc};

use serde::{Serialize, de::DeserializeOwned};

pub use log::Log;
pub use request::Request;
pub use response::Response;

use crate::{error::PdkResult, exchange::Exchange, ffi::Phase, instance::InstanceInfo};

/// Arguments of a call that takes none: an empty MessagePack array.
pub(crate) const NO_ARGS: [(); 0] = [];

/// The handle a phase handler uses to talk to Kong for the current request.
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

    /// `kong.request`: the client's request.
    pub fn request(&self) -> Request<'_> {
        Request { kong: self }
    }

    /// `kong.response`: the response Kong sends to the client.
    pub fn response(&self) -> Response<'_> {
        Response { kong: self }
    }

    /// `kong.log`: Kong's error log, in the plugin's namespace.
    pub fn log(&self) -> Log<'_> {
        Log { kong: self }
    }

    /// Calls any Kong PDK function by name, for functions this crate does not wrap.
    ///
    /// `args` must serialize to a MessagePack array (a tuple such as `("host",)`, or
    /// `[(); 0]` for none); the answer is decoded into `R` (use `Option<_>` where Kong may
    /// return nil).
    pub async fn call<R, A>(&self, method: impl Into<Cow<'static, str>>, args: &A) -> PdkResult<R>
    where
        R: DeserializeOwned,
        A: Serialize + ?Sized,
    {
        self.exchange.submit(method.into(), args)?;
        poll_fn(|_| self.exchange.poll_reply::<R>()).await
    }

    /// Calls a PDK function whose result is not used.
    pub(crate) async fn call_unit<A>(&self, method: &'static str, args: &A) -> PdkResult<()>
    where
        A: Serialize + ?Sized,
    {
        self.call::<serde::de::IgnoredAny, A>(method, args)
            .await
            .map(|_| ())
    }
}
