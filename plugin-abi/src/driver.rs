//! Runs one phase handler as a coroutine that stops at every PDK call.
//!
//! The daemon (through the FFI) and the test kit drive handlers the same way: deliver Kong's
//! answer, poll, and get back the next PDK call, the end of the handler, or `Pending` when the
//! handler waits on its own I/O. Panics are caught here, so they never unwind into the
//! daemon: a panicking handler fails its event and nothing else.

use std::{
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use crate::{
    InstanceInfo, Phase,
    error::PdkResult,
    exchange::Exchange,
    panics::{dispose_panic, take_panic_message},
    pdk::Kong,
    plugin::Plugin,
    runtime::Lease,
};

type HandlerFuture = Pin<Box<dyn Future<Output = PdkResult<()>> + Send>>;

/// What Kong sent back for the call in flight.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// Nothing new (first poll, or a wake-up).
    Resume,
    /// The call returned nil.
    Nil,
    /// The call returned this MessagePack value.
    Value(&'a [u8]),
}

/// What the handler did.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// It calls a PDK function.
    Call {
        /// Kong PDK function name.
        method: &'a str,
        /// MessagePack array of the positional arguments.
        args: &'a [u8],
    },
    /// It returned `Ok`.
    Done,
    /// It returned an error.
    Failed(String),
    /// It panicked; the panic was caught.
    Panicked(String),
    /// It waits on its own I/O; the waker passed to [`EventDriver::poll`] will be woken.
    Pending,
}

/// One running phase handler.
pub struct EventDriver {
    handler: Option<HandlerFuture>,
    exchange: Arc<Exchange>,
    method: std::borrow::Cow<'static, str>,
    args: Vec<u8>,
    /// The plugin library's runtime: the handler runs in its context.
    runtime: Lease,
}

impl EventDriver {
    /// Starts `phase` of `plugin` for the Kong instance `instance`; nothing runs until the
    /// first [`poll`](Self::poll), which runs in `runtime`'s context.
    pub fn start<P: Plugin>(
        plugin: Arc<P>,
        instance: Arc<InstanceInfo>,
        phase: Phase,
        runtime: Lease,
    ) -> EventDriver {
        let exchange = Arc::new(Exchange::default());
        let kong = Kong::new(exchange.clone(), instance, phase);
        let handler: HandlerFuture = Box::pin(async move {
            let kong = kong;
            match phase {
                Phase::Certificate => plugin.certificate(&kong).await,
                Phase::Rewrite => plugin.rewrite(&kong).await,
                Phase::Access => plugin.access(&kong).await,
                Phase::Response => plugin.response(&kong).await,
                Phase::Preread => plugin.preread(&kong).await,
                Phase::Log => plugin.log(&kong).await,
            }
        });
        EventDriver {
            handler: Some(handler),
            exchange,
            method: std::borrow::Cow::Borrowed(""),
            args: Vec::new(),
            runtime,
        }
    }

    /// Delivers `input` and runs the handler to its next stop.
    pub fn poll(&mut self, input: Input<'_>, waker: &Waker) -> Step<'_> {
        let Some(handler) = self.handler.as_mut() else {
            return Step::Failed("the handler has already finished".into());
        };
        match input {
            Input::Resume => {}
            Input::Nil => self.exchange.answer(None),
            Input::Value(bytes) => self.exchange.answer(Some(bytes)),
        }
        let mut cx = Context::from_waker(waker);
        let outcome = self
            .runtime
            .enter(|| catch_unwind(AssertUnwindSafe(|| handler.as_mut().poll(&mut cx))));
        match outcome {
            Ok(Poll::Pending) => match self.exchange.take_call(&mut self.args) {
                Some(call) => {
                    self.method = call.method;
                    Step::Call {
                        method: &self.method,
                        args: &self.args,
                    }
                }
                None => {
                    // Waiting on its own I/O: the runtime's driver must run to wake it.
                    self.runtime.waiting();
                    Step::Pending
                }
            },
            Ok(Poll::Ready(Ok(()))) => {
                self.finish();
                Step::Done
            }
            Ok(Poll::Ready(Err(err))) => {
                self.finish();
                Step::Failed(err.to_string())
            }
            Err(panic) => {
                self.finish();
                Step::Panicked(format!("panicked: {}", take_panic_message(panic)))
            }
        }
    }

    /// Whether the handler has returned (or panicked).
    pub fn is_finished(&self) -> bool {
        self.handler.is_none()
    }

    fn finish(&mut self) {
        if let Some(handler) = self.handler.take() {
            // A destructor may panic too; it must not unwind into the daemon either.
            // Inside the runtime's context: what the handler held may need it to let go.
            let runtime = &self.runtime;
            let dropped = catch_unwind(AssertUnwindSafe(move || runtime.enter(|| drop(handler))));
            if let Err(payload) = dropped {
                dispose_panic(payload);
            }
        }
    }
}

impl Drop for EventDriver {
    fn drop(&mut self) {
        self.finish();
    }
}
