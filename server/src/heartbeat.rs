//! Which plugin handler an event loop is running right now, for the watchdog.
//!
//! An event loop thread attaches a [`Heartbeat`]; while the daemon polls a plugin handler
//! on that thread it marks the heartbeat busy ([`busy`]), and a watchdog thread that reads
//! the heartbeats notices a handler that holds its loop too long (blocking I/O, heavy
//! computation) and names it. Marking costs a thread-local read and a few relaxed atomic
//! stores per poll; threads without a heartbeat (a thread per connection, tools) pay
//! nothing more.

use std::{
    cell::Cell,
    sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering},
};

use kong_rust_plugin_abi::Phase;

/// The coarse clock the watchdog advances (a tick every few milliseconds).
static TICK: AtomicU64 = AtomicU64::new(1);

/// Advances the coarse clock; returns the new tick.
pub fn tick() -> u64 {
    TICK.fetch_add(1, Ordering::Relaxed) + 1
}

/// The coarse clock now.
pub fn now() -> u64 {
    TICK.load(Ordering::Relaxed)
}

/// What one event loop is doing.
#[derive(Debug, Default)]
pub struct Heartbeat {
    /// The tick the current poll started at; 0 when the loop is not in plugin code.
    busy_since: AtomicU64,
    /// The plugin slot polled.
    slot: AtomicU32,
    /// Its phase code.
    phase: AtomicU8,
    /// The event polled.
    event: AtomicU64,
}

/// A handler in the middle of a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    /// Since which tick.
    pub since: u64,
    /// The plugin slot.
    pub slot: u32,
    /// The phase.
    pub phase: Option<Phase>,
    /// The event id.
    pub event: u64,
}

impl Heartbeat {
    /// What the loop is running, if it is in plugin code.
    pub fn busy(&self) -> Option<Busy> {
        let since = self.busy_since.load(Ordering::Acquire);
        (since != 0).then(|| Busy {
            since,
            slot: self.slot.load(Ordering::Relaxed),
            phase: Phase::from_code(self.phase.load(Ordering::Relaxed)),
            event: self.event.load(Ordering::Relaxed),
        })
    }
}

thread_local! {
    static CURRENT: Cell<Option<&'static Heartbeat>> = const { Cell::new(None) };
}

/// A heartbeat for a new loop; it lives as long as the process (a loop lives as long as
/// the daemon, and the watchdog may still look at it).
pub fn new_heartbeat() -> &'static Heartbeat {
    Box::leak(Box::default())
}

/// Makes `heartbeat` the current thread's.
pub fn attach(heartbeat: &'static Heartbeat) {
    CURRENT.with(|current| current.set(Some(heartbeat)));
}

/// Marks the current thread's heartbeat busy with `event` of plugin `slot` until the guard
/// drops.
pub fn busy(slot: u32, phase: Phase, event: u64) -> BusyGuard {
    let heartbeat = CURRENT.with(Cell::get);
    if let Some(heartbeat) = heartbeat {
        heartbeat.slot.store(slot, Ordering::Relaxed);
        heartbeat.phase.store(phase.code(), Ordering::Relaxed);
        heartbeat.event.store(event, Ordering::Relaxed);
        heartbeat.busy_since.store(now(), Ordering::Release);
    }
    BusyGuard(heartbeat)
}

/// Clears the busy mark when dropped.
#[derive(Debug)]
pub struct BusyGuard(Option<&'static Heartbeat>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        if let Some(heartbeat) = self.0 {
            heartbeat.busy_since.store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_marks_the_attached_heartbeat_busy_until_it_ends() {
        let heartbeat = new_heartbeat();
        attach(heartbeat);
        assert_eq!(heartbeat.busy(), None);
        {
            let _guard = busy(3, Phase::Access, 42);
            let busy = heartbeat.busy().unwrap();
            assert_eq!(
                (busy.slot, busy.phase, busy.event),
                (3, Some(Phase::Access), 42)
            );
        }
        assert_eq!(heartbeat.busy(), None);
        // A thread without a heartbeat pays nothing and marks nothing.
        std::thread::spawn(|| drop(busy(1, Phase::Log, 1)))
            .join()
            .unwrap();
        assert_eq!(heartbeat.busy(), None);
    }
}
