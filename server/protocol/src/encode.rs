//! What the pluginserver writes: responses and the `serverPid` notification.
//!
//! Responses are written straight into the connection's reusable output buffer with `rmp`'s
//! primitive writers: no intermediate values, no allocation once the buffer has grown.
//! Writes into a `Vec` cannot fail, so the `rmp` results are unwrapped (in one place, `ok`).

use rmp::encode as mp;

/// Message type of a response and of a notification.
const RESPONSE: u64 = 1;
const NOTIFICATION: u64 = 2;

/// The `Data` sentinel that tells Kong a handler has finished.
pub const RET: &str = "ret";

fn ok<T, E: std::fmt::Debug>(result: Result<T, E>) -> T {
    result.expect("writing MessagePack into a Vec cannot fail")
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

/// StepData asking Kong to run `method(status)`: how the daemon ends a request in a
/// failed plugin's place (`kong.response.error(500)`).
pub fn step_call_status(out: &mut Vec<u8>, event_id: u64, method: &str, status: u16) {
    ok(mp::write_map_len(out, 2));
    ok(mp::write_str(out, "EventId"));
    ok(mp::write_uint(out, event_id));
    ok(mp::write_str(out, "Data"));
    ok(mp::write_map_len(out, 2));
    ok(mp::write_str(out, "Method"));
    ok(mp::write_str(out, method));
    ok(mp::write_str(out, "Args"));
    ok(mp::write_array_len(out, 1));
    ok(mp::write_uint(out, u64::from(status)));
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

#[cfg(test)]
mod proptests {
    use proptest::{collection::vec, prelude::*};

    use super::*;
    use crate::{
        frame::value_len,
        strategies::{array_of, config, payload, rmpv_decode, uint, value},
    };

    /// Decodes what was appended after `start`: exactly one value, as the framer sees it.
    fn appended(out: &[u8], start: usize) -> Result<rmpv::Value, TestCaseError> {
        let written = &out[start..];
        let (value, len) =
            rmpv_decode(written).map_err(|e| TestCaseError::fail(format!("rmpv: {e}")))?;
        prop_assert_eq!(len, written.len(), "one value, nothing after it");
        prop_assert_eq!(value_len(written, usize::MAX), Ok(Some(len)));
        Ok(value)
    }

    fn response(msgid: u64, error: rmpv::Value, result: rmpv::Value) -> rmpv::Value {
        rmpv::Value::Array(vec![1.into(), msgid.into(), error, result])
    }

    fn step_data(event_id: u64, data: rmpv::Value) -> rmpv::Value {
        rmpv::Value::Map(vec![
            ("EventId".into(), event_id.into()),
            ("Data".into(), data),
        ])
    }

    proptest! {
        #![proptest_config(config())]

        /// An error response is `[1, msgid, message, nil]`, appended to what the buffer held.
        #[test]
        fn error_responses(prefix in payload(), msgid in uint(), message in ".{0,80}") {
            let mut out = prefix.clone();
            error(&mut out, msgid, &message);
            prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
            let value = appended(&out, prefix.len())?;
            prop_assert_eq!(value, response(msgid, message.as_str().into(), rmpv::Value::Nil));
        }

        /// A finished handler's StepData is `{"EventId": id, "Data": "ret"}`.
        #[test]
        fn ret_responses(msgid in uint(), event_id in uint()) {
            let mut out = Vec::new();
            ok_header(&mut out, msgid);
            step_ret(&mut out, event_id);
            let expected = response(msgid, rmpv::Value::Nil, step_data(event_id, RET.into()));
            prop_assert_eq!(appended(&out, 0)?, expected);
        }

        /// A PDK call's StepData carries the method and the plugin's argument array as is.
        #[test]
        fn call_responses(
            msgid in uint(),
            event_id in uint(),
            method in "[a-z_.]{1,40}",
            args in vec(value(), 0..4),
            c in any::<u8>(),
        ) {
            let args = array_of(args, c);
            let mut out = Vec::new();
            ok_header(&mut out, msgid);
            step_call(&mut out, event_id, &method, &args.bytes);
            let value = appended(&out, 0)?;
            let parts = value.as_array().expect("an array");
            prop_assert_eq!(&parts[..3], &[1.into(), msgid.into(), rmpv::Value::Nil][..]);
            let step = parts[3].as_map().expect("StepData is a map");
            prop_assert_eq!(step.len(), 2);
            prop_assert_eq!(&step[0], &("EventId".into(), event_id.into()));
            prop_assert_eq!(&step[1].0, &rmpv::Value::from("Data"));
            let data = step[1].1.as_map().expect("Data is a map");
            prop_assert_eq!(data.len(), 2);
            prop_assert_eq!(&data[0], &("Method".into(), method.as_str().into()));
            prop_assert_eq!(&data[1].0, &rmpv::Value::from("Args"));
            prop_assert!(args.model.matches(&data[1].1), "Args {:?}", data[1].1);
        }

        /// The notification every connection starts with.
        #[test]
        fn server_pid_notifications(pid in any::<u32>()) {
            let mut out = Vec::new();
            server_pid(&mut out, pid);
            let expected = rmpv::Value::Array(vec![2.into(), "serverPid".into(), pid.into()]);
            prop_assert_eq!(appended(&out, 0)?, expected);
        }

        /// Serialized results: structs become maps keyed by field name.
        #[test]
        fn serialized_results(name in ".{0,30}", id in uint(), tags in vec(".{0,10}", 0..4), extra in any::<Option<i64>>()) {
            #[derive(serde::Serialize)]
            #[serde(rename_all = "PascalCase")]
            struct Status<'a> {
                name: &'a str,
                id: u64,
                tags: &'a [String],
                extra: Option<i64>,
            }
            let mut out = Vec::new();
            ok_header(&mut out, 9);
            super::value(&mut out, &Status { name: &name, id, tags: &tags, extra });
            let tags_value = rmpv::Value::Array(tags.iter().map(|t| t.as_str().into()).collect());
            let extra_value = extra.map_or(rmpv::Value::Nil, rmpv::Value::from);
            let expected = response(9, rmpv::Value::Nil, rmpv::Value::Map(vec![
                ("Name".into(), name.as_str().into()),
                ("Id".into(), id.into()),
                ("Tags".into(), tags_value),
                ("Extra".into(), extra_value),
            ]));
            prop_assert_eq!(appended(&out, 0)?, expected);
        }
    }
}
