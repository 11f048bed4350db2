//! How many events are alive, and a way to wait until none is.

use std::{
    sync::{
        Condvar, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Instant,
};

/// A counter of live events that a shutdown can wait on without polling.
///
/// The hot path pays one atomic add and subtract per event; only while someone waits does
/// the last event's end take a lock to wake them.
#[derive(Debug, Default)]
pub(crate) struct LiveEvents {
    count: AtomicUsize,
    watched: AtomicBool,
    lock: Mutex<()>,
    idle: Condvar,
}

impl LiveEvents {
    pub(crate) fn get(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub(crate) fn add(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn remove(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 && self.watched.load(Ordering::SeqCst) {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.idle.notify_all();
        }
    }

    /// Waits until no event is alive or `deadline` passes; returns how many are left.
    pub(crate) fn wait_idle(&self, deadline: Instant) -> usize {
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
        let live = Arc::new(LiveEvents::default());
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
