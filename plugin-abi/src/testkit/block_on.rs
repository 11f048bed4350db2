//! A minimal executor for the test kit: std only, so plugin-abi pulls no runtime.

use std::{
    sync::Arc,
    task::{Wake, Waker},
    thread::Thread,
};

/// Wakes the test thread parked while a handler waits on its own I/O.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// A waker that unparks the current thread.
pub(crate) fn thread_waker() -> Waker {
    Waker::from(Arc::new(Unpark(std::thread::current())))
}

/// Parks the current thread until a waker from [`thread_waker`] fires (or spuriously).
pub(crate) fn wait() {
    std::thread::park();
}
