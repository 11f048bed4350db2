//! `plugin.HandleEvent [{"InstanceId": id, "EventName": phase}]` → the handler's first
//! StepData.

use super::{RpcError, map_entries, write_step_data};
use crate::daemon::{Daemon, Scope};

const METHOD: &str = "plugin.HandleEvent";

/// Starts the `event_name` handler of instance `instance_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandleEvent<'a> {
    /// The instance.
    pub instance_id: u64,
    /// The phase, as Kong names it.
    pub event_name: &'a [u8],
}

impl<'a> HandleEvent<'a> {
    /// Reads the argument map.
    pub fn parse(arg: &'a [u8]) -> Result<Self, RpcError> {
        let (mut instance_id, mut event_name) = (None, None);
        map_entries(METHOD, arg, |key, r| {
            match key {
                b"InstanceId" => instance_id = Some(r.u64()?),
                b"EventName" => event_name = Some(r.bytes()?),
                _ => {}
            }
            Ok(())
        })?;
        Ok(HandleEvent {
            instance_id: instance_id
                .ok_or_else(|| RpcError::bad_argument(METHOD, "missing InstanceId"))?,
            event_name: event_name
                .ok_or_else(|| RpcError::bad_argument(METHOD, "missing EventName"))?,
        })
    }

    /// Runs the handler to its first stop and writes the StepData.
    pub async fn apply(
        self,
        daemon: &Daemon,
        scope: &Scope,
        msgid: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), RpcError> {
        daemon
            .handle_event(
                scope,
                self.instance_id,
                self.event_name,
                |event_id, reply| write_step_data(out, msgid, event_id, reply),
            )
            .await
            .map_err(|err| match err {
                crate::daemon::StartEventError::UnknownInstance(e) => RpcError::from(e),
                crate::daemon::StartEventError::NotAPhase(e) => RpcError::from(e),
            })
    }
}
