//! The RPCs Kong calls: each request is parsed into an [`Rpc`] (borrowing the message,
//! nothing copied), applied to the [`Daemon`] through its typed operations, and the result
//! encoded into exactly one response. One module per method, as Kong names them.

mod close_instance;
mod error;
mod get_plugin_info;
mod get_status;
mod handle_event;
mod instance_status;
mod start_instance;
mod step;

use kong_rust_pluginserver_protocol::{Request, decode::Reader, encode, for_each_entry};

pub use close_instance::CloseInstance;
pub use error::{RpcError, defuse_instance_phrase};
pub use get_plugin_info::GetPluginInfo;
pub use handle_event::HandleEvent;
pub use instance_status::InstanceStatus;
pub use start_instance::StartInstance;
pub use step::Step;

use crate::daemon::{Daemon, EventReply, Scope};

/// One request from Kong, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rpc<'a> {
    /// `plugin.StartInstance`.
    StartInstance(StartInstance<'a>),
    /// `plugin.CloseInstance`.
    CloseInstance(CloseInstance),
    /// `plugin.InstanceStatus`.
    InstanceStatus(InstanceStatus),
    /// `plugin.HandleEvent`.
    HandleEvent(HandleEvent<'a>),
    /// `plugin.Step` and every typed `plugin.Step*` variant.
    Step(Step<'a>),
    /// `plugin.GetPluginInfo` (tools only).
    GetPluginInfo(GetPluginInfo<'a>),
    /// `plugin.GetStatus` (tools only).
    GetStatus,
}

impl<'a> Rpc<'a> {
    /// Parses `request`'s method and argument.
    pub fn parse(request: &Request<'a>) -> Result<Rpc<'a>, RpcError> {
        let arg = request.arg.unwrap_or(&[0xc0]);
        Ok(match request.method {
            b"plugin.HandleEvent" => Rpc::HandleEvent(HandleEvent::parse(arg)?),
            m if m.starts_with(b"plugin.Step") => Rpc::Step(Step::parse(arg)?),
            b"plugin.StartInstance" => Rpc::StartInstance(StartInstance::parse(arg)?),
            b"plugin.CloseInstance" => Rpc::CloseInstance(CloseInstance::parse(arg)?),
            b"plugin.InstanceStatus" => Rpc::InstanceStatus(InstanceStatus::parse(arg)?),
            b"plugin.GetPluginInfo" => Rpc::GetPluginInfo(GetPluginInfo::parse(arg)?),
            b"plugin.GetStatus" => Rpc::GetStatus,
            other => {
                return Err(RpcError::UnknownMethod(
                    String::from_utf8_lossy(other).into_owned(),
                ));
            }
        })
    }

    /// Applies it and writes its response into `out`.
    pub async fn apply(self, daemon: &Daemon, scope: &Scope, msgid: u64, out: &mut Vec<u8>) {
        let start = out.len();
        let result = match self {
            Rpc::HandleEvent(rpc) => rpc.apply(daemon, scope, msgid, out).await,
            Rpc::Step(rpc) => {
                rpc.apply(daemon, scope, msgid, out).await;
                Ok(())
            }
            Rpc::StartInstance(rpc) => rpc.apply(daemon, scope, msgid, out).await,
            Rpc::CloseInstance(rpc) => rpc.apply(daemon, scope, msgid, out),
            Rpc::InstanceStatus(rpc) => rpc.apply(daemon, scope, msgid, out),
            Rpc::GetPluginInfo(rpc) => rpc.apply(daemon, scope, msgid, out),
            Rpc::GetStatus => get_status::apply(daemon, msgid, out).await,
        };
        if let Err(err) = result {
            out.truncate(start);
            err.write(msgid, out);
        }
    }
}

/// Answers one request: parse, apply, encode. Every request gets exactly one response.
pub async fn respond(daemon: &Daemon, scope: &Scope, request: &Request<'_>, out: &mut Vec<u8>) {
    match Rpc::parse(request) {
        Ok(rpc) => rpc.apply(daemon, scope, request.msgid, out).await,
        Err(err) => err.write(request.msgid, out),
    }
}

/// Writes a StepData response: `{"EventId", "Data"}` for `reply`.
pub fn write_step_data(out: &mut Vec<u8>, msgid: u64, event_id: u64, reply: EventReply<'_>) {
    encode::ok_header(out, msgid);
    match reply {
        EventReply::Call { method, args } => encode::step_call(out, event_id, method, args),
        EventReply::Done => encode::step_ret(out, event_id),
        EventReply::EndRequest { status, phase } => {
            let (method, status) = EventReply::ending_call(status, phase);
            encode::step_call_status(out, event_id, method, status);
        }
    }
}

/// Reads a bare integer id argument (CloseInstance, InstanceStatus).
fn id_argument(method: &'static str, arg: &[u8]) -> Result<u64, RpcError> {
    Reader::new(arg)
        .u64()
        .map_err(|e| RpcError::bad_argument(method, format!("expected an instance id: {e}")))
}

/// Reads the string-keyed entries of a map argument.
fn map_entries<'a>(
    method: &'static str,
    arg: &'a [u8],
    visit: impl FnMut(
        &'a [u8],
        &mut Reader<'a>,
    ) -> Result<(), kong_rust_pluginserver_protocol::decode::DecodeError>,
) -> Result<(), RpcError> {
    for_each_entry(arg, visit).map_err(|e| RpcError::bad_argument(method, e))
}
