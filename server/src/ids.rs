//! Instance and event ids that are never reused, not even across a restart.
//!
//! Kong caches instance ids per worker. If a restarted daemon handed out ids from 0 again, a
//! cached id could silently point at another configuration (Kong/kong#8370). Ids therefore
//! start at the current time in microseconds and count up: a restart starts above every id
//! the previous process could have issued, unless it issued more than a million per second.
//! The values stay below 2^53, so Kong's Lua numbers hold them exactly (until the year 2255).

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

/// A monotonic id source seeded from the clock.
#[derive(Debug)]
pub struct IdSource {
    next: AtomicU64,
}

impl IdSource {
    /// Starts at the current time in microseconds.
    pub fn from_clock() -> IdSource {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        IdSource {
            next: AtomicU64::new(micros),
        }
    }

    /// The next id.
    pub fn next(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_and_a_later_source_starts_higher() {
        let first = IdSource::from_clock();
        let a = first.next();
        assert_eq!(first.next(), a + 1);
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(IdSource::from_clock().next() > a + 1);
        assert!(a < 1 << 53);
    }
}
