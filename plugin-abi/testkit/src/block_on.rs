//! A minimal executor for the test kit: std only, so plugin-abi pulls no runtime.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Wake, Waker},
    thread::Thread,
    time::{Duration, Instant},
};

/// How long a handler may wait on its own I/O before the test fails instead of hanging.
/// (Short in this crate's own tests, which check the failure.)
const STALL_TIMEOUT: Duration = Duration::from_secs(if cfg!(test) { 1 } else { 60 });

/// Wakes the test thread parked while a handler waits on its own I/O.
pub(crate) struct Unpark {
    thread: Thread,
    woken: AtomicBool,
}

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// A waker that unparks the current thread, and its state for [`wait`].
pub(crate) fn thread_waker() -> (Waker, Arc<Unpark>) {
    let unpark = Arc::new(Unpark {
        thread: std::thread::current(),
        woken: AtomicBool::new(false),
    });
    (Waker::from(unpark.clone()), unpark)
}

/// Parks the current thread until the waker fires. Fails if it never does: a handler that
/// returns `Pending` without arranging a wake-up would otherwise hang the test.
pub(crate) fn wait(unpark: &Unpark) -> Result<(), String> {
    let deadline = Instant::now() + STALL_TIMEOUT;
    while !unpark.woken.swap(false, Ordering::AcqRel) {
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "the handler waited on its own I/O for {}s and was never woken",
                STALL_TIMEOUT.as_secs()
            ));
        }
        std::thread::park_timeout(deadline - now);
    }
    Ok(())
}
