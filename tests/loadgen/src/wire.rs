//! Kong's side of MsgPack:1, minimal and allocation-free: encode requests the way Kong's
//! lua-MessagePack does, find message boundaries, and read the few response shapes a Kong
//! worker looks at.
//!
//! Kong's encoder never writes `str8` (it uses fixstr, str16, str32), writes integral
//! numbers as the smallest integer, and sends a Step's nil result by leaving `Data` out.

use rmp::encode as mp;

/// Why bytes from the server are not what a Kong worker accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// 0xc1 or a truncated header inside a complete-looking value.
    #[error("invalid MessagePack marker 0x{0:02x}")]
    InvalidMarker(u8),
    /// A value is larger than the limit.
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
    /// The message ended inside a value.
    #[error("truncated message")]
    Truncated,
    /// A value of another type was found where the protocol needs `expected`.
    #[error("expected {0}")]
    Type(&'static str),
    /// A response echoed another msgid.
    #[error("response msgid {got} does not echo request {sent}")]
    MsgId {
        /// The request's msgid.
        sent: u64,
        /// What came back.
        got: u64,
    },
}

type Result<T> = std::result::Result<T, WireError>;

fn ok<T, E: std::fmt::Debug>(result: std::result::Result<T, E>) -> T {
    result.expect("writing MessagePack into a Vec cannot fail")
}

/// A string as Kong writes it: fixstr, str16 or str32, never str8.
pub fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    let len = s.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0xda);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(s);
}

/// A non-negative integer, smallest encoding.
pub fn write_uint(out: &mut Vec<u8>, n: u64) {
    ok(mp::write_uint(out, n));
}

/// `[0, msgid, method, [` + the caller writes exactly one argument value.
pub fn request_header(out: &mut Vec<u8>, msgid: u64, method: &str) {
    ok(mp::write_array_len(out, 4));
    write_uint(out, 0);
    write_uint(out, msgid);
    write_str(out, method.as_bytes());
    ok(mp::write_array_len(out, 1));
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

/// Kong's answer to a PDK call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The PDK function returned nil: the Step has no `Data`.
    Nil,
    /// A string result.
    Str(&'static [u8]),
}

/// `plugin.Step*` with `{"EventId": id}` or `{"EventId": id, "Data": answer}`.
pub fn step(out: &mut Vec<u8>, msgid: u64, method: &str, event_id: u64, answer: Answer) {
    request_header(out, msgid, method);
    match answer {
        Answer::Nil => {
            ok(mp::write_map_len(out, 1));
            write_str(out, b"EventId");
            write_uint(out, event_id);
        }
        Answer::Str(s) => {
            ok(mp::write_map_len(out, 2));
            write_str(out, b"EventId");
            write_uint(out, event_id);
            write_str(out, b"Data");
            write_str(out, s);
        }
    }
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

/// The `plugin.Step*` name Kong uses for the result of PDK `method`.
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

fn be(buf: &[u8], pos: usize, n: usize) -> Option<u64> {
    let bytes = buf.get(pos..pos + n)?;
    Some(bytes.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b)))
}

/// Length of the first complete value in `buf`; `None` if more bytes are needed.
pub fn value_len(buf: &[u8], max: usize) -> Result<Option<usize>> {
    let mut pos = 0usize;
    let mut pending: u64 = 1;
    while pending > 0 {
        if pos as u64 + pending > max as u64 {
            return Err(WireError::TooLarge(max));
        }
        let Some(&m) = buf.get(pos) else {
            return Ok(None);
        };
        pos += 1;
        pending -= 1;
        let (len_bytes, extra, per_len): (usize, u64, u64) = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0, 0),
            0x80..=0x8f => {
                pending += 2 * u64::from(m & 0x0f);
                (0, 0, 0)
            }
            0x90..=0x9f => {
                pending += u64::from(m & 0x0f);
                (0, 0, 0)
            }
            0xa0..=0xbf => (0, u64::from(m & 0x1f), 0),
            0xc4 | 0xd9 => (1, 0, 1),
            0xc5 | 0xda => (2, 0, 1),
            0xc6 | 0xdb => (4, 0, 1),
            0xc7 => (1, 1, 1),
            0xc8 => (2, 1, 1),
            0xc9 => (4, 1, 1),
            0xca => (0, 4, 0),
            0xcb => (0, 8, 0),
            0xcc | 0xd0 => (0, 1, 0),
            0xcd | 0xd1 => (0, 2, 0),
            0xce | 0xd2 => (0, 4, 0),
            0xcf | 0xd3 => (0, 8, 0),
            0xd4 => (0, 2, 0),
            0xd5 => (0, 3, 0),
            0xd6 => (0, 5, 0),
            0xd7 => (0, 9, 0),
            0xd8 => (0, 17, 0),
            0xdc | 0xde => {
                let Some(n) = be(buf, pos, 2) else {
                    return Ok(None);
                };
                pos += 2;
                pending += if m == 0xde { 2 * n } else { n };
                (0, 0, 0)
            }
            0xdd | 0xdf => {
                let Some(n) = be(buf, pos, 4) else {
                    return Ok(None);
                };
                pos += 4;
                pending += if m == 0xdf { 2 * n } else { n };
                (0, 0, 0)
            }
            0xc1 => return Err(WireError::InvalidMarker(m)),
        };
        let mut skip = extra;
        if per_len > 0 {
            let Some(n) = be(buf, pos, len_bytes) else {
                return Ok(None);
            };
            pos += len_bytes;
            skip += n;
        }
        let end = pos as u64 + skip;
        if end > max as u64 {
            return Err(WireError::TooLarge(max));
        }
        pos = end as usize;
    }
    if pos > buf.len() {
        Ok(None)
    } else {
        Ok(Some(pos))
    }
}

/// A cursor over one complete message.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads `buf` from the start.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn be(&mut self, n: usize) -> Result<u64> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| acc << 8 | u64::from(b)))
    }

    fn peek(&self) -> Result<u8> {
        self.buf.first().copied().ok_or(WireError::Truncated)
    }

    /// Whether the next value is nil.
    pub fn is_nil(&self) -> bool {
        self.buf.first() == Some(&0xc0)
    }

    /// An array header's element count.
    pub fn array_len(&mut self) -> Result<usize> {
        let m = self.peek()?;
        self.take(1)?;
        Ok(match m {
            0x90..=0x9f => usize::from(m & 0x0f),
            0xdc => self.be(2)? as usize,
            0xdd => self.be(4)? as usize,
            _ => return Err(WireError::Type("an array")),
        })
    }

    /// A map header's entry count (an empty array counts as an empty map).
    pub fn map_len(&mut self) -> Result<usize> {
        let m = self.peek()?;
        self.take(1)?;
        Ok(match m {
            0x80..=0x8f => usize::from(m & 0x0f),
            0xde => self.be(2)? as usize,
            0xdf => self.be(4)? as usize,
            0x90 => 0,
            _ => return Err(WireError::Type("a map")),
        })
    }

    /// A string or binary value's bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let m = self.peek()?;
        self.take(1)?;
        let len = match m {
            0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 | 0xc4 => self.be(1)? as usize,
            0xda | 0xc5 => self.be(2)? as usize,
            0xdb | 0xc6 => self.be(4)? as usize,
            _ => return Err(WireError::Type("a string")),
        };
        self.take(len)
    }

    /// A non-negative integer (integral floats accepted, as JS servers may send them).
    pub fn uint(&mut self) -> Result<u64> {
        let m = self.peek()?;
        self.take(1)?;
        Ok(match m {
            0x00..=0x7f => u64::from(m),
            0xcc => self.be(1)?,
            0xcd => self.be(2)?,
            0xce => self.be(4)?,
            0xcf => self.be(8)?,
            0xd0 => (self.be(1)? as u8 as i8)
                .try_into()
                .map_err(|_| WireError::Type("a uint"))?,
            0xd1 => (self.be(2)? as u16 as i16)
                .try_into()
                .map_err(|_| WireError::Type("a uint"))?,
            0xd2 => (self.be(4)? as u32 as i32)
                .try_into()
                .map_err(|_| WireError::Type("a uint"))?,
            0xd3 => (self.be(8)? as i64)
                .try_into()
                .map_err(|_| WireError::Type("a uint"))?,
            0xcb => {
                let f = f64::from_bits(self.be(8)?);
                if f >= 0.0 && f.fract() == 0.0 && f < 1.8e19 {
                    f as u64
                } else {
                    return Err(WireError::Type("an integer"));
                }
            }
            _ => return Err(WireError::Type("an integer")),
        })
    }

    /// Skips one value, returning its raw bytes.
    pub fn raw(&mut self) -> Result<&'a [u8]> {
        match value_len(self.buf, usize::MAX)? {
            Some(n) => self.take(n),
            None => Err(WireError::Truncated),
        }
    }
}

/// A message from the server, as a Kong worker sorts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// `[2, method, params]`, e.g. `serverPid`: read and go on to the response.
    Notification {
        /// The notification's method.
        method: &'a [u8],
        /// Its parameter, when it is a non-negative integer (the pid).
        value: Option<u64>,
    },
    /// `[1, msgid, nil, result]`.
    Ok(&'a [u8]),
    /// `[1, msgid, error, nil]`.
    Err(&'a [u8]),
}

/// Sorts one complete message, checking that a response echoes `msgid`.
pub fn incoming(message: &[u8], msgid: u64) -> Result<Incoming<'_>> {
    let mut r = Reader::new(message);
    let len = r.array_len()?;
    let kind = r.uint()?;
    match (kind, len) {
        (2, 3) => {
            let method = r.bytes()?;
            let value = r.uint().ok();
            Ok(Incoming::Notification { method, value })
        }
        (1, 4) => {
            let got = r.uint()?;
            if got != msgid {
                return Err(WireError::MsgId { sent: msgid, got });
            }
            if r.is_nil() {
                r.take(1)?;
                Ok(Incoming::Ok(r.raw()?))
            } else {
                let err = r.bytes()?;
                Ok(Incoming::Err(err))
            }
        }
        _ => Err(WireError::Type("a response or a notification")),
    }
}

/// What a StepData (the result of HandleEvent and of every Step) asks of Kong.
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
        /// The raw `Args` array.
        args: &'a [u8],
    },
}

/// Reads a StepData map.
pub fn step_data(result: &[u8]) -> Result<StepData<'_>> {
    let mut r = Reader::new(result);
    let (mut event_id, mut ret, mut method, mut args) = (None, false, None, None);
    for _ in 0..r.map_len()? {
        match r.bytes()? {
            b"EventId" => event_id = Some(r.uint()?),
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
    let event_id = event_id.ok_or(WireError::Type("a StepData with EventId"))?;
    if ret {
        return Ok(StepData::Ret { event_id });
    }
    match method {
        Some(method) => Ok(StepData::Call {
            event_id,
            method,
            args: args.unwrap_or(&[0x90]),
        }),
        None => Err(WireError::Type("Data \"ret\" or a PDK call")),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_match_kongs_bytes() {
        // §7 of the protocol notes: HandleEvent for instance 3.
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
        step(&mut out, 4, "plugin.Step", 0, Answer::Nil);
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
        // §7: [1, 2, nil, {"EventId": 0, "Data": {"Method": "kong.request.get_header", "Args": ["host"]}}]
        let mut msg = vec![
            0x94, 0x01, 0x02, 0xc0, 0x82, 0xa7, b'E', b'v', b'e', b'n', b't', b'I', b'd', 0x00,
            0xa4, b'D', b'a', b't', b'a', 0x82, 0xa6, b'M', b'e', b't', b'h', b'o', b'd', 0xb7,
        ];
        msg.extend_from_slice(b"kong.request.get_header");
        msg.extend_from_slice(&[
            0xa4, b'A', b'r', b'g', b's', 0x91, 0xa4, b'h', b'o', b's', b't',
        ]);
        assert_eq!(value_len(&msg, 1 << 20), Ok(Some(msg.len())));
        assert_eq!(value_len(&msg[..msg.len() - 1], 1 << 20), Ok(None));
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
        assert!(matches!(incoming(&msg, 3), Err(WireError::MsgId { .. })));

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
}
