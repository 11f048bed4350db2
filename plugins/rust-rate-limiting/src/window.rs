//! Window arithmetic: which counter a request falls in, how many requests it counts as
//! used, and when a refused client may come back. Pure functions of the counts and the
//! time, so both stores share one decision and the tests need no clock.

use serde::{Deserialize, Serialize};

/// How requests are counted over time.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum WindowKind {
    /// Counters reset at every multiple of the window length (cheap, but a client may send
    /// up to twice the limit across a boundary).
    #[default]
    Fixed,
    /// The previous window's count, weighted by how much of it still overlaps the sliding
    /// window, plus the current count: smooths the burst at the boundary.
    Sliding,
}

/// The counts a store returns for one client: the current window's (this request
/// included) and the previous window's (always 0 for fixed windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Requests counted in the current window, this one included.
    pub current: u64,
    /// Requests counted in the window before.
    pub previous: u64,
}

/// Where `now_ms` falls: the window's index (windows are aligned on the Unix epoch, so
/// every node and every worker agree on them) and how far into it we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// `now / length`.
    pub index: u64,
    /// Milliseconds since the window started.
    pub elapsed_ms: u64,
    /// The window length, ms.
    pub length_ms: u64,
}

impl Slot {
    /// The slot of `now_ms` for windows of `length_ms` (> 0).
    pub fn at(now_ms: u64, length_ms: u64) -> Slot {
        Slot {
            index: now_ms / length_ms,
            elapsed_ms: now_ms % length_ms,
            length_ms,
        }
    }

    /// Milliseconds until this window ends (at least 1).
    pub fn remaining_ms(&self) -> u64 {
        self.length_ms - self.elapsed_ms
    }
}

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is within the limit.
    pub allowed: bool,
    /// Requests still allowed now (0 when refused).
    pub remaining: u64,
    /// Seconds until the current window ends (allowed) or until a request would be
    /// admitted again if none arrives meanwhile (refused); at least 1.
    pub reset_seconds: u64,
}

/// Requests counted as used for `counts` at `slot`: the current count for fixed windows;
/// for sliding ones the previous count is scaled by the share of the previous window the
/// sliding window still covers.
pub fn used(kind: WindowKind, counts: Counts, slot: Slot) -> u64 {
    match kind {
        WindowKind::Fixed => counts.current,
        WindowKind::Sliding => {
            counts.current + carried_over(counts.previous, slot.elapsed_ms, slot.length_ms)
        }
    }
}

/// `floor(previous * (length - elapsed) / length)`, without overflow.
fn carried_over(previous: u64, elapsed_ms: u64, length_ms: u64) -> u64 {
    let scaled = u128::from(previous) * u128::from(length_ms - elapsed_ms) / u128::from(length_ms);
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

/// Decides on the request `counts` includes. A refused request is meant to be refunded
/// by the caller, so the retry time is computed from the counts without it.
pub fn decide(kind: WindowKind, limit: u64, counts: Counts, slot: Slot) -> Decision {
    let used = used(kind, counts, slot);
    if used <= limit {
        return Decision {
            allowed: true,
            remaining: limit - used,
            reset_seconds: seconds(slot.remaining_ms()),
        };
    }
    let wait_ms = match kind {
        WindowKind::Fixed => slot.remaining_ms(),
        WindowKind::Sliding => sliding_wait_ms(
            limit,
            counts.current.saturating_sub(1),
            counts.previous,
            slot,
        ),
    };
    Decision {
        allowed: false,
        remaining: 0,
        reset_seconds: seconds(wait_ms),
    }
}

/// Milliseconds from `slot` until one more request fits, with `current` requests counted
/// in this window and `previous` in the one before, assuming no other request arrives.
fn sliding_wait_ms(limit: u64, current: u64, previous: u64, slot: Slot) -> u64 {
    let len = slot.length_ms;
    // The first moment `e` (ms into a window) at which
    // `cur + 1 + floor(prev * (len - e) / len) <= limit`, if any in this window.
    let earliest = |cur: u64, prev: u64| -> Option<u64> {
        let room = limit.checked_sub(cur + 1)?;
        if prev == 0 {
            return Some(0);
        }
        // floor(prev * (len - e) / len) <= room  <=>  prev * (len - e) <= (room + 1) * len - 1
        let span = (u128::from(room) + 1) * u128::from(len) - 1;
        let max_overlap = u64::try_from(span / u128::from(prev)).unwrap_or(u64::MAX);
        let at = len.saturating_sub(max_overlap);
        (at < len).then_some(at)
    };
    match earliest(current, previous) {
        Some(at) => at.saturating_sub(slot.elapsed_ms),
        // Not within this window: in the next one, this window's count is the previous
        // one. It fits there at some point since `current <= limit` after the refund.
        None => slot.remaining_ms() + earliest(0, current).unwrap_or(len),
    }
}

/// Whole seconds, rounded up, at least 1 (a 0 would invite an immediate retry).
fn seconds(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;

    fn counts(current: u64, previous: u64) -> Counts {
        Counts { current, previous }
    }

    #[test]
    fn slots_are_aligned_on_the_epoch() {
        let slot = Slot::at(125_500, MINUTE);
        assert_eq!(
            slot,
            Slot {
                index: 2,
                elapsed_ms: 5_500,
                length_ms: MINUTE
            }
        );
        assert_eq!(slot.remaining_ms(), 54_500);
    }

    #[test]
    fn fixed_windows_allow_up_to_the_limit() {
        let slot = Slot::at(10_000, MINUTE);
        let third = decide(WindowKind::Fixed, 3, counts(3, 99), slot);
        assert_eq!(
            third,
            Decision {
                allowed: true,
                remaining: 0,
                reset_seconds: 50
            }
        );
        let fourth = decide(WindowKind::Fixed, 3, counts(4, 0), slot);
        assert_eq!(
            fourth,
            Decision {
                allowed: false,
                remaining: 0,
                reset_seconds: 50
            }
        );
    }

    #[test]
    fn sliding_windows_weigh_the_previous_window_by_its_overlap() {
        // A quarter into the window: three quarters of the previous count still count.
        let slot = Slot::at(15_000, MINUTE);
        assert_eq!(used(WindowKind::Sliding, counts(2, 8), slot), 2 + 6);
        assert_eq!(used(WindowKind::Fixed, counts(2, 8), slot), 2);
        let decision = decide(WindowKind::Sliding, 10, counts(2, 8), slot);
        assert_eq!(decision.remaining, 2);
        assert!(
            decide(WindowKind::Sliding, 7, counts(2, 8), slot)
                .allowed
                .eq(&false)
        );
    }

    #[test]
    fn a_refused_sliding_client_is_told_exactly_when_one_request_fits() {
        let limit = 10;
        for (current, previous, now) in [
            (3, 10, 1_000),
            (6, 9, 30_000),
            (10, 10, 59_000),
            (10, 0, 0),
            (1, 40, 100),
        ] {
            let slot = Slot::at(now, MINUTE);
            let hit = counts(current + 1, previous);
            let decision = decide(WindowKind::Sliding, limit, hit, slot);
            assert!(!decision.allowed, "{current}/{previous} at {now}");
            let wait = sliding_wait_ms(limit, current, previous, slot);
            assert_eq!(decision.reset_seconds, seconds(wait));
            // Replay the clock: at `now + wait` one request fits, a millisecond earlier not.
            let fits_at = |t: u64| {
                let later = Slot::at(t, MINUTE);
                let c = if later.index == slot.index {
                    counts(current + 1, previous)
                } else {
                    counts(1, current)
                };
                used(WindowKind::Sliding, c, later) <= limit
            };
            assert!(
                fits_at(now + wait),
                "{current}/{previous} at {now} + {wait}"
            );
            assert!(
                wait == 0 || !fits_at(now + wait - 1),
                "{current}/{previous} at {now} + {wait} - 1"
            );
        }
    }

    #[test]
    fn reset_is_rounded_up_and_never_zero() {
        assert_eq!(seconds(1), 1);
        assert_eq!(seconds(0), 1);
        assert_eq!(seconds(1_001), 2);
        assert_eq!(
            decide(
                WindowKind::Fixed,
                1,
                counts(1, 0),
                Slot::at(MINUTE - 1, MINUTE)
            )
            .reset_seconds,
            1
        );
    }
}
