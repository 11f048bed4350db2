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
    plugins::{Configure, Configured, PluginEntry},
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
    /// In a status listing, the size of a configuration too large to list (`Config` is
    /// then null).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_omitted: Option<usize>,
}

impl Instance {
    pub(crate) fn status(&self) -> InstanceStatus {
        InstanceStatus {
            id: self.id,
            name: self.plugin.name().to_owned(),
            config: serde_json::from_str(&self.configured.config).unwrap_or_default(),
            start_time: self.start_time,
            config_omitted: None,
        }
    }

    /// Its status for a listing: a configuration longer than `max_config` bytes is left
    /// out (only its size is given).
    pub(crate) fn listed_status(&self, max_config: usize) -> InstanceStatus {
        let len = self.configured.config.len();
        if len <= max_config {
            return self.status();
        }
        InstanceStatus {
            id: self.id,
            name: self.plugin.name().to_owned(),
            config: serde_json::Value::Null,
            start_time: self.start_time,
            config_omitted: Some(len),
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.plugin.instance_gone();
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
    /// A limit on instances or configuration bytes is reached.
    #[error("plugin.StartInstance: {0}")]
    OverLimit(String),
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
    /// text, bookkeeping keys included). A new configuration is constructed off this
    /// thread (see `PluginEntry::configured`).
    pub async fn start_instance(
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
        let limits = &self.limits;
        // Counted from here: a concurrent start cannot slip past the limit.
        let reservation = plugin
            .reserve_instance(limits.max_instances_per_plugin)
            .ok_or_else(|| {
                StartError::OverLimit(format!(
                    "plugin {name} has {} instances, the most allowed (--max-instances-per-plugin); Kong starts instances per configuration and worker, and idle ones are released after --instance-idle-timeout",
                    limits.max_instances_per_plugin
                ))
            })?;
        let config: serde_json::Value = serde_json::from_slice(config_json)
            .map_err(|e| StartError::BadConfig(format!("Config is not JSON: {e}")))?;
        let InstanceConfig {
            canonical,
            mut meta,
        } = instance_config::split(&config).map_err(StartError::BadConfig)?;
        let fingerprint = super::plugins::fingerprint(&canonical);
        self.configuration_seen(plugin.name(), fingerprint, &canonical);
        if let Some(status) = self.start_quarantined(&plugin, fingerprint, &canonical, &mut meta.id)
        {
            return Ok(status);
        }
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
        let module = plugin.loaded().module;
        let (text, plugin_name) = (canonical.clone(), name.to_string());
        let configured = plugin
            .configured(&canonical, limits.max_config_bytes_per_plugin, move || {
                tracing::debug!(plugin = %plugin_name, "constructing for a new configuration");
                (module.new_instance())(RStr::from(text.as_str())).into_result()
            })
            .await
            .map_err(|err| match err {
                Configure::Construct(err) => refused(err),
                Configure::OverBudget { held, wanted } => StartError::OverLimit(format!(
                    "plugin {name} holds {held} bytes of configurations; this new one of {wanted} bytes would pass the {} allowed (--max-config-bytes-per-plugin)",
                    limits.max_config_bytes_per_plugin
                )),
            })?;
        meta.id = self.instance_ids.next();
        let meta_json = serde_json::to_string(&meta).expect("instance metadata is plain data");
        let handle = configured
            .handle
            .bind(RStr::from(meta_json.as_str()))
            .into_result()
            .map_err(refused)?;
        let now = unix_now();
        reservation.keep();
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
        if let Some(status) = self.close_quarantined(scope, id) {
            return Ok(status);
        }
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
        match self.instance(scope, id) {
            Ok(instance) => Ok(instance.status()),
            Err(unknown) => self.quarantined_status(scope, id).ok_or(unknown),
        }
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

    /// The newest `most` instances of `plugin` (highest ids first), and how many it has.
    pub(crate) fn newest_instances_of(
        &self,
        plugin: &Arc<PluginEntry>,
        most: usize,
    ) -> (Vec<Arc<Instance>>, usize) {
        let mut all: Vec<Arc<Instance>> = self
            .instances
            .iter()
            .filter(|entry| Arc::ptr_eq(&entry.plugin, plugin))
            .map(|entry| entry.value().clone())
            .collect();
        let count = all.len();
        if count > most {
            all.select_nth_unstable_by(most, |a, b| b.id.cmp(&a.id));
            all.truncate(most);
        }
        all.sort_unstable_by_key(|instance| std::cmp::Reverse(instance.id));
        (all, count)
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
        let mut expired = Vec::new();
        self.instances.retain(|id, instance| {
            let keep = instance.last_used.load(Ordering::Relaxed) >= cutoff;
            if !keep {
                tracing::debug!(
                    plugin = %instance.plugin.name(),
                    instance = id,
                    "expired idle instance"
                );
                expired.push(instance.clone());
            }
            keep
        });
        // Their destructors (the plugin's code) run here, outside the table's locks.
        let count = expired.len();
        drop(expired);
        count + self.expire_refused_instances(cutoff)
    }

    /// Releases every instance of `plugin` (a reload replaced it): Kong starts them again
    /// on the new build.
    pub(crate) fn release_instances_of(&self, plugin: &Arc<PluginEntry>) {
        let mut released = Vec::new();
        self.instances.retain(|_, instance| {
            let keep = !Arc::ptr_eq(&instance.plugin, plugin);
            if !keep {
                released.push(instance.clone());
            }
            keep
        });
        // Destructors outside the table's locks.
        drop(released);
        self.release_refused_instances_of(plugin);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{loader::LoadedPlugin, settings::Limits};

    fn hello(limits: Limits) -> Daemon {
        let module = kong_rust_pdk::__private::module_for::<rust_hello::RustHello>();
        let plugin = LoadedPlugin::from_module(module, Path::new("rust-hello.so")).unwrap();
        Daemon::new([plugin], limits)
    }

    #[test]
    fn instances_and_configuration_bytes_are_bounded_per_plugin() {
        let daemon = hello(Limits {
            max_instances_per_plugin: 3,
            max_config_bytes_per_plugin: 100,
            ..Limits::default()
        });
        let scope = daemon.scope_of("rust-hello").unwrap();
        let start = |config: &str| {
            crate::wait::block_on(daemon.start_instance(&scope, b"rust-hello", config.as_bytes()))
        };
        let ids: Vec<u64> = (0..3).map(|_| start("{}").unwrap().id).collect();
        let err = start("{}").unwrap_err();
        assert!(matches!(err, StartError::OverLimit(_)), "{err}");
        assert!(
            err.to_string().contains("--max-instances-per-plugin"),
            "{err}"
        );
        daemon.close_instance(&scope, ids[0]).unwrap();

        // `{}` holds 2 of the 100 bytes; this one needs 104.
        let big = format!(r#"{{"message":"{}"}}"#, "x".repeat(90));
        let err = start(&big).unwrap_err();
        assert!(
            err.to_string().contains("--max-config-bytes-per-plugin"),
            "{err}"
        );
        // A refusal leaves no instance counted.
        start("{}").unwrap();
        assert!(matches!(start("{}"), Err(StartError::OverLimit(_))));
    }
}
