//! Checks shared by the fuzz targets (see `docs/fuzzing.md`).
//!
//! Every check panics on a violation, which libFuzzer reports as a crash with the input.
//! rmpv serves as an independent MessagePack decoder to compare the daemon's own against.

use kong_rust_pluginserver_protocol::{
    Request, RequestError, decode::Reader, for_each_entry, frame, parse_request,
};

/// Decodes one value with rmpv; returns it and its encoded length. `None` if rmpv cannot
/// (or, past its depth limit, will not) read it.
pub fn rmpv_decode(bytes: &[u8]) -> Option<(rmpv::Value, usize)> {
    let mut rest = bytes;
    let value = rmpv::decode::read_value(&mut rest).ok()?;
    Some((value, bytes.len() - rest.len()))
}

/// Whether rmpv's failure on `bytes` is its depth limit (the daemon has none: its framer
/// walks without recursion), so the two cannot be compared.
fn rmpv_too_deep(bytes: &[u8]) -> bool {
    matches!(
        rmpv::decode::read_value(&mut &bytes[..]),
        Err(rmpv::decode::Error::DepthLimitExceeded)
    )
}

/// An integral number as rmpv decoded it, from an integer or a float encoding.
fn as_integral(value: &rmpv::Value) -> Option<f64> {
    match value {
        rmpv::Value::Integer(i) => i.as_u64().map(|v| v as f64),
        rmpv::Value::F32(f) => Some(f64::from(*f)),
        rmpv::Value::F64(f) => Some(*f),
        _ => None,
    }
}

fn string_bytes(value: &rmpv::Value) -> Option<&[u8]> {
    match value {
        rmpv::Value::String(s) => Some(s.as_bytes()),
        rmpv::Value::Binary(b) => Some(b),
        _ => None,
    }
}

/// The framer on `buf` with limit `max`: never a length past the buffer or the limit, a
/// measured value is one rmpv reads at exactly that length, and a value rmpv reads within
/// the limit is measured.
pub fn check_frame(buf: &[u8], max: usize) -> Result<Option<usize>, frame::FrameError> {
    let measured = frame::value_len(buf, max);
    if rmpv_too_deep(buf) {
        return measured;
    }
    match (&measured, rmpv_decode(buf)) {
        (Ok(Some(n)), Some((_, len))) => {
            assert_eq!(*n, len, "framer and rmpv disagree on the length");
            assert!(*n <= max && *n <= buf.len() && *n > 0);
        }
        (Ok(Some(n)), None) => panic!("framer measured {n} bytes that rmpv cannot read"),
        (Err(frame::FrameError::TooLarge { .. }), Some((_, len))) => assert!(len > max),
        // rmpv reads the unused marker 0xc1 as nil; the framer refuses it.
        (Err(frame::FrameError::InvalidMarker { marker, offset }), Some((_, len))) => {
            assert_eq!(*marker, 0xc1);
            assert!(*offset < len && buf[*offset] == 0xc1);
        }
        (Ok(None), Some((_, len))) => panic!("rmpv read {len} bytes, the framer wants more"),
        (_, None) => {}
    }
    measured
}

/// A request `parse_request` accepted must be what rmpv reads: `[0, msgid, method, [arg]]`.
pub fn check_request_against_rmpv(message: &[u8], req: &Request<'_>) {
    let Some((value, _)) = rmpv_decode(message) else {
        assert!(rmpv_too_deep(message), "parsed a request rmpv cannot read");
        return;
    };
    let parts = value.as_array().expect("a request is an array");
    assert_eq!(parts.len(), 4);
    assert_eq!(as_integral(&parts[0]), Some(0.0), "type");
    assert_eq!(as_integral(&parts[1]), Some(req.msgid as f64), "msgid");
    assert_eq!(string_bytes(&parts[2]), Some(req.method), "method");
    let params = parts[3].as_array().expect("params is an array");
    assert_eq!(params.len(), usize::from(req.arg.is_some()));
    if let Some(arg) = req.arg {
        assert_eq!(frame::value_len(arg, usize::MAX), Ok(Some(arg.len())));
        let (arg_value, len) = rmpv_decode(arg).expect("the argument is one value");
        assert_eq!(len, arg.len());
        // Compared as text: a NaN inside is not equal to itself.
        assert_eq!(format!("{arg_value:?}"), format!("{:?}", params[0]));
    }
}

/// Parses one framed message and checks the outcome.
pub fn check_parse(message: &[u8]) -> Result<Request<'_>, RequestError> {
    let parsed = parse_request(message);
    if let Ok(req) = &parsed {
        check_request_against_rmpv(message, req);
    }
    parsed
}

/// Runs every argument reader the methods use on `arg`, as they use them, and checks
/// `for_each_entry` against rmpv's reading of the same map.
pub fn exercise_argument_readers(arg: &[u8]) {
    // CloseInstance / InstanceStatus: a bare id; GetPluginInfo: a bare name.
    let _ = Reader::new(arg).u64();
    let _ = Reader::new(arg).bytes();
    // HandleEvent, Step, StartInstance: maps read with typed visitors.
    let _ = for_each_entry(arg, |key, r| {
        match key {
            b"InstanceId" | b"EventId" => {
                r.u64()?;
            }
            b"EventName" | b"Name" | b"Config" => {
                r.bytes()?;
            }
            b"Data" => {
                r.raw()?;
            }
            _ => {}
        }
        Ok(())
    });
    // A visitor that reads nothing visits exactly the string and binary keys rmpv sees,
    // if (and only if) the argument is a whole map (or an empty array, Kong's empty table).
    let mut keys: Vec<&[u8]> = Vec::new();
    let visited = for_each_entry(arg, |key, _| {
        keys.push(key);
        Ok(())
    });
    let whole = frame::value_len(arg, usize::MAX) == Ok(Some(arg.len()));
    if !whole || rmpv_too_deep(arg) {
        return;
    }
    let (value, _) = rmpv_decode(arg).expect("a whole value");
    match &value {
        rmpv::Value::Map(entries) => {
            assert_eq!(visited, Ok(()), "a whole map is visited");
            let expected: Vec<&[u8]> = entries
                .iter()
                .filter_map(|(k, _)| string_bytes(k))
                .collect();
            assert_eq!(keys, expected, "visited keys");
        }
        // Kong writes an empty table as fixarray 0x90; only that form is taken for a map.
        rmpv::Value::Array(items) if items.is_empty() => {
            assert_eq!(visited.is_ok(), arg[0] == 0x90, "empty array {arg:x?}")
        }
        _ => assert!(visited.is_err(), "visited a {value:?} as a map"),
    }
}
