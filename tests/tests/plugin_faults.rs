//! Bad plugin files, bad configs, and plugins that fail: each is contained and reported.

use kong_rust_pluginserver_e2e::{
    daemon::Scratch,
    kong::{EventEnd, Kong},
};
use rmpv::Value;
use serde_json::json;

#[test]
fn files_that_are_not_compatible_plugins_are_skipped_and_named() {
    let scratch = Scratch::with_plugins(&["rust-hello", "incompatible-abi"]);
    std::fs::write(
        scratch.plugins_dir().join("notes.so"),
        b"this is not a library",
    )
    .unwrap();
    let daemon = scratch.start(&["rust-hello"]);
    let stderr = daemon.stderr();
    assert!(
        stderr.contains(
            "libincompatible_abi.so: not a loadable kong-rust-pdk plugin: it was built against an incompatible plugin ABI"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "notes.so: not a loadable kong-rust-pdk plugin: it is not an ELF shared library"
        ),
        "{stderr}"
    );
    // The good plugin is served.
    let kong = daemon.kong();
    let id = kong.start_instance("rust-hello", json!({})).unwrap();
    assert_eq!(
        kong.run_event(id, "access", |_| None).end,
        EventEnd::Returned
    );
}

#[test]
fn a_directory_without_usable_plugins_is_refused_at_start() {
    let scratch = Scratch::with_plugins(&["incompatible-abi"]);
    let out = scratch.command().output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no usable plugin"), "{stderr}");
}

fn probe() -> (Scratch, kong_rust_pluginserver_e2e::daemon::Daemon) {
    let scratch = Scratch::with_plugins(&["e2e-probe", "rust-hello"]);
    let daemon = scratch.start(&["e2e-probe", "rust-hello"]);
    (scratch, daemon)
}

#[test]
fn exit_ends_the_event_without_a_step() {
    let (_scratch, daemon) = probe();
    let kong = daemon.kong();
    let id = kong
        .start_instance("e2e-probe", json!({"mode": "exit"}))
        .unwrap();
    let run = kong.run_event(id, "access", |_| None);
    assert_eq!(run.end.status(), Some(403), "{run:?}");
    let exit = run.calls.last().unwrap();
    assert_eq!(exit.method, "kong.response.exit");
    assert_eq!(exit.args, [Value::from(403), Value::from("denied")]);
    // The daemon has dropped the event: a late Step ends the request rather than being
    // answered with an error Kong would ignore (never Kong's restart phrase either).
    let late = kong
        .call(
            "plugin.Step",
            kong_rust_pluginserver_e2e::msgpack::map([(
                "EventId",
                Value::from(run.event_id.unwrap()),
            )]),
        )
        .unwrap();
    let data = kong_rust_pluginserver_e2e::msgpack::get(&late, "Data").unwrap();
    assert_eq!(
        kong_rust_pluginserver_e2e::msgpack::get(data, "Method").and_then(Value::as_str),
        Some("kong.response.error"),
        "{late}"
    );
    assert!(daemon.stderr().contains("reason=\"unknown_event\""));
}

#[test]
fn a_panicking_handler_fails_its_event_only() {
    let (scratch, daemon) = probe();
    let kong = daemon.kong();
    let panicking = kong
        .start_instance("e2e-probe", json!({"mode": "panic"}))
        .unwrap();
    let echo = kong
        .start_instance("e2e-probe", json!({"mode": "echo"}))
        .unwrap();
    for _ in 0..3 {
        let run = kong.run_event(panicking, "access", |_| Some(Value::from("x")));
        // Failing closed: the daemon ends the request in the plugin's place.
        assert_eq!(
            run.end,
            EventEnd::Ended {
                method: "kong.response.error".into(),
                status: 500
            }
        );
        // The same instance and other instances keep working.
        let run = kong.run_event(echo, "access", |_| Some(Value::from("v")));
        assert_eq!(run.end, EventEnd::Returned);
        assert_eq!(run.calls[1].args, [Value::from("x-echo"), Value::from("v")]);
    }
    let other = Kong::new(scratch.socket("rust-hello"));
    let hello = other.start_instance("rust-hello", json!({})).unwrap();
    assert_eq!(
        other.run_event(hello, "access", |_| None).end,
        EventEnd::Returned
    );
    let stderr = daemon.stderr();
    assert!(
        stderr.contains("panicked: probe handler panic; ending the request with 500"),
        "{stderr}"
    );
    assert_eq!(kong.status()["e2e-probe.Panics"], 3);
}

#[test]
fn a_failing_handler_reports_its_error() {
    let (_scratch, daemon) = probe();
    let kong = daemon.kong();
    let id = kong
        .start_instance("e2e-probe", json!({"mode": "fail"}))
        .unwrap();
    let run = kong.run_event(id, "access", |_| None);
    let event = run.event_id.expect("the handler made one PDK call first");
    assert_eq!(run.end.status(), Some(500), "{run:?}");
    assert!(!run.end.proxied());
    let stderr = daemon.stderr();
    assert!(
        stderr.contains(&format!(
            "probe failure; ending the request with 500 (kong.response.error) plugin=e2e-probe phase=access instance={id} event={event} reason=\"error\""
        )),
        "{stderr}"
    );
}

#[test]
fn bad_configs_are_refused_with_the_field_and_the_daemon_keeps_serving() {
    let (_scratch, daemon) = probe();
    let kong = daemon.kong();
    let err = kong
        .start_instance("e2e-probe", json!({"mode": "dance"}))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("plugin e2e-probe: invalid config at `mode`"),
        "{msg}"
    );
    assert!(msg.contains("unknown variant `dance`"), "{msg}");
    let err = kong
        .start_instance("e2e-probe", json!({"mode": "echo", "panic_in_new": true}))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("constructor panicked: probe constructor panic"),
        "{err}"
    );
    let err = kong
        .call(
            "plugin.StartInstance",
            kong_rust_pluginserver_e2e::msgpack::map([
                ("Name", Value::from("e2e-probe")),
                ("Config", Value::from("{not json")),
            ]),
        )
        .unwrap_err();
    assert!(err.to_string().contains("Config is not JSON"), "{err}");
    let id = kong
        .start_instance("e2e-probe", json!({"mode": "echo"}))
        .unwrap();
    assert_eq!(
        kong.run_event(id, "access", |_| None).end,
        EventEnd::Returned
    );
}

#[test]
fn events_for_phases_the_plugin_does_not_implement_are_refused() {
    let (_scratch, daemon) = probe();
    let kong = daemon.kong();
    let id = kong
        .start_instance("e2e-probe", json!({"mode": "echo"}))
        .unwrap();
    // A phase the plugin lacks (its dump told Kong otherwise, e.g. after an upgrade) fails
    // closed where a request can end, and is reported finished where it cannot.
    let run = kong.run_event(id, "rewrite", |_| None);
    assert_eq!(run.end.status(), Some(500), "{run:?}");
    let run = kong.run_event(id, "log", |_| None);
    assert_eq!(run.end, EventEnd::Returned, "{run:?}");
    // Not a phase at all: no request phase to end, so an error (Kong never sends one).
    let run = kong.run_event(id, "header_filter", |_| None);
    let EventEnd::ErrorReply(err) = &run.end else {
        panic!("{run:?}")
    };
    assert!(
        err.contains("has no handler for event \"header_filter\""),
        "{err}"
    );
    assert!(!err.contains("no plugin instance"));
    assert!(daemon.stderr().contains("reason=\"no_handler\""));
}
