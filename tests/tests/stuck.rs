//! Code that never returns: a constructor runs off the event loop and outside every lock,
//! so one stuck constructor holds up neither the status nor other configurations; a request
//! whose handler does not answer within `--stuck-timeout` is named in the log, the status
//! and the metrics.

use std::{
    io::{Read, Write},
    time::{Duration, Instant},
};

use kong_rust_pluginserver_e2e::{
    daemon::Scratch,
    kong::{EventEnd, Kong},
    msgpack::to_json,
};
use rmpv::Value;
use serde_json::json;

fn status(kong: &Kong) -> serde_json::Value {
    to_json(&kong.call("plugin.GetStatus", Value::Nil).unwrap())
}

#[test]
fn a_stuck_constructor_holds_up_neither_the_status_nor_other_configurations() {
    let scratch = Scratch::with_plugins(&["fault-probe"]);
    let daemon = scratch.start_with(&["fault-probe"], |cmd| {
        cmd.args(["--stuck-timeout", "1"]);
    });
    let socket = scratch.socket("fault-probe");
    let stuck = std::thread::spawn({
        let socket = socket.clone();
        move || {
            Kong::new(socket).start_instance(
                "fault-probe",
                json!({"fault": "block", "in_constructor": true, "delay_ms": 4000}),
            )
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let kong = Kong::new(&socket);
    let started = Instant::now();
    let id = kong
        .start_instance("fault-probe", json!({"fault": "none"}))
        .unwrap();
    assert_eq!(
        kong.run_event(id, "access", |_| None).end,
        EventEnd::Returned
    );
    status(&kong);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "held up for {:?}",
        started.elapsed()
    );
    // Past the stuck timeout, the status names it.
    std::thread::sleep(Duration::from_millis(1800));
    let now = status(&kong);
    let listed = now["Stuck"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{now}");
    assert_eq!(listed[0]["Plugin"], "fault-probe");
    assert_eq!(listed[0]["Phase"], "constructor");
    assert_eq!(listed[0]["Request"], "StartInstance");
    assert_eq!(now["Plugins"]["fault-probe"]["Stuck"], 1);
    // It finishes in the end, and the configuration is usable.
    assert!(stuck.join().unwrap().is_ok());
    assert!(
        daemon
            .stderr()
            .contains("a plugin constructor has run for over")
    );
}

#[test]
fn a_handler_that_never_answers_is_named_in_the_log_the_status_and_the_metrics() {
    let scratch = Scratch::with_plugins(&["fault-probe", "rust-hello"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let daemon = scratch.start_with(&["fault-probe", "rust-hello"], |cmd| {
        cmd.args([
            "--stuck-timeout",
            "1",
            "--metrics-listen",
            &port.to_string(),
        ]);
    });
    let socket = scratch.socket("fault-probe");
    // Left behind: it never ends (the daemon is killed at the end of the test).
    std::thread::spawn(move || {
        let kong = Kong::new(socket);
        let id = kong
            .start_instance("fault-probe", json!({"fault": "hang", "at_step": true}))
            .unwrap();
        kong.try_run_event(id, "access", |_| {
            kong_rust_pluginserver_e2e::kong::Answer::Value(None)
        })
    });
    let hello = Kong::new(scratch.socket("rust-hello"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let now = status(&hello);
        if let Some(listed) = now["Stuck"].as_array().filter(|l| !l.is_empty()) {
            break listed.clone();
        }
        assert!(Instant::now() < deadline, "never listed: {now}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(listed[0]["Plugin"], "fault-probe");
    assert_eq!(listed[0]["Phase"], "access");
    assert_eq!(listed[0]["Request"], "Step");
    assert!(
        daemon
            .stderr()
            .contains("a request has waited 1 s for its handler")
            || daemon
                .stderr()
                .contains("a request has waited 2 s for its handler"),
        "{}",
        daemon.stderr()
    );
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    assert!(
        text.contains(
            "kong_rust_pluginserver_stuck_handlers_total{phase=\"access\",plugin=\"fault-probe\"} 1"
        ),
        "{text}"
    );
}
