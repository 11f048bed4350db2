//! Quarantined configurations: with process isolation, a plugin configuration whose events
//! crashed its worker twice within the quarantine window is not run again for a while.
//!
//! The supervisor decides (it outlives the workers that crashed) and tells each worker
//! which configurations of its plugins are quarantined. A StartInstance of such a
//! configuration gets an instance without constructing anything (the crash may be in the
//! constructor), and every event of an instance of it fails closed with 503, without
//! running the plugin. Kong sees a normal instance whose requests end with 503, on every
//! Kong version (a refused StartInstance would stall Kong 3.0's worker). When the
//! quarantine ends, these instances are dropped: Kong's next event gets
//! `no plugin instance` and starts them again, constructed for real.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use dashmap::DashMap;
use kong_rust_plugin_abi::Phase;
use rustc_hash::FxBuildHasher;
use serde::{Deserialize, Serialize};

use super::{Daemon, FailureReason, InstanceStatus, PluginEntry, Scope, unix_now};
use crate::daemon::EventReply;

/// A quarantined configuration of a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct QuarantinedConfig {
    /// The plugin.
    pub plugin: String,
    /// The configuration's fingerprint (see [`super::fingerprint`]), in hex.
    pub config_id: String,
    /// The configuration (canonical JSON), if the supervisor saw it.
    pub config: Option<String>,
    /// Crashes of the plugin's worker while running it, within the window.
    pub crashes: u32,
    /// Seconds until the quarantine ends (unless the plugin's file changes first).
    pub seconds_left: u64,
}

impl QuarantinedConfig {
    /// The fingerprint, parsed.
    pub fn fingerprint(&self) -> Option<u64> {
        u64::from_str_radix(&self.config_id, 16).ok()
    }
}

/// An instance of a quarantined configuration.
struct QuarantinedInstance {
    plugin: Arc<PluginEntry>,
    fingerprint: u64,
    config: serde_json::Value,
    start_time: u64,
}

/// The quarantined configurations, and the instances started for them.
#[derive(Default)]
pub(crate) struct Quarantine {
    /// Whether anything is quarantined: the only thing an event looks at otherwise.
    any: AtomicBool,
    configs: RwLock<HashMap<(String, u64), QuarantinedConfig>>,
    instances: DashMap<u64, QuarantinedInstance, FxBuildHasher>,
}

impl Quarantine {
    fn holds(&self, plugin: &str, fingerprint: u64) -> bool {
        self.any.load(Ordering::Relaxed)
            && self
                .configs
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&(plugin.to_owned(), fingerprint))
    }
}

impl Daemon {
    /// Replaces the quarantined configurations (the supervisor's list). Instances of
    /// configurations no longer quarantined are dropped, so Kong starts them again.
    pub fn set_quarantine(&self, list: Vec<QuarantinedConfig>) {
        let configs: HashMap<(String, u64), QuarantinedConfig> = list
            .into_iter()
            .filter_map(|q| Some(((q.plugin.clone(), q.fingerprint()?), q)))
            .collect();
        let quarantine = &self.quarantine;
        quarantine.any.store(!configs.is_empty(), Ordering::Relaxed);
        *quarantine
            .configs
            .write()
            .unwrap_or_else(|e| e.into_inner()) = configs;
        let configs = quarantine.configs.read().unwrap_or_else(|e| e.into_inner());
        quarantine.instances.retain(|_, instance| {
            configs.contains_key(&(instance.plugin.name().to_owned(), instance.fingerprint))
        });
    }

    /// The quarantined configurations, for the status.
    pub fn quarantined(&self) -> Vec<QuarantinedConfig> {
        let mut list: Vec<QuarantinedConfig> = self
            .quarantine
            .configs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        list.sort_by(|a, b| (&a.plugin, &a.config_id).cmp(&(&b.plugin, &b.config_id)));
        list
    }

    /// Whether configuration `fingerprint` of `plugin` is quarantined.
    pub(crate) fn is_quarantined(&self, plugin: &str, fingerprint: u64) -> bool {
        self.quarantine.holds(plugin, fingerprint)
    }

    /// StartInstance of a quarantined configuration: an instance that runs nothing.
    pub(crate) fn start_quarantined(
        &self,
        plugin: &Arc<PluginEntry>,
        fingerprint: u64,
        canonical: &str,
        id: &mut u64,
    ) -> Option<InstanceStatus> {
        if !self.quarantine.holds(plugin.name(), fingerprint) {
            return None;
        }
        *id = self.instance_ids.next();
        let config: serde_json::Value = serde_json::from_str(canonical).unwrap_or_default();
        let start_time = unix_now();
        tracing::warn!(
            plugin = %plugin.name(),
            instance = *id,
            config = format_args!("{fingerprint:016x}"),
            "started an instance of a quarantined configuration: its events end with 503 \
             without running the plugin"
        );
        let status = InstanceStatus {
            id: *id,
            name: plugin.name().to_owned(),
            config: config.clone(),
            start_time,
            config_omitted: None,
        };
        self.quarantine.instances.insert(
            *id,
            QuarantinedInstance {
                plugin: plugin.clone(),
                fingerprint,
                config,
                start_time,
            },
        );
        plugin.started_instance(start_time);
        Some(status)
    }

    fn quarantined_instance(
        &self,
        scope: &Scope,
        id: u64,
    ) -> Option<dashmap::mapref::one::Ref<'_, u64, QuarantinedInstance>> {
        self.quarantine
            .instances
            .get(&id)
            .filter(|q| scope.allows(q.plugin.slot()))
    }

    /// CloseInstance of an instance of a quarantined configuration.
    pub(crate) fn close_quarantined(&self, scope: &Scope, id: u64) -> Option<InstanceStatus> {
        self.quarantined_instance(scope, id)?;
        let (_, q) = self.quarantine.instances.remove(&id)?;
        Some(InstanceStatus {
            id,
            name: q.plugin.name().to_owned(),
            config: q.config,
            start_time: q.start_time,
            config_omitted: None,
        })
    }

    /// InstanceStatus of an instance of a quarantined configuration.
    pub(crate) fn quarantined_status(&self, scope: &Scope, id: u64) -> Option<InstanceStatus> {
        let q = self.quarantined_instance(scope, id)?;
        Some(InstanceStatus {
            id,
            name: q.plugin.name().to_owned(),
            config: q.config.clone(),
            start_time: q.start_time,
            config_omitted: None,
        })
    }

    /// HandleEvent for an instance of a quarantined configuration: the request ends with
    /// 503, the plugin does not run. `None` if `id` is no such instance.
    pub(crate) fn quarantined_event<R>(
        &self,
        scope: &Scope,
        id: u64,
        phase: Phase,
        reply: impl FnOnce(u64, EventReply<'_>) -> R,
    ) -> Option<R> {
        let plugin = self.quarantined_instance(scope, id)?.plugin.clone();
        let event_id = self.event_ids.next(phase);
        plugin.metrics().phase(phase).events.inc();
        Some(self.fail(
            &plugin,
            id,
            phase,
            event_id,
            FailureReason::Quarantined,
            "the instance's configuration is quarantined (it crashed the plugin's worker)",
            reply,
        ))
    }

    /// How many instances of quarantined configurations `plugin` has.
    pub(crate) fn quarantined_instances_of(&self, plugin: &str) -> usize {
        self.quarantine
            .instances
            .iter()
            .filter(|q| q.plugin.name() == plugin)
            .count()
    }
}
