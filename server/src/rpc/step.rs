//! `plugin.Step* [{"EventId": id, "Data": value}]` (no `Data` when Kong's answer was nil)
//! → the next StepData. Every typed variant (`StepCredential`, `StepMultiMap`...) is
//! handled alike: the plugin decodes the value into the type it asked for.

use super::{RpcError, map_entries, write_step_data};
use crate::daemon::{Daemon, Scope};

const METHOD: &str = "plugin.Step";

/// Delivers Kong's answer to event `event_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step<'a> {
    /// The event.
    pub event_id: u64,
    /// Kong's answer, one raw MessagePack value; `None` when absent (nil).
    pub data: Option<&'a [u8]>,
}

impl<'a> Step<'a> {
    /// Reads the argument map.
    pub fn parse(arg: &'a [u8]) -> Result<Self, RpcError> {
        let (mut event_id, mut data) = (None, None);
        map_entries(METHOD, arg, |key, r| {
            match key {
                b"EventId" => event_id = Some(r.u64()?),
                b"Data" => data = Some(r.raw()?),
                _ => {}
            }
            Ok(())
        })?;
        Ok(Step {
            event_id: event_id.ok_or_else(|| RpcError::bad_argument(METHOD, "missing EventId"))?,
            data,
        })
    }

    /// Resumes the handler and writes the next StepData. Never an error: an event the
    /// daemon does not have ends its request.
    pub async fn apply(self, daemon: &Daemon, scope: &Scope, msgid: u64, out: &mut Vec<u8>) {
        daemon
            .step(scope, self.event_id, self.data, |event_id, reply| {
                write_step_data(out, msgid, event_id, reply)
            })
            .await
    }
}
