//! Kong's event loop (`bridge_loop` in `mp_rpc.lua`), for callers that play Kong
//! synchronously: `HandleEvent`, then for every PDK call the handler asks for, Kong's answer
//! in the matching `plugin.Step*`, until the handler returns or the event ends.

use super::{KongSideError, StepData, ends_event, handle_event, step, step_data, step_method_for};

/// One RPC to the pluginserver: what a caller's transport must do.
pub trait Transport {
    /// Sends `request` (one complete encoded request with `msgid`) and returns the raw
    /// result of the response, or the error text of an error response.
    fn call(&mut self, msgid: u64, request: &[u8]) -> Result<CallResult, KongSideError>;
}

/// A response's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallResult {
    /// `[1, msgid, nil, result]`: the raw result.
    Ok(Vec<u8>),
    /// `[1, msgid, error, nil]`: the error text.
    Err(String),
}

/// What Kong does with one PDK call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PdkAnswer {
    /// The function returned this value (one encoded MessagePack value; `None` is nil, sent
    /// as a Step without `Data`).
    Value(Option<Vec<u8>>),
    /// The function raised a Lua error: the handler is aborted and no Step is sent (an
    /// out-of-phase call, bad arguments).
    Raise(String),
}

/// How an event ended, and so what Kong does with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventEnd {
    /// The handler returned (`Data: "ret"`): the request goes on.
    Returned,
    /// The handler called `kong.response.exit` or `kong.response.error` (`method`, raw
    /// `args`): the request ends there.
    Ended {
        /// The PDK function.
        method: String,
        /// Its raw `Args` array.
        args: Vec<u8>,
    },
    /// Kong raised inside a PDK call: the request ends with Kong's 500.
    Raised(String),
    /// The pluginserver answered with an error: Kong logs it and the request goes on as if
    /// the plugin had not run (a plugin that fails this way fails open).
    ErrorReply(String),
}

impl EventEnd {
    /// Whether Kong proxies the request after this end.
    pub fn request_proceeds(&self) -> bool {
        matches!(self, EventEnd::Returned | EventEnd::ErrorReply(_))
    }
}

/// The record of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRun {
    /// The event id the pluginserver gave, if it got that far.
    pub event_id: Option<u64>,
    /// Every PDK call: method and raw `Args`.
    pub calls: Vec<(String, Vec<u8>)>,
    /// How it ended.
    pub end: EventEnd,
}

/// Plays one event of `instance_id` in `phase` as Kong does, numbering requests from
/// `*msgid`. `answer` plays the PDK function (method, raw args).
pub fn run_event(
    transport: &mut impl Transport,
    msgid: &mut u64,
    instance_id: u64,
    phase: &str,
    mut answer: impl FnMut(&str, &[u8]) -> PdkAnswer,
) -> Result<EventRun, KongSideError> {
    let mut run = EventRun {
        event_id: None,
        calls: Vec::new(),
        end: EventEnd::Returned,
    };
    let mut request = Vec::with_capacity(128);
    *msgid += 1;
    handle_event(&mut request, *msgid, instance_id, phase);
    let mut result = transport.call(*msgid, &request)?;
    loop {
        let raw = match result {
            CallResult::Ok(raw) => raw,
            CallResult::Err(text) => {
                run.end = EventEnd::ErrorReply(text);
                return Ok(run);
            }
        };
        let (event_id, method, args) = match step_data(&raw)? {
            StepData::Ret { event_id } => {
                run.event_id = Some(event_id);
                run.end = EventEnd::Returned;
                return Ok(run);
            }
            StepData::Call {
                event_id,
                method,
                args,
            } => (event_id, method, args),
        };
        if run.event_id.is_some_and(|id| id != event_id) {
            return Err(KongSideError::Shape("the same EventId throughout an event"));
        }
        run.event_id = Some(event_id);
        let method = String::from_utf8_lossy(method).into_owned();
        run.calls.push((method.clone(), args.to_vec()));
        if ends_event(method.as_bytes()) {
            run.end = EventEnd::Ended {
                method,
                args: args.to_vec(),
            };
            return Ok(run);
        }
        let data = match answer(&method, args) {
            PdkAnswer::Value(value) => value,
            PdkAnswer::Raise(error) => {
                run.end = EventEnd::Raised(error);
                return Ok(run);
            }
        };
        request.clear();
        *msgid += 1;
        step(
            &mut request,
            *msgid,
            step_method_for(method.as_bytes()),
            event_id,
            data.as_deref(),
        );
        result = transport.call(*msgid, &request)?;
    }
}
