//! `plugin.StartInstance [{"Name": plugin, "Config": "<json>"}]` → the instance's status.

use kong_rust_pluginserver_protocol::encode;

use super::{RpcError, map_entries};
use crate::daemon::{Daemon, Scope};

const METHOD: &str = "plugin.StartInstance";

/// A new instance of `name` for `config` (Kong's JSON text, bookkeeping keys included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartInstance<'a> {
    /// The plugin.
    pub name: &'a [u8],
    /// The configuration, JSON text.
    pub config: &'a [u8],
}

impl<'a> StartInstance<'a> {
    /// Reads the argument map.
    pub fn parse(arg: &'a [u8]) -> Result<Self, RpcError> {
        let (mut name, mut config) = (None, None);
        map_entries(METHOD, arg, |key, r| {
            match key {
                b"Name" => name = Some(r.bytes()?),
                b"Config" => config = Some(r.bytes()?),
                _ => {}
            }
            Ok(())
        })?;
        Ok(StartInstance {
            name: name.ok_or_else(|| RpcError::bad_argument(METHOD, "missing Name"))?,
            config: config.unwrap_or(b"{}"),
        })
    }

    /// Starts the instance and writes its status.
    pub fn apply(
        self,
        daemon: &Daemon,
        scope: &Scope,
        msgid: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), RpcError> {
        let status = daemon.start_instance_for_kong(scope, self.name, self.config)?;
        encode::ok_header(out, msgid);
        encode::value(out, &status);
        Ok(())
    }
}
