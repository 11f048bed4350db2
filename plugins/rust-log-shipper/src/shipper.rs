//! The bounded queue between request handlers and the flusher task.
//!
//! Handlers must never wait on a slow file system or endpoint, so they only `try_send`
//! into a bounded channel: a full queue drops the record and counts it. One task per
//! constructed plugin, on the plugin library's runtime, drains the queue into batches of
//! `batch_size`, shipping a batch when it is full or when its oldest record has waited
//! `flush_interval`. Dropping the [`Shipper`] closes the channel; the task ships what is
//! left and ends (the runtime gives tasks time to finish even when the last plugin goes),
//! so no record accepted before an instance is released is lost.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::mpsc::{self, Receiver, Sender, error::TrySendError};

use crate::sink::Sink;

/// Counters shared by the handlers and the flusher thread.
#[derive(Debug, Default)]
pub struct Stats {
    shipped: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    /// Drops and failures not yet reported to Kong's log, and the last failure.
    unreported_drops: AtomicU64,
    unreported_failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Records shipped.
    pub shipped: u64,
    /// Records dropped because the queue was full.
    pub dropped: u64,
    /// Records lost in batches that could not be shipped.
    pub failed: u64,
}

/// What happened since the last report: for the handler to log through Kong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Records dropped on a full queue.
    pub dropped: u64,
    /// Records in failed batches.
    pub failed: u64,
    /// The last shipping error.
    pub last_error: Option<String>,
}

impl Stats {
    /// The totals so far.
    pub fn totals(&self) -> Totals {
        Totals {
            shipped: self.shipped.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Drops and failures since the previous call, if any (each is reported once).
    pub fn take_report(&self) -> Option<Report> {
        let dropped = self.unreported_drops.swap(0, Ordering::Relaxed);
        let failed = self.unreported_failures.swap(0, Ordering::Relaxed);
        if dropped == 0 && failed == 0 {
            return None;
        }
        let last_error = if failed > 0 {
            self.last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
        } else {
            None
        };
        Some(Report {
            dropped,
            failed,
            last_error,
        })
    }
}

/// Batching settings.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Records queued at most; more are dropped.
    pub queue_size: usize,
    /// Records per batch at most.
    pub batch_size: usize,
    /// The longest a record waits for its batch to fill.
    pub flush_interval: Duration,
}

/// The handlers' end of the queue; the flusher task ends when it is dropped.
pub struct Shipper {
    sender: Sender<String>,
    stats: Arc<Stats>,
}

impl Shipper {
    /// Starts the flusher task for `sink`. Runs in a tokio runtime's context: the plugin
    /// constructor's (the PDK provides it).
    pub fn start(sink: Box<dyn Sink>, batching: Batching) -> Shipper {
        let (sender, receiver) = mpsc::channel(batching.queue_size.max(1));
        let stats = Arc::new(Stats::default());
        tokio::spawn(flush_loop(receiver, sink, batching, stats.clone()));
        Shipper { sender, stats }
    }

    /// Queues one record without waiting; returns false (and counts it) when the queue
    /// is full.
    pub fn enqueue(&self, record: String) -> bool {
        match self.sender.try_send(record) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                self.stats.unreported_drops.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// The shared counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

async fn flush_loop(
    mut receiver: Receiver<String>,
    mut sink: Box<dyn Sink>,
    batching: Batching,
    stats: Arc<Stats>,
) {
    let mut batch: Vec<String> = Vec::with_capacity(batching.batch_size);
    // When the oldest record of the current batch must be shipped.
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let received = match deadline {
            None => receiver.recv().await,
            Some(at) => match tokio::time::timeout_at(at, receiver.recv()).await {
                Ok(received) => received,
                Err(_elapsed) => {
                    ship(&mut *sink, &mut batch, &stats).await;
                    deadline = None;
                    continue;
                }
            },
        };
        let Some(record) = received else {
            // Closed: the plugin is gone. Ship what is left and end.
            ship(&mut *sink, &mut batch, &stats).await;
            return;
        };
        deadline.get_or_insert_with(|| tokio::time::Instant::now() + batching.flush_interval);
        batch.push(record);
        if batch.len() >= batching.batch_size {
            ship(&mut *sink, &mut batch, &stats).await;
            deadline = None;
        }
    }
}

/// Ships and empties `batch`. A failed batch is counted and dropped, not retried: a
/// retry would hold up every later record behind an endpoint that is down.
async fn ship(sink: &mut dyn Sink, batch: &mut Vec<String>, stats: &Stats) {
    if batch.is_empty() {
        return;
    }
    let count = batch.len() as u64;
    match sink.ship(batch).await {
        Ok(()) => {
            stats.shipped.fetch_add(count, Ordering::Relaxed);
        }
        Err(e) => {
            stats.failed.fetch_add(count, Ordering::Relaxed);
            *stats
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
            stats
                .unreported_failures
                .fetch_add(count, Ordering::Relaxed);
        }
    }
    batch.clear();
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::sink::{ShipError, ShipFuture};

    /// Records batches; fails while `fail` is set; waits while `gate` is closed.
    #[derive(Clone, Default)]
    struct Probe {
        batches: Arc<Mutex<Vec<Vec<String>>>>,
        gate: Arc<tokio::sync::RwLock<()>>,
        fail: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Sink for Probe {
        fn ship<'a>(&'a mut self, batch: &'a [String]) -> ShipFuture<'a> {
            Box::pin(async move {
                let _open = self.gate.read().await;
                if self.fail.load(Ordering::SeqCst) {
                    return Err(ShipError::File {
                        path: "/probe".into(),
                        source: std::io::Error::other("probe failure"),
                    });
                }
                self.batches.lock().unwrap().push(batch.to_vec());
                Ok(())
            })
        }
    }

    /// A runtime for the flusher task, as the plugin library's would be.
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    fn start(probe: &Probe, rt: &tokio::runtime::Runtime, batching: Batching) -> Shipper {
        let _context = rt.enter();
        Shipper::start(Box::new(probe.clone()), batching)
    }

    fn batching(queue_size: usize, batch_size: usize, flush_ms: u64) -> Batching {
        Batching {
            queue_size,
            batch_size,
            flush_interval: Duration::from_millis(flush_ms),
        }
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn full_batches_ship_at_once_and_the_rest_on_drop() {
        let rt = runtime();
        let probe = Probe::default();
        let shipper = start(&probe, &rt, batching(100, 2, 60_000));
        for i in 0..5 {
            assert!(shipper.enqueue(format!("{i}")));
        }
        wait_for("two full batches", || {
            probe.batches.lock().unwrap().len() == 2
        });
        drop(shipper);
        wait_for("the last batch", || {
            probe.batches.lock().unwrap().len() == 3
        });
        assert_eq!(
            *probe.batches.lock().unwrap(),
            [vec!["0", "1"], vec!["2", "3"], vec!["4"]]
        );
    }

    #[test]
    fn a_partial_batch_ships_after_the_flush_interval() {
        let rt = runtime();
        let probe = Probe::default();
        let shipper = start(&probe, &rt, batching(100, 50, 20));
        let queued = Instant::now();
        shipper.enqueue("alone".into());
        wait_for("the interval flush", || {
            probe.batches.lock().unwrap().len() == 1
        });
        assert!(queued.elapsed() >= Duration::from_millis(20));
        wait_for("the count", || shipper.stats().totals().shipped == 1);
        assert_eq!(
            shipper.stats().totals(),
            Totals {
                shipped: 1,
                dropped: 0,
                failed: 0
            }
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let rt = runtime();
        let probe = Probe::default();
        let gate = probe.gate.clone().try_write_owned().unwrap();
        let shipper = start(&probe, &rt, batching(2, 1, 60_000));
        let started = Instant::now();
        let accepted = (0..10).filter(|i| shipper.enqueue(format!("{i}"))).count();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "enqueue never waits"
        );
        // At most one record in the waiting sink and two queued.
        assert!((2..=3).contains(&accepted), "{accepted}");
        let report = shipper.stats().take_report().expect("drops are reported");
        assert_eq!(report.dropped, 10 - accepted as u64);
        assert_eq!(shipper.stats().take_report(), None, "reported once");
        drop(gate);
        drop(shipper);
        wait_for("the queued records", || {
            probe.batches.lock().unwrap().len() == accepted
        });
    }

    #[test]
    fn failed_batches_are_counted_and_reported_with_the_error() {
        let rt = runtime();
        let probe = Probe::default();
        probe.fail.store(true, Ordering::SeqCst);
        let shipper = start(&probe, &rt, batching(10, 3, 60_000));
        for i in 0..3 {
            shipper.enqueue(format!("{i}"));
        }
        wait_for("the failure", || shipper.stats().totals().failed == 3);
        let report = shipper.stats().take_report().unwrap();
        assert_eq!((report.dropped, report.failed), (0, 3));
        assert!(report.last_error.unwrap().contains("probe failure"));
        probe.fail.store(false, Ordering::SeqCst);
        shipper.enqueue("3".into());
        drop(shipper);
        wait_for("the later batch", || {
            !probe.batches.lock().unwrap().is_empty()
        });
        assert_eq!(
            *probe.batches.lock().unwrap(),
            [vec!["3"]],
            "later batches still ship"
        );
    }
}
