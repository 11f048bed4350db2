//! Instance and event ids that are never reused, not even across a restart.
//!
//! Kong caches instance ids per worker, and may send a Step for an event to whatever daemon
//! serves the socket now. If a restarted daemon handed out ids from 0 again, a cached id
//! could silently point at another configuration (Kong/kong#8370), or a late Step at another
//! request's handler. Ids therefore start at the clock and count up: a restart starts above
//! every id the previous process issued, unless it issued ids faster than the clock runs.
//! Every id stays below 2^53, so Kong's Lua numbers hold it exactly.
//!
//! An event id also carries its phase in its lowest three bits, so a daemon that never saw
//! an event (a Step after a restart, or reaching the successor during a hand-over) still
//! knows how to end its request ([`EventIds::phase_of`]).

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use kong_rust_plugin_abi::Phase;

fn since_epoch() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Instance ids: the clock in microseconds, then counting up (a restart overtakes them
/// unless the previous process started more than a million instances a second).
#[derive(Debug)]
pub struct InstanceIds {
    next: AtomicU64,
    /// Ids stay below this (they wrap round to 1).
    below: u64,
}

/// 2024-01-01T00:00:00Z: the zero of the 32-bit ids' clock.
const INT32_EPOCH_SECS: u64 = 1_704_067_200;
/// Ids per second of that clock: a restart overtakes the previous process's ids unless it
/// started more than this many instances a second on average, and the ids reach 2^31 only
/// in 2041 (then they wrap round).
const INT32_IDS_PER_SEC: u64 = 4;

impl InstanceIds {
    /// Starts at the current time in microseconds.
    pub fn from_clock() -> InstanceIds {
        InstanceIds {
            next: AtomicU64::new((since_epoch().as_micros() as u64).max(1)),
            below: u64::MAX,
        }
    }

    /// Ids that fit ProtoBuf:1's `int32 instance_id` and are never 0 (proto3 omits a zero,
    /// which some Kong versions then read as nil): seeded from the clock like
    /// [`from_clock`](Self::from_clock), at a coarser rate.
    pub fn int32_from_clock() -> InstanceIds {
        let secs = since_epoch().as_secs().saturating_sub(INT32_EPOCH_SECS);
        InstanceIds {
            next: AtomicU64::new((secs * INT32_IDS_PER_SEC).max(1)),
            below: 1 << 31,
        }
    }

    /// The next id.
    pub fn next(&self) -> u64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if self.below == u64::MAX {
            n
        } else {
            (n - 1) % (self.below - 1) + 1
        }
    }
}

/// Bits of an event id that hold its phase.
const PHASE_BITS: u32 = 3;
/// Event serials per millisecond of the clock seed: a restart overtakes the previous
/// process's ids unless it started more than this many events per millisecond on average
/// (512 000 a second), and the ids stay below 2^53 until the year 2500.
const SERIALS_PER_MS: u64 = 512;

/// Event ids: `serial << 3 | phase`, serials seeded from the clock.
#[derive(Debug)]
pub struct EventIds {
    next_serial: AtomicU64,
}

impl EventIds {
    /// Starts at the current time in milliseconds, times the serials per millisecond.
    pub fn from_clock() -> EventIds {
        EventIds {
            next_serial: AtomicU64::new((since_epoch().as_millis() as u64).max(1) * SERIALS_PER_MS),
        }
    }

    /// The next id, for an event of `phase`.
    pub fn next(&self, phase: Phase) -> u64 {
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
        serial << PHASE_BITS | u64::from(phase.code())
    }

    /// The phase an event id was issued for, by this or any other daemon process.
    pub fn phase_of(event_id: u64) -> Option<Phase> {
        Phase::from_code((event_id & ((1 << PHASE_BITS) - 1)) as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_and_a_later_source_starts_higher() {
        let first = InstanceIds::from_clock();
        let a = first.next();
        assert_eq!(first.next(), a + 1);
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(InstanceIds::from_clock().next() > a + 1);
        assert!(a < 1 << 53);
    }

    #[test]
    fn int32_ids_fit_and_are_never_zero() {
        let ids = InstanceIds::int32_from_clock();
        let a = ids.next();
        assert!(a > 0 && a < 1 << 31);
        assert_eq!(ids.next(), a + 1);
        let wrapping = InstanceIds {
            next: AtomicU64::new((1 << 31) - 2),
            below: 1 << 31,
        };
        assert_eq!(wrapping.next(), (1 << 31) - 2);
        assert_eq!(wrapping.next(), (1 << 31) - 1);
        assert_eq!(wrapping.next(), 1);
    }

    #[test]
    fn event_ids_carry_their_phase_and_grow() {
        let events = EventIds::from_clock();
        let a = events.next(Phase::Access);
        let b = events.next(Phase::Preread);
        assert_eq!(EventIds::phase_of(a), Some(Phase::Access));
        assert_eq!(EventIds::phase_of(b), Some(Phase::Preread));
        assert!(b > a && b < 1 << 53);
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(EventIds::from_clock().next(Phase::Certificate) > b);
        assert_eq!(EventIds::phase_of(7), None, "code 7 is no phase");
    }
}
