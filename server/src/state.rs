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
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use dashmap::DashMap;
use kong_rust_pdk::{
    Phase,
    ffi::{ConfiguredBox, EventBox, InstanceBox},
};
use sync_wrapper::SyncWrapper;

use crate::{ids::IdSource, loader::LoadedPlugin};

/// Everything the connections share.
pub struct Daemon {
    /// Plugins by name.
    pub plugins: HashMap<String, Arc<PluginEntry>>,
    /// Running instances by id.
    pub instances: DashMap<u64, Arc<Instance>>,
    /// In-flight events by id, while they wait for Kong. A plugin's coroutine is `Send` but
    /// not `Sync`; the wrapper makes the table shareable by allowing only owned access.
    pub events: DashMap<u64, SyncWrapper<Event>>,
    /// Source of instance and event ids.
    pub ids: IdSource,
    /// This process's pid, announced on every connection.
    pub pid: u32,
    /// When the daemon started, the zero of [`Instance::last_used`].
    pub epoch: Instant,
}

/// A loaded plugin, its constructed configurations and its counters.
pub struct PluginEntry {
    /// The library.
    pub plugin: LoadedPlugin,
    /// Constructed plugins by canonical configuration: instances with identical
    /// configurations share one. Entries die with their last instance.
    configured: Mutex<HashMap<String, Weak<Configured>>>,
    /// Unix seconds of the last StartInstance (0: never).
    pub last_start_instance: AtomicU64,
    /// Unix seconds of the last CloseInstance (0: never).
    pub last_close_instance: AtomicU64,
}

/// A plugin constructed for one configuration.
pub struct Configured {
    /// The plugin's object.
    pub handle: ConfiguredBox,
}

/// One Kong instance of a plugin.
pub struct Instance {
    /// Its id, as Kong knows it.
    pub id: u64,
    /// The plugin it runs.
    pub plugin: Arc<PluginEntry>,
    /// The constructed plugin, shared with instances of the same configuration.
    pub configured: Arc<Configured>,
    /// The configuration Kong sent, echoed by InstanceStatus.
    pub config: serde_json::Value,
    /// Unix seconds when it was started.
    pub start_time: u64,
    /// Milliseconds since [`Daemon::epoch`] of the last event (or the start).
    pub last_used: AtomicU64,
    /// The plugin's object for this instance.
    pub handle: InstanceBox,
}

/// A phase handler waiting for Kong's answer to a PDK call.
pub struct Event {
    /// The instance it belongs to.
    pub instance: Arc<Instance>,
    /// The phase it runs.
    pub phase: Phase,
    /// The plugin's coroutine.
    pub handle: EventBox,
    /// When it started, for logs and reaping.
    pub started: Instant,
}

impl Daemon {
    /// A daemon serving `plugins`.
    pub fn new(plugins: HashMap<String, LoadedPlugin>) -> Daemon {
        let plugins = plugins
            .into_iter()
            .map(|(name, plugin)| (name, Arc::new(PluginEntry::new(plugin))))
            .collect();
        Daemon {
            plugins,
            instances: DashMap::new(),
            events: DashMap::new(),
            ids: IdSource::from_clock(),
            pid: std::process::id(),
            epoch: Instant::now(),
        }
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
}

impl PluginEntry {
    fn new(plugin: LoadedPlugin) -> PluginEntry {
        PluginEntry {
            plugin,
            configured: Mutex::new(HashMap::new()),
            last_start_instance: AtomicU64::new(0),
            last_close_instance: AtomicU64::new(0),
        }
    }

    /// The constructed plugin for `canonical_config`, built with `construct` unless an
    /// instance with the same configuration is alive. Holding the lock while constructing
    /// makes concurrent StartInstances of a new configuration construct it once.
    pub fn configured(
        &self,
        canonical_config: &str,
        construct: impl FnOnce() -> Result<ConfiguredBox, String>,
    ) -> Result<Arc<Configured>, String> {
        let mut configured = self.configured.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = configured.get(canonical_config).and_then(Weak::upgrade) {
            return Ok(existing);
        }
        configured.retain(|_, weak| weak.strong_count() > 0);
        let fresh = Arc::new(Configured {
            handle: construct()?,
        });
        configured.insert(canonical_config.to_owned(), Arc::downgrade(&fresh));
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
