//! Prometheus metric families: a leaf that knows nothing of the daemon's other parts.
//!
//! Per plugin and phase the hot path only touches pre-resolved counter and histogram
//! handles (atomic adds); labels are looked up once, when a plugin is loaded. Gauges that
//! describe the daemon's state (instances, events in flight, loaded plugins) are handed in
//! as a [`Gauges`] snapshot when Prometheus scrapes.

use kong_rust_plugin_abi::{Manifest, Phase};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder, core::Collector,
};

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
    evicted: IntCounterVec,
    slow: IntCounterVec,
    pdk_calls: IntCounterVec,
    duration: HistogramVec,
    failures: IntCounterVec,
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
    /// Events freed early, longest-waiting first, to make room in a full instance budget.
    pub evicted: IntCounter,
    /// Polls of a handler that held its event loop past the slow-handler threshold.
    pub slow: IntCounter,
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
            evicted: counter(),
            slow: counter(),
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

    /// Counts a handler that held its event loop too long.
    pub fn slow_handler(&self, phase: Option<Phase>) {
        if let Some(phase) = phase {
            self.phase(phase).slow.inc();
        }
    }

    /// Evicted events, all phases.
    pub fn evicted(&self) -> u64 {
        self.sum(|p| &p.evicted)
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
            evicted: counter(
                "evicted_events_total",
                "Events freed early, longest-waiting first, to make room in a full instance budget.",
            ),
            slow: counter(
                "slow_handlers_total",
                "Handler polls that held their event loop past --slow-handler-ms (every other request of the plugin waited).",
            ),
            pdk_calls: counter("pdk_calls_total", "PDK calls handed to Kong (round trips)."),
            failures: register(
                &registry,
                IntCounterVec::new(
                    opts(
                        "event_failures_total",
                        "Events that failed or could not run, by reason, and whether the daemon ended the request (ended_request) or let it continue (continued).",
                    ),
                    &["plugin", "phase", "reason", "action"],
                )
                .expect("valid counter"),
            ),
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

    /// Counts one failed event (not on the hot path: labels are looked up here).
    pub fn count_failure(&self, plugin: &str, phase: Phase, reason: &str, action: &str) {
        self.failures
            .with_label_values(&[plugin, phase.name(), reason, action])
            .inc();
    }

    /// Resolves the handles of a plugin being loaded. Only the phases it implements get
    /// series (the daemon refuses events of the others); the rest get unregistered handles.
    pub fn for_plugin(&self, plugin: &Manifest) -> PluginMetrics {
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
                    evicted: self.evicted.with_label_values(&labels),
                    slow: self.slow.with_label_values(&labels),
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

    /// The Prometheus text exposition of everything, with the gauges set from `gauges`.
    pub fn render(&self, gauges: &Gauges) -> String {
        self.in_flight.set(gauges.events_in_flight as i64);
        self.connections.set(gauges.connections as i64);
        self.instances.reset();
        self.plugins.reset();
        for plugin in &gauges.plugins {
            self.plugins
                .with_label_values(&[
                    plugin.name.as_str(),
                    plugin.version.as_str(),
                    plugin.file.as_str(),
                ])
                .set(1);
            self.instances
                .with_label_values(&[plugin.name.as_str()])
                .set(plugin.instances as i64);
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding metrics into a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// The daemon's state at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Events started and not finished.
    pub events_in_flight: usize,
    /// Connections open from Kong.
    pub connections: usize,
    /// Each loaded plugin.
    pub plugins: Vec<PluginGauge>,
}

/// One plugin at scrape time.
#[derive(Debug, Clone, Default)]
pub struct PluginGauge {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its library file.
    pub file: String,
    /// Its running instances.
    pub instances: usize,
}
