//! Protocol behaviour Kong depends on, and resilience against bad input.

use std::{
    io::{Read, Write},
    os::unix::net::{UnixListener, UnixStream},
    time::Duration,
};

use kong_rust_pluginserver_e2e::{
    daemon::Scratch,
    kong::{EventEnd, Kong, RpcError, read_value},
    msgpack::{self, get, map},
};
use rmpv::Value;
use serde_json::json;

#[test]
fn every_connection_announces_the_server_pid_before_its_first_response() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = scratch.start(&["rust-hello"]);
    let status = |msgid: u64| {
        msgpack::encode(&Value::Array(vec![
            Value::from(0),
            Value::from(msgid),
            Value::from("plugin.GetStatus"),
            Value::Array(vec![Value::Nil]),
        ]))
    };
    for _ in 0..3 {
        let mut stream = UnixStream::connect(scratch.socket("rust-hello")).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(&status(1)).unwrap();
        let first = read_value(&mut stream).unwrap();
        assert_eq!(
            first,
            Value::Array(vec![
                Value::from(2),
                Value::from("serverPid"),
                Value::from(daemon.pid()),
            ])
        );
        let response = read_value(&mut stream).unwrap();
        assert_eq!(
            response.as_array().unwrap()[..2],
            [Value::from(1), Value::from(1)]
        );
        // Once per connection.
        stream.write_all(&status(2)).unwrap();
        let response = read_value(&mut stream).unwrap();
        assert_eq!(
            response.as_array().unwrap()[..2],
            [Value::from(1), Value::from(2)]
        );
    }
}

#[test]
fn unknown_instances_get_kongs_no_plugin_instance_error() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = scratch.start(&["rust-hello"]);
    let kong = daemon.kong();
    let run = kong.run_event(424242, "access", |_| None);
    let EventEnd::ErrorReply(err) = run.end else {
        panic!("{run:?}")
    };
    assert!(err.contains("no plugin instance"), "{err}");
    for method in ["plugin.CloseInstance", "plugin.InstanceStatus"] {
        let err = kong.call(method, Value::from(424242)).unwrap_err();
        assert!(
            matches!(&err, RpcError::Remote(e) if e.contains("no plugin instance")),
            "{err}"
        );
    }
}

#[test]
fn steps_for_unknown_events_end_their_requests_by_phase() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = scratch.start(&["rust-hello"]);
    let kong = daemon.kong();
    // An event id carries its phase in its low three bits (access = 2, response = 3,
    // preread = 4, log = 5), so a daemon that never saw the event (it was freed, or ran
    // in a daemon that is gone) still ends its request the right way: never an error
    // reply, which Kong would log before proxying the request past the plugin.
    let step = |event: u64| {
        kong.call(
            "plugin.Step",
            map([("EventId", Value::from(event)), ("Data", Value::from("x"))]),
        )
        .unwrap()
    };
    let call = |reply: &Value| {
        let data = get(reply, "Data").unwrap();
        (
            get(data, "Method")
                .and_then(Value::as_str)
                .map(str::to_owned),
            get(data, "Args").cloned(),
        )
    };
    for (event, method, status) in [
        (8 * 12 + 2, "kong.response.error", 503),
        (8 * 12 + 3, "kong.response.error", 503),
        (8 * 12 + 4, "kong.response.exit", 503),
    ] {
        let reply = step(event);
        assert_eq!(get(&reply, "EventId"), Some(&Value::from(event)));
        assert_eq!(
            call(&reply),
            (
                Some(method.to_owned()),
                Some(Value::Array(vec![Value::from(status)]))
            ),
            "{reply}"
        );
    }
    // Log and certificate cannot end a request: reported finished.
    for event in [8 * 12 + 5, 8 * 12] {
        let reply = step(event);
        assert_eq!(get(&reply, "Data"), Some(&Value::from("ret")), "{reply}");
    }
    let stderr = daemon.stderr();
    assert!(stderr.contains("reason=\"unknown_event\""), "{stderr}");
    assert!(
        !stderr.to_lowercase().contains("no plugin instance"),
        "{stderr}"
    );
}

#[test]
fn instance_lifecycle_methods_report_the_instance() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = scratch.start(&["rust-hello"]);
    let kong = daemon.kong();
    let id = kong
        .start_instance("rust-hello", json!({"message": "m"}))
        .unwrap();
    let status = kong.call("plugin.InstanceStatus", Value::from(id)).unwrap();
    assert_eq!(get(&status, "Id"), Some(&Value::from(id)));
    assert_eq!(get(&status, "Name"), Some(&Value::from("rust-hello")));
    assert_eq!(
        get(get(&status, "Config").unwrap(), "message"),
        Some(&Value::from("m"))
    );
    assert!(get(&status, "StartTime").and_then(Value::as_u64).unwrap() > 1_700_000_000);

    let all = kong.call("plugin.GetStatus", Value::Nil).unwrap();
    assert_eq!(get(&all, "Pid"), Some(&Value::from(daemon.pid())));
    let hello = get(get(&all, "Plugins").unwrap(), "rust-hello").unwrap();
    let instances = get(hello, "Instances").unwrap().as_array().unwrap();
    assert_eq!(instances.len(), 1);

    let info = kong
        .call("plugin.GetPluginInfo", Value::from("rust-hello"))
        .unwrap();
    assert_eq!(
        get(&info, "Phases"),
        Some(&Value::Array(vec![Value::from("access")]))
    );

    let closed = kong.call("plugin.CloseInstance", Value::from(id)).unwrap();
    assert_eq!(get(&closed, "Id"), Some(&Value::from(id)));
    let err = kong
        .call("plugin.InstanceStatus", Value::from(id))
        .unwrap_err();
    assert!(matches!(err, RpcError::Remote(e) if e.contains("no plugin instance")));
    // A new instance never reuses the closed id.
    let again = kong
        .start_instance("rust-hello", json!({"message": "m"}))
        .unwrap();
    assert!(again > id);
}

#[test]
fn unknown_methods_and_plugins_get_error_responses_on_a_working_connection() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = scratch.start(&["rust-hello"]);
    let kong = daemon.kong();
    let err = kong
        .call("plugin.SetPluginDir", Value::from("/tmp"))
        .unwrap_err();
    assert!(
        matches!(&err, RpcError::Remote(e) if e.contains("unknown method")),
        "{err}"
    );
    let err = kong
        .start_instance("no-such-plugin", json!({}))
        .unwrap_err();
    assert!(
        matches!(&err, RpcError::Remote(e) if e.contains("unknown plugin") && e.contains("rust-hello")),
        "{err}"
    );
    let err = kong
        .call("plugin.HandleEvent", Value::from("not a map"))
        .unwrap_err();
    assert!(
        matches!(&err, RpcError::Remote(e) if e.contains("bad argument")),
        "{err}"
    );
    // The same pooled connection keeps working.
    let id = kong.start_instance("rust-hello", json!({})).unwrap();
    assert!(id > 0);
    assert_eq!(kong.connections_opened(), 1);
}

#[test]
fn an_empty_array_is_accepted_where_kong_means_an_empty_map() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = scratch.start(&["rust-hello"]);
    let kong = daemon.kong();
    let err = kong
        .call("plugin.HandleEvent", Value::Array(vec![]))
        .unwrap_err();
    assert!(
        matches!(&err, RpcError::Remote(e) if e.contains("missing InstanceId")),
        "{err}"
    );
}

#[test]
fn garbage_on_one_connection_does_not_disturb_the_others() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let mut daemon = scratch.start(&["rust-hello"]);
    let kong = daemon.kong();
    let instance = kong
        .start_instance("rust-hello", json!({"message": "ok"}))
        .unwrap();
    // An event is in flight on the daemon when the garbage arrives.
    let first = kong.handle_event(instance, "access").unwrap();
    let event_id = get(&first, "EventId").unwrap().clone();

    for garbage in [
        &b"\xc1\xc1\xc1 definitely not msgpack"[..],
        &[0x93, 0x02, 0xa3, b'f', b'o', b'o', 0x90], // a notification, not a request
        &[0xdb, 0xff, 0xff, 0xff, 0xff],             // a 4 GiB string header
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let mut stream = UnixStream::connect(scratch.socket("rust-hello")).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(garbage).unwrap();
        let mut rest = Vec::new();
        // The daemon answers nothing it cannot attribute to a request and closes.
        let _ = stream.read_to_end(&mut rest);
        assert!(
            rest.is_empty(),
            "unexpected bytes after {garbage:x?}: {rest:x?}"
        );
    }
    // A request with a msgid but a bad method name gets an error response.
    let mut stream = UnixStream::connect(scratch.socket("rust-hello")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(&msgpack::encode(&Value::Array(vec![
            Value::from(0),
            Value::from(77),
            Value::from(5),
            Value::Array(vec![]),
        ])))
        .unwrap();
    read_value(&mut stream).unwrap(); // serverPid
    let reply = read_value(&mut stream).unwrap();
    assert_eq!(reply.as_array().unwrap()[1], Value::from(77));
    assert!(
        reply.as_array().unwrap()[2]
            .as_str()
            .unwrap()
            .contains("malformed request")
    );

    // The event in flight finishes, and new ones run.
    let next = kong
        .call(
            "plugin.Step",
            map([("EventId", event_id.clone()), ("Data", Value::from("h"))]),
        )
        .unwrap();
    assert!(get(&next, "Data").unwrap().is_map());
    kong.call("plugin.Step", map([("EventId", event_id.clone())]))
        .unwrap();
    let last = kong
        .call("plugin.Step", map([("EventId", event_id)]))
        .unwrap();
    assert_eq!(get(&last, "Data"), Some(&Value::from("ret")));
    let run = Kong::new(scratch.socket("rust-hello")).run_event(instance, "access", |_| None);
    assert_eq!(run.end, EventEnd::Returned);
    assert!(daemon.is_running());
    assert!(
        daemon.stderr().contains("closing connection"),
        "{}",
        daemon.stderr()
    );
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    // A socket file whose process is gone: bound, then the listener dropped.
    drop(UnixListener::bind(scratch.socket("rust-hello")).unwrap());
    assert!(scratch.socket("rust-hello").exists());
    let daemon = scratch.start(&["rust-hello"]);
    let kong = daemon.kong();
    kong.start_instance("rust-hello", json!({})).unwrap();
    assert!(
        daemon.stderr().contains("replacing stale socket"),
        "{}",
        daemon.stderr()
    );
}

#[test]
fn a_live_socket_of_another_process_is_not_stolen() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let _first = scratch.start(&["rust-hello"]);
    // Another daemon, for another plugins directory, on the same prefix: it does not share
    // the first one's serve lock, and must not take the socket.
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(
        kong_rust_pluginserver_e2e::artifacts::plugin_library("rust-hello"),
        other.path().join("librust_hello.so"),
    )
    .unwrap();
    let out = std::process::Command::new(kong_rust_pluginserver_e2e::artifacts::daemon_binary())
        .arg("--plugins-directory")
        .arg(other.path())
        .arg("--kong-prefix")
        .arg(scratch.prefix())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("served by another running process"),
        "{stderr}"
    );
    // The first daemon still serves.
    Kong::new(scratch.socket("rust-hello"))
        .start_instance("rust-hello", json!({}))
        .unwrap();
}

#[test]
fn sockets_are_private_to_the_daemons_user() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let _daemon = scratch.start(&["rust-hello"]);
    let mode = std::fs::metadata(scratch.socket("rust-hello"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
}

#[test]
fn errors_never_echo_kongs_restart_phrase_for_a_running_instance() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = scratch.start(&["rust-hello"]);
    let kong = daemon.kong();
    let instance = kong.start_instance("rust-hello", json!({})).unwrap();
    let run = kong.run_event(instance, "No Plugin Instance", |_| None);
    let EventEnd::ErrorReply(err) = &run.end else {
        panic!("{run:?}")
    };
    assert!(err.contains("has no handler"), "{err}");
    assert!(!err.to_lowercase().contains("no plugin instance"), "{err}");
}
