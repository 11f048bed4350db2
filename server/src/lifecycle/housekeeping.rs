//! Background upkeep: releasing idle instances, freeing events Kong abandoned, and writing
//! the summaries of warnings held back.

use std::{sync::Arc, time::Duration};

use crate::daemon::{Daemon, housekeeping_period};

/// Starts the housekeeping thread: every round releases instances idle for `idle` (if
/// set) and frees events that waited longer than the event timeout.
pub fn start(daemon: Arc<Daemon>, idle: Option<Duration>) -> std::io::Result<()> {
    let period = housekeeping_period(daemon.limits().event_timeout, idle);
    std::thread::Builder::new()
        .name("housekeeping".into())
        .spawn(move || {
            loop {
                std::thread::sleep(period);
                if let Some(idle) = idle {
                    let expired = daemon.expire_idle_instances(idle);
                    if expired > 0 {
                        tracing::info!("released {expired} instances idle for {}s", idle.as_secs());
                    }
                }
                daemon.reap_abandoned_events();
                crate::log_throttle::flush_all();
            }
        })
        .map(|_| ())
}
