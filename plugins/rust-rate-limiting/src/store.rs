//! Where counters live: the daemon's memory ([`LocalCounters`]) or Redis
//! ([`RedisCounters`](crate::redis_store::RedisCounters)).
//!
//! Both only count: [`Counter::hit`] adds this request to the current window and reads the
//! previous one; the decision is [`window::decide`](crate::window::decide)'s. A refused
//! request is taken back with [`Counter::refund`], so clients that keep knocking do not
//! push their own retry time further out. Between the two steps a concurrent request may
//! see the refused one still counted: at the edge of the limit that can refuse one request
//! too many, never admit one too many.

use std::{
    collections::HashMap,
    future::{Future, ready},
    pin::Pin,
    sync::{LazyLock, Mutex, PoisonError},
};

use crate::redis_store::RedisError;
use crate::window::Counts;

/// The counter keys of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// The current window's counter.
    pub current: String,
    /// The previous window's counter, for sliding windows.
    pub previous: Option<String>,
    /// How long the current counter must live, ms: one window, or two when it will be
    /// read as the previous window.
    pub ttl_ms: u64,
}

/// Why a counter could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis refused, timed out or could not be reached.
    #[error(transparent)]
    Redis(#[from] RedisError),
}

/// What a [`Counter`] operation returns: awaited by the handler, so a store that talks
/// to a server holds no thread while it waits.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A store of request counters, shared by concurrent requests.
pub trait Counter: Send + Sync {
    /// Counts one request in `keys.current`; returns that count (this request included)
    /// and the count of `keys.previous` (0 when absent or expired).
    fn hit<'a>(&'a self, keys: &'a Keys, now_ms: u64) -> StoreFuture<'a, Counts>;

    /// Takes back one request counted by [`hit`](Counter::hit) in `keys.current`.
    fn refund<'a>(&'a self, keys: &'a Keys, now_ms: u64) -> StoreFuture<'a, ()>;
}

/// How often, at most, [`LocalCounters`] drops expired counters (ms).
const SWEEP_INTERVAL_MS: u64 = 1_000;

/// Counters in the daemon's memory.
///
/// One daemon serves every Kong worker of a node, so one map in this process sees every
/// request of the node: [`LocalCounters::shared`] is that map, used by every constructed
/// plugin (keys carry the plugin entity and window length, so configurations do not mix).
/// Being process-wide, counters also survive the plugin being rebuilt (an idle instance
/// released, a configuration re-sent). Every counter expires with its window, and expired
/// ones are swept at most once a second, so memory is bounded by the
/// clients seen in the last two windows.
#[derive(Debug, Default)]
pub struct LocalCounters {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    counters: HashMap<String, Entry>,
    next_sweep_ms: u64,
}

#[derive(Debug)]
struct Entry {
    count: u64,
    expires_at_ms: u64,
}

static SHARED: LazyLock<LocalCounters> = LazyLock::new(LocalCounters::default);

impl LocalCounters {
    /// The process-wide counters.
    pub fn shared() -> &'static LocalCounters {
        &SHARED
    }

    /// How many counters are held (expired ones included until the next sweep).
    pub fn len(&self) -> usize {
        self.lock().counters.len()
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing under this lock can panic half-way through an update; a poisoned lock
        // holds consistent counters.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl LocalCounters {
    /// [`Counter::hit`], at once.
    pub fn hit(&self, keys: &Keys, now_ms: u64) -> Result<Counts, StoreError> {
        let mut inner = self.lock();
        if now_ms >= inner.next_sweep_ms {
            inner.counters.retain(|_, e| e.expires_at_ms > now_ms);
            inner.next_sweep_ms = now_ms + SWEEP_INTERVAL_MS;
        }
        let previous = keys
            .previous
            .as_ref()
            .and_then(|key| inner.counters.get(key))
            .filter(|e| e.expires_at_ms > now_ms)
            .map_or(0, |e| e.count);
        let entry = inner.counters.entry(keys.current.clone()).or_insert(Entry {
            count: 0,
            expires_at_ms: 0,
        });
        if entry.expires_at_ms <= now_ms {
            entry.count = 0;
        }
        entry.count += 1;
        entry.expires_at_ms = now_ms + keys.ttl_ms;
        Ok(Counts {
            current: entry.count,
            previous,
        })
    }

    /// [`Counter::refund`], at once.
    pub fn refund(&self, keys: &Keys, _now_ms: u64) -> Result<(), StoreError> {
        if let Some(entry) = self.lock().counters.get_mut(&keys.current) {
            entry.count = entry.count.saturating_sub(1);
        }
        Ok(())
    }
}

impl Counter for LocalCounters {
    fn hit<'a>(&'a self, keys: &'a Keys, now_ms: u64) -> StoreFuture<'a, Counts> {
        Box::pin(ready(LocalCounters::hit(self, keys, now_ms)))
    }

    fn refund<'a>(&'a self, keys: &'a Keys, now_ms: u64) -> StoreFuture<'a, ()> {
        Box::pin(ready(LocalCounters::refund(self, keys, now_ms)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(current: &str, previous: Option<&str>) -> Keys {
        Keys {
            current: current.into(),
            previous: previous.map(Into::into),
            ttl_ms: 2_000,
        }
    }

    #[test]
    fn counts_per_key_and_reads_the_previous_window() {
        let store = LocalCounters::default();
        assert_eq!(
            store.hit(&keys("a:1", None), 0).unwrap(),
            Counts {
                current: 1,
                previous: 0
            }
        );
        assert_eq!(store.hit(&keys("a:1", None), 10).unwrap().current, 2);
        assert_eq!(store.hit(&keys("b:1", None), 10).unwrap().current, 1);
        assert_eq!(
            store.hit(&keys("a:2", Some("a:1")), 20).unwrap(),
            Counts {
                current: 1,
                previous: 2
            }
        );
        store.refund(&keys("a:2", None), 20).unwrap();
        assert_eq!(store.hit(&keys("a:2", None), 30).unwrap().current, 1);
    }

    #[test]
    fn expired_counters_restart_and_are_swept() {
        let store = LocalCounters::default();
        for client in 0..100 {
            store.hit(&keys(&format!("c{client}"), None), 0).unwrap();
        }
        assert_eq!(store.len(), 100);
        // Past their ttl the counters read as zero, even before a sweep...
        assert_eq!(store.hit(&keys("x", Some("c1")), 500).unwrap().previous, 1);
        // ...and the first hit after their expiry sweeps them all (c1 is counted anew).
        assert_eq!(store.hit(&keys("c1", None), 2_000).unwrap().current, 1);
        store.hit(&keys("y", None), 2_001).unwrap();
        assert_eq!(store.len(), 3, "c1 (renewed), x and y are left");
    }

    #[test]
    fn concurrent_hits_are_all_counted() {
        let store = LocalCounters::default();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..250 {
                        store.hit(&keys("k", None), 0).unwrap();
                    }
                });
            }
        });
        assert_eq!(store.hit(&keys("k", None), 0).unwrap().current, 1001);
    }
}
