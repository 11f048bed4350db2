//! Notices a plugin handler that holds its event loop, and names it.
//!
//! Every event loop has a heartbeat (see [`crate::heartbeat`]) that says which handler it
//! polls and since when. The watchdog thread advances the coarse clock every
//! [`TICK`] and looks at every heartbeat: a poll that lasts longer than the threshold is
//! logged once, with the plugin, phase and event, and counted in
//! `kong_rust_pluginserver_slow_handlers_total`. Everything else on that loop waited meanwhile:
//! such a handler should await its I/O (see docs/writing-plugins.md) or run its blocking work
//! off the loop.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{
    daemon::{Daemon, PluginSlot},
    heartbeat::{self, Heartbeat},
};

/// How often the coarse clock advances.
pub const TICK: Duration = Duration::from_millis(10);

/// The watchdog thread's view.
pub(crate) struct Watchdog {
    watched: Mutex<Vec<(&'static Heartbeat, Arc<str>)>>,
}

impl Watchdog {
    /// Starts the watchdog thread; `threshold` is how long a poll may hold a loop.
    pub(crate) fn start(daemon: Arc<Daemon>, threshold: Duration) -> std::io::Result<Arc<Self>> {
        let watchdog = Arc::new(Watchdog {
            watched: Mutex::new(Vec::new()),
        });
        let threshold_ticks = (threshold.as_millis() / TICK.as_millis()).max(1) as u64;
        let watching = watchdog.clone();
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                // The event each loop was last reported for, so each is reported once.
                let mut reported: Vec<u64> = Vec::new();
                loop {
                    std::thread::sleep(TICK);
                    let now = heartbeat::tick();
                    let watched = watching.watched.lock().unwrap_or_else(|e| e.into_inner());
                    reported.resize(watched.len(), 0);
                    for ((heartbeat, loop_name), reported) in watched.iter().zip(&mut reported) {
                        let Some(busy) = heartbeat.busy() else {
                            continue;
                        };
                        let held = now.saturating_sub(busy.since);
                        if held < threshold_ticks || *reported == busy.event {
                            continue;
                        }
                        *reported = busy.event;
                        let plugin = daemon.plugin_in_slot(PluginSlot(busy.slot));
                        let name = plugin.as_ref().map_or("?", |p| p.name());
                        let phase = busy.phase.map_or("?", |p| p.name());
                        if let Some(plugin) = &plugin {
                            plugin.metrics().slow_handler(busy.phase);
                        }
                        tracing::warn!(
                            plugin = %name,
                            phase = %phase,
                            event = busy.event,
                            "a handler has held its event loop ({loop_name}) for over {} ms: \
                             every other request of this plugin waits; await I/O instead of \
                             blocking, or run blocking work with kong_rust_pdk::spawn_blocking",
                            held * TICK.as_millis() as u64
                        );
                    }
                }
            })?;
        Ok(watchdog)
    }

    /// Watches a loop's heartbeat.
    pub(crate) fn watch(&self, heartbeat: &'static Heartbeat, loop_name: Arc<str>) {
        self.watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((heartbeat, loop_name));
    }
}
