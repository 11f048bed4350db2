//! What the daemon reports about itself: `plugin.GetStatus`, the `status` command and the
//! metrics' gauges read it.
//!
//! The answer is bounded whatever clients started: each plugin lists its newest
//! [`STATUS_INSTANCES`] instances (and says how many it left out), and a configuration longer
//! than [`STATUS_CONFIG_BYTES`] is given by its size only.

use std::{collections::BTreeMap, time::UNIX_EPOCH};

use serde::Serialize;

use super::{Daemon, InstanceStatus};

/// Most instances listed per plugin.
pub const STATUS_INSTANCES: usize = 100;
/// Longest configuration listed, in bytes of JSON.
pub const STATUS_CONFIG_BYTES: usize = 16 * 1024;

/// The daemon as a whole.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DaemonStatus {
    /// Its process id.
    pub pid: u32,
    /// Events alive now.
    pub live_events: usize,
    /// Whether it is shutting down (finishing what it has, handing the rest over).
    pub draining: bool,
    /// Every plugin by name.
    pub plugins: BTreeMap<String, PluginStatus>,
}

/// One plugin.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PluginStatus {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The library file.
    pub file: String,
    /// Unix seconds the file was last modified, as loaded.
    pub modtime: u64,
    /// Unix seconds it was loaded.
    pub load_time: u64,
    /// `fail-closed` or `fail-open`: what a failure does to the request.
    pub on_failure: &'static str,
    /// Its newest instances, a bounded number of them.
    pub instances: Vec<InstanceStatus>,
    /// How many instances it has.
    pub instance_count: usize,
    /// How many of them are not listed.
    pub instances_omitted: usize,
    /// Distinct configurations constructed and in use.
    pub configurations: usize,
    /// Unix seconds of the last StartInstance (0: never).
    pub last_start_instance: u64,
    /// Unix seconds of the last CloseInstance (0: never).
    pub last_close_instance: u64,
    /// Events started.
    pub events: u64,
    /// Events whose handler returned an error (panics are counted apart).
    pub failures: u64,
    /// Panics, in handlers and constructors.
    pub panics: u64,
    /// Events Kong abandoned (freed after the event timeout).
    pub abandoned: u64,
    /// Events freed early to make room in a full instance budget.
    pub evicted: u64,
}

impl Daemon {
    /// A snapshot of everything.
    pub fn status(&self) -> DaemonStatus {
        let secs = |t: std::time::SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        let plugins = self
            .plugins()
            .into_iter()
            .map(|entry| {
                let loaded = entry.loaded();
                let metrics = entry.metrics();
                let (last_start_instance, last_close_instance) = entry.last_start_and_close();
                let (newest, instance_count) = self.newest_instances_of(&entry, STATUS_INSTANCES);
                let instances: Vec<InstanceStatus> = newest
                    .iter()
                    .map(|instance| instance.listed_status(STATUS_CONFIG_BYTES))
                    .collect();
                let status = PluginStatus {
                    name: entry.name().to_owned(),
                    version: entry.manifest().version.clone(),
                    file: loaded.path.display().to_string(),
                    modtime: secs(loaded.modified),
                    load_time: secs(loaded.loaded),
                    on_failure: entry.manifest().on_failure.label(),
                    instances_omitted: instance_count - instances.len(),
                    instances,
                    instance_count,
                    configurations: entry.configurations(),
                    last_start_instance,
                    last_close_instance,
                    events: metrics.events(),
                    failures: metrics.failures(),
                    panics: metrics.panics(),
                    abandoned: metrics.abandoned(),
                    evicted: metrics.evicted(),
                };
                (entry.name().to_owned(), status)
            })
            .collect();
        DaemonStatus {
            pid: self.pid,
            live_events: self.live_events(),
            draining: self.is_shutting_down(),
            plugins,
        }
    }
}
