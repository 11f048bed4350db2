//! The report of one run.

use std::fmt::Write;

use serde::Serialize;

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// From samples in nanoseconds (sorted in place).
    pub fn of(samples: &mut [u32]) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_unstable();
        let n = samples.len();
        let at = |p: f64| {
            let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
            f64::from(samples[rank - 1]) / 1e3
        };
        let sum: u64 = samples.iter().map(|&s| u64::from(s)).sum();
        Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: f64::from(samples[n - 1]) / 1e3,
            mean: sum as f64 / n as f64 / 1e3,
        }
    }
}

/// RSS when a number of measured events had completed.
#[derive(Debug, Clone, Serialize)]
pub struct RssAt {
    pub events: u64,
    pub rss_kib: u64,
}

/// What `/proc` says about the server over the measured part of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Server {
    pub pid: u32,
    pub cpu_ms: f64,
    /// Share of one core the server used while measured.
    pub cpu_cores: f64,
    pub cpu_us_per_event: f64,
    pub cpu_us_per_round_trip: f64,
    pub rss_kib_before: u64,
    pub rss_kib_after: u64,
    pub peak_rss_kib: u64,
    pub rss_at: Vec<RssAt>,
}

/// An events run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventsReport {
    pub workers: usize,
    pub concurrency: usize,
    /// Open-loop target, events/s (None: closed loop).
    pub rate: Option<f64>,
    pub events: u64,
    pub round_trips: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Open loop: events not started because the pacer reached them over 10 ms late (the
    /// load generator was starved of CPU) or too many were in flight.
    pub skipped: u64,
    pub seconds: f64,
    pub events_per_s: f64,
    pub round_trips_per_s: f64,
    /// HandleEvent sent → `ret` received, per event.
    pub latency_us: Percentiles,
    /// Open loop: how late events started against their schedule.
    pub start_lag_us: Option<Percentiles>,
    pub connections: u64,
    pub server_pid_notifications: u64,
    pub server: Option<Server>,
    /// The load generator's own CPU per event (the simulated Kong side), µs.
    pub loadgen_cpu_us_per_event: f64,
}

/// An idle-instances run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InstancesReport {
    pub instances: u64,
    pub seconds: f64,
    pub pid: u32,
    pub rss_kib_before: u64,
    pub rss_kib_after: u64,
    pub bytes_per_instance: f64,
}

/// One run's report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub label: String,
    pub plugin: String,
    #[serde(flatten)]
    pub kind: Kind,
}

/// Which scenario.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Events(Box<EventsReport>),
    Instances(InstancesReport),
}

/// The human-readable form.
pub fn text(report: &Report) -> String {
    let mut s = String::new();
    let label = if report.label.is_empty() {
        String::new()
    } else {
        format!("[{}] ", report.label)
    };
    match &report.kind {
        Kind::Events(e) => {
            let mode = match e.rate {
                Some(r) => format!("open loop at {r:.0} events/s"),
                None => format!("{} concurrent events", e.concurrency),
            };
            let _ = writeln!(
                s,
                "{label}{}: {} events in {:.2} s, {} workers, {mode}",
                report.plugin, e.events, e.seconds, e.workers
            );
            let _ = writeln!(
                s,
                "  throughput   {:>10.0} events/s  {:>10.0} round trips/s  ({} errors, {} skipped, {} connections)",
                e.events_per_s, e.round_trips_per_s, e.errors, e.skipped, e.connections
            );
            let l = &e.latency_us;
            let _ = writeln!(
                s,
                "  latency/event p50 {:.1} us  p99 {:.1} us  p99.9 {:.1} us  max {:.1} us  mean {:.1} us",
                l.p50, l.p99, l.p999, l.max, l.mean
            );
            if let Some(lag) = &e.start_lag_us {
                let _ = writeln!(
                    s,
                    "  start lag     p50 {:.1} us  p99 {:.1} us  max {:.1} us",
                    lag.p50, lag.p99, lag.max
                );
            }
            if let Some(srv) = &e.server {
                let _ = writeln!(
                    s,
                    "  server cpu   {:.2} us/event  {:.2} us/round trip  ({:.0} ms, {:.2} cores)",
                    srv.cpu_us_per_event, srv.cpu_us_per_round_trip, srv.cpu_ms, srv.cpu_cores
                );
                let _ = writeln!(
                    s,
                    "  server rss   {} KiB before, {} KiB after, peak {} KiB",
                    srv.rss_kib_before, srv.rss_kib_after, srv.peak_rss_kib
                );
                for at in &srv.rss_at {
                    let _ = writeln!(s, "  rss at {:>9} events: {} KiB", at.events, at.rss_kib);
                }
            }
            let _ = writeln!(
                s,
                "  loadgen cpu  {:.2} us/event",
                e.loadgen_cpu_us_per_event
            );
            if let Some(err) = &e.first_error {
                let _ = writeln!(s, "  first error: {err}");
            }
        }
        Kind::Instances(i) => {
            let _ = writeln!(
                s,
                "{label}{}: {} idle instances in {:.2} s; server rss {} -> {} KiB: {:.0} bytes per instance",
                report.plugin,
                i.instances,
                i.seconds,
                i.rss_kib_before,
                i.rss_kib_after,
                i.bytes_per_instance
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut samples: Vec<u32> = (1..=1000).map(|i| i * 1000).collect();
        let p = Percentiles::of(&mut samples);
        assert_eq!(p.p50, 500.0);
        assert_eq!(p.p99, 990.0);
        assert_eq!(p.p999, 999.0);
        assert_eq!(p.max, 1000.0);
    }
}
