//! The daemon-wide budget of bytes connections may buffer beyond their first buffer.
//!
//! Each connection may receive a message up to `--max-message-size`, but many connections
//! each holding a large partial message would hold that much each: the budget bounds their
//! sum. A connection that would go over it is closed (Kong's messages are small; only
//! bodies are large, and a body larger than the budget is refused anyway).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes reserved by connections, and the most they may reserve together.
#[derive(Debug)]
pub struct BufferBudget {
    used: AtomicUsize,
    limit: usize,
}

impl BufferBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> BufferBudget {
        BufferBudget {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Moves a connection's reservation from `current` to `wanted` bytes. Shrinking always
    /// works; growing works while the total stays within the limit. Returns the new
    /// reservation, or `None` (the reservation stays `current`) when growing would exceed
    /// the limit.
    pub fn reserve_to(&self, current: usize, wanted: usize) -> Option<usize> {
        if wanted <= current {
            self.used.fetch_sub(current - wanted, Ordering::Relaxed);
            return Some(wanted);
        }
        let more = wanted - current;
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used + more > self.limit {
                return None;
            }
            match self.used.compare_exchange_weak(
                used,
                used + more,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(wanted),
                Err(now) => used = now,
            }
        }
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_within_the_limit_and_come_back() {
        let budget = BufferBudget::new(100);
        let a = budget.reserve_to(0, 60).unwrap();
        assert_eq!(budget.reserve_to(0, 50), None, "60 + 50 > 100");
        let b = budget.reserve_to(0, 40).unwrap();
        assert_eq!(budget.used(), 100);
        assert_eq!(budget.reserve_to(a, 10), Some(10));
        assert_eq!(budget.reserve_to(b, 90), Some(90));
        budget.reserve_to(10, 0);
        budget.reserve_to(90, 0);
        assert_eq!(budget.used(), 0);
    }
}
