//! The daemon's state, and the operations Kong's RPCs apply to it.
//!
//! Kong sends the steps of one event on whatever pooled connection it picks, from any nginx
//! worker, so nothing here belongs to a connection: plugins, instances and in-flight events
//! are daemon-wide, keyed by id, and every operation names the [`Scope`] (the plugins of the
//! socket the request came on) it may touch. The tables are private: connections, tools and
//! tests go through the operations.
//!
//! - [`plugins`](PluginEntry): loaded libraries, their constructed configurations, counters;
//! - `instances`: `StartInstance`, `CloseInstance`, `InstanceStatus`, idle expiry;
//! - `events`: `HandleEvent`, `Step`, failing closed, eviction and reaping;
//! - `status`: what `GetStatus`, `status` and the metrics report;
//! - `protobuf_gate`: the PDK calls ProtoBuf:1 cannot carry, refused before Kong sees them;
//! - `version_gate`: the daemon set up for the Kong release it serves (`--kong-version`).

mod events;
mod ids;
mod instance_config;
mod instances;
mod plugins;
mod protobuf_gate;
mod quarantine;
mod refused;
mod spare_threads;
mod status;
mod version_gate;

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, OnceLock, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use dashmap::DashMap;
use rustc_hash::FxBuildHasher;
use sync_wrapper::SyncWrapper;

pub use events::{CallGate, EventReply, FailureReason, NotAPhase, StartEventError, settle};
pub use ids::{EventIds, InstanceIds};
pub use instance_config::BOOKKEEPING_KEYS;
pub use instances::{InstanceStatus, StartError, UnknownInstance};
pub use plugins::{PluginEntry, PluginSlot, Scope, fingerprint};
pub use protobuf_gate::OutsideProtobuf;
pub use quarantine::QuarantinedConfig;
pub use status::{DaemonStatus, PluginStatus, StuckHandler};
pub use version_gate::VersionGate;

use crate::waitable::WaitableCount;
use crate::{
    loader::LoadedPlugin,
    metrics::Metrics,
    settings::{Limits, Protocol},
};
use events::Event;
use instances::Instance;

/// Everything the connections share.
pub struct Daemon {
    plugins: RwLock<Plugins>,
    /// Running instances by id. Ids are the daemon's own, so a fast non-keyed hash is fine
    /// (SipHash showed up in the per-event profile).
    instances: DashMap<u64, Arc<Instance>, FxBuildHasher>,
    /// In-flight events by id, while they wait for Kong. A plugin's coroutine is `Send` but
    /// not `Sync`; the wrapper makes the table shareable by allowing only owned access.
    events: DashMap<u64, SyncWrapper<Event>, FxBuildHasher>,
    /// Events alive anywhere: in the table or being run by a connection.
    live: Arc<WaitableCount>,
    instance_ids: InstanceIds,
    event_ids: EventIds,
    pid: u32,
    /// The zero of instances' `last_used`.
    epoch: Instant,
    limits: Limits,
    metrics: Metrics,
    /// Set at SIGTERM: the daemon finishes what it has and hands the rest to its successor.
    shutting_down: AtomicBool,
    /// Set when a successor is ready: connections go to it at their next request that is
    /// not a Step of one of this daemon's events.
    handing_over: AtomicBool,
    /// Check PDK calls before they go to Kong, in order; the first refusal wins (none:
    /// every call goes). The Kong version served and the protocol each add one.
    call_gates: Vec<Box<dyn CallGate>>,
    /// What the plugin sockets speak.
    protocol: Protocol,
    /// Kong 3.0: a configuration the plugin refuses still gets an instance (`refused`).
    accept_refused_configs: bool,
    /// Those instances, by id.
    refused: DashMap<u64, refused::RefusedInstance, FxBuildHasher>,
    /// Configurations that crashed their worker (process isolation).
    quarantine: quarantine::Quarantine,
    /// Requests unanswered past the stuck timeout, as the watchdog last saw them.
    stuck: Mutex<Vec<StuckHandler>>,
    /// What `plugin.GetStatus` answers instead of this daemon's own status (a worker of
    /// process isolation answers with the supervisor's view of every worker).
    status_source: OnceLock<StatusSource>,
    /// Told of every configuration a StartInstance names (a worker tells its supervisor,
    /// so a quarantine can show the configuration).
    configuration_seen: OnceLock<ConfigurationSeen>,
}

/// Produces the status `plugin.GetStatus` answers with.
pub type StatusSource =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = serde_json::Value> + Send>> + Send + Sync>;

/// Told `(plugin, fingerprint, canonical configuration)` at each StartInstance.
pub type ConfigurationSeen = Box<dyn Fn(&str, u64, &str) + Send + Sync>;

/// Plugins by name, and the slot each name has had (kept across reloads).
#[derive(Default)]
struct Plugins {
    by_name: HashMap<String, Arc<PluginEntry>>,
    slots: HashMap<String, PluginSlot>,
}

impl Daemon {
    /// A daemon serving `plugins`.
    pub fn new(plugins: impl IntoIterator<Item = LoadedPlugin>, limits: Limits) -> Daemon {
        let daemon = Daemon {
            plugins: RwLock::new(Plugins::default()),
            instances: DashMap::with_hasher(FxBuildHasher),
            events: DashMap::with_hasher(FxBuildHasher),
            live: Arc::new(WaitableCount::default()),
            instance_ids: InstanceIds::from_clock(),
            event_ids: EventIds::from_clock(),
            pid: std::process::id(),
            epoch: Instant::now(),
            limits,
            metrics: Metrics::new(),
            shutting_down: AtomicBool::new(false),
            handing_over: AtomicBool::new(false),
            call_gates: Vec::new(),
            protocol: Protocol::Msgpack,
            accept_refused_configs: false,
            refused: DashMap::with_hasher(FxBuildHasher),
            quarantine: quarantine::Quarantine::default(),
            stuck: Mutex::new(Vec::new()),
            status_source: OnceLock::new(),
            configuration_seen: OnceLock::new(),
        };
        for plugin in plugins {
            daemon.install(plugin);
        }
        daemon
    }

    /// The same daemon, also checking every PDK call with `gate` before it goes to Kong
    /// (after the gates it already has).
    pub fn with_call_gate(mut self, gate: impl CallGate + 'static) -> Daemon {
        self.call_gates.push(Box::new(gate));
        self
    }

    /// The same daemon, serving `protocol`. ProtoBuf:1 needs instance ids that fit an
    /// `int32`, and refuses the PDK calls it cannot carry before they reach Kong.
    pub fn with_protocol(mut self, protocol: Protocol) -> Daemon {
        self.protocol = protocol;
        if protocol == Protocol::Protobuf {
            self.instance_ids = InstanceIds::int32_from_clock();
            self = self.with_call_gate(OutsideProtobuf);
        }
        self
    }

    /// What the plugin sockets speak.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The process id announced to Kong on every connection.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Makes `plugin.GetStatus` answer with what `source` produces (once).
    pub fn set_status_source(&self, source: StatusSource) {
        let _ = self.status_source.set(source);
    }

    /// What `plugin.GetStatus` answers with instead of [`status`](Self::status), if set.
    pub fn status_source(&self) -> Option<&StatusSource> {
        self.status_source.get()
    }

    /// Has `seen` told of every configuration a StartInstance names (once).
    pub fn on_configuration_seen(&self, seen: ConfigurationSeen) {
        let _ = self.configuration_seen.set(seen);
    }

    fn configuration_seen(&self, plugin: &str, fingerprint: u64, canonical: &str) {
        if let Some(seen) = self.configuration_seen.get() {
            seen(plugin, fingerprint, canonical);
        }
    }

    /// Records the requests the watchdog found stuck.
    pub fn set_stuck(&self, stuck: Vec<StuckHandler>) {
        *self.stuck.lock().unwrap_or_else(|e| e.into_inner()) = stuck;
    }

    /// The requests unanswered past the stuck timeout, as last seen.
    pub fn stuck(&self) -> Vec<StuckHandler> {
        self.stuck.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The metric families.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Marks the daemon as shutting down (SIGTERM).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Whether SIGTERM arrived: connections then keep only the work of this daemon's own
    /// events and hand everything else to the successor.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Marks the daemon as handing its connections to a ready successor (implies shutting
    /// down).
    pub fn begin_handover(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
        self.handing_over.store(true, Ordering::Relaxed);
    }

    /// Whether connections go to a successor at their next request this daemon does not
    /// answer itself. One relaxed load per request.
    pub fn is_handing_over(&self) -> bool {
        self.handing_over.load(Ordering::Relaxed)
    }

    /// Events alive now (waiting for Kong, or running).
    pub fn live_events(&self) -> usize {
        self.live.get()
    }

    /// Waits until no event is alive, or until `deadline`; returns how many are left.
    pub fn wait_for_events(&self, deadline: Instant) -> usize {
        self.live.wait_idle(deadline)
    }

    fn read_plugins(&self) -> std::sync::RwLockReadGuard<'_, Plugins> {
        self.plugins.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The plugin called `name`.
    pub fn plugin(&self, name: &str) -> Option<Arc<PluginEntry>> {
        self.read_plugins().by_name.get(name).cloned()
    }

    /// The plugin in `slot`.
    pub fn plugin_in_slot(&self, slot: PluginSlot) -> Option<Arc<PluginEntry>> {
        self.read_plugins()
            .by_name
            .values()
            .find(|p| p.slot() == slot)
            .cloned()
    }

    /// Every plugin, sorted by name.
    pub fn plugins(&self) -> Vec<Arc<PluginEntry>> {
        let mut plugins: Vec<_> = self.read_plugins().by_name.values().cloned().collect();
        plugins.sort_by(|a, b| a.name().cmp(b.name()));
        plugins
    }

    /// The scope of `name`'s own socket, if it is served.
    pub fn scope_of(&self, name: &str) -> Option<Scope> {
        self.plugin(name).map(|p| Scope::One(p.slot()))
    }

    /// The plugin names `scope` allows, sorted, for error messages.
    fn served_names(&self, scope: &Scope) -> String {
        let names: Vec<String> = self
            .plugins()
            .iter()
            .filter(|p| scope.allows(p.slot()))
            .map(|p| p.name().to_owned())
            .collect();
        if names.is_empty() {
            "(no plugins)".into()
        } else {
            names.join(", ")
        }
    }

    /// Serves `plugin` from now on, replacing a plugin of the same name; returns the
    /// replaced entry. Instances of the replaced one are released, so Kong starts them again
    /// on the new code (their in-flight events finish on the old code).
    pub fn install(&self, plugin: LoadedPlugin) -> Option<Arc<PluginEntry>> {
        let name = plugin.manifest.name.clone();
        let metrics = self.metrics.for_plugin(&plugin.manifest);
        let replaced = {
            let mut plugins = self.plugins.write().unwrap_or_else(|e| e.into_inner());
            let next = PluginSlot(plugins.slots.len() as u32);
            let slot = *plugins.slots.entry(name.clone()).or_insert(next);
            let entry = Arc::new(PluginEntry::new(plugin, slot, metrics));
            plugins.by_name.insert(name, entry)
        };
        if let Some(old) = &replaced {
            self.release_instances_of(old);
        }
        replaced
    }

    /// Milliseconds since the daemon started: a cheap clock for idle tracking.
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// Current Unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How long the housekeeping waits between rounds for `event_timeout` and `idle`: a quarter
/// of the shorter, within 100 ms and 30 s.
pub fn housekeeping_period(event_timeout: Duration, idle: Option<Duration>) -> Duration {
    [Some(event_timeout), idle]
        .iter()
        .flatten()
        .map(|t| *t / 4)
        .min()
        .unwrap_or(Duration::from_secs(30))
        .clamp(Duration::from_millis(100), Duration::from_secs(30))
}
