//! A counter that a shutdown can wait on until it reaches zero: live events, open
//! connections.

use std::{
    sync::{
        Condvar, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Instant,
};

/// A counter a shutdown can wait on without polling.
///
/// The hot path pays one atomic add and subtract; only while someone waits does the last
/// decrement take a lock to wake them.
#[derive(Debug, Default)]
pub struct WaitableCount {
    count: AtomicUsize,
    watched: AtomicBool,
    lock: Mutex<()>,
    idle: Condvar,
}

impl WaitableCount {
    /// The count now.
    pub fn get(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Adds one.
    pub fn add(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one away, waking a waiter at zero.
    pub fn remove(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 && self.watched.load(Ordering::SeqCst) {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.idle.notify_all();
        }
    }

    /// Waits until the count is zero or `deadline` passes; returns the count then.
    pub fn wait_idle(&self, deadline: Instant) -> usize {
        self.watched.store(true, Ordering::SeqCst);
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let left = self.count.load(Ordering::SeqCst);
            let now = Instant::now();
            if left == 0 || now >= deadline {
                return left;
            }
            guard = self
                .idle
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;

    #[test]
    fn waiting_ends_when_the_last_event_does() {
        let live = Arc::new(WaitableCount::default());
        live.add();
        live.add();
        let ender = {
            let live = live.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                live.remove();
                live.remove();
            })
        };
        let started = Instant::now();
        assert_eq!(live.wait_idle(started + Duration::from_secs(10)), 0);
        assert!(started.elapsed() < Duration::from_secs(5));
        ender.join().unwrap();
        live.add();
        assert_eq!(
            live.wait_idle(Instant::now() + Duration::from_millis(10)),
            1
        );
    }
}
