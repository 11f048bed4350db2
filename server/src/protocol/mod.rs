//! Kong's `MsgPack:1` pluginserver protocol: MessagePack-RPC over a unix stream socket.
//!
//! - [`frame`]: where one message ends;
//! - [`decode`]: reading requests and their arguments;
//! - [`encode`]: writing responses and the `serverPid` notification.

pub mod decode;
pub mod encode;
pub mod frame;

use decode::{DecodeError, Reader};

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
