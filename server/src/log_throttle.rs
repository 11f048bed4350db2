//! Repeated warnings held to a rate, so that a flood (a plugin failing on every request, a
//! client sending garbage) cannot fill the disk or drown every other line.
//!
//! Each kind of warning has a [`Throttle`]: at most `--max-warnings-per-second` lines of that
//! kind a second; the lines held back are counted, and the next line of the kind after that
//! second (or the housekeeping, if none comes) reports how many were held back.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Instant,
};

/// Lines a second per kind; 0: no limit.
static PER_SECOND: AtomicU32 = AtomicU32::new(10);

/// Sets the rate for every kind (0: no limit).
pub fn set_per_second(lines: u32) {
    PER_SECOND.store(lines, Ordering::Relaxed);
}

/// Whole seconds since the first use: the throttles' clock.
fn now_secs() -> u32 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs() as u32
}

/// One kind of warning.
pub struct Throttle {
    kind: &'static str,
    /// The current second (high 32 bits) and the lines written in it (low 32 bits).
    window: AtomicU64,
    /// Lines held back since the last summary.
    suppressed: AtomicU64,
    /// The second of the first line held back since the last summary.
    since: AtomicU32,
}

/// A failed or abandoned event, a Step for an unknown event.
pub static EVENTS: Throttle = Throttle::new("event warnings");
/// A connection closed for a bad or unfinished message.
pub static CONNECTIONS: Throttle = Throttle::new("connection warnings");
/// A request answered with an error (a refused StartInstance, a malformed request).
pub static REQUESTS: Throttle = Throttle::new("request warnings");

const ALL: [&Throttle; 3] = [&EVENTS, &CONNECTIONS, &REQUESTS];

impl Throttle {
    /// A throttle for warnings of `kind` (named in the summary line).
    pub const fn new(kind: &'static str) -> Throttle {
        Throttle {
            kind,
            window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            since: AtomicU32::new(0),
        }
    }

    /// Whether a line of this kind may be written now; if not, it is counted. Writes the
    /// summary of the lines held back before, once their second is over.
    pub fn allow(&self) -> bool {
        let per_second = PER_SECOND.load(Ordering::Relaxed);
        if per_second == 0 {
            return true;
        }
        let now = now_secs();
        let mut window = self.window.load(Ordering::Relaxed);
        loop {
            let (second, count) = ((window >> 32) as u32, window as u32);
            let next = if second != now {
                (u64::from(now) << 32) | 1
            } else if count < per_second {
                window + 1
            } else {
                if self.suppressed.fetch_add(1, Ordering::Relaxed) == 0 {
                    self.since.store(now, Ordering::Relaxed);
                }
                return false;
            };
            match self.window.compare_exchange_weak(
                window,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    if second != now {
                        self.report(now);
                    }
                    return true;
                }
                Err(current) => window = current,
            }
        }
    }

    /// Writes the summary of the lines held back, if any and if their second is over.
    pub fn flush(&self) {
        let now = now_secs();
        if (self.window.load(Ordering::Relaxed) >> 32) as u32 != now {
            self.report(now);
        }
    }

    fn report(&self, now: u32) {
        let held = self.suppressed.swap(0, Ordering::Relaxed);
        if held > 0 {
            let seconds = now
                .saturating_sub(self.since.load(Ordering::Relaxed))
                .max(1);
            tracing::warn!(
                suppressed = held,
                "suppressed {held} similar {} in the last {seconds}s (--max-warnings-per-second)",
                self.kind
            );
        }
    }
}

/// Writes the summaries every throttle owes (called by the housekeeping).
pub fn flush_all() {
    for throttle in ALL {
        throttle.flush();
    }
}

/// `tracing::warn!` held to `throttle`'s rate.
#[macro_export]
macro_rules! warn_throttled {
    ($throttle:expr, $($arg:tt)+) => {
        if $throttle.allow() {
            ::tracing::warn!($($arg)+);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_beyond_the_rate_are_counted_not_written() {
        let throttle = Throttle::new("test warnings");
        // The default rate (10) is what every test process uses.
        let allowed = (0..1000).filter(|_| throttle.allow()).count();
        // The loop may straddle a second.
        assert!((10..=20).contains(&allowed), "{allowed}");
        if allowed == 10 {
            assert_eq!(throttle.suppressed.load(Ordering::Relaxed), 990);
        }
    }
}
