//! Notices plugin code that holds its thread, and requests that take too long, and names
//! them.
//!
//! Every event loop (and every thread that runs a constructor) has a heartbeat (see
//! [`crate::heartbeat`]) that says which handler it polls and since when. The watchdog
//! thread advances the coarse clock every [`TICK`] and looks at every heartbeat: a poll that
//! lasts longer than the threshold is logged once, with the plugin, phase and event, and
//! counted in `kong_rust_pluginserver_slow_handlers_total`. Everything else on that loop
//! waited meanwhile: such a handler should await its I/O (see docs/writing-plugins.md) or
//! run its blocking work off the loop.
//!
//! Once a second it also reads every connection's slot on the [board](crate::board)
//! (the wall-clock view): a request (an event's HandleEvent or Step, a StartInstance) that
//! has not been answered after the stuck timeout, whether its handler blocks a thread or
//! awaits something that never comes, is named once in the log, counted in
//! `kong_rust_pluginserver_stuck_handlers_total`, and listed in the status while it lasts.

use std::{
    collections::HashSet,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use crate::{
    board::{Board, ConnState, RequestKind},
    daemon::{Daemon, PluginSlot, Scope, StuckHandler},
    heartbeat::{self, Heartbeat},
};

/// How often the coarse clock advances.
pub const TICK: Duration = Duration::from_millis(10);

/// Ticks between two looks at the connection slots.
const SWEEP_TICKS: u64 = 100;

/// Starts the watchdog thread: `threshold` is how long a poll may hold its thread, `stuck`
/// how long a request may go unanswered.
pub(crate) fn start(
    daemon: Arc<Daemon>,
    board: Arc<Board>,
    threshold: Duration,
    stuck: Option<Duration>,
) -> std::io::Result<()> {
    {
        let threshold_ticks = ticks(threshold);
        let stuck_ticks = stuck.map(ticks);
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                let mut watched: Vec<(&'static Heartbeat, String)> = Vec::new();
                let mut known = usize::MAX;
                // The poll each heartbeat was last reported for, so each is reported once.
                let mut reported: Vec<(u64, u64)> = Vec::new();
                let mut named: HashSet<(u32, u32)> = HashSet::new();
                // The clock follows real time, not the sleeps: on a loaded machine a
                // sleep overruns, and counting them would stretch every timeout.
                let started = Instant::now();
                let mut next_sweep = SWEEP_TICKS;
                loop {
                    std::thread::sleep(TICK);
                    let elapsed = started.elapsed().as_millis() / TICK.as_millis();
                    let now = heartbeat::advance_to(1 + elapsed as u64);
                    let header = board.header();
                    header.tick.store(now, Ordering::Relaxed);
                    header
                        .live_events
                        .store(daemon.live_events() as u64, Ordering::Relaxed);
                    if heartbeat::count() != known {
                        known = heartbeat::count();
                        watched = heartbeat::all();
                        reported.resize(watched.len(), (0, 0));
                    }
                    for ((heartbeat, label), reported) in watched.iter().zip(&mut reported) {
                        look_at(&daemon, heartbeat, label, reported, now, threshold_ticks);
                    }
                    if let Some(stuck_ticks) = stuck_ticks
                        && now >= next_sweep
                    {
                        next_sweep = now + SWEEP_TICKS;
                        sweep(&daemon, &board, now, stuck_ticks, &mut named);
                    }
                }
            })?;
        Ok(())
    }
}

fn ticks(duration: Duration) -> u64 {
    (duration.as_millis() / TICK.as_millis()).max(1) as u64
}

/// Reports a poll of `heartbeat` that has held its thread past the threshold, once.
fn look_at(
    daemon: &Daemon,
    heartbeat: &Heartbeat,
    label: &str,
    reported: &mut (u64, u64),
    now: u64,
    threshold_ticks: u64,
) {
    let Some(busy) = heartbeat.busy() else {
        return;
    };
    let held = now.saturating_sub(busy.since);
    if held < threshold_ticks || *reported == (busy.since, busy.event) {
        return;
    }
    *reported = (busy.since, busy.event);
    let plugin = daemon.plugin_in_slot(PluginSlot(busy.slot));
    let name = plugin.as_ref().map_or("?", |p| p.name());
    let held_ms = held * TICK.as_millis() as u64;
    let Some(phase) = busy.phase else {
        tracing::warn!(
            plugin = %name,
            config = format_args!("{:016x}", busy.config),
            "a plugin constructor has run for over {held_ms} ms ({label}); other \
             configurations and the status are not held up by it"
        );
        return;
    };
    if let Some(plugin) = &plugin {
        plugin.metrics().slow_handler(Some(phase));
    }
    tracing::warn!(
        plugin = %name,
        phase = %phase,
        event = busy.event,
        "a handler has held its event loop ({label}) for over {held_ms} ms: \
         every other request of this plugin waits; await I/O instead of \
         blocking, or run blocking work with kong_rust_pdk::spawn_blocking"
    );
}

/// Lists the requests unanswered past the stuck timeout, naming and counting each new one.
fn sweep(
    daemon: &Daemon,
    board: &Board,
    now: u64,
    stuck_ticks: u64,
    named: &mut HashSet<(u32, u32)>,
) {
    let now32 = now as u32;
    let mut stuck = Vec::new();
    let mut still = HashSet::new();
    for (index, slot) in board.slots().iter().enumerate() {
        let view = slot.view();
        if view.state != ConnState::Handling {
            continue;
        }
        let age = u64::from(now32.wrapping_sub(view.since));
        if age < stuck_ticks {
            continue;
        }
        let plugin = match (view.plugin, view.kind) {
            (Some(slot), _) => daemon
                .plugin_in_slot(PluginSlot(u32::from(slot)))
                .map(|p| p.name().to_owned()),
            (None, RequestKind::HandleEvent) => daemon
                .instance(&Scope::All, view.subject)
                .ok()
                .map(|i| i.plugin.name().to_owned()),
            _ => None,
        }
        .unwrap_or_else(|| "?".to_owned());
        let what = match (view.kind, view.phase) {
            (RequestKind::StartInstance, _) => "constructor".to_owned(),
            (_, Some(phase)) => phase.name().to_owned(),
            _ => "other".to_owned(),
        };
        let handler = StuckHandler {
            plugin,
            phase: what,
            request: match view.kind {
                RequestKind::HandleEvent => "HandleEvent",
                RequestKind::Step => "Step",
                RequestKind::StartInstance => "StartInstance",
                RequestKind::Other => "other",
            }
            .to_owned(),
            subject: view.subject,
            seconds: age * TICK.as_millis() as u64 / 1000,
        };
        let key = (index as u32, view.since);
        still.insert(key);
        if named.insert(key) {
            daemon
                .metrics()
                .count_stuck(&handler.plugin, &handler.phase);
            tracing::warn!(
                plugin = %handler.plugin,
                phase = %handler.phase,
                request = %handler.request,
                subject = handler.subject,
                "a request has waited {} s for its handler (--stuck-timeout); Kong gives up on \
                 it after its own timeout (60 s) and then proxies the request without the plugin",
                handler.seconds
            );
        }
        stuck.push(handler);
    }
    named.retain(|key| still.contains(key));
    daemon.set_stuck(stuck);
}
