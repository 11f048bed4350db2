//! `plugin.GetPluginInfo [name]` → the object the dump prints for that plugin (tools only).

use kong_rust_pluginserver_protocol::{decode::Reader, encode};

use super::RpcError;
use crate::{
    daemon::{Daemon, Scope, StartError},
    dump::PluginDump,
};

/// Asks for plugin `name`'s description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetPluginInfo<'a> {
    /// The plugin.
    pub name: &'a [u8],
}

impl<'a> GetPluginInfo<'a> {
    /// Reads the bare name.
    pub fn parse(arg: &'a [u8]) -> Result<Self, RpcError> {
        Ok(GetPluginInfo {
            name: Reader::new(arg)
                .bytes()
                .map_err(|e| RpcError::bad_argument("plugin.GetPluginInfo", e))?,
        })
    }

    /// Writes the description.
    pub fn apply(
        self,
        daemon: &Daemon,
        scope: &Scope,
        msgid: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), RpcError> {
        let name = String::from_utf8_lossy(self.name);
        let plugin = daemon
            .plugin(&name)
            .filter(|p| scope.allows(p.slot()))
            .ok_or_else(|| StartError::UnknownPlugin {
                name: name.to_string(),
                served: daemon
                    .plugins()
                    .iter()
                    .filter(|p| scope.allows(p.slot()))
                    .map(|p| p.name().to_owned())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        encode::ok_header(out, msgid);
        encode::value(out, &PluginDump::of(plugin.manifest()));
        Ok(())
    }
}
