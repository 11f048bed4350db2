//! A plugin for the process isolation tests: its `fault` config picks what kills the
//! process serving it, and when.

use std::{
    future::Future,
    hint::black_box,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
    time::Duration,
};

use kong_rust_pdk::prelude::*;
use schemars::JsonSchema;
use serde::Deserialize;

/// What goes wrong.
#[derive(Debug, Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Nothing: sets `x-fault: none` and returns.
    None,
    /// `std::process::exit(3)`.
    Exit,
    /// `std::process::abort()`.
    Abort,
    /// A write through a null pointer (SIGSEGV).
    NullWrite,
    /// Unbounded recursion (stack overflow).
    StackOverflow,
    /// A 20 GiB allocation (fails under a memory limit: the allocation error aborts).
    Oom,
    /// A panic while unwinding from a panic (abort).
    DoublePanic,
    /// A panic whose payload panics when dropped.
    PanicDropPanics,
    /// A thread that exits the process 30 ms later; the handler itself returns.
    ThreadExit,
    /// The handler never finishes (it awaits something that never comes).
    Hang,
    /// The handler blocks its thread for `delay_ms`.
    Block,
}

/// Fault configuration.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What goes wrong.
    pub fault: Fault,
    /// Make one PDK call first, so the fault happens during a Step (else during HandleEvent).
    #[serde(default)]
    pub at_step: bool,
    /// Wait this long (asynchronously) before the fault, keeping the event in flight.
    #[serde(default)]
    pub delay_ms: u64,
    /// The fault happens in the constructor instead.
    #[serde(default)]
    pub in_constructor: bool,
    /// Tells otherwise identical configurations apart.
    #[serde(default)]
    pub nonce: u64,
}

/// The fault plugin.
pub struct FaultProbe {
    fault: Fault,
    at_step: bool,
    delay: Duration,
}

#[kong_rust_pdk::plugin]
impl Plugin for FaultProbe {
    type Config = Config;
    const PRIORITY: i64 = 5;

    fn new(config: Config) -> Result<Self, ConfigError> {
        if config.in_constructor {
            trigger(config.fault, Duration::from_millis(config.delay_ms));
        }
        Ok(FaultProbe {
            fault: config.fault,
            at_step: config.at_step,
            delay: Duration::from_millis(config.delay_ms),
        })
    }

    async fn access(&self, kong: &Kong) -> PdkResult<()> {
        if self.at_step {
            kong.request().get_header("x-probe").await?;
        }
        if !self.delay.is_zero() && self.fault != Fault::Block {
            Delay::new(self.delay).await;
        }
        if self.fault == Fault::Hang {
            std::future::pending::<()>().await;
        }
        trigger(self.fault, self.delay);
        kong.response().set_header("x-fault", "none").await
    }
}

/// Does what `fault` says (returns only for the faults that let the handler go on).
fn trigger(fault: Fault, delay: Duration) {
    match fault {
        Fault::None | Fault::Hang => {}
        Fault::Exit => std::process::exit(3),
        Fault::Abort => std::process::abort(),
        Fault::NullWrite => {
            let null: *mut u64 = black_box(std::ptr::null_mut());
            // SAFETY: not safe at all: this is the fault under test (SIGSEGV).
            unsafe { null.write_volatile(1) };
        }
        Fault::StackOverflow => {
            black_box(recurse(black_box(1)));
        }
        Fault::Oom => {
            let huge: Vec<u8> = Vec::with_capacity(black_box(20usize << 30));
            black_box(&huge);
        }
        Fault::DoublePanic => {
            let _bomb = PanicsOnDrop;
            panic!("first panic");
        }
        Fault::PanicDropPanics => std::panic::panic_any(PanicsOnDrop),
        Fault::ThreadExit => {
            std::thread::spawn(|| {
                std::thread::sleep(Duration::from_millis(30));
                std::process::exit(4);
            });
        }
        Fault::Block => std::thread::sleep(delay),
    }
}

/// Recurses until the stack runs out.
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 256]);
    if black_box(depth) == 0 {
        return 0;
    }
    recurse(depth + 1) + frame[0]
}

/// Panics when dropped.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("a destructor panics");
    }
}

/// A timer completed by another thread: keeps an event in flight without blocking.
struct Delay {
    duration: Duration,
    state: Arc<Mutex<(bool, Option<Waker>)>>,
    started: bool,
}

impl Delay {
    fn new(duration: Duration) -> Delay {
        Delay {
            duration,
            state: Arc::new(Mutex::new((false, None))),
            started: false,
        }
    }
}

impl Future for Delay {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state.lock().unwrap();
        if state.0 {
            return Poll::Ready(());
        }
        state.1 = Some(cx.waker().clone());
        drop(state);
        if !self.started {
            self.started = true;
            let (duration, state) = (self.duration, self.state.clone());
            std::thread::spawn(move || {
                std::thread::sleep(duration);
                let mut state = state.lock().unwrap();
                state.0 = true;
                if let Some(waker) = state.1.take() {
                    waker.wake();
                }
            });
        }
        Poll::Pending
    }
}
