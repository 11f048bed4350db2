//! Writing responses.
//!
//! Responses are written straight into the connection's reusable output buffer with `rmp`'s
//! primitive writers: no intermediate values, no allocation once the buffer has grown.
//! Writes into a `Vec` cannot fail, so the `rmp` results are unwrapped through [`ok`].

use rmp::encode as mp;

/// Message type of a response and of a notification.
const RESPONSE: u64 = 1;
const NOTIFICATION: u64 = 2;

/// The `Data` sentinel that tells Kong a handler has finished.
pub const RET: &str = "ret";

fn ok<T, E: std::fmt::Debug>(result: Result<T, E>) -> T {
    result.expect("writing MessagePack into a Vec cannot fail")
}

/// A request, `[0, msgid, method, [arg]]`, with `arg` already encoded: what Kong sends,
/// for the daemon's own client tools.
pub fn request(out: &mut Vec<u8>, msgid: u64, method: &str, arg: &[u8]) {
    ok(mp::write_array_len(out, 4));
    ok(mp::write_uint(out, 0));
    ok(mp::write_uint(out, msgid));
    ok(mp::write_str(out, method));
    ok(mp::write_array_len(out, 1));
    out.extend_from_slice(arg);
}

/// `[2, "serverPid", pid]`, sent first on every connection: Kong forgets its cached
/// instances when the pid changes, so a restarted daemon never sees stale instance ids.
pub fn server_pid(out: &mut Vec<u8>, pid: u32) {
    ok(mp::write_array_len(out, 3));
    ok(mp::write_uint(out, NOTIFICATION));
    ok(mp::write_str(out, "serverPid"));
    ok(mp::write_uint(out, u64::from(pid)));
}

/// Starts a successful response: `[1, msgid, nil, ` — the caller writes the result value.
pub fn ok_header(out: &mut Vec<u8>, msgid: u64) {
    ok(mp::write_array_len(out, 4));
    ok(mp::write_uint(out, RESPONSE));
    ok(mp::write_uint(out, msgid));
    ok(mp::write_nil(out));
}

/// `[1, msgid, error, nil]`. Kong lowercases the message; it must not contain
/// "no plugin instance" unless the instance really is unknown (Kong restarts it then).
pub fn error(out: &mut Vec<u8>, msgid: u64, message: &str) {
    ok(mp::write_array_len(out, 4));
    ok(mp::write_uint(out, RESPONSE));
    ok(mp::write_uint(out, msgid));
    ok(mp::write_str(out, message));
    ok(mp::write_nil(out));
}

/// StepData asking Kong to run a PDK function: `{"EventId": id, "Data": {"Method", "Args"}}`.
/// `args` is one encoded MessagePack array, copied as is.
pub fn step_call(out: &mut Vec<u8>, event_id: u64, method: &str, args: &[u8]) {
    ok(mp::write_map_len(out, 2));
    ok(mp::write_str(out, "EventId"));
    ok(mp::write_uint(out, event_id));
    ok(mp::write_str(out, "Data"));
    ok(mp::write_map_len(out, 2));
    ok(mp::write_str(out, "Method"));
    ok(mp::write_str(out, method));
    ok(mp::write_str(out, "Args"));
    out.extend_from_slice(args);
}

/// StepData telling Kong the handler finished: `{"EventId": id, "Data": "ret"}`.
pub fn step_ret(out: &mut Vec<u8>, event_id: u64) {
    ok(mp::write_map_len(out, 2));
    ok(mp::write_str(out, "EventId"));
    ok(mp::write_uint(out, event_id));
    ok(mp::write_str(out, "Data"));
    ok(mp::write_str(out, RET));
}

/// Appends any serializable value, structs as maps (rmp-serde's default is arrays).
pub fn value<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let mut ser = rmp_serde::Serializer::new(out).with_struct_map();
    ok(value.serialize(&mut ser));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_pid_matches_the_reference_bytes() {
        let mut out = Vec::new();
        server_pid(&mut out, 4242);
        assert_eq!(
            out,
            [
                0x93, 0x02, 0xa9, b's', b'e', b'r', b'v', b'e', b'r', b'P', b'i', b'd', 0xcd, 0x10,
                0x92
            ]
        );
    }

    #[test]
    fn step_responses_match_the_reference_bytes() {
        let mut out = Vec::new();
        ok_header(&mut out, 4);
        step_ret(&mut out, 0);
        let expected = [
            0x94, 0x01, 0x04, 0xc0, 0x82, 0xa7, b'E', b'v', b'e', b'n', b't', b'I', b'd', 0x00,
            0xa4, b'D', b'a', b't', b'a', 0xa3, b'r', b'e', b't',
        ];
        assert_eq!(out, expected);

        let mut out = Vec::new();
        ok_header(&mut out, 2);
        step_call(
            &mut out,
            0,
            "kong.request.get_header",
            &[0x91, 0xa4, b'h', b'o', b's', b't'],
        );
        let mut expected = vec![
            0x94, 0x01, 0x02, 0xc0, 0x82, 0xa7, b'E', b'v', b'e', b'n', b't', b'I', b'd', 0x00,
            0xa4, b'D', b'a', b't', b'a', 0x82, 0xa6, b'M', b'e', b't', b'h', b'o', b'd', 0xb7,
        ];
        expected.extend_from_slice(b"kong.request.get_header");
        expected.extend_from_slice(&[
            0xa4, b'A', b'r', b'g', b's', 0x91, 0xa4, b'h', b'o', b's', b't',
        ]);
        assert_eq!(out, expected);
    }
}
