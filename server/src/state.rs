//! Daemon-wide state: loaded plugins, running instances and in-flight events.
//!
//! Kong sends the steps of one event on whatever pooled connection it picks, from any nginx
//! worker, so nothing here belongs to a connection: everything is keyed by id. An in-flight
//! event is *removed* from the table while a connection works on it and put back when it
//! stops at its next PDK call, so no per-event lock is needed (Kong never sends two steps of
//! one event at once).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock, Weak,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use dashmap::DashMap;
use kong_rust_pdk::{
    Phase,
    ffi::{ConfiguredBox, EventBox, InstanceBox},
};
use rustc_hash::FxBuildHasher;
use sync_wrapper::SyncWrapper;

use crate::{
    ids::IdSource,
    loader::LoadedPlugin,
    metrics::{Metrics, PluginMetrics},
};

/// Limits that protect the daemon from runaway clients and plugins.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted request, in bytes.
    pub max_message: usize,
    /// Most events one instance may have in flight at once.
    pub max_events_per_instance: usize,
    /// Most connections served at once (each has a thread).
    pub max_connections: usize,
    /// An event that waits longer than this for Kong's next Step is abandoned.
    pub event_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message: 16 << 20,
            max_events_per_instance: 10_000,
            max_connections: 4_096,
            event_timeout: Duration::from_secs(60),
        }
    }
}

/// Everything the connections share.
pub struct Daemon {
    /// Plugins by name; replaced entries (a reload) stay alive through their instances.
    plugins: RwLock<HashMap<String, Arc<PluginEntry>>>,
    /// Running instances by id. Ids are the daemon's own, so a fast non-keyed hash is fine
    /// (SipHash showed up in the per-event profile).
    pub instances: DashMap<u64, Arc<Instance>, FxBuildHasher>,
    /// In-flight events by id, while they wait for Kong. A plugin's coroutine is `Send` but
    /// not `Sync`; the wrapper makes the table shareable by allowing only owned access.
    pub events: DashMap<u64, SyncWrapper<Event>, FxBuildHasher>,
    /// Events alive anywhere: in the table or being run by a connection.
    pub live_events: Arc<AtomicUsize>,
    /// Set on SIGTERM: no new events, in-flight ones finish.
    pub draining: AtomicBool,
    /// Source of instance and event ids.
    pub ids: IdSource,
    /// This process's pid, announced on every connection.
    pub pid: u32,
    /// When the daemon started, the zero of [`Instance::last_used`].
    pub epoch: Instant,
    /// Limits in force.
    pub limits: Limits,
    /// Metric families (served with `--metrics-listen`; counters always kept).
    pub metrics: Metrics,
}

/// A loaded plugin, its constructed configurations and its counters.
pub struct PluginEntry {
    /// The library.
    pub plugin: LoadedPlugin,
    /// Constructed plugins by canonical configuration: instances with identical
    /// configurations share one. Entries die with their last instance.
    configured: Mutex<HashMap<Arc<str>, Weak<Configured>>>,
    /// Unix seconds of the last StartInstance (0: never).
    pub last_start_instance: AtomicU64,
    /// Unix seconds of the last CloseInstance (0: never).
    pub last_close_instance: AtomicU64,
    /// Event, fault and latency metrics, per phase.
    pub metrics: PluginMetrics,
}

/// A plugin constructed for one configuration.
pub struct Configured {
    /// The plugin's object.
    pub handle: ConfiguredBox,
    /// The configuration, canonical JSON without Kong's bookkeeping keys (shared with the
    /// map key; echoed by InstanceStatus).
    pub config: Arc<str>,
}

/// One Kong instance of a plugin.
pub struct Instance {
    /// Its id, as Kong knows it.
    pub id: u64,
    /// The plugin it runs.
    pub plugin: Arc<PluginEntry>,
    /// The constructed plugin, shared with instances of the same configuration.
    pub configured: Arc<Configured>,
    /// Unix seconds when it was started.
    pub start_time: u64,
    /// Milliseconds since [`Daemon::epoch`] of the last event (or the start).
    pub last_used: AtomicU64,
    /// Events of this instance alive now.
    pub live_events: AtomicUsize,
    /// The plugin's object for this instance.
    pub handle: InstanceBox,
}

/// A phase handler between two PDK calls.
pub struct Event {
    /// The instance it belongs to.
    pub instance: Arc<Instance>,
    /// The phase it runs.
    pub phase: Phase,
    /// The plugin's coroutine.
    pub handle: EventBox,
    /// When it started, for logs.
    pub started: Instant,
    /// When it last handed a PDK call to Kong, for reaping.
    pub waiting_since: Instant,
    daemon_live_events: Arc<AtomicUsize>,
}

impl Event {
    /// A new event, counted as live until dropped.
    pub fn new(daemon: &Daemon, instance: Arc<Instance>, phase: Phase, handle: EventBox) -> Event {
        daemon.live_events.fetch_add(1, Ordering::Relaxed);
        instance.live_events.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        Event {
            instance,
            phase,
            handle,
            started: now,
            waiting_since: now,
            daemon_live_events: daemon.live_events.clone(),
        }
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        self.instance.live_events.fetch_sub(1, Ordering::Relaxed);
        self.daemon_live_events.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Daemon {
    /// A daemon serving `plugins`.
    pub fn new(plugins: HashMap<String, LoadedPlugin>, limits: Limits) -> Daemon {
        let metrics = Metrics::new();
        let plugins = plugins
            .into_iter()
            .map(|(name, plugin)| (name, Arc::new(PluginEntry::new(plugin, &metrics))))
            .collect();
        Daemon {
            plugins: RwLock::new(plugins),
            instances: DashMap::with_hasher(FxBuildHasher),
            events: DashMap::with_hasher(FxBuildHasher),
            live_events: Arc::new(AtomicUsize::new(0)),
            draining: AtomicBool::new(false),
            ids: IdSource::from_clock(),
            pid: std::process::id(),
            epoch: Instant::now(),
            limits,
            metrics,
        }
    }

    /// The plugin called `name`.
    pub fn plugin(&self, name: &str) -> Option<Arc<PluginEntry>> {
        self.plugins
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Every plugin, sorted by name.
    pub fn plugins(&self) -> Vec<Arc<PluginEntry>> {
        let mut plugins: Vec<_> = self
            .plugins
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        plugins.sort_by(|a, b| a.plugin.info.name.cmp(&b.plugin.info.name));
        plugins
    }

    /// Serves `plugin` from now on, replacing a plugin of the same name; returns the
    /// replaced entry. Instances of the replaced one are released, so Kong starts them again
    /// on the new code (their in-flight events finish on the old code).
    pub fn install(&self, plugin: LoadedPlugin) -> Option<Arc<PluginEntry>> {
        let name = plugin.info.name.clone();
        let entry = Arc::new(PluginEntry::new(plugin, &self.metrics));
        let replaced = self
            .plugins
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, entry);
        if let Some(old) = &replaced {
            self.instances
                .retain(|_, instance| !Arc::ptr_eq(&instance.plugin, old));
        }
        replaced
    }

    /// Milliseconds since the daemon started: a cheap clock for idle tracking.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Removes instances without an event for `idle`; returns how many. Their running
    /// events finish normally (they hold the instance); Kong's next event for a removed id
    /// gets `no plugin instance` and Kong starts the instance again.
    pub fn expire_idle_instances(&self, idle: Duration) -> usize {
        let cutoff = self.now_ms().saturating_sub(idle.as_millis() as u64);
        let before = self.instances.len();
        self.instances.retain(|id, instance| {
            let keep = instance.last_used.load(Ordering::Relaxed) >= cutoff;
            if !keep {
                tracing::debug!(
                    plugin = %instance.plugin.plugin.info.name,
                    instance = id,
                    "expired idle instance"
                );
            }
            keep
        });
        before.saturating_sub(self.instances.len())
    }

    /// Frees events that have waited longer than the event timeout for Kong's next Step:
    /// Kong dropped them (a timeout, a closed connection, a client gone). Returns how many.
    pub fn reap_abandoned_events(&self) -> usize {
        let timeout = self.limits.event_timeout;
        let mut reaped = 0;
        self.events.retain(|id, event| {
            let event = event.get_mut();
            let keep = event.waiting_since.elapsed() < timeout;
            if !keep {
                reaped += 1;
                let plugin = &event.instance.plugin;
                plugin.metrics.phase(event.phase).abandoned.inc();
                tracing::warn!(
                    plugin = %plugin.plugin.info.name,
                    instance = event.instance.id,
                    phase = %event.phase,
                    event = id,
                    "freed an event Kong abandoned (no Step for {}s)",
                    timeout.as_secs_f64()
                );
            }
            keep
        });
        reaped
    }
}

impl PluginEntry {
    fn new(plugin: LoadedPlugin, metrics: &Metrics) -> PluginEntry {
        PluginEntry {
            metrics: metrics.for_plugin(&plugin.info),
            plugin,
            configured: Mutex::new(HashMap::new()),
            last_start_instance: AtomicU64::new(0),
            last_close_instance: AtomicU64::new(0),
        }
    }

    /// The constructed plugin for `canonical_config`, built with `construct` unless an
    /// instance with the same configuration is alive. Holding the lock while constructing
    /// makes concurrent StartInstances of a new configuration construct it once.
    pub fn configured<E>(
        &self,
        canonical_config: &str,
        construct: impl FnOnce() -> Result<ConfiguredBox, E>,
    ) -> Result<Arc<Configured>, E> {
        let mut configured = self.configured.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = configured.get(canonical_config).and_then(Weak::upgrade) {
            return Ok(existing);
        }
        configured.retain(|_, weak| weak.strong_count() > 0);
        let config: Arc<str> = Arc::from(canonical_config);
        let fresh = Arc::new(Configured {
            handle: construct()?,
            config: config.clone(),
        });
        configured.insert(config, Arc::downgrade(&fresh));
        Ok(fresh)
    }

    /// How many distinct configurations are constructed and in use.
    pub fn configurations(&self) -> usize {
        let configured = self.configured.lock().unwrap_or_else(|e| e.into_inner());
        configured.values().filter(|w| w.strong_count() > 0).count()
    }
}

/// Current Unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
