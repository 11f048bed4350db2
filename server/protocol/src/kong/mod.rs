//! Kong's side of the protocol: what Kong's Lua client (`mp_rpc.lua`) writes, how it reads
//! the pluginserver's answers, and the rules of its event loop.
//!
//! The daemon's own tools (`status`, `try`), the end-to-end tests' simulated Kong, the load
//! generator and the fuzz targets all play Kong with these functions.
//!
//! What Kong does, and so what these encode:
//! - every RPC is `[0, msgid, method, [arg]]`, strings are written without `str8` (fixstr,
//!   str16, str32: lua-MessagePack's "string_compat"), integral numbers as integers;
//! - a PDK call's nil result is a Step whose `Data` key is absent;
//! - the Step method names the kind of result ([`step_method_for`]);
//! - `kong.response.exit` and `kong.response.error` end the event: Kong never sends another
//!   Step for it ([`ends_event`]);
//! - an error reply is logged and the request goes on without the plugin; only an error
//!   containing "no plugin instance" makes Kong start the instance again and retry.

mod client;
mod event;

pub use client::{Client, ClientError};
pub use event::{CallResult, EventEnd, EventRun, PdkAnswer, Transport, run_event};

use rmp::encode as mp;

use crate::{
    decode::{DecodeError, Reader},
    frame,
};

/// Why bytes from a pluginserver are not what Kong's client accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KongSideError {
    /// The bytes do not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A response echoed another msgid (Kong asserts it).
    #[error("response msgid {got} does not echo request {sent}")]
    MsgId {
        /// The request's msgid.
        sent: u64,
        /// What came back.
        got: u64,
    },
    /// A message of the wrong shape.
    #[error("expected {0}")]
    Shape(&'static str),
    /// The connection failed or closed without an answer.
    #[error("connection: {0}")]
    Io(String),
}

type Result<T> = std::result::Result<T, KongSideError>;

fn ok<T, E: std::fmt::Debug>(result: std::result::Result<T, E>) -> T {
    result.expect("writing MessagePack into a Vec cannot fail")
}

/// A string as Kong writes it: fixstr, str16 or str32, never str8.
pub fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    let len = s.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0xda);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(s);
}

/// A non-negative integer, in its smallest encoding.
pub fn write_uint(out: &mut Vec<u8>, n: u64) {
    ok(mp::write_uint(out, n));
}

/// `[0, msgid, method, [` — the caller writes exactly one argument value.
pub fn request_header(out: &mut Vec<u8>, msgid: u64, method: &str) {
    ok(mp::write_array_len(out, 4));
    write_uint(out, 0);
    write_uint(out, msgid);
    write_str(out, method.as_bytes());
    ok(mp::write_array_len(out, 1));
}

/// A whole request with an already encoded argument.
pub fn request(out: &mut Vec<u8>, msgid: u64, method: &str, arg: &[u8]) {
    request_header(out, msgid, method);
    out.extend_from_slice(arg);
}

/// `plugin.StartInstance` with `{"Name": plugin, "Config": json}`.
pub fn start_instance(out: &mut Vec<u8>, msgid: u64, plugin: &str, config_json: &str) {
    request_header(out, msgid, "plugin.StartInstance");
    ok(mp::write_map_len(out, 2));
    write_str(out, b"Name");
    write_str(out, plugin.as_bytes());
    write_str(out, b"Config");
    write_str(out, config_json.as_bytes());
}

/// `plugin.CloseInstance` with the bare instance id.
pub fn close_instance(out: &mut Vec<u8>, msgid: u64, instance_id: u64) {
    request_header(out, msgid, "plugin.CloseInstance");
    write_uint(out, instance_id);
}

/// `plugin.HandleEvent` with `{"InstanceId": id, "EventName": phase}`.
pub fn handle_event(out: &mut Vec<u8>, msgid: u64, instance_id: u64, phase: &str) {
    request_header(out, msgid, "plugin.HandleEvent");
    ok(mp::write_map_len(out, 2));
    write_str(out, b"InstanceId");
    write_uint(out, instance_id);
    write_str(out, b"EventName");
    write_str(out, phase.as_bytes());
}

/// `plugin.Step*` (`method`, see [`step_method_for`]) with `{"EventId": id, "Data": data}`,
/// or without `Data` when the PDK call returned nil (`data` is one encoded value).
pub fn step(out: &mut Vec<u8>, msgid: u64, method: &str, event_id: u64, data: Option<&[u8]>) {
    request_header(out, msgid, method);
    ok(mp::write_map_len(out, if data.is_some() { 2 } else { 1 }));
    write_str(out, b"EventId");
    write_uint(out, event_id);
    if let Some(data) = data {
        write_str(out, b"Data");
        out.extend_from_slice(data);
    }
}

/// The `plugin.Step*` name Kong uses for the result of PDK `method` (`mp_rpc.lua`,
/// `get_step_method`).
pub fn step_method_for(method: &[u8]) -> &'static str {
    match method {
        b"kong.client.get_credential" | b"kong.client.authenticate" => "plugin.StepCredential",
        b"kong.client.load_consumer" | b"kong.client.get_consumer" => "plugin.StepConsumer",
        b"kong.router.get_route" => "plugin.StepRoute",
        b"kong.router.get_service" => "plugin.StepService",
        b"kong.node.get_memory_stats" => "plugin.StepMemoryStats",
        b"kong.request.get_query"
        | b"kong.request.get_headers"
        | b"kong.response.get_headers"
        | b"kong.service.response.get_headers" => "plugin.StepMultiMap",
        _ => "plugin.Step",
    }
}

/// Whether Kong ends the event when a handler calls `method`: `kong.response.exit` and
/// `kong.response.error` never return to the handler (access and preread yield the
/// plugin's coroutine for good; rewrite and response send the response and exit), so no
/// Step ever follows them.
pub fn ends_event(method: &[u8]) -> bool {
    matches!(method, b"kong.response.exit" | b"kong.response.error")
}

/// A message from the pluginserver, as Kong's client sorts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// `[2, method, params]`, e.g. `serverPid`: handled, then Kong reads on.
    Notification {
        /// The notification's method.
        method: &'a [u8],
        /// Its parameter, when it is a non-negative integer (the pid).
        value: Option<u64>,
    },
    /// `[1, msgid, nil, result]`: the raw result.
    Ok(&'a [u8]),
    /// `[1, msgid, error, nil]`: the error text.
    Err(&'a [u8]),
}

/// Sorts one complete message, checking that a response echoes `msgid`.
pub fn incoming(message: &[u8], msgid: u64) -> Result<Incoming<'_>> {
    let mut r = Reader::new(message);
    let len = r.array_len()?;
    let kind = r.u64()?;
    match (kind, len) {
        (2, 3) => {
            let method = r.bytes()?;
            let value = r.u64().ok();
            Ok(Incoming::Notification { method, value })
        }
        (1, 4) => {
            let got = r.u64()?;
            if got != msgid {
                return Err(KongSideError::MsgId { sent: msgid, got });
            }
            if r.is_nil() {
                r.skip()?;
                Ok(Incoming::Ok(r.raw()?))
            } else {
                Ok(Incoming::Err(r.bytes()?))
            }
        }
        _ => Err(KongSideError::Shape("a response or a notification")),
    }
}

/// The result of `plugin.HandleEvent` and of every `plugin.Step*`: what the handler asks
/// of Kong next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepData<'a> {
    /// `Data: "ret"`: the handler finished.
    Ret {
        /// The event.
        event_id: u64,
    },
    /// `Data: {"Method": m, "Args": [...]}`: run a PDK function.
    Call {
        /// The event.
        event_id: u64,
        /// The PDK function.
        method: &'a [u8],
        /// The raw `Args` array (an empty array when absent).
        args: &'a [u8],
    },
}

impl StepData<'_> {
    /// The event it belongs to.
    pub fn event_id(&self) -> u64 {
        match self {
            StepData::Ret { event_id } | StepData::Call { event_id, .. } => *event_id,
        }
    }
}

/// Reads a StepData map.
pub fn step_data(result: &[u8]) -> Result<StepData<'_>> {
    let mut r = Reader::new(result);
    let (mut event_id, mut ret, mut method, mut args) = (None, false, None, None);
    for _ in 0..r.map_len()? {
        match r.bytes()? {
            b"EventId" => event_id = Some(r.u64()?),
            b"Data" => {
                let data = r.raw()?;
                let mut d = Reader::new(data);
                if data
                    .first()
                    .is_some_and(|m| matches!(m, 0xa0..=0xbf | 0xd9..=0xdb))
                {
                    ret = d.bytes()? == b"ret";
                } else {
                    for _ in 0..d.map_len()? {
                        match d.bytes()? {
                            b"Method" => method = Some(d.bytes()?),
                            b"Args" => args = Some(d.raw()?),
                            _ => {
                                d.raw()?;
                            }
                        }
                    }
                }
            }
            _ => {
                r.raw()?;
            }
        }
    }
    let event_id = event_id.ok_or(KongSideError::Shape("a StepData with EventId"))?;
    if ret {
        return Ok(StepData::Ret { event_id });
    }
    match method {
        Some(method) => Ok(StepData::Call {
            event_id,
            method,
            args: args.unwrap_or(&[0x90]),
        }),
        None => Err(KongSideError::Shape("Data \"ret\" or a PDK call")),
    }
}

/// The first argument of an `Args` array, if it is a string.
pub fn first_str_arg(args: &[u8]) -> Option<&[u8]> {
    let mut r = Reader::new(args);
    if r.array_len().ok()? == 0 {
        return None;
    }
    r.bytes().ok()
}

/// The first argument of an `Args` array, if it is a non-negative integer (the status of
/// `kong.response.exit`/`error`).
pub fn first_uint_arg(args: &[u8]) -> Option<u64> {
    let mut r = Reader::new(args);
    if r.array_len().ok()? == 0 {
        return None;
    }
    r.u64().ok()
}

/// Length of the first complete message in `buf`, as Kong's streaming unpacker finds it;
/// `None` if more bytes are needed.
pub fn message_len(
    buf: &[u8],
    max: usize,
) -> std::result::Result<Option<usize>, frame::FrameError> {
    frame::value_len(buf, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_match_kongs_bytes() {
        // From the worked example of the protocol notes: HandleEvent for instance 3.
        let mut out = Vec::new();
        handle_event(&mut out, 2, 3, "access");
        let expected = [
            0x94, 0x00, 0x02, 0xb2, b'p', b'l', b'u', b'g', b'i', b'n', b'.', b'H', b'a', b'n',
            b'd', b'l', b'e', b'E', b'v', b'e', b'n', b't', 0x91, 0x82, 0xaa, b'I', b'n', b's',
            b't', b'a', b'n', b'c', b'e', b'I', b'd', 0x03, 0xa9, b'E', b'v', b'e', b'n', b't',
            b'N', b'a', b'm', b'e', 0xa6, b'a', b'c', b'c', b'e', b's', b's',
        ];
        assert_eq!(out, expected);
        // A Step without Data (nil result).
        out.clear();
        step(&mut out, 4, "plugin.Step", 0, None);
        let mut expected = vec![0x94, 0x00, 0x04, 0xab];
        expected.extend_from_slice(b"plugin.Step");
        expected.extend_from_slice(&[0x91, 0x81, 0xa7]);
        expected.extend_from_slice(b"EventId");
        expected.push(0x00);
        assert_eq!(out, expected);
    }

    #[test]
    fn strings_never_use_str8() {
        let mut out = Vec::new();
        write_str(&mut out, &[b'x'; 40]);
        assert_eq!(&out[..3], &[0xda, 0x00, 40]);
    }

    #[test]
    fn responses_and_step_data_parse() {
        // [1, 2, nil, {"EventId": 0, "Data": {"Method": "kong.request.get_header", "Args": ["host"]}}]
        let mut msg = vec![
            0x94, 0x01, 0x02, 0xc0, 0x82, 0xa7, b'E', b'v', b'e', b'n', b't', b'I', b'd', 0x00,
            0xa4, b'D', b'a', b't', b'a', 0x82, 0xa6, b'M', b'e', b't', b'h', b'o', b'd', 0xb7,
        ];
        msg.extend_from_slice(b"kong.request.get_header");
        msg.extend_from_slice(&[
            0xa4, b'A', b'r', b'g', b's', 0x91, 0xa4, b'h', b'o', b's', b't',
        ]);
        assert_eq!(message_len(&msg, 1 << 20), Ok(Some(msg.len())));
        assert_eq!(message_len(&msg[..msg.len() - 1], 1 << 20), Ok(None));
        let Incoming::Ok(result) = incoming(&msg, 2).unwrap() else {
            panic!("not ok")
        };
        let StepData::Call {
            event_id,
            method,
            args,
        } = step_data(result).unwrap()
        else {
            panic!("not a call")
        };
        assert_eq!(event_id, 0);
        assert_eq!(method, b"kong.request.get_header");
        assert_eq!(first_str_arg(args), Some(&b"host"[..]));
        assert!(matches!(
            incoming(&msg, 3),
            Err(KongSideError::MsgId { .. })
        ));

        let ret = [
            0x94, 0x01, 0x04, 0xc0, 0x82, 0xa7, b'E', b'v', b'e', b'n', b't', b'I', b'd', 0x00,
            0xa4, b'D', b'a', b't', b'a', 0xa3, b'r', b'e', b't',
        ];
        let Incoming::Ok(result) = incoming(&ret, 4).unwrap() else {
            panic!("not ok")
        };
        assert_eq!(step_data(result), Ok(StepData::Ret { event_id: 0 }));

        let pid = [
            0x93, 0x02, 0xa9, b's', b'e', b'r', b'v', b'e', b'r', b'P', b'i', b'd', 0xcd, 0x10,
            0x92,
        ];
        assert_eq!(
            incoming(&pid, 1),
            Ok(Incoming::Notification {
                method: b"serverPid",
                value: Some(4242)
            })
        );
    }

    #[test]
    fn the_step_method_names_the_result_and_exits_end_the_event() {
        assert_eq!(
            step_method_for(b"kong.request.get_headers"),
            "plugin.StepMultiMap"
        );
        assert_eq!(
            step_method_for(b"kong.client.authenticate"),
            "plugin.StepCredential"
        );
        assert_eq!(step_method_for(b"kong.request.get_header"), "plugin.Step");
        assert!(ends_event(b"kong.response.exit") && ends_event(b"kong.response.error"));
        assert!(!ends_event(b"kong.response.set_header"));
        assert_eq!(first_uint_arg(&[0x91, 0xcd, 0x01, 0xf4]), Some(500));
    }
}
