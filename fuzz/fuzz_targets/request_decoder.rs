//! The request decoder: arbitrary bytes as a connection's input stream.
//!
//! The stream is cut into messages by `frame::value_len` exactly as a connection does, each
//! message goes through `parse_request`, and each argument through the readers the methods
//! use. Nothing may panic (integer overflow included: cargo fuzz builds with overflow
//! checks), and the daemon's decoder must agree with rmpv, an independent decoder.

#![no_main]

use kong_rust_pluginserver_fuzz::{check_frame, check_parse, exercise_argument_readers};
use kong_rust_pluginserver_protocol::{RequestError, frame};
use libfuzzer_sys::fuzz_target;

/// A small limit, so that oversized declarations are reached with short inputs.
const MAX_MESSAGE: usize = 4096;

fuzz_target!(|data: &[u8]| {
    // The framer alone, on the raw input, with the daemon's default limit and a tiny one.
    let _ = check_frame(data, 16 << 20);
    let _ = check_frame(data, 7);
    // The readers on unframed bytes: they must cope with truncation on their own.
    exercise_argument_readers(data);

    // A connection's loop: frame, parse, read the argument, next message.
    let mut rest = data;
    while !rest.is_empty() {
        let len = match check_frame(rest, MAX_MESSAGE) {
            Ok(Some(len)) => len,
            // Waiting for bytes that never come, or a stream the daemon closes.
            Ok(None)
            | Err(frame::FrameError::InvalidMarker { .. } | frame::FrameError::TooLarge { .. }) => {
                break;
            }
        };
        let message = &rest[..len];
        // One byte less than a whole value is never a whole value.
        assert_eq!(frame::value_len(&message[..len - 1], MAX_MESSAGE), Ok(None));
        match check_parse(message) {
            Ok(req) => {
                if let Some(arg) = req.arg {
                    exercise_argument_readers(arg);
                }
            }
            Err(RequestError::Malformed { .. }) => {}
            // The daemon closes the connection.
            Err(RequestError::Unanswerable(_)) => break,
        }
        rest = &rest[len..];
    }
});
