//! Requests as the daemon reads them: `[0, msgid, method, [arg]]`, borrowed from the
//! message bytes.

use crate::decode::{DecodeError, Reader};

/// Message type of a request (`[0, msgid, method, params]`).
const REQUEST: u64 = 0;

/// One request from Kong, borrowing the message bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// Echoed in the response; Kong checks it.
    pub msgid: u64,
    /// e.g. `plugin.HandleEvent`.
    pub method: &'a [u8],
    /// The single element of `params`, raw; `None` when `params` is empty.
    pub arg: Option<&'a [u8]>,
}

/// A message that is not a request we can answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not even a msgid could be read: there is nobody to answer.
    #[error("not a MessagePack-RPC request: {0}")]
    Unanswerable(String),
    /// A request with a msgid whose other parts are wrong: answer with an error.
    #[error("malformed request: {reason}")]
    Malformed {
        /// The msgid to answer.
        msgid: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Parses one framed message as `[0, msgid, method, [arg]]`.
pub fn parse_request(message: &[u8]) -> Result<Request<'_>, RequestError> {
    let unanswerable = |e: DecodeError| RequestError::Unanswerable(e.to_string());
    let mut r = Reader::new(message);
    let len = r.array_len().map_err(unanswerable)?;
    if len != 4 {
        return Err(RequestError::Unanswerable(format!(
            "expected an array of 4 elements, found {len}"
        )));
    }
    let kind = r.u64().map_err(unanswerable)?;
    if kind != REQUEST {
        return Err(RequestError::Unanswerable(format!(
            "message type {kind} is not a request (0)"
        )));
    }
    let msgid = r.u64().map_err(unanswerable)?;
    let malformed = |what: &str, e: DecodeError| RequestError::Malformed {
        msgid,
        reason: format!("{what}: {e}"),
    };
    let method = r.bytes().map_err(|e| malformed("method", e))?;
    let params = r.array_len().map_err(|e| malformed("params", e))?;
    let arg = match params {
        0 => None,
        1 => Some(r.raw().map_err(|e| malformed("params", e))?),
        n => {
            return Err(RequestError::Malformed {
                msgid,
                reason: format!("params must hold one argument, found {n}"),
            });
        }
    };
    Ok(Request { msgid, method, arg })
}

/// Visits the entries of a map argument whose keys are strings; other keys are skipped.
pub fn for_each_entry<'a>(
    arg: &'a [u8],
    mut visit: impl FnMut(&'a [u8], &mut Reader<'a>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let mut r = Reader::new(arg);
    for _ in 0..r.map_len()? {
        match r.bytes() {
            Ok(key) => {
                let before = r.clone();
                visit(key, &mut r)?;
                // A visitor that did not read the value leaves it for us to skip.
                if before.is_at(&r) {
                    r.skip()?;
                }
            }
            Err(_) => {
                r.skip()?;
                r.skip()?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kongs_handle_event_bytes_parse() {
        // From the worked example: HandleEvent for instance 3, access phase.
        let bytes = [
            0x94, 0x00, 0x02, 0xb2, b'p', b'l', b'u', b'g', b'i', b'n', b'.', b'H', b'a', b'n',
            b'd', b'l', b'e', b'E', b'v', b'e', b'n', b't', 0x91, 0x82, 0xaa, b'I', b'n', b's',
            b't', b'a', b'n', b'c', b'e', b'I', b'd', 0x03, 0xa9, b'E', b'v', b'e', b'n', b't',
            b'N', b'a', b'm', b'e', 0xa6, b'a', b'c', b'c', b'e', b's', b's',
        ];
        let req = parse_request(&bytes).unwrap();
        assert_eq!(req.msgid, 2);
        assert_eq!(req.method, b"plugin.HandleEvent");
        let mut seen = Vec::new();
        for_each_entry(req.arg.unwrap(), |key, r| {
            seen.push(key.to_vec());
            if key == b"InstanceId" {
                assert_eq!(r.u64()?, 3);
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [b"InstanceId".to_vec(), b"EventName".to_vec()]);
    }

    #[test]
    fn an_argument_holding_nan_is_passed_through_raw() {
        // Shape of the first fuzz finding (a harness false positive: NaN != NaN in its
        // rmpv comparison): a map argument with a NaN float32 key.
        let bytes = [
            0x94, 0x00, 0x01, 0xa1, b'm', 0x91, 0x81, 0xca, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        let req = parse_request(&bytes).unwrap();
        assert_eq!(req.arg, Some(&bytes[6..]));
        let mut keys = 0;
        for_each_entry(req.arg.unwrap(), |_, _| {
            keys += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(keys, 0, "a float key is skipped with its value");
    }

    #[test]
    fn non_requests_are_refused_with_or_without_a_msgid() {
        assert!(matches!(
            parse_request(&[0x93, 0x02, 0xa1, b'x', 0x90]),
            Err(RequestError::Unanswerable(_))
        ));
        assert!(matches!(
            parse_request(&[0x94, 0x01, 0x05, 0xc0, 0xc0]),
            Err(RequestError::Unanswerable(_))
        ));
        assert_eq!(
            parse_request(&[0x94, 0x00, 0x05, 0x07, 0x90]),
            Err(RequestError::Malformed {
                msgid: 5,
                reason: "method: expected a string, found an integer".into()
            })
        );
    }
}

#[cfg(test)]
mod proptests {
    use proptest::{collection::vec, option, prelude::*};

    use super::*;
    use crate::strategies::{
        Model, config, payload, rmpv_decode, scalar, str_value, uint, value, write_array_len,
        write_bin, write_str, write_uint,
    };

    /// Encodes `[0, msgid, method, [arg]]` (no `arg`: `[]`), each part in a chosen width.
    fn request_bytes(msgid: u64, method: &[u8], arg: Option<&[u8]>, c: [u8; 5]) -> Vec<u8> {
        let mut out = Vec::new();
        write_array_len(&mut out, 4, c[0]);
        write_uint(&mut out, 0, c[1]);
        write_uint(&mut out, msgid, c[2]);
        if c[3] & 0x80 == 0 {
            write_str(&mut out, method, c[3]);
        } else {
            write_bin(&mut out, method, c[3]);
        }
        write_array_len(&mut out, usize::from(arg.is_some()), c[4]);
        out.extend_from_slice(arg.unwrap_or_default());
        out
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

    /// Checks a request `parse_request` accepted against rmpv's reading of the same bytes.
    fn agrees_with_rmpv(bytes: &[u8], req: &Request<'_>) -> Result<(), TestCaseError> {
        let (value, _) = rmpv_decode(bytes)
            .map_err(|e| TestCaseError::fail(format!("parsed, but rmpv failed: {e}")))?;
        let parts = value.as_array().expect("an array");
        prop_assert_eq!(parts.len(), 4);
        prop_assert_eq!(as_integral(&parts[0]), Some(0.0));
        prop_assert_eq!(as_integral(&parts[1]), Some(req.msgid as f64));
        let method = match &parts[2] {
            rmpv::Value::String(s) => s.as_bytes(),
            rmpv::Value::Binary(b) => b.as_slice(),
            other => return Err(TestCaseError::fail(format!("method {other:?}"))),
        };
        prop_assert_eq!(method, req.method);
        let params = parts[3].as_array().expect("params is an array");
        prop_assert_eq!(params.len(), usize::from(req.arg.is_some()));
        if let Some(arg) = req.arg {
            let (arg_value, len) = rmpv_decode(arg).expect("the argument is one value");
            prop_assert_eq!(len, arg.len());
            // Compared as text: a NaN inside is not equal to itself.
            prop_assert_eq!(format!("{arg_value:?}"), format!("{:?}", params[0]));
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(config())]

        /// A request in any encoding parses to its msgid, method and raw argument.
        #[test]
        fn requests_round_trip(
            msgid in uint(),
            method in payload(),
            arg in option::of(value()),
            c in any::<[u8; 5]>(),
        ) {
            let bytes = request_bytes(msgid, &method, arg.as_ref().map(|a| &a.bytes[..]), c);
            let req = parse_request(&bytes);
            prop_assert_eq!(
                &req,
                &Ok(Request { msgid, method: &method, arg: arg.as_ref().map(|a| &a.bytes[..]) })
            );
            agrees_with_rmpv(&bytes, &req.unwrap())?;
        }

        /// A request with more than one parameter is answered (it has a msgid) as malformed.
        #[test]
        fn extra_parameters_are_malformed(msgid in uint(), args in vec(value(), 2..4), c in any::<[u8; 5]>()) {
            let mut bytes = request_bytes(msgid, b"plugin.Step", None, c);
            bytes.pop(); // the empty params header
            write_array_len(&mut bytes, args.len(), c[4]);
            for arg in &args {
                bytes.extend_from_slice(&arg.bytes);
            }
            let parsed = parse_request(&bytes);
            prop_assert!(matches!(parsed, Err(RequestError::Malformed { msgid: m, .. }) if m == msgid), "{:?}", parsed);
        }

        /// Arbitrary bytes never panic the parser, and whatever it accepts is a real request.
        #[test]
        fn arbitrary_bytes_never_panic_the_parser(bytes in vec(any::<u8>(), 0..120)) {
            if let Ok(req) = parse_request(&bytes) {
                agrees_with_rmpv(&bytes, &req)?;
            }
        }

        /// Any well-formed MessagePack value (most of them not requests) gets an answer or a
        /// refusal, never a panic; the arrays among them are likelier to get far.
        #[test]
        fn arbitrary_values_never_panic_the_parser(
            parts in vec(value(), 4),
            c in any::<u8>(),
            whole in value(),
        ) {
            let mut bytes = Vec::new();
            write_array_len(&mut bytes, 4, c);
            for part in &parts {
                bytes.extend_from_slice(&part.bytes);
            }
            for bytes in [bytes, whole.bytes] {
                match parse_request(&bytes) {
                    Ok(req) => agrees_with_rmpv(&bytes, &req)?,
                    Err(RequestError::Malformed { .. } | RequestError::Unanswerable(_)) => {}
                }
            }
        }

        /// `for_each_entry` visits the string (and binary) keys of a map in order, with their
        /// values, whether or not the visitor reads them; other keys are skipped.
        #[test]
        fn map_entries_are_visited_in_order(
            entries in vec((prop_oneof![3 => str_value(), 1 => scalar()], value()), 0..8),
            c in any::<u8>(),
            read_values in any::<bool>(),
        ) {
            let map = crate::strategies::map_of(entries.clone(), c);
            let expected: Vec<(Vec<u8>, Vec<u8>)> = entries
                .iter()
                .filter_map(|(k, v)| match &k.model {
                    Model::Str(key) | Model::Bin(key) => Some((key.clone(), v.bytes.clone())),
                    _ => None,
                })
                .collect();
            let mut seen = Vec::new();
            let result = for_each_entry(&map.bytes, |key, r| {
                let value = if read_values { r.raw()?.to_vec() } else { Vec::new() };
                seen.push((key.to_vec(), value));
                Ok(())
            });
            prop_assert_eq!(result, Ok(()));
            let seen_keys: Vec<_> = seen.iter().map(|(k, _)| k).collect();
            let expected_keys: Vec<_> = expected.iter().map(|(k, _)| k).collect();
            prop_assert_eq!(seen_keys, expected_keys);
            if read_values {
                prop_assert_eq!(seen, expected);
            }
        }

        /// `for_each_entry` on arbitrary bytes, with visitors reading any type, never panics.
        #[test]
        fn entries_of_arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..160), reads in vec(0u8..5, 1..8)) {
            let mut i = 0;
            let _ = for_each_entry(&bytes, |_, r| {
                i += 1;
                match reads[i % reads.len()] {
                    0 => r.u64().map(drop),
                    1 => r.bytes().map(drop),
                    2 => r.raw().map(drop),
                    3 => r.map_len().map(drop),
                    _ => Ok(()),
                }
            });
        }
    }
}
