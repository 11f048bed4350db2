//! Configurations a plugin refused, accepted anyway for Kong 3.0.
//!
//! Kong 3.0 mishandles an error answer to `plugin.StartInstance`: it stores the error text
//! as if it were the instance, logs nothing, sends that request's event with no instance id
//! (the plugin never runs: the request goes upstream without it), and every later request
//! for that configuration in that nginx worker spins forever waiting for an id. Kong 3.1+
//! raise a Lua error instead, which ends the request with a 500.
//!
//! So for Kong 3.0 the daemon never fails `StartInstance` for a configuration the plugin
//! refuses: it logs the refusal, answers with an instance id, and fails each event of that
//! instance as the plugin's failure policy says (a 500 by default), which is what Kong 3.1+
//! do themselves. The instance lives like any other: `CloseInstance`, `InstanceStatus` and
//! idle expiry see it, and a reload of the plugin drops it so Kong starts it again on the
//! new build.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use super::{
    Daemon, InstanceStatus, Scope, StartError, UnknownInstance, instance_config,
    plugins::PluginEntry, unix_now,
};

/// An instance whose configuration the plugin refused.
pub(crate) struct RefusedInstance {
    pub(crate) plugin: Arc<PluginEntry>,
    /// The plugin's reason, as it refused the configuration.
    pub(crate) reason: String,
    config: serde_json::Value,
    start_time: u64,
    pub(crate) last_used: AtomicU64,
}

impl RefusedInstance {
    fn status(&self, id: u64) -> InstanceStatus {
        InstanceStatus {
            id,
            name: self.plugin.name().to_owned(),
            config: self.config.clone(),
            start_time: self.start_time,
            config_omitted: None,
        }
    }
}

impl Daemon {
    /// Accepts configurations the plugin refuses (Kong 3.0, see the module docs).
    pub fn accepting_refused_configs(mut self) -> Daemon {
        self.accept_refused_configs = true;
        self
    }

    /// `plugin.StartInstance` as the configured Kong needs it: [`start_instance`], except
    /// that for Kong 3.0 a configuration the plugin refuses still gets an instance, whose
    /// events fail.
    ///
    /// [`start_instance`]: Daemon::start_instance
    pub async fn start_instance_for_kong(
        &self,
        scope: &Scope,
        name: &[u8],
        config_json: &[u8],
    ) -> Result<InstanceStatus, StartError> {
        match self.start_instance(scope, name, config_json).await {
            // Bounded like instances: past the budget the refusal goes to Kong as it is.
            Err(StartError::Refused { plugin, reason, .. })
                if self.accept_refused_configs
                    && self.refused.len() < self.limits.max_instances_per_plugin =>
            {
                let entry = self
                    .plugin(&plugin)
                    .expect("start_instance found the plugin");
                let config = serde_json::from_slice(config_json)
                    .ok()
                    .and_then(|c| instance_config::split(&c).ok())
                    .and_then(|split| serde_json::from_str(&split.canonical).ok())
                    .unwrap_or_default();
                let id = self.instance_ids.next();
                tracing::warn!(
                    plugin = %plugin,
                    instance = id,
                    "the plugin refused its configuration: {reason}; accepted as instance {id} \
                     whose every event fails (Kong 3.0 hangs on a StartInstance error)"
                );
                let refused = RefusedInstance {
                    plugin: entry,
                    reason,
                    config,
                    start_time: unix_now(),
                    last_used: AtomicU64::new(self.now_ms()),
                };
                let status = refused.status(id);
                self.refused.insert(id, refused);
                Ok(status)
            }
            other => other,
        }
    }

    /// The refused instance `id` of a plugin of `scope`: its plugin and reason, marked used.
    pub(crate) fn refused_instance(
        &self,
        scope: &Scope,
        id: u64,
    ) -> Option<(Arc<PluginEntry>, String)> {
        let refused = self.refused.get(&id)?;
        if !scope.allows(refused.plugin.slot()) {
            return None;
        }
        refused.last_used.store(self.now_ms(), Ordering::Relaxed);
        Some((refused.plugin.clone(), refused.reason.clone()))
    }

    /// `plugin.CloseInstance` of a refused instance.
    pub fn close_refused_instance(
        &self,
        scope: &Scope,
        id: u64,
    ) -> Result<InstanceStatus, UnknownInstance> {
        self.refused_instance(scope, id)
            .ok_or(UnknownInstance(id))?;
        let (_, refused) = self.refused.remove(&id).ok_or(UnknownInstance(id))?;
        Ok(refused.status(id))
    }

    /// `plugin.InstanceStatus` of a refused instance.
    pub fn refused_instance_status(
        &self,
        scope: &Scope,
        id: u64,
    ) -> Result<InstanceStatus, UnknownInstance> {
        self.refused_instance(scope, id)
            .ok_or(UnknownInstance(id))?;
        let refused = self.refused.get(&id).ok_or(UnknownInstance(id))?;
        Ok(refused.status(id))
    }

    /// Drops refused instances unused since `cutoff_ms`; returns how many.
    pub(crate) fn expire_refused_instances(&self, cutoff_ms: u64) -> usize {
        let before = self.refused.len();
        self.refused
            .retain(|_, r| r.last_used.load(Ordering::Relaxed) >= cutoff_ms);
        before.saturating_sub(self.refused.len())
    }

    /// Drops the refused instances of `plugin` (a reload replaced it).
    pub(crate) fn release_refused_instances_of(&self, plugin: &Arc<PluginEntry>) {
        self.refused.retain(|_, r| !Arc::ptr_eq(&r.plugin, plugin));
    }
}
