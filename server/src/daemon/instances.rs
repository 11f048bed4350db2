//! Kong's plugin instances: `StartInstance`, `CloseInstance`, `InstanceStatus`, and expiry.
//!
//! Kong starts an instance per plugin configuration per nginx worker, and again on every
//! configuration change. The plugin is constructed once per distinct configuration (Kong's
//! bookkeeping keys aside) and shared; each instance still gets its own id and metadata.

use std::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

use abi_stable::std_types::RStr;
use kong_rust_plugin_abi::{InstanceBox, PluginErrorFfi};
use serde::Serialize;

use super::{
    Daemon, Scope,
    instance_config::{self, InstanceConfig},
    plugins::{Configured, PluginEntry},
    unix_now,
};

/// A request naming an instance this daemon does not have (or not on this socket): Kong
/// starts the instance again when told so, in exactly these words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no plugin instance {0}")]
pub struct UnknownInstance(pub u64);

/// One Kong instance of a plugin.
pub(crate) struct Instance {
    /// Its id, as Kong knows it.
    pub(crate) id: u64,
    /// The plugin it runs.
    pub(crate) plugin: Arc<PluginEntry>,
    /// The constructed plugin, shared with instances of the same configuration.
    pub(crate) configured: Arc<Configured>,
    /// Unix seconds when it was started.
    pub(crate) start_time: u64,
    /// Milliseconds since the daemon started of the last event (or the start).
    pub(crate) last_used: AtomicU64,
    /// Events of this instance alive now.
    pub(crate) live_events: AtomicUsize,
    /// The plugin's object for this instance.
    pub(crate) handle: InstanceBox,
}

/// What `StartInstance`, `CloseInstance` and `InstanceStatus` answer (Kong reads only `Id`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceStatus {
    /// The instance id.
    pub id: u64,
    /// The plugin name.
    pub name: String,
    /// The plugin's own configuration (Kong's bookkeeping keys removed).
    pub config: serde_json::Value,
    /// Unix seconds when it was started.
    pub start_time: u64,
}

impl Instance {
    fn status(&self) -> InstanceStatus {
        InstanceStatus {
            id: self.id,
            name: self.plugin.name().to_owned(),
            config: serde_json::from_str(&self.configured.config).unwrap_or_default(),
            start_time: self.start_time,
        }
    }
}

/// Why `StartInstance` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// A plugin this daemon does not serve on this socket.
    #[error("unknown plugin {name:?}; this socket serves: {served}")]
    UnknownPlugin {
        /// The name asked for.
        name: String,
        /// The names served on the socket.
        served: String,
    },
    /// `Config` is not a JSON object.
    #[error("plugin.StartInstance: bad argument: {0}")]
    BadConfig(String),
    /// The plugin refused its configuration (or panicked building it).
    #[error("plugin {plugin}: {reason}")]
    Refused {
        /// The plugin.
        plugin: String,
        /// The plugin's reason, naming the field.
        reason: String,
        /// Whether its constructor panicked.
        panicked: bool,
    },
}

impl Daemon {
    /// `plugin.StartInstance`: an instance of plugin `name` for `config_json` (Kong's JSON
    /// text, bookkeeping keys included).
    pub fn start_instance(
        &self,
        scope: &Scope,
        name: &[u8],
        config_json: &[u8],
    ) -> Result<InstanceStatus, StartError> {
        let name = String::from_utf8_lossy(name);
        let plugin = self
            .plugin(&name)
            .filter(|p| scope.allows(p.slot()))
            .ok_or_else(|| StartError::UnknownPlugin {
                name: name.to_string(),
                served: self.served_names(scope),
            })?;
        let config: serde_json::Value = serde_json::from_slice(config_json)
            .map_err(|e| StartError::BadConfig(format!("Config is not JSON: {e}")))?;
        let InstanceConfig {
            canonical,
            mut meta,
        } = instance_config::split(&config).map_err(StartError::BadConfig)?;
        let refused = |err: PluginErrorFfi| {
            if err.panicked {
                plugin.metrics().constructor_panics.inc();
            }
            StartError::Refused {
                plugin: name.to_string(),
                reason: err.message.into_string(),
                panicked: err.panicked,
            }
        };
        let configured = plugin
            .configured(&canonical, || {
                tracing::debug!(plugin = %name, "constructing for a new configuration");
                (plugin.loaded().module.new_instance())(RStr::from(canonical.as_str()))
                    .into_result()
            })
            .map_err(refused)?;
        meta.id = self.instance_ids.next();
        let meta_json = serde_json::to_string(&meta).expect("instance metadata is plain data");
        let handle = configured
            .handle
            .bind(RStr::from(meta_json.as_str()))
            .into_result()
            .map_err(refused)?;
        let now = unix_now();
        let instance = Arc::new(Instance {
            id: meta.id,
            plugin: plugin.clone(),
            configured,
            start_time: now,
            last_used: AtomicU64::new(self.now_ms()),
            live_events: AtomicUsize::new(0),
            handle,
        });
        plugin.started_instance(now);
        self.instances.insert(instance.id, instance.clone());
        tracing::debug!(plugin = %name, instance = instance.id, "started instance");
        Ok(instance.status())
    }

    /// `plugin.CloseInstance`: releases an instance; its running events finish on their own.
    pub fn close_instance(
        &self,
        scope: &Scope,
        id: u64,
    ) -> Result<InstanceStatus, UnknownInstance> {
        self.instance(scope, id)?;
        let (_, instance) = self.instances.remove(&id).ok_or(UnknownInstance(id))?;
        instance.plugin.closed_instance(unix_now());
        tracing::debug!(plugin = %instance.plugin.name(), instance = id, "closed instance");
        Ok(instance.status())
    }

    /// `plugin.InstanceStatus`.
    pub fn instance_status(
        &self,
        scope: &Scope,
        id: u64,
    ) -> Result<InstanceStatus, UnknownInstance> {
        Ok(self.instance(scope, id)?.status())
    }

    /// The instance `id`, if it exists and belongs to a plugin of `scope`.
    pub(crate) fn instance(
        &self,
        scope: &Scope,
        id: u64,
    ) -> Result<Arc<Instance>, UnknownInstance> {
        self.instances
            .get(&id)
            .map(|entry| entry.value().clone())
            .filter(|instance| scope.allows(instance.plugin.slot()))
            .ok_or(UnknownInstance(id))
    }

    /// The status of every instance of `plugin`.
    pub fn instances_of(&self, plugin: &Arc<PluginEntry>) -> Vec<InstanceStatus> {
        self.instances
            .iter()
            .filter(|entry| Arc::ptr_eq(&entry.plugin, plugin))
            .map(|entry| entry.status())
            .collect()
    }

    /// How many instances `plugin` has.
    pub fn instance_count(&self, plugin: &Arc<PluginEntry>) -> usize {
        self.instances
            .iter()
            .filter(|entry| Arc::ptr_eq(&entry.plugin, plugin))
            .count()
    }

    /// Removes instances without an event for `idle`; returns how many. Their running
    /// events finish normally (they hold the instance); Kong's next event for a removed id
    /// gets `no plugin instance` and Kong starts the instance again.
    pub fn expire_idle_instances(&self, idle: std::time::Duration) -> usize {
        let cutoff = self.now_ms().saturating_sub(idle.as_millis() as u64);
        let before = self.instances.len();
        self.instances.retain(|id, instance| {
            let keep = instance.last_used.load(Ordering::Relaxed) >= cutoff;
            if !keep {
                tracing::debug!(
                    plugin = %instance.plugin.name(),
                    instance = id,
                    "expired idle instance"
                );
            }
            keep
        });
        before.saturating_sub(self.instances.len())
    }

    /// Releases every instance of `plugin` (a reload replaced it): Kong starts them again
    /// on the new build.
    pub(crate) fn release_instances_of(&self, plugin: &Arc<PluginEntry>) {
        self.instances
            .retain(|_, instance| !Arc::ptr_eq(&instance.plugin, plugin));
    }
}
