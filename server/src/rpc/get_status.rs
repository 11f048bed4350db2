//! `plugin.GetStatus` → `{"Pid", "LiveEvents", "Draining", "Plugins": {name: {...}}}`
//! (tools only: `kong-rust-pluginserver status`).

use kong_rust_pluginserver_protocol::encode;

use super::RpcError;
use crate::daemon::Daemon;

/// Writes the daemon's status; with process isolation, the supervisor's view of every
/// worker (see [`Daemon::set_status_source`]).
pub async fn apply(daemon: &Daemon, msgid: u64, out: &mut Vec<u8>) -> Result<(), RpcError> {
    match daemon.status_source() {
        Some(source) => {
            let status = source().await;
            encode::ok_header(out, msgid);
            encode::value(out, &status);
        }
        None => {
            encode::ok_header(out, msgid);
            encode::value(out, &daemon.status());
        }
    }
    Ok(())
}
