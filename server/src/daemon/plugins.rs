//! The plugins a daemon serves: each loaded library with its constructed configurations
//! and counters, and the scope a socket gives its connections.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use kong_rust_plugin_abi::{ConfiguredBox, Manifest, Phase};

use crate::{loader::LoadedPlugin, metrics::PluginMetrics};

/// A stable number for a plugin name, kept across reloads: what a socket's scope and an
/// instance compare, instead of strings, on every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PluginSlot(pub(crate) u32);

/// The plugins a connection may use: those of the socket it came on.
///
/// Kong opens one socket per pluginserver entry and sends only that entry's plugins there,
/// so a request naming another plugin's instance or event is refused as unknown: one
/// plugin's socket cannot start or step another plugin's work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A plugin's own socket.
    One(PluginSlot),
    /// A socket every plugin is served on (Kong 3.0-3.8 with one entry for all plugins).
    All,
}

impl Scope {
    /// Whether a plugin in `slot` may be used from this scope.
    pub fn allows(&self, slot: PluginSlot) -> bool {
        match self {
            Scope::One(own) => *own == slot,
            Scope::All => true,
        }
    }
}

/// A loaded plugin library, its constructed configurations and its counters.
pub struct PluginEntry {
    loaded: LoadedPlugin,
    slot: PluginSlot,
    /// Constructed plugins by canonical configuration: instances with identical
    /// configurations share one. Entries die with their last instance.
    configured: Mutex<HashMap<Arc<str>, Weak<Configured>>>,
    /// Unix seconds of the last StartInstance (0: never).
    last_start_instance: AtomicU64,
    /// Unix seconds of the last CloseInstance (0: never).
    last_close_instance: AtomicU64,
    /// Instances alive (started and not yet dropped), for the instance limit.
    instances: AtomicUsize,
    metrics: PluginMetrics,
}

/// Why [`PluginEntry::configured`] gave no plugin.
pub(crate) enum Configure<E> {
    /// The constructor failed.
    Construct(E),
    /// The new configuration does not fit in the plugin's configuration budget.
    OverBudget {
        /// Bytes of the configurations alive.
        held: usize,
        /// Bytes of the new one.
        wanted: usize,
    },
}

/// One instance counted against the limit; released on drop unless kept.
pub(crate) struct Reservation<'a> {
    plugin: &'a PluginEntry,
    kept: bool,
}

impl Reservation<'_> {
    /// The instance exists now: its `Drop` releases the count.
    pub(crate) fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.plugin.instance_gone();
        }
    }
}

/// A plugin constructed for one configuration.
pub struct Configured {
    /// The plugin's object.
    pub handle: ConfiguredBox,
    /// The configuration, canonical JSON without Kong's bookkeeping keys (shared with the
    /// map key; echoed by InstanceStatus).
    pub config: Arc<str>,
}

impl PluginEntry {
    pub(crate) fn new(loaded: LoadedPlugin, slot: PluginSlot, metrics: PluginMetrics) -> Self {
        PluginEntry {
            loaded,
            slot,
            configured: Mutex::new(HashMap::new()),
            last_start_instance: AtomicU64::new(0),
            last_close_instance: AtomicU64::new(0),
            instances: AtomicUsize::new(0),
            metrics,
        }
    }

    /// The plugin name.
    pub fn name(&self) -> &str {
        &self.loaded.manifest.name
    }

    /// What the plugin says about itself.
    pub fn manifest(&self) -> &Manifest {
        &self.loaded.manifest
    }

    /// The library it was loaded from.
    pub fn loaded(&self) -> &LoadedPlugin {
        &self.loaded
    }

    /// Its stable slot.
    pub fn slot(&self) -> PluginSlot {
        self.slot
    }

    /// Whether it implements `phase`.
    pub fn implements(&self, phase: Phase) -> bool {
        self.loaded.manifest.phases.contains(&phase)
    }

    /// Its metric handles.
    pub fn metrics(&self) -> &PluginMetrics {
        &self.metrics
    }

    /// Unix seconds of the last StartInstance and CloseInstance (0: never).
    pub fn last_start_and_close(&self) -> (u64, u64) {
        (
            self.last_start_instance.load(Ordering::Relaxed),
            self.last_close_instance.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn started_instance(&self, now: u64) {
        self.last_start_instance.store(now, Ordering::Relaxed);
    }

    pub(crate) fn closed_instance(&self, now: u64) {
        self.last_close_instance.store(now, Ordering::Relaxed);
    }

    /// Counts one more instance, unless `limit` are alive.
    pub(crate) fn reserve_instance(&self, limit: usize) -> Option<Reservation<'_>> {
        self.instances
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Reservation {
                plugin: self,
                kept: false,
            })
    }

    /// An instance of this plugin is gone.
    pub(crate) fn instance_gone(&self) {
        self.instances.fetch_sub(1, Ordering::Relaxed);
    }

    /// The constructed plugin for `canonical_config`, built with `construct` unless an
    /// instance with the same configuration is alive, and if the configurations alive and
    /// this one fit in `budget` bytes. Holding the lock while constructing makes concurrent
    /// StartInstances of a new configuration construct it once.
    pub(crate) fn configured<E>(
        &self,
        canonical_config: &str,
        budget: usize,
        construct: impl FnOnce() -> Result<ConfiguredBox, E>,
    ) -> Result<Arc<Configured>, Configure<E>> {
        let mut configured = self.configured.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = configured.get(canonical_config).and_then(Weak::upgrade) {
            return Ok(existing);
        }
        configured.retain(|_, weak| weak.strong_count() > 0);
        let held: usize = configured.keys().map(|config| config.len()).sum();
        let wanted = canonical_config.len();
        if held.saturating_add(wanted) > budget {
            return Err(Configure::OverBudget { held, wanted });
        }
        let config: Arc<str> = Arc::from(canonical_config);
        let fresh = Arc::new(Configured {
            handle: construct().map_err(Configure::Construct)?,
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
