//! The plugins a daemon serves: each loaded library with its constructed configurations
//! and counters, and the scope a socket gives its connections.

use std::{
    collections::HashMap,
    hash::Hasher,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use kong_rust_plugin_abi::{ConfiguredBox, Manifest, Phase, PluginErrorFfi};
use tokio::sync::watch;

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
    /// configurations share one. Entries die with their last instance. The lock is held
    /// only to look up and record, never while plugin code runs.
    configured: Mutex<HashMap<Arc<str>, Construction>>,
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
    /// The configuration's [fingerprint](fingerprint).
    pub fingerprint: u64,
}

/// A configuration constructed, or being constructed.
enum Construction {
    Ready(Weak<Configured>),
    /// Concurrent StartInstances of the configuration wait for this one (true when done).
    Building(watch::Sender<bool>),
}

/// A stable number for a canonical configuration (the same in every process of the same
/// build): what the heartbeats record and what process isolation quarantines. Never 0.
pub fn fingerprint(canonical_config: &str) -> u64 {
    let mut hasher = rustc_hash::FxHasher::default();
    hasher.write(canonical_config.as_bytes());
    hasher.finish().max(1)
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
    /// instance with the same configuration is alive, and if the configurations alive (or
    /// being built) and this one fit in `budget` bytes. `construct` runs on a thread of its
    /// own, outside every lock: a constructor that never returns holds up neither the
    /// connection's event loop, nor other configurations, nor the status. Concurrent
    /// StartInstances of one new configuration construct it once (the others wait for it;
    /// if it fails, the next one tries again).
    pub(crate) async fn configured(
        &self,
        canonical_config: &str,
        budget: usize,
        construct: impl FnOnce() -> Result<ConfiguredBox, PluginErrorFfi> + Send + 'static,
    ) -> Result<Arc<Configured>, Configure<PluginErrorFfi>> {
        let mut construct = Some(construct);
        loop {
            let waiting = {
                let mut configured = self.configured.lock().unwrap_or_else(|e| e.into_inner());
                let waiting = match configured.get(canonical_config) {
                    Some(Construction::Ready(weak)) => match weak.upgrade() {
                        Some(existing) => return Ok(existing),
                        None => None,
                    },
                    Some(Construction::Building(done)) => Some(done.subscribe()),
                    None => None,
                };
                if waiting.is_none() {
                    configured.retain(|_, c| match c {
                        Construction::Ready(weak) => weak.strong_count() > 0,
                        Construction::Building(_) => true,
                    });
                    let held: usize = configured
                        .keys()
                        .filter(|config| config.as_ref() != canonical_config)
                        .map(|config| config.len())
                        .sum();
                    let wanted = canonical_config.len();
                    if held.saturating_add(wanted) > budget {
                        return Err(Configure::OverBudget { held, wanted });
                    }
                    configured.insert(
                        Arc::from(canonical_config),
                        Construction::Building(watch::channel(false).0),
                    );
                }
                waiting
            };
            match waiting {
                // Another StartInstance builds it: wait without holding anything; if it
                // failed or was abandoned, look again (and maybe build it here).
                Some(mut done) => {
                    let _ = done.wait_for(|done| *done).await;
                }
                None => {
                    let construct = construct.take().expect("built once per call");
                    return self
                        .build(canonical_config, construct)
                        .await
                        .map_err(Configure::Construct);
                }
            }
        }
    }

    /// Runs `construct` off this thread and records the result for `canonical_config`.
    async fn build(
        &self,
        canonical_config: &str,
        construct: impl FnOnce() -> Result<ConfiguredBox, PluginErrorFfi> + Send + 'static,
    ) -> Result<Arc<Configured>, PluginErrorFfi> {
        let fingerprint = fingerprint(canonical_config);
        // Whatever happens (even this future dropped), waiters are released.
        let finish = Finish {
            entry: self,
            key: canonical_config,
        };
        let built = construct_off_thread(self.slot, fingerprint, construct).await;
        let config: Arc<str> = Arc::from(canonical_config);
        let outcome = built.map(|handle| {
            Arc::new(Configured {
                handle,
                config: config.clone(),
                fingerprint,
            })
        });
        finish.done(outcome.as_ref().ok());
        outcome
    }

    /// How many distinct configurations are constructed and in use.
    pub fn configurations(&self) -> usize {
        let configured = self.configured.lock().unwrap_or_else(|e| e.into_inner());
        configured
            .values()
            .filter(|c| matches!(c, Construction::Ready(w) if w.strong_count() > 0))
            .count()
    }
}

/// Ends a construction: records it (or forgets it) and wakes the StartInstances waiting.
struct Finish<'a> {
    entry: &'a PluginEntry,
    key: &'a str,
}

impl Finish<'_> {
    fn done(self, built: Option<&Arc<Configured>>) {
        let mut configured = self
            .entry
            .configured
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let waiting = match built {
            Some(fresh) => configured.insert(
                fresh.config.clone(),
                Construction::Ready(Arc::downgrade(fresh)),
            ),
            None => configured.remove(self.key),
        };
        drop(configured);
        if let Some(Construction::Building(done)) = waiting {
            let _ = done.send(true);
        }
        std::mem::forget(self);
    }
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        // Abandoned before it finished: let a waiter build it.
        let waiting = self
            .entry
            .configured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(self.key);
        if let Some(Construction::Building(done)) = waiting {
            let _ = done.send(true);
        }
    }
}

/// Runs a constructor on a spare thread (with a heartbeat naming it, for the watchdog and
/// process isolation's poison detection), and awaits its result.
async fn construct_off_thread(
    slot: PluginSlot,
    fingerprint: u64,
    construct: impl FnOnce() -> Result<ConfiguredBox, PluginErrorFfi> + Send + 'static,
) -> Result<ConfiguredBox, PluginErrorFfi> {
    let (sender, result) = tokio::sync::oneshot::channel();
    let job: super::spare_threads::Job = Box::new(move || {
        // The heartbeat stops naming the constructor before its result goes out: the
        // instance may be used (and its worker crash) the moment it arrives, and a
        // constructor still marked busy then would be blamed for that crash too.
        let built = {
            let _lease = crate::heartbeat::lease();
            let _busy = crate::heartbeat::constructing(slot.0, fingerprint);
            construct()
        };
        let _ = sender.send(built);
    });
    if let Err((err, job)) = super::spare_threads::run("constructor", job) {
        tracing::warn!("cannot start a constructor thread ({err}); constructing here");
        job();
    }
    result.await.unwrap_or_else(|_| {
        Err(PluginErrorFfi {
            message: "the constructor's thread ended without a result".into(),
            panicked: true,
        })
    })
}
