//! The plugin library's own tokio runtime, so handlers can await any tokio future.
//!
//! tokio keeps its context in thread-locals and statics, and every plugin library (a
//! cdylib) has its own copy of tokio: the daemon's runtime cannot be shared across the ABI.
//! So each library gets a runtime of its own, and the PDK enters its context while it
//! runs plugin code (a handler's poll, the constructor, dropping the plugin). A timer or a
//! socket a handler awaits registers with this runtime; when it is ready, the runtime wakes
//! the daemon's waker, and the daemon polls the handler again on its own thread.
//!
//! It costs nothing until it is needed:
//!
//! - it is a current-thread runtime, built on the first entry: no thread at all;
//! - its driver thread (I/O, timers, spawned tasks) starts the first time plugin code
//!   leaves work for it: a handler waits on its own I/O, or a task was spawned;
//! - blocking threads start only for [`spawn_blocking`].
//!
//! The runtime lives as long as the library has a constructed plugin (or an event still
//! running): every holder keeps a [`Lease`]. When the last lease goes, the runtime stops:
//! spawned tasks get [`SHUTDOWN_GRACE`] to finish on their own (a log shipper's last
//! batch), then the rest are dropped and the thread exits. A plugin constructed later
//! gets a new runtime.

use std::{
    future::{Future, poll_fn},
    sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError, Weak, atomic::AtomicBool},
    task::{Poll, Waker},
    time::{Duration, Instant},
};

use std::sync::atomic::Ordering;

use tokio::runtime::{Builder, Handle, Runtime};

use crate::error::{PdkError, PdkResult};

/// How long tasks still running when the last plugin goes may take to finish before they
/// are dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long the runtime's blocking threads may take to return once the runtime stops.
const BLOCKING_GRACE: Duration = Duration::from_secs(1);

/// The library's runtime while any lease holds it (the daemon may drop the last plugin and
/// construct the next one at any time, from any thread).
static CURRENT: Mutex<Weak<Shared>> = Mutex::new(Weak::new());

/// A hold on the library's runtime: it keeps running while any lease exists.
#[derive(Clone)]
pub struct Lease(Arc<Shared>);

struct Shared {
    /// Names the runtime's threads (`rt:` + name, `bl:` + name).
    name: &'static str,
    /// Built on the first entry.
    driver: OnceLock<Result<Driver, String>>,
}

/// A built runtime: its handle, and its thread once started.
struct Driver {
    handle: Handle,
    driving: AtomicBool,
    state: Arc<DriverState>,
}

/// What the driver thread shares with the leases.
struct DriverState {
    /// The runtime until the driver thread takes it.
    runtime: Mutex<Option<Runtime>>,
    /// Set when the last lease went; wakes the driver thread.
    stop: Mutex<(bool, Option<Waker>)>,
}

impl Lease {
    /// A hold on the library's runtime, which is created if none runs (built lazily).
    /// `name` names its threads: the plugin's name.
    pub fn acquire(name: &'static str) -> Lease {
        let mut current = CURRENT.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(shared) = current.upgrade() {
            return Lease(shared);
        }
        let shared = Arc::new(Shared {
            name,
            driver: OnceLock::new(),
        });
        *current = Arc::downgrade(&shared);
        Lease(shared)
    }

    /// A lease held for the whole process: the test kit's, whose plugins live as long as
    /// the test that built them.
    pub fn process_wide() -> Lease {
        static PROCESS: LazyLock<Lease> = LazyLock::new(|| Lease::acquire("testkit"));
        PROCESS.clone()
    }

    /// Runs `f` inside the runtime's context (tokio futures created there use this
    /// runtime), and starts the driver thread if `f` spawned a task.
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        let Ok(driver) = self.0.driver() else {
            // No runtime (it could not be built, which was logged): plain code still runs,
            // tokio futures fail as they would without one.
            return f();
        };
        let result = {
            let _context = driver.handle.enter();
            f()
        };
        if !driver.driving.load(Ordering::Acquire) && driver.handle.metrics().num_alive_tasks() > 0
        {
            driver.start(self.0.name);
        }
        result
    }

    /// Plugin code waits on its own I/O: make sure the runtime's driver runs to wake it.
    pub fn waiting(&self) {
        if let Some(Ok(driver)) = self.0.driver.get()
            && !driver.driving.load(Ordering::Acquire)
        {
            driver.start(self.0.name);
        }
    }

    /// The runtime's handle, its driver thread started (for code that hands it on).
    pub fn handle(&self) -> Option<Handle> {
        let driver = self.0.driver().ok()?;
        if !driver.driving.load(Ordering::Acquire) {
            driver.start(self.0.name);
        }
        Some(driver.handle.clone())
    }
}

impl Shared {
    fn driver(&self) -> Result<&Driver, &String> {
        self.driver
            .get_or_init(|| Driver::build(self.name))
            .as_ref()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(Ok(driver)) = self.driver.get() {
            driver.stop();
        }
    }
}

impl Driver {
    fn build(name: &'static str) -> Result<Driver, String> {
        let runtime = Builder::new_current_thread()
            .enable_all()
            .thread_name(format!("bl:{name}"))
            .build()
            .map_err(|e| {
                let message = format!("cannot build the plugin's tokio runtime: {e}");
                tracing::error!("{message}");
                message
            })?;
        Ok(Driver {
            handle: runtime.handle().clone(),
            driving: AtomicBool::new(false),
            state: Arc::new(DriverState {
                runtime: Mutex::new(Some(runtime)),
                stop: Mutex::new((false, None)),
            }),
        })
    }

    /// Starts the thread that drives I/O, timers and spawned tasks (once).
    #[cold]
    fn start(&self, name: &'static str) {
        let runtime = self
            .state
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if runtime.is_none() || self.driving.load(Ordering::Acquire) {
            return;
        }
        let state = self.state.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("rt:{name}"))
            .spawn(move || state.drive());
        match spawned {
            // The thread takes the runtime once this lock is released.
            Ok(_) => self.driving.store(true, Ordering::Release),
            // Tried again at the next wait; meanwhile what waits is not woken.
            Err(e) => tracing::error!("cannot start the plugin's runtime thread: {e}"),
        }
    }

    /// The last lease went: the driver thread winds the runtime down; a runtime never
    /// driven has run nothing and just goes.
    fn stop(&self) {
        let idle = self
            .state
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take_if(|_| !self.driving.load(Ordering::Acquire));
        if let Some(runtime) = idle {
            runtime.shutdown_background();
            return;
        }
        let mut stop = self
            .state
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        stop.0 = true;
        if let Some(waker) = stop.1.take() {
            waker.wake();
        }
    }
}

impl DriverState {
    /// The driver thread: runs the runtime until the last lease goes, lets spawned tasks
    /// finish for up to [`SHUTDOWN_GRACE`], then shuts the runtime down.
    fn drive(self: Arc<Self>) {
        let Some(runtime) = self
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let handle = runtime.handle().clone();
        runtime.block_on(async {
            self.stopped().await;
            let deadline = Instant::now() + SHUTDOWN_GRACE;
            while handle.metrics().num_alive_tasks() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        runtime.shutdown_timeout(BLOCKING_GRACE);
    }

    fn stopped(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(|cx| {
            let mut stop = self.stop.lock().unwrap_or_else(PoisonError::into_inner);
            if stop.0 {
                return Poll::Ready(());
            }
            stop.1 = Some(cx.waker().clone());
            Poll::Pending
        })
    }
}

/// Runs blocking code (a synchronous client, CPU-heavy work) on the plugin runtime's
/// blocking threads and awaits its result, so the daemon's thread serves other events
/// meanwhile.
///
/// ```
/// # use kong_rust_pdk::prelude::*;
/// async fn access(kong: &Kong) -> PdkResult<()> {
///     let digest = kong_rust_pdk::spawn_blocking(|| expensive_hash(b"...")).await?;
///     kong.service().request().set_header("x-digest", &digest).await
/// }
/// # fn expensive_hash(_: &[u8]) -> String { String::new() }
/// ```
///
/// Call it from a handler, a constructor or a task they spawned (where the PDK provides
/// the runtime). A panic in `f` fails the call with the panic's message.
pub fn spawn_blocking<F, T>(f: F) -> impl Future<Output = PdkResult<T>> + Send + 'static
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let task = Handle::try_current().map(|handle| handle.spawn_blocking(f));
    async move {
        let task = task.map_err(|_| {
            PdkError::plugin("spawn_blocking: no runtime here (call it from plugin code)")
        })?;
        task.await.map_err(|e| match e.try_into_panic() {
            Ok(panic) => PdkError::plugin(format_args!(
                "spawn_blocking: the blocking code panicked: {}",
                crate::panics::take_panic_message(panic)
            )),
            Err(e) => PdkError::plugin(format_args!("spawn_blocking: {e}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads of this process whose name starts with `prefix`.
    fn threads(prefix: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with(prefix))
            .count()
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The library runtime is process-wide: tests that acquire it take turns.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    #[test]
    fn the_runtime_starts_a_thread_only_when_needed_and_stops_with_the_last_lease() {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let first = Lease::acquire("unit");
        // Entering builds the runtime, but plain code leaves it nothing to drive.
        assert_eq!(first.enter(|| 1 + 1), 2);
        assert_eq!(threads("rt:unit"), 0, "no thread for code that never waits");

        // Another plugin of the library shares the runtime.
        let second = Lease::acquire("other");
        let (tx, rx) = std::sync::mpsc::channel();
        second.enter(|| {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                tx.send(()).unwrap();
            })
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the spawned task ran");
        assert_eq!(threads("rt:unit"), 1);

        drop(first);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(threads("rt:unit"), 1, "a lease still holds the runtime");
        drop(second);
        wait_for("the runtime thread to exit", || threads("rt:unit") == 0);

        // A plugin constructed later gets a runtime again.
        let again = Lease::acquire("unit");
        let handle = again.handle().expect("a runtime");
        let (tx, rx) = std::sync::mpsc::channel();
        handle.spawn(async move { tx.send(()).unwrap() });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the new runtime runs tasks");
        drop(again);
        wait_for("the second runtime's thread to exit", || {
            threads("rt:unit") == 0
        });
    }

    /// What every poll of a handler pays for the runtime (printed with `--nocapture`;
    /// `cargo test --release` for the real figure).
    #[test]
    fn entering_the_runtime_costs_nanoseconds() {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let lease = Lease::acquire("cost");
        lease.enter(|| ());
        let rounds = 200_000u32;
        let started = Instant::now();
        for i in 0..rounds {
            std::hint::black_box(lease.enter(|| std::hint::black_box(i)));
        }
        let each = started.elapsed() / rounds;
        eprintln!("entering the runtime: {} ns per poll", each.as_nanos());
        assert!(each < Duration::from_micros(2), "{each:?} per entry");
    }

    #[test]
    fn spawn_blocking_needs_a_runtime() {
        // The test kit and the daemon always provide one; bare code does not.
        let mut fut = std::pin::pin!(spawn_blocking(|| 1));
        let waker = Waker::noop();
        let poll = fut
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker));
        match poll {
            Poll::Ready(Err(e)) => assert!(e.to_string().contains("no runtime"), "{e}"),
            other => panic!("{:?}", other.map(|r| r.is_ok())),
        }
    }
}
