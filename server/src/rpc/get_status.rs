//! `plugin.GetStatus` → `{"Pid", "LiveEvents", "Draining", "Plugins": {name: {...}}}`
//! (tools only: `kong-rust-pluginserver status`).

use kong_rust_pluginserver_protocol::encode;

use super::RpcError;
use crate::daemon::Daemon;

/// Writes the daemon's status.
pub fn apply(daemon: &Daemon, msgid: u64, out: &mut Vec<u8>) -> Result<(), RpcError> {
    encode::ok_header(out, msgid);
    encode::value(out, &daemon.status());
    Ok(())
}
