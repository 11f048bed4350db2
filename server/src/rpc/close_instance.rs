//! `plugin.CloseInstance [id]` → the released instance's status.

use kong_rust_pluginserver_protocol::encode;

use super::{RpcError, id_argument};
use crate::daemon::{Daemon, Scope};

/// Releases instance `id`; its running events finish on their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseInstance {
    /// The instance.
    pub id: u64,
}

impl CloseInstance {
    /// Reads the bare id.
    pub fn parse(arg: &[u8]) -> Result<Self, RpcError> {
        Ok(CloseInstance {
            id: id_argument("plugin.CloseInstance", arg)?,
        })
    }

    /// Releases it and writes its status.
    pub fn apply(
        self,
        daemon: &Daemon,
        scope: &Scope,
        msgid: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), RpcError> {
        let status = daemon.close_instance(scope, self.id).or_else(|unknown| {
            daemon
                .close_refused_instance(scope, self.id)
                .map_err(|_| unknown)
        })?;
        encode::ok_header(out, msgid);
        encode::value(out, &status);
        Ok(())
    }
}
