//! `plugin.InstanceStatus [id]` → the instance's status (never called by Kong).

use kong_rust_pluginserver_protocol::encode;

use super::{RpcError, id_argument};
use crate::daemon::{Daemon, Scope};

/// Asks for instance `id`'s status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceStatus {
    /// The instance.
    pub id: u64,
}

impl InstanceStatus {
    /// Reads the bare id.
    pub fn parse(arg: &[u8]) -> Result<Self, RpcError> {
        Ok(InstanceStatus {
            id: id_argument("plugin.InstanceStatus", arg)?,
        })
    }

    /// Writes the status.
    pub fn apply(
        self,
        daemon: &Daemon,
        scope: &Scope,
        msgid: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), RpcError> {
        let status = daemon.instance_status(scope, self.id).or_else(|unknown| {
            daemon
                .refused_instance_status(scope, self.id)
                .map_err(|_| unknown)
        })?;
        encode::ok_header(out, msgid);
        encode::value(out, &status);
        Ok(())
    }
}
