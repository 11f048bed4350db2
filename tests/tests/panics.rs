//! A panic never takes the daemon down, however the plugin panics, and its report is a log
//! line like any other (valid JSON with `--log-format json`).

use std::{
    io::Write,
    os::unix::net::UnixStream,
    time::{Duration, Instant},
};

use kong_rust_pluginserver_e2e::{
    daemon::{Daemon, Scratch},
    kong::{EventEnd, Kong, PdkCall, read_value},
    msgpack::{encode, get, map},
};
use rmpv::Value;
use serde_json::json;

fn start() -> (Scratch, Daemon) {
    let scratch = Scratch::with_plugins(&["panic-probe"]);
    let daemon = scratch.start(&["panic-probe"]);
    (scratch, daemon)
}

fn answer(call: &PdkCall) -> Option<Value> {
    (call.method == "kong.request.get_header").then(|| Value::from("h"))
}

/// The daemon is alive and serves a plugin that does not panic.
fn still_serves(daemon: &mut Daemon) {
    let kong = daemon.kong();
    let calm = kong
        .start_instance("panic-probe", json!({"mode": "calm"}))
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.stderr()));
    assert_eq!(
        kong.run_event(calm, "access", answer).end,
        EventEnd::Returned
    );
    assert!(daemon.is_running(), "{}", daemon.stderr());
}

#[test]
fn a_panic_payload_whose_drop_panics_fails_only_its_request() {
    let (_scratch, mut daemon) = start();
    let kong = daemon.kong();
    let id = kong
        .start_instance("panic-probe", json!({"mode": "payload_drop_panics"}))
        .unwrap();
    let run = kong.run_event(id, "access", answer);
    assert_eq!(run.end.status(), Some(500), "{run:?}\n{}", daemon.stderr());
    still_serves(&mut daemon);
    assert!(
        daemon
            .stderr()
            .contains("the payload of a handler panic panicked on drop"),
        "{}",
        daemon.stderr()
    );
}

#[test]
fn a_constructor_panic_whose_payload_panics_on_drop_fails_only_that_start() {
    let (_scratch, mut daemon) = start();
    let kong = daemon.kong();
    let err = kong
        .start_instance("panic-probe", json!({"mode": "payload_drop_panics_in_new"}))
        .unwrap_err();
    assert!(err.to_string().contains("panicked"), "{err}");
    still_serves(&mut daemon);
}

#[test]
fn a_destructor_panic_whose_payload_panics_on_drop_is_contained() {
    let (_scratch, mut daemon) = start();
    let kong = daemon.kong();
    let id = kong
        .start_instance("panic-probe", json!({"mode": "drop_panics"}))
        .unwrap();
    kong.call("plugin.CloseInstance", Value::from(id)).unwrap();
    still_serves(&mut daemon);
}

/// Runs panic-probe's `panic_while_unwinding` handler (after Kong answers its header
/// call): Rust cannot recover that thread, so the plugin's hook parks it for good.
fn panic_while_unwinding(scratch: &Scratch, daemon: &mut Daemon) {
    let kong = daemon.kong();
    let id = kong
        .start_instance("panic-probe", json!({"mode": "panic_while_unwinding"}))
        .unwrap();
    let first = kong.handle_event(id, "access").unwrap();
    let event = get(&first, "EventId").unwrap().clone();
    let mut stream = UnixStream::connect(scratch.socket("panic-probe")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    stream
        .write_all(&encode(&Value::Array(vec![
            Value::from(0),
            Value::from(1),
            Value::from("plugin.Step"),
            Value::Array(vec![map([("EventId", event), ("Data", Value::from("h"))])]),
        ])))
        .unwrap();
    let _ = read_value(&mut stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !daemon
        .stderr()
        .contains("a destructor panicked while unwinding")
    {
        assert!(Instant::now() < deadline, "{}", daemon.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(daemon.is_running(), "the daemon died:\n{}", daemon.stderr());
}

#[test]
fn a_panic_while_unwinding_costs_its_plugin_loop_not_the_daemon() {
    // On the plugin loops (the default) the parked thread is panic-probe's loop: that
    // plugin stalls (documented; `--isolation process` contains it), every other plugin
    // serves on.
    let scratch = Scratch::with_plugins(&["panic-probe", "rust-hello"]);
    let mut daemon = scratch.start(&["panic-probe", "rust-hello"]);
    panic_while_unwinding(&scratch, &mut daemon);
    let kong = Kong::new(scratch.socket("rust-hello"));
    let hello = kong
        .start_instance("rust-hello", json!({}))
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.stderr()));
    let run = kong.run_event(hello, "access", |call| {
        (call.method == "kong.request.get_header").then(|| Value::from("h"))
    });
    assert_eq!(run.end, EventEnd::Returned, "{run:?}\n{}", daemon.stderr());
    assert!(daemon.is_running(), "{}", daemon.stderr());
}

#[test]
fn a_panic_while_unwinding_costs_only_its_connection_with_a_thread_each() {
    let scratch = Scratch::with_plugins(&["panic-probe"]);
    let mut daemon = scratch.start_with(&["panic-probe"], |cmd| {
        cmd.arg("--thread-per-connection");
    });
    panic_while_unwinding(&scratch, &mut daemon);
    still_serves(&mut daemon);
}

#[test]
fn plugin_panics_are_json_log_lines_with_log_format_json() {
    let scratch = Scratch::with_plugins(&["panic-probe"]);
    let daemon = scratch.start_with(&["panic-probe"], |cmd| {
        cmd.args(["--log-format", "json"]);
    });
    let kong = daemon.kong();
    let id = kong
        .start_instance("panic-probe", json!({"mode": "plain"}))
        .unwrap();
    assert_eq!(kong.run_event(id, "access", answer).end.status(), Some(500));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !daemon.stderr().contains("panic-probe plain panic") {
        assert!(Instant::now() < deadline, "{}", daemon.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    let stderr = daemon.stderr();
    let mut hook_line = None;
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let parsed: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\n{stderr}"));
        let text = parsed.to_string();
        if text.contains("panicked at") {
            hook_line = Some(parsed);
        }
    }
    let hook_line = hook_line.unwrap_or_else(|| panic!("no panic report:\n{stderr}"));
    assert_eq!(hook_line["fields"]["plugin"], "panic-probe", "{hook_line}");
    assert_eq!(hook_line["level"], "ERROR", "{hook_line}");
}
