//! Daemon-wide state: loaded plugins, running instances and in-flight events.
//!
//! Kong sends the steps of one event on whatever pooled connection it picks, from any nginx
//! worker, so nothing here belongs to a connection: everything is keyed by id. An in-flight
//! event is *removed* from the table while a connection works on it and put back when it
//! stops at its next PDK call, so no per-event lock is needed (Kong never sends two steps of
//! one event at once).

use std::{
    collections::HashMap,
    sync::{Arc, atomic::AtomicU64},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use dashmap::DashMap;
use kong_rust_pdk::{
    Phase,
    ffi::{EventBox, InstanceBox},
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
}

/// A loaded plugin and its counters.
pub struct PluginEntry {
    /// The library.
    pub plugin: LoadedPlugin,
    /// Unix seconds of the last StartInstance (0: never).
    pub last_start_instance: AtomicU64,
    /// Unix seconds of the last CloseInstance (0: never).
    pub last_close_instance: AtomicU64,
}

/// One configured instance of a plugin.
pub struct Instance {
    /// Its id, as Kong knows it.
    pub id: u64,
    /// The plugin it runs.
    pub plugin: Arc<PluginEntry>,
    /// The configuration Kong sent, echoed by InstanceStatus.
    pub config: serde_json::Value,
    /// Unix seconds when it was started.
    pub start_time: u64,
    /// The plugin's instance object.
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
            .map(|(name, plugin)| {
                (
                    name,
                    Arc::new(PluginEntry {
                        plugin,
                        last_start_instance: AtomicU64::new(0),
                        last_close_instance: AtomicU64::new(0),
                    }),
                )
            })
            .collect();
        Daemon {
            plugins,
            instances: DashMap::new(),
            events: DashMap::new(),
            ids: IdSource::from_clock(),
            pid: std::process::id(),
        }
    }
}

/// Current Unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
