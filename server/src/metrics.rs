//! Prometheus metrics, and the small HTTP endpoint that serves them (`--metrics-listen`).
//!
//! Per plugin and phase the hot path only touches pre-resolved counter and histogram
//! handles (atomic adds); labels are looked up once, when a plugin is loaded. Gauges that
//! describe the daemon's state (instances, events in flight, loaded plugins) are computed
//! when Prometheus scrapes.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::Arc,
    time::Duration,
};

use kong_rust_pdk::Phase;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder, core::Collector,
};

use crate::{loader::PluginInfo, server::Server};

const NAMESPACE: &str = "kong_rust_pluginserver";

/// Event latency buckets, in seconds: from a handler that makes no PDK call (tens of
/// microseconds) to one that waits on slow I/O.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    5.0,
];

/// The daemon's metric families.
pub struct Metrics {
    registry: Registry,
    events: IntCounterVec,
    errors: IntCounterVec,
    panics: IntCounterVec,
    abandoned: IntCounterVec,
    pdk_calls: IntCounterVec,
    duration: HistogramVec,
    constructor_panics: IntCounterVec,
    instances: IntGaugeVec,
    in_flight: IntGauge,
    connections: IntGauge,
    plugins: IntGaugeVec,
}

/// One plugin's handles for one phase.
pub struct PhaseMetrics {
    /// Events started.
    pub events: IntCounter,
    /// Events whose handler returned an error.
    pub errors: IntCounter,
    /// Events whose handler panicked.
    pub panics: IntCounter,
    /// Events freed because Kong never sent their next Step.
    pub abandoned: IntCounter,
    /// PDK calls handed to Kong (round trips).
    pub pdk_calls: IntCounter,
    /// Event duration, from HandleEvent to the end.
    pub duration: prometheus::Histogram,
}

impl PhaseMetrics {
    fn unregistered() -> PhaseMetrics {
        let counter = || IntCounter::new("unused", "unused").expect("valid counter");
        PhaseMetrics {
            events: counter(),
            errors: counter(),
            panics: counter(),
            abandoned: counter(),
            pdk_calls: counter(),
            duration: prometheus::Histogram::with_opts(HistogramOpts::new("unused", "unused"))
                .expect("valid histogram"),
        }
    }
}

/// One plugin's handles.
pub struct PluginMetrics {
    phases: Vec<PhaseMetrics>,
    /// Panics in the plugin's constructor.
    pub constructor_panics: IntCounter,
}

impl PluginMetrics {
    /// The handles of `phase`.
    pub fn phase(&self, phase: Phase) -> &PhaseMetrics {
        &self.phases[usize::from(phase.code())]
    }

    fn sum(&self, pick: impl Fn(&PhaseMetrics) -> &IntCounter) -> u64 {
        self.phases.iter().map(|p| pick(p).get()).sum()
    }

    /// Events started, all phases.
    pub fn events(&self) -> u64 {
        self.sum(|p| &p.events)
    }

    /// Handler errors, all phases.
    pub fn failures(&self) -> u64 {
        self.sum(|p| &p.errors)
    }

    /// Panics, all phases and the constructor.
    pub fn panics(&self) -> u64 {
        self.sum(|p| &p.panics) + self.constructor_panics.get()
    }

    /// Abandoned events, all phases.
    pub fn abandoned(&self) -> u64 {
        self.sum(|p| &p.abandoned)
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NAMESPACE)
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
    registry
        .register(Box::new(collector.clone()))
        .expect("metric names are unique and valid");
    collector
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let by_phase = ["plugin", "phase"];
        let counter = |name: &str, help: &str| {
            register(
                &registry,
                IntCounterVec::new(opts(name, help), &by_phase).expect("valid counter"),
            )
        };
        let metrics = Metrics {
            events: counter("events_total", "Events (phase handler runs) started."),
            errors: counter(
                "event_errors_total",
                "Events whose handler returned an error.",
            ),
            panics: counter("event_panics_total", "Events whose handler panicked."),
            abandoned: counter(
                "abandoned_events_total",
                "Events freed because Kong never sent their next Step.",
            ),
            pdk_calls: counter("pdk_calls_total", "PDK calls handed to Kong (round trips)."),
            duration: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "event_duration_seconds",
                        "Event duration, HandleEvent to the end.",
                    )
                    .namespace(NAMESPACE)
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &by_phase,
                )
                .expect("valid histogram"),
            ),
            constructor_panics: register(
                &registry,
                IntCounterVec::new(
                    opts("constructor_panics_total", "Panics in plugin constructors."),
                    &["plugin"],
                )
                .expect("valid counter"),
            ),
            instances: register(
                &registry,
                IntGaugeVec::new(opts("instances", "Running instances."), &["plugin"])
                    .expect("valid gauge"),
            ),
            in_flight: register(
                &registry,
                IntGauge::with_opts(opts("events_in_flight", "Events started and not finished."))
                    .expect("valid gauge"),
            ),
            connections: register(
                &registry,
                IntGauge::with_opts(opts("connections", "Open connections from Kong."))
                    .expect("valid gauge"),
            ),
            plugins: register(
                &registry,
                IntGaugeVec::new(
                    opts(
                        "plugin_info",
                        "Loaded plugins (value 1), with version and file.",
                    ),
                    &["plugin", "version", "file"],
                )
                .expect("valid gauge"),
            ),
            registry,
        };
        let build = register(
            &metrics.registry,
            IntGaugeVec::new(
                opts("build_info", "The daemon's version (value 1)."),
                &["version"],
            )
            .expect("valid gauge"),
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        metrics
    }

    /// Resolves the handles of a plugin being loaded. Only the phases it implements get
    /// series (the daemon refuses events of the others); the rest get unregistered handles.
    pub fn for_plugin(&self, plugin: &PluginInfo) -> PluginMetrics {
        let phases = Phase::ALL
            .iter()
            .map(|phase| {
                if !plugin.phases.contains(phase) {
                    return PhaseMetrics::unregistered();
                }
                let labels = [plugin.name.as_str(), phase.name()];
                PhaseMetrics {
                    events: self.events.with_label_values(&labels),
                    errors: self.errors.with_label_values(&labels),
                    panics: self.panics.with_label_values(&labels),
                    abandoned: self.abandoned.with_label_values(&labels),
                    pdk_calls: self.pdk_calls.with_label_values(&labels),
                    duration: self.duration.with_label_values(&labels),
                }
            })
            .collect();
        PluginMetrics {
            phases,
            constructor_panics: self
                .constructor_panics
                .with_label_values(&[plugin.name.as_str()]),
        }
    }

    /// The Prometheus text exposition of everything, gauges refreshed from `server`.
    pub fn render(&self, server: &Server) -> String {
        let daemon = server.daemon();
        self.in_flight.set(
            daemon
                .live_events
                .load(std::sync::atomic::Ordering::Relaxed) as i64,
        );
        self.connections.set(server.connections() as i64);
        self.instances.reset();
        self.plugins.reset();
        for plugin in daemon.plugins() {
            let info: &PluginInfo = &plugin.plugin.info;
            let path = plugin.plugin.path.display().to_string();
            self.plugins
                .with_label_values(&[info.name.as_str(), info.version.as_str(), path.as_str()])
                .set(1);
            self.instances
                .with_label_values(&[info.name.as_str()])
                .set(0);
        }
        for instance in daemon.instances.iter() {
            self.instances
                .with_label_values(&[instance.plugin.plugin.info.name.as_str()])
                .inc();
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding metrics into a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// Serves `GET /metrics` on `addr` from a background thread.
pub fn serve(addr: SocketAddr, server: Arc<Server>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(err) = answer(stream, &server) {
                    tracing::debug!("metrics request failed: {err}");
                }
            }
        })?;
    tracing::info!("serving metrics on http://{bound}/metrics");
    Ok(bound)
}

/// One HTTP/1.x exchange; the connection is closed after the response.
fn answer(mut stream: TcpStream, server: &Server) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let request_line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let (status, content_type, body) =
        if request_line.starts_with(b"GET /metrics ") || request_line == b"GET /metrics" {
            let metrics = server.metrics();
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                metrics.render(server),
            )
        } else {
            ("404 Not Found", "text/plain", "try /metrics\n".to_owned())
        };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
