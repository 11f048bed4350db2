//! Failing closed: a plugin that fails never lets its request through.
//!
//! Kong's MsgPack:1 client answers an error reply by logging it and proxying the request as
//! if the plugin had not run. Every request below is played as Kong plays it (the simulated
//! Kong models that: `EventEnd::proxied`), so "never proxied" is what the assertions check.

use kong_rust_pluginserver_e2e::{
    daemon::Scratch,
    kong::{Answer, EventEnd},
};
use rmpv::Value;
use serde_json::json;

const KEY: &str = "s3cret";

fn key_auth_config() -> serde_json::Value {
    json!({
        "key_names": ["apikey"],
        "key_in_query": true,
        "credentials": [{"key": KEY, "consumer": {"id": "c-1", "username": "alice"}}],
    })
}

/// Every way a request can carry a bad key or break the plugin: none is proxied.
#[test]
fn rust_key_auth_ends_every_request_it_cannot_authenticate() {
    let scratch = Scratch::with_plugins(&["rust-key-auth"]);
    let daemon = scratch.start(&["rust-key-auth"]);
    let kong = daemon.kong();
    let instance = kong
        .start_instance("rust-key-auth", key_auth_config())
        .unwrap();
    type Case = (&'static str, Box<dyn Fn(&str) -> Answer>);
    let cases: Vec<Case> = vec![
        ("no key", Box::new(|_| Answer::Value(None))),
        ("a wrong key", Box::new(|m| header(m, Value::from("guess")))),
        // nginx hands over header bytes >= 0x80 as they are.
        (
            "a key that is not UTF-8",
            Box::new(|m| header(m, Value::Binary(vec![0xff, 0xfe]))),
        ),
        // Kong's lua-MessagePack sends every Lua string as a msgpack str, bytes as they are.
        (
            "a key that is not UTF-8, as Kong encodes it",
            Box::new(|m| {
                header(
                    m,
                    rmpv::decode::read_value(&mut &b"\xa2\xff\xfe"[..]).expect("a str"),
                )
            }),
        ),
        (
            "a key that is not text at all",
            Box::new(|m| header(m, Value::Array(vec![Value::from(1)]))),
        ),
        (
            "a query key Kong decodes as a flag list",
            Box::new(|m| match m {
                "kong.request.get_query_arg" => {
                    Answer::Value(Some(Value::Array(vec![Value::Boolean(true)])))
                }
                _ => Answer::Value(None),
            }),
        ),
        (
            "Kong answering a call with garbage",
            Box::new(|m| match m {
                "kong.request.get_header" => Answer::Value(Some(Value::Map(vec![]))),
                _ => Answer::Value(None),
            }),
        ),
    ];
    for (what, answer) in &cases {
        let run = kong.run_event_answering(instance, "access", |call| answer(&call.method));
        assert!(!run.end.proxied(), "{what}: proxied ({run:?})");
        let status = run.end.status().unwrap_or_default();
        assert!(
            status == 401 || status >= 500,
            "{what}: ended with {status} ({run:?})"
        );
    }
    // And the right key still passes.
    let run = kong.run_event(instance, "access", |call| match call.method.as_str() {
        "kong.request.get_header" => Some(Value::from(KEY)),
        _ => None,
    });
    assert_eq!(run.end, EventEnd::Returned, "{run:?}");
}

fn header(method: &str, value: Value) -> Answer {
    match method {
        "kong.request.get_header" => Answer::Value(Some(value)),
        _ => Answer::Value(None),
    }
}

/// A plugin that errors or panics: the daemon ends the request with a 500, never proxied.
/// (Which call ends it in each phase, and that `log` and `certificate` are reported done,
/// is checked in the daemon's unit tests and in `protocol.rs`.)
#[test]
fn failing_handlers_end_their_requests() {
    let scratch = Scratch::with_plugins(&["e2e-probe"]);
    let daemon = scratch.start(&["e2e-probe"]);
    let kong = daemon.kong();
    for mode in ["fail", "panic"] {
        let instance = kong
            .start_instance("e2e-probe", json!({ "mode": mode }))
            .unwrap();
        let run = kong.run_event(instance, "access", |_| Some(Value::from("x")));
        assert_eq!(
            run.end,
            EventEnd::Ended {
                method: "kong.response.error".into(),
                status: 500
            },
            "{mode}"
        );
    }
    assert!(daemon.stderr().contains("ending the request with 500"));
}

/// A plugin that declares `OnFailure::FailOpen`: its failures let the request continue.
#[test]
fn fail_open_plugins_let_requests_continue_when_they_fail() {
    let scratch = Scratch::with_plugins(&["fail-open-probe"]);
    let daemon = scratch.start(&["fail-open-probe"]);
    let kong = daemon.kong();
    for mode in ["fail", "panic"] {
        let instance = kong
            .start_instance("fail-open-probe", json!({ "mode": mode }))
            .unwrap();
        let run = kong.run_event(instance, "access", |_| None);
        assert_eq!(run.end, EventEnd::Returned, "{mode}: {run:?}");
    }
    let status = kong.status();
    assert_eq!(status["fail-open-probe.Failures"], 1);
    assert_eq!(status["fail-open-probe.Panics"], 1);
    let stderr = daemon.stderr();
    assert!(
        stderr.contains("decoration failed; the request continues without the plugin"),
        "{stderr}"
    );
    // Operators see which plugins fail open.
    let out = scratch.command().arg("status").output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("fail-open"), "{table}");
}

/// Kong's Lua raising inside a PDK call abandons the event: no Step ever comes, and the
/// daemon frees it later instead of waiting forever (and never refuses new events for it).
#[test]
fn a_lua_error_in_a_pdk_call_abandons_the_event_and_kong_ends_the_request() {
    let scratch = Scratch::with_plugins(&["e2e-probe"]);
    let daemon = scratch.start_with(&["e2e-probe"], |cmd| {
        cmd.args(["--max-events-per-instance", "4"]);
    });
    let kong = daemon.kong();
    let instance = kong
        .start_instance("e2e-probe", json!({"mode": "echo"}))
        .unwrap();
    for _ in 0..20 {
        let run = kong.run_event_answering(instance, "access", |_| {
            Answer::Raise("function cannot be called in access phase".into())
        });
        assert!(matches!(run.end, EventEnd::Raised(_)), "{run:?}");
        assert!(!run.end.proxied());
    }
    // Twenty abandoned events, a budget of four: nothing was refused.
    let run = kong.run_event(instance, "access", |_| Some(Value::from("v")));
    assert_eq!(run.end, EventEnd::Returned, "{run:?}");
    assert!(kong.status()["e2e-probe.Evicted"] >= 16);
}
