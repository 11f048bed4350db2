//! Which plugin handler an event loop is running right now, for the watchdog.
//!
//! An event loop thread attaches a [`Heartbeat`]; while the daemon polls a plugin handler
//! on that thread it marks the heartbeat busy ([`busy`]), and a watchdog thread that reads
//! the heartbeats notices a handler that holds its loop too long (blocking I/O, heavy
//! computation) and names it. Marking costs a thread-local read and a few relaxed atomic
//! stores per poll; threads without a heartbeat (a thread per connection, tools) pay
//! nothing more. A thread that runs a plugin constructor leases one ([`lease`]) for as
//! long.
//!
//! With process isolation the heartbeats live in memory the supervisor maps too
//! ([`place_in`]): when a worker dies, the heartbeats busy at that moment say which
//! plugin configuration was running, which is how a poison configuration is recognised.

use std::{
    cell::Cell,
    sync::{
        Mutex,
        atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
};

use kong_rust_plugin_abi::Phase;

/// The coarse clock the watchdog advances: a tick per 10 ms of real time.
static TICK: AtomicU64 = AtomicU64::new(1);

/// Moves the coarse clock on to `tick` (it never goes back); returns the tick now.
pub fn advance_to(tick: u64) -> u64 {
    TICK.fetch_max(tick, Ordering::Relaxed).max(tick)
}

/// The coarse clock now.
pub fn now() -> u64 {
    TICK.load(Ordering::Relaxed)
}

/// What one event loop is doing. Only atomics, all-zero bytes mean idle: it may live in
/// shared memory.
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub struct Heartbeat {
    /// The tick the current poll started at; 0 when the loop is not in plugin code.
    busy_since: AtomicU64,
    /// The event polled (0: a constructor).
    event: AtomicU64,
    /// The fingerprint of the plugin configuration running.
    config: AtomicU64,
    /// The plugin slot polled.
    slot: AtomicU32,
    /// Its phase code ([`NO_PHASE`] for a constructor).
    phase: AtomicU8,
}

/// The phase code of a heartbeat busy with a constructor.
pub const NO_PHASE: u8 = 0xff;

/// A handler in the middle of a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    /// Since which tick.
    pub since: u64,
    /// The plugin slot.
    pub slot: u32,
    /// The phase (`None`: a constructor).
    pub phase: Option<Phase>,
    /// The event id (0: a constructor).
    pub event: u64,
    /// The fingerprint of the configuration.
    pub config: u64,
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
            config: self.config.load(Ordering::Relaxed),
        })
    }
}

/// Heartbeats in shared memory, handed out before any from the heap.
static ARENA: Mutex<Option<(&'static [Heartbeat], usize)>> = Mutex::new(None);
/// Every heartbeat handed out, with what it beats for, for the watchdog.
static ALL: Mutex<Vec<(&'static Heartbeat, String)>> = Mutex::new(Vec::new());
/// Leased heartbeats given back.
static FREE: Mutex<Vec<&'static Heartbeat>> = Mutex::new(Vec::new());
/// How many heartbeats were handed out (what the watchdog compares to notice new ones).
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Hands out `arena` (in shared memory) before any heartbeat from the heap.
pub fn place_in(arena: &'static [Heartbeat]) {
    *ARENA.lock().unwrap_or_else(|e| e.into_inner()) = Some((arena, 0));
}

/// Every heartbeat with its label, as of now.
pub fn all() -> Vec<(&'static Heartbeat, String)> {
    ALL.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// How many heartbeats exist (changes when one is added).
pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

thread_local! {
    static CURRENT: Cell<Option<&'static Heartbeat>> = const { Cell::new(None) };
}

/// A heartbeat for a new loop; it lives as long as the process (a loop lives as long as
/// the daemon, and the watchdog may still look at it).
pub fn new_heartbeat() -> &'static Heartbeat {
    labelled("loop".into())
}

/// A heartbeat labelled `label` (what the watchdog names).
pub fn labelled(label: String) -> &'static Heartbeat {
    let placed = {
        let mut arena = ARENA.lock().unwrap_or_else(|e| e.into_inner());
        match arena.as_mut() {
            Some((beats, used)) if *used < beats.len() => {
                *used += 1;
                Some(&beats[*used - 1])
            }
            _ => None,
        }
    };
    let heartbeat = placed.unwrap_or_else(|| Box::leak(Box::default()));
    ALL.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((heartbeat, label));
    COUNT.fetch_add(1, Ordering::Relaxed);
    heartbeat
}

/// A heartbeat attached to the current thread until the lease drops (a thread that runs
/// a plugin constructor).
pub fn lease() -> Lease {
    let reused = FREE.lock().unwrap_or_else(|e| e.into_inner()).pop();
    let heartbeat = reused.unwrap_or_else(|| labelled("a thread of its own".into()));
    let previous = CURRENT.with(|current| current.replace(Some(heartbeat)));
    Lease {
        heartbeat,
        previous,
    }
}

/// A leased heartbeat; given back when dropped.
#[derive(Debug)]
pub struct Lease {
    heartbeat: &'static Heartbeat,
    previous: Option<&'static Heartbeat>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.heartbeat.busy_since.store(0, Ordering::Release);
        CURRENT.with(|current| current.set(self.previous));
        FREE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(self.heartbeat);
    }
}

/// Makes `heartbeat` the current thread's.
pub fn attach(heartbeat: &'static Heartbeat) {
    CURRENT.with(|current| current.set(Some(heartbeat)));
}

/// Marks the current thread's heartbeat busy with `event` of plugin `slot`, running the
/// configuration whose fingerprint is `config`, until the guard drops.
pub fn busy(slot: u32, phase: Phase, event: u64, config: u64) -> BusyGuard {
    mark(slot, phase.code(), event, config)
}

/// Marks the current thread's heartbeat busy constructing configuration `config` of
/// plugin `slot`, until the guard drops.
pub fn constructing(slot: u32, config: u64) -> BusyGuard {
    mark(slot, NO_PHASE, 0, config)
}

fn mark(slot: u32, phase: u8, event: u64, config: u64) -> BusyGuard {
    let heartbeat = CURRENT.with(Cell::get);
    if let Some(heartbeat) = heartbeat {
        heartbeat.slot.store(slot, Ordering::Relaxed);
        heartbeat.phase.store(phase, Ordering::Relaxed);
        heartbeat.event.store(event, Ordering::Relaxed);
        heartbeat.config.store(config, Ordering::Relaxed);
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
            let _guard = busy(3, Phase::Access, 42, 9);
            let busy = heartbeat.busy().unwrap();
            assert_eq!(
                (busy.slot, busy.phase, busy.event, busy.config),
                (3, Some(Phase::Access), 42, 9)
            );
        }
        assert_eq!(heartbeat.busy(), None);
        // A thread without a heartbeat pays nothing and marks nothing.
        std::thread::spawn(|| drop(busy(1, Phase::Log, 1, 1)))
            .join()
            .unwrap();
        assert_eq!(heartbeat.busy(), None);
        // A constructor's thread leases one.
        std::thread::spawn(|| {
            let lease = lease();
            let _busy = constructing(2, 77);
            let beat = lease.heartbeat.busy().unwrap();
            assert_eq!((beat.phase, beat.event, beat.config), (None, 0, 77));
        })
        .join()
        .unwrap();
    }
}
