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

/// How many events ended with one PDK call and status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EndedCount {
    /// `kong.response.exit` or `kong.response.error`.
    pub method: String,
    /// The status it was called with (0: none).
    pub status: u16,
    pub events: u64,
}

/// What Kong would have done with the requests: the event outcomes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcomes {
    /// The handler returned: proxied with the plugin's effects.
    pub returned: u64,
    /// Ended by `kong.response.exit`/`error`, the plugin's or the daemon's (failing
    /// closed), by method and status.
    pub ended: Vec<EndedCount>,
    /// Dropped by `--abandon` after their first Step (Kong's 500).
    pub abandoned: u64,
    /// StartInstance failed, so Kong raised (its 500).
    pub start_instance_failures: u64,
    /// Error replies: Kong logs them and proxies the request past the plugin. Must be 0
    /// for a healthy daemon.
    pub error_replies: u64,
    /// No daemon reachable (connect failed): logged, proxied past the plugin.
    pub refused: u64,
    /// A call found its connection closed: logged, proxied past the plugin.
    pub connection_lost: u64,
    /// error_replies + refused + connection_lost.
    pub proxied_past_plugin: u64,
    /// The text of the first of those (or of a failed StartInstance).
    pub first_error: Option<String>,
}

/// One stretch of a run with restarts: before the first one, or from one restart to the
/// next (events placed by when they ended).
#[derive(Debug, Clone, Default, Serialize)]
pub struct WindowReport {
    pub events: u64,
    /// The longer of `max_latency_ms` and `failure_span_ms`: how long requests were not
    /// served normally around the restart.
    pub gap_ms: f64,
    /// The longest event (any outcome), HandleEvent to its end.
    pub max_latency_ms: f64,
    /// From the start of the first failed event (proxied past the plugin, Kong's or the
    /// daemon's 5xx; not `--abandon`'s) to the end of the last one.
    pub failure_span_ms: f64,
    #[serde(flatten)]
    pub outcomes: Outcomes,
}

/// One hand-over of a run with `--restarts`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestartReport {
    /// 1, 2, ...
    pub restart: usize,
    /// Seconds into the measured run when the new server was started.
    pub at_s: f64,
    pub old_pid: u32,
    pub new_pid: u32,
    /// How long the old server took to exit after SIGTERM (None: still running when the
    /// run ended).
    pub old_exit_ms: Option<f64>,
    #[serde(flatten)]
    pub window: WindowReport,
}

/// An events run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventsReport {
    pub workers: usize,
    pub concurrency: usize,
    /// Open-loop target, events/s (None: closed loop).
    pub rate: Option<f64>,
    /// `--abandon`: the fraction of events abandoned after their first Step.
    pub abandon: f64,
    /// Events run, whatever their outcome.
    pub events: u64,
    pub round_trips: u64,
    #[serde(flatten)]
    pub outcomes: Outcomes,
    /// Instances started (one per worker at least; more after restarts).
    pub instance_starts: u64,
    /// Events run again after "no plugin instance" (Kong restarts the instance).
    pub instance_retries: u64,
    /// Open loop: events not started because the pacer reached them over 10 ms late (the
    /// load generator was starved of CPU) or too many were in flight.
    pub skipped: u64,
    pub seconds: f64,
    pub events_per_s: f64,
    pub round_trips_per_s: f64,
    /// HandleEvent sent → the event's end, per event served (returned or ended).
    pub latency_us: Percentiles,
    /// Open loop: how late events started against their schedule.
    pub start_lag_us: Option<Percentiles>,
    pub connections: u64,
    /// Idle pooled connections dropped because the server had closed them.
    pub closed_connections_dropped: u64,
    pub server_pid_notifications: u64,
    /// With `--restarts`: the stretch before the first restart, then one per restart.
    pub before_restarts: Option<WindowReport>,
    pub restarts: Vec<RestartReport>,
    /// None with `--restarts` (the server changes) or without a pid.
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
                "  throughput   {:>10.0} events/s  {:>10.0} round trips/s  ({} skipped, {} connections)",
                e.events_per_s, e.round_trips_per_s, e.skipped, e.connections
            );
            outcomes_text(&mut s, "  ", &e.outcomes);
            if e.abandon > 0.0 || e.instance_retries > 0 {
                let _ = writeln!(
                    s,
                    "  instances    {} started, {} events retried after \"no plugin instance\"",
                    e.instance_starts, e.instance_retries
                );
            }
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
            if let Some(before) = &e.before_restarts {
                window_text(&mut s, "before restarts", before);
            }
            for r in &e.restarts {
                let exit = r
                    .old_exit_ms
                    .map_or("still running at the end".to_owned(), |ms| {
                        format!("exited {ms:.0} ms after SIGTERM")
                    });
                window_text(
                    &mut s,
                    &format!(
                        "restart {} at {:.1} s (pid {} -> {}, old {exit})",
                        r.restart, r.at_s, r.old_pid, r.new_pid
                    ),
                    &r.window,
                );
            }
            if let Some(err) = &e.outcomes.first_error {
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

/// The outcome lines.
fn outcomes_text(s: &mut String, indent: &str, o: &Outcomes) {
    let ended: Vec<String> = o
        .ended
        .iter()
        .map(|e| format!("{} {} x{}", e.method, e.status, e.events))
        .collect();
    let _ = writeln!(
        s,
        "{indent}outcomes     {} returned, ended: [{}], {} abandoned, {} start failures",
        o.returned,
        ended.join(", "),
        o.abandoned,
        o.start_instance_failures
    );
    let _ = writeln!(
        s,
        "{indent}proxied past the plugin: {} ({} error replies, {} refused, {} connections lost)",
        o.proxied_past_plugin, o.error_replies, o.refused, o.connection_lost
    );
}

/// One restart window.
fn window_text(s: &mut String, title: &str, w: &WindowReport) {
    let _ = writeln!(
        s,
        "  {title}: {} events, gap {:.1} ms (longest event {:.1} ms, failures over {:.1} ms)",
        w.events, w.gap_ms, w.max_latency_ms, w.failure_span_ms
    );
    outcomes_text(s, "    ", &w.outcomes);
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
