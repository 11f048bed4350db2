//! A plugin for the end-to-end tests: its `mode` config picks what the access handler does.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use kong_rust_pdk::prelude::*;
use schemars::JsonSchema;
use serde::Deserialize;

/// What the handler does.
#[derive(Debug, Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Reads `x-probe` and echoes it as response header `x-echo`, then returns.
    Echo,
    /// Ends the request with `kong.response.exit(403, "denied")`.
    Exit,
    /// Panics after one PDK call.
    Panic,
    /// Returns an error after one PDK call.
    Fail,
    /// Blocks its thread for `delay_ms` (as a handler doing blocking I/O would), then sets
    /// `x-blocked`.
    Block,
    /// Waits `delay_ms` on its own asynchronous work (woken from another thread, through
    /// the daemon's waker), then sets `x-waited`.
    Wait,
    /// Awaits a tokio timer of `delay_ms` (the plugin library's runtime), then sets
    /// `x-slept`.
    Sleep,
    /// The same PDK calls as `sleep`, without the timer (the baseline to compare with).
    Calls,
}

/// Probe configuration. Unknown keys are refused, so the tests notice if Kong's
/// bookkeeping keys reach the plugin.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What the access handler does.
    pub mode: Mode,
    /// Panic in the constructor.
    #[serde(default)]
    pub panic_in_new: bool,
    /// How long `block`, `wait` and `sleep` take, in milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
}

/// Counts constructor runs, so the tests can see when instances are shared.
static CONSTRUCTED: AtomicU64 = AtomicU64::new(0);

/// The probe plugin.
pub struct Probe {
    mode: Mode,
    delay: Duration,
    /// Which construction this is (1, 2, ...).
    serial: u64,
}

#[kong_rust_pdk::plugin]
impl Plugin for Probe {
    type Config = Config;
    const PRIORITY: i64 = 10;

    fn new(config: Config) -> Result<Self, ConfigError> {
        if config.panic_in_new {
            panic!("probe constructor panic");
        }
        // Plugin logs go to the daemon's log, through the host logger.
        tracing::info!(mode = ?config.mode, "probe constructed");
        Ok(Probe {
            mode: config.mode,
            delay: Duration::from_millis(config.delay_ms),
            serial: CONSTRUCTED.fetch_add(1, Ordering::SeqCst) + 1,
        })
    }

    async fn access(&self, kong: &Kong) -> PdkResult<()> {
        let probe = kong.request().get_header("x-probe").await?;
        match self.mode {
            Mode::Echo => {
                log::warn!("echoing {probe:?}");
                kong.response()
                    .set_header("x-echo", probe.as_deref().unwrap_or("(none)"))
                    .await?;
                let instance = kong.instance();
                let described = format!(
                    "serial={} id={} plugin_id={} route_id={} seq={}",
                    self.serial,
                    instance.id,
                    instance.plugin_id.as_deref().unwrap_or("-"),
                    instance.route_id.as_deref().unwrap_or("-"),
                    instance.seq.map_or("-".to_owned(), |s| s.to_string()),
                );
                kong.response().set_header("x-instance", &described).await
            }
            Mode::Exit => kong.response().exit(403, "denied").await?,
            Mode::Panic => panic!("probe handler panic"),
            Mode::Fail => Err(PdkError::plugin("probe failure")),
            Mode::Block => {
                std::thread::sleep(self.delay);
                kong.response().set_header("x-blocked", "yes").await
            }
            Mode::Wait => {
                Delay::new(self.delay).await;
                kong.response().set_header("x-waited", "yes").await
            }
            Mode::Sleep => {
                tokio::time::sleep(self.delay).await;
                kong.response().set_header("x-slept", "yes").await
            }
            Mode::Calls => kong.response().set_header("x-slept", "no").await,
        }
    }
}

/// A timer completed by another thread: stands for a plugin's own asynchronous I/O.
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
