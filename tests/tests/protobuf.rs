//! `--protocol protobuf`: the same daemon and plugin libraries over Kong's ProtoBuf:1, as
//! Kong's `pb_rpc.lua` drives them: the dump, a whole event on one pooled connection, a
//! failed plugin ending the request with `kong.response.exit`, an unknown instance closing
//! the connection, and PDK functions outside the protocol failing in the plugin.

use kong_rust_pluginserver_e2e::{
    daemon::{Daemon, Scratch},
    kong::{Answer, EventEnd, PdkCall},
    msgpack::map,
};
use rmpv::Value;
use serde_json::json;

fn start(plugin: &str) -> (Scratch, Daemon) {
    start_with(plugin, &[])
}

fn start_with(plugin: &str, flags: &[&str]) -> (Scratch, Daemon) {
    let scratch = Scratch::with_plugins(&[plugin]);
    let daemon = scratch.start_with(&[plugin], |cmd| {
        cmd.args(["--protocol", "protobuf", "--log-level", "debug"])
            .args(flags);
    });
    (scratch, daemon)
}

fn s(v: &str) -> Value {
    Value::from(v)
}

#[test]
fn the_dump_announces_protobuf_when_asked_by_flag_or_environment() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let dump = |configure: &dyn Fn(&mut std::process::Command)| {
        let mut cmd = scratch.command();
        cmd.args(["--dump-plugin", "rust-hello"]);
        configure(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert_eq!(dump(&|_| {})["Protocol"], "MsgPack:1");
    assert_eq!(
        dump(&|c| {
            c.args(["--protocol", "protobuf"]);
        })["Protocol"],
        "ProtoBuf:1"
    );
    let by_env = dump(&|c| {
        c.env("KONG_RUST_PLUGINSERVER_PROTOCOL", "protobuf");
    });
    assert_eq!(by_env["Protocol"], "ProtoBuf:1");
    assert_eq!(by_env["Plugins"][0]["Name"], "rust-hello");
}

#[test]
fn rust_hello_runs_whole_events_on_one_pooled_connection() {
    let (_scratch, daemon) = start("rust-hello");
    let kong = daemon.kong_pb();
    let id = kong
        .start_instance("rust-hello", json!({"message": "Kong!"}))
        .unwrap();
    assert!(id > 0, "a non-zero int32 id: {id}");
    for _ in 0..3 {
        let run = kong.run_event(id, "access", |call| {
            (call.method == "kong.request.get_header").then(|| s("example.com"))
        });
        assert_eq!(run.end, EventEnd::Returned, "{run:?}");
        assert_eq!(
            run.calls,
            [
                PdkCall::new("kong.request.get_header", vec![s("host")]),
                PdkCall::new(
                    "kong.response.set_header",
                    vec![s("x-hello-from-rust"), s("Rust says Kong! to example.com")]
                ),
                PdkCall::new(
                    "kong.response.set_header",
                    vec![s("x-rust-pid"), s(&daemon.pid().to_string())]
                ),
            ]
        );
    }
    assert_eq!(
        kong.connections_opened(),
        1,
        "every call reused the pooled connection"
    );
    // An absent header (an empty frame) reads as None.
    let run = kong.run_event(id, "access", |_| None);
    assert_eq!(run.calls[1].args[1], s("Rust says Kong! to "));
    // CloseInstance, then the id is unknown: the connection closes, Kong restarts it.
    kong.close_instance(id).unwrap();
    assert_eq!(kong.run_event(id, "access", |_| None).end, EventEnd::Closed);
}

#[test]
fn event_loops_serve_protobuf_too() {
    let (_scratch, daemon) = start_with("rust-hello", &["--event-loops", "1"]);
    let kong = daemon.kong_pb();
    let id = kong.start_instance("rust-hello", json!({})).unwrap();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let socket = daemon.kong_pb();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let run = socket.run_event(id, "access", |call| {
                        (call.method == "kong.request.get_header").then(|| s("h"))
                    });
                    assert_eq!(run.end, EventEnd::Returned, "{run:?}");
                    assert_eq!(run.calls[1].args[1], s("Rust says hello to h"));
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
}

#[test]
fn an_unknown_instance_closes_the_connection_and_nothing_else_does() {
    let (_scratch, daemon) = start("rust-hello");
    let kong = daemon.kong_pb();
    assert_eq!(
        kong.run_event(424242, "access", |_| None).end,
        EventEnd::Closed
    );
    // A plugin this socket does not serve: there is no error reply, the connection closes.
    assert!(kong.start_instance("no-such-plugin", json!({})).is_err());
    // A bad configuration too; the daemon logs the reason.
    assert!(
        kong.start_instance("rust-hello", json!({"message": 42}))
            .is_err()
    );
    daemon.wait_for_log("StartInstance failed", std::time::Duration::from_secs(5));
    // The daemon serves on.
    let id = kong.start_instance("rust-hello", json!({})).unwrap();
    assert_eq!(
        kong.run_event(id, "access", |_| None).end,
        EventEnd::Returned
    );
}

fn ended(run: &kong_rust_pluginserver_e2e::kong::EventRun) -> (u64, Vec<Value>) {
    let EventEnd::Ended { method, status } = &run.end else {
        panic!("the request was not ended: {run:?}");
    };
    assert_eq!(
        method, "kong.response.exit",
        "ProtoBuf:1 has no kong.response.error"
    );
    (*status, run.calls.last().unwrap().args.clone())
}

#[test]
fn a_failing_plugin_ends_the_request_with_exit_and_kongs_error_body() {
    let (_scratch, daemon) = start("e2e-probe");
    let kong = daemon.kong_pb();
    for mode in ["panic", "fail"] {
        let id = kong
            .start_instance("e2e-probe", json!({"mode": mode}))
            .unwrap();
        let run = kong.run_event(id, "access", |_| None);
        let (status, args) = ended(&run);
        assert_eq!(status, 500, "{mode}");
        assert_eq!(
            args,
            [
                Value::from(500),
                s(r#"{"message":"An unexpected error occurred"}"#),
                map([("Content-Type", s("application/json; charset=utf-8"))]),
            ],
            "{mode}"
        );
        assert_eq!(run.calls[0].method, "kong.request.get_header");
    }
    // The plugin's own exit goes through as is.
    let id = kong
        .start_instance("e2e-probe", json!({"mode": "exit"}))
        .unwrap();
    let run = kong.run_event(id, "access", |_| None);
    assert_eq!(ended(&run), (403, vec![Value::from(403), s("denied")]));
    // A phase the plugin lacks cannot end the request: the event just finishes.
    let run = kong.run_event(id, "log", |_| None);
    assert_eq!(run.end, EventEnd::Returned);
}

#[test]
fn an_event_kong_abandons_is_freed_when_its_connection_closes() {
    let (_scratch, daemon) = start("e2e-probe");
    let kong = daemon.kong_pb();
    let id = kong
        .start_instance("e2e-probe", json!({"mode": "echo"}))
        .unwrap();
    let run = kong.run_event_answering(id, "access", |_| Answer::Raise("bad argument".into()));
    assert_eq!(run.end, EventEnd::Raised("bad argument".into()));
    drop(kong);
    daemon.wait_for_log(
        "freed an event Kong abandoned (its connection closed)",
        std::time::Duration::from_secs(5),
    );
}

#[test]
fn functions_outside_the_protocol_fail_at_the_call_naming_it_and_the_protocol() {
    let (_scratch, daemon) = start("pdk-probe");
    let kong = daemon.kong_pb();
    // `error` mode ends with kong.response.error, which ProtoBuf:1 lacks: the call fails
    // in the plugin, the handler returns the error, the request ends with 500.
    let id = kong
        .start_instance("pdk-probe", json!({"mode": "error"}))
        .unwrap();
    let run = kong.run_event(id, "access", |_| None);
    assert_eq!(ended(&run).0, 500);
    assert_eq!(
        run.calls.len(),
        1,
        "kong.response.error never reached Kong: {run:?}"
    );
    daemon.wait_for_log(
        "kong.response.error is not available: Kong's ProtoBuf:1 protocol has no such function",
        std::time::Duration::from_secs(5),
    );

    // `every` mode: every function once; the report says what each call gave.
    let id = kong
        .start_instance("pdk-probe", json!({"mode": "every"}))
        .unwrap();
    let multimaps = [
        "kong.request.get_query",
        "kong.request.get_headers",
        "kong.response.get_headers",
        "kong.service.response.get_headers",
    ];
    let run = kong.run_event(id, "access", |call| {
        multimaps
            .contains(&call.method.as_str())
            .then(|| Value::Map(vec![]))
    });
    let (status, _) = ended(&run);
    assert_eq!(status, 418);
    for call in &run.calls {
        assert!(
            kong_rust_pluginserver_protocol::protobuf::find(call.method.as_bytes()).is_some(),
            "{} reached Kong",
            call.method
        );
    }
    let report = run
        .calls
        .iter()
        .rev()
        .find(|c| c.method == "kong.log.notice")
        .and_then(|c| c.args[0].as_str())
        .expect("the report")
        .to_owned();
    let line = |label: &str| {
        report
            .lines()
            .find(|l| l.starts_with(&format!("{label} = ")))
            .unwrap_or_else(|| panic!("no {label} in {report}"))
            .to_owned()
    };
    for (label, method) in [
        ("log.emerg", "kong.log.emerg"),
        ("log.deprecation", "kong.log.deprecation"),
        (
            "tls.request_client_certificate",
            "kong.client.tls.request_client_certificate",
        ),
        ("node.get_hostname", "kong.node.get_hostname"),
        ("service.set_timeouts", "kong.service.set_timeouts"),
        ("request.get_body", "kong.request.get_body"),
    ] {
        let line = line(label);
        assert!(
            line.contains(&format!("{method} is not available")) && line.contains("ProtoBuf:1"),
            "{line}"
        );
    }
    assert!(
        line("log.set_serialize_value/add").contains("options"),
        "{report}"
    );
    assert_eq!(line("log.alert"), "log.alert = ()");
    assert_eq!(line("client.get_ip"), "client.get_ip = \"\"");
}
