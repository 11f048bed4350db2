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
        stderr.contains("notes.so: not a loadable kong-rust-pdk plugin: cannot open it"),
        "{stderr}"
    );
    // The good plugin is served.
    let kong = daemon.kong();
    let id = kong.start_instance("rust-hello", json!({})).unwrap();
    assert_eq!(kong.run_event(id, "access", |_| None).end, EventEnd::Ret);
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
    assert_eq!(run.end, EventEnd::Exit);
    let exit = run.calls.last().unwrap();
    assert_eq!(exit.method, "kong.response.exit");
    assert_eq!(exit.args, [Value::from(403), Value::from("denied")]);
    // The daemon has dropped the event: a late Step is refused.
    let err = kong
        .call(
            "plugin.Step",
            kong_rust_pluginserver_e2e::msgpack::map([(
                "EventId",
                Value::from(run.event_id.unwrap()),
            )]),
        )
        .unwrap_err();
    assert!(err.to_string().contains("no running event"), "{err}");
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
        let EventEnd::Error(err) = &run.end else {
            panic!("{run:?}")
        };
        assert!(
            err.contains("e2e-probe access handler failed: panicked: probe handler panic"),
            "{err}"
        );
        assert!(!err.contains("no plugin instance"), "{err}");
        // The same instance and other instances keep working.
        let run = kong.run_event(echo, "access", |_| Some(Value::from("v")));
        assert_eq!(run.end, EventEnd::Ret);
        assert_eq!(run.calls[1].args, [Value::from("x-echo"), Value::from("v")]);
    }
    let other = Kong::new(scratch.socket("rust-hello"));
    let hello = other.start_instance("rust-hello", json!({})).unwrap();
    assert_eq!(
        other.run_event(hello, "access", |_| None).end,
        EventEnd::Ret
    );
    assert!(daemon.stderr().contains("probe handler panic"));
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
    assert_eq!(
        run.end,
        EventEnd::Error(format!(
            "plugin e2e-probe access handler failed: probe failure (instance {id}, event {event})"
        ))
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
    assert_eq!(kong.run_event(id, "access", |_| None).end, EventEnd::Ret);
}

#[test]
fn events_for_phases_the_plugin_does_not_implement_are_refused() {
    let (_scratch, daemon) = probe();
    let kong = daemon.kong();
    let id = kong
        .start_instance("e2e-probe", json!({"mode": "echo"}))
        .unwrap();
    for phase in ["log", "header_filter"] {
        let run = kong.run_event(id, phase, |_| None);
        let EventEnd::Error(err) = &run.end else {
            panic!("{run:?}")
        };
        assert!(
            err.contains(&format!("has no handler for event \"{phase}\"")),
            "{err}"
        );
        assert!(!err.contains("no plugin instance"));
    }
}
