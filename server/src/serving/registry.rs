//! The connections of one event loop, and what may stop their reads.
//!
//! Reads must end early when a connection sat idle too long, when a message takes too long
//! to arrive, or when the daemon hands its connections to a successor. Arming a timer per
//! read would cost on every round trip; instead each connection records, when its read
//! waits, what it waits for and its waker, and the loop's sweeper looks at all of them once
//! a second (and at once on a hand-over). Everything here lives on one thread: a `RefCell`,
//! no locks.

use std::{
    cell::{Cell, RefCell},
    task::Waker,
};

use crate::connection::Stop;

/// One waiting read.
#[derive(Debug, Default)]
struct Entry {
    /// Woken when the read must stop.
    waker: Option<Waker>,
    /// The sweep count when it last made progress.
    active_at: u64,
    /// Whether part of a message is buffered.
    mid_message: bool,
    /// Set by the sweeper: why the read must stop.
    stop: Option<Stop>,
    /// Whether the slot is in use.
    used: bool,
}

/// The connections of one loop.
#[derive(Debug, Default)]
pub struct Registry {
    entries: RefCell<Vec<Entry>>,
    free: RefCell<Vec<usize>>,
    /// Sweeps so far (a coarse clock: one per second).
    sweeps: Cell<u64>,
    /// Set once the daemon hands over: every idle read stops at once.
    handing_over: Cell<bool>,
}

impl Registry {
    /// Registers a new connection; returns its slot.
    pub fn add(&self) -> usize {
        let mut entries = self.entries.borrow_mut();
        let fresh = Entry {
            active_at: self.sweeps.get(),
            used: true,
            ..Entry::default()
        };
        match self.free.borrow_mut().pop() {
            Some(slot) => {
                entries[slot] = fresh;
                slot
            }
            None => {
                entries.push(fresh);
                entries.len() - 1
            }
        }
    }

    /// Forgets a closed connection.
    pub fn remove(&self, slot: usize) {
        self.entries.borrow_mut()[slot] = Entry::default();
        self.free.borrow_mut().push(slot);
    }

    /// The reason a read of `slot` must stop, if the sweeper set one; taken once.
    pub fn take_stop(&self, slot: usize) -> Option<Stop> {
        self.entries.borrow_mut()[slot].stop.take()
    }

    /// A read of `slot` is waiting: remember its waker and what it waits for.
    pub fn waiting(&self, slot: usize, waker: &Waker, mid_message: bool) {
        let mut entries = self.entries.borrow_mut();
        let entry = &mut entries[slot];
        entry.mid_message = mid_message;
        match &entry.waker {
            Some(known) if known.will_wake(waker) => {}
            _ => entry.waker = Some(waker.clone()),
        }
    }

    /// A read of `slot` made progress.
    pub fn active(&self, slot: usize) {
        self.entries.borrow_mut()[slot].active_at = self.sweeps.get();
    }

    /// One sweep: stops the reads that waited past their deadline (`idle` and `message`
    /// in sweeps), and every read when handing over; returns how many were stopped.
    pub fn sweep(&self, idle: u64, message: u64) -> usize {
        let now = self.sweeps.get() + 1;
        self.sweeps.set(now);
        let handing_over = self.handing_over.get();
        let mut stopped = 0;
        for entry in self.entries.borrow_mut().iter_mut().filter(|e| e.used) {
            if entry.stop.is_some() {
                continue;
            }
            let waited = now - entry.active_at;
            let stop = if handing_over {
                Some(Stop::HandOver)
            } else if entry.mid_message && waited > message {
                Some(Stop::MessageTimeout)
            } else if !entry.mid_message && waited > idle {
                Some(Stop::Idle)
            } else {
                None
            };
            if let Some(stop) = stop {
                entry.stop = Some(stop);
                if let Some(waker) = entry.waker.take() {
                    waker.wake();
                }
                stopped += 1;
            }
        }
        stopped
    }

    /// From now on every read stops: the connections go to the successor.
    pub fn hand_over(&self, idle: u64, message: u64) -> usize {
        self.handing_over.set(true);
        self.sweep(idle, message)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        task::Wake,
    };

    use super::*;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn idle_and_slow_reads_are_stopped_on_their_deadlines() {
        let registry = Registry::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let idle = registry.add();
        let partial = registry.add();
        let busy = registry.add();
        registry.waiting(idle, &waker, false);
        registry.waiting(partial, &waker, true);
        registry.waiting(busy, &waker, false);
        for _ in 0..2 {
            registry.sweep(5, 1);
            registry.active(busy);
        }
        assert_eq!(registry.take_stop(partial), Some(Stop::MessageTimeout));
        assert_eq!(registry.take_stop(idle), None);
        for _ in 0..4 {
            registry.sweep(5, 1);
            registry.active(busy);
        }
        assert_eq!(registry.take_stop(idle), Some(Stop::Idle));
        assert_eq!(registry.take_stop(busy), None);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        // Handing over stops every read not already stopped (the slow one still is).
        assert_eq!(registry.hand_over(5, 1), 2);
        assert_eq!(registry.take_stop(busy), Some(Stop::HandOver));
        assert_eq!(registry.take_stop(idle), Some(Stop::HandOver));
        assert_eq!(registry.take_stop(partial), Some(Stop::MessageTimeout));
        registry.remove(idle);
        assert_eq!(registry.add(), idle, "slots are reused");
    }
}
