//! Plugin faults, limits, security and bad input: each is contained and reported, and the
//! daemon keeps serving everything else.

use std::{
    io::{Read, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use kong_rust_pluginserver_e2e::{
    daemon::Scratch,
    kong::{EventEnd, Kong, read_value},
    msgpack::{get, map},
};
use rmpv::Value;
use serde_json::json;

fn hello_ok(kong: &Kong, instance: u64) {
    let run = kong.run_event(instance, "access", |c| {
        (c.method == "kong.request.get_header").then(|| Value::from("h"))
    });
    assert_eq!(run.end, EventEnd::Returned, "{run:?}");
}

#[test]
fn a_blocking_handler_stalls_no_other_plugin_and_the_watchdog_names_it() {
    // The default: every plugin on its own event loop.
    let scratch = Scratch::with_plugins(&["e2e-probe", "rust-hello"]);
    let daemon = scratch.start_with(&["e2e-probe", "rust-hello"], |cmd| {
        cmd.args(["--slow-handler-ms", "200"]);
    });
    let probe = Arc::new(daemon.kong());
    let blocking = probe
        .start_instance("e2e-probe", json!({"mode": "block", "delay_ms": 1500}))
        .unwrap();
    let hello = Kong::new(scratch.socket("rust-hello"));
    let hello_instance = hello.start_instance("rust-hello", json!({})).unwrap();

    let blocked: Vec<_> = (0..2)
        .map(|_| {
            let probe = probe.clone();
            thread::spawn(move || probe.run_event(blocking, "access", |_| Some(Value::from("x"))))
        })
        .collect();
    thread::sleep(Duration::from_millis(200)); // a handler is asleep on the probe's loop now
    let started = Instant::now();
    for _ in 0..50 {
        hello_ok(&hello, hello_instance);
    }
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "rust-hello's events waited for the probe's blocked loop: {:?}",
        started.elapsed()
    );
    for handle in blocked {
        let run = handle.join().unwrap();
        assert_eq!(run.end, EventEnd::Returned);
        assert_eq!(run.calls[1].args[0], Value::from("x-blocked"));
    }
    let stderr = daemon.stderr();
    assert!(
        stderr.contains("a handler has held its event loop (e2e-probe) for over"),
        "{stderr}"
    );
    assert!(stderr.contains("plugin=e2e-probe phase=access"), "{stderr}");
}

#[test]
fn with_a_thread_per_connection_a_blocking_handler_stalls_nothing_else() {
    let scratch = Scratch::with_plugins(&["e2e-probe", "rust-hello"]);
    let daemon = scratch.start_with(&["e2e-probe", "rust-hello"], |cmd| {
        cmd.arg("--thread-per-connection");
    });
    let probe = Arc::new(daemon.kong());
    let blocking = probe
        .start_instance("e2e-probe", json!({"mode": "block", "delay_ms": 3000}))
        .unwrap();
    let echo = probe
        .start_instance("e2e-probe", json!({"mode": "echo"}))
        .unwrap();
    let hello = Kong::new(scratch.socket("rust-hello"));
    let hello_instance = hello.start_instance("rust-hello", json!({})).unwrap();

    let started = Instant::now();
    let blocked: Vec<_> = (0..4)
        .map(|_| {
            let probe = probe.clone();
            thread::spawn(move || probe.run_event(blocking, "access", |_| Some(Value::from("x"))))
        })
        .collect();
    thread::sleep(Duration::from_millis(200)); // the handlers are asleep now
    for _ in 0..50 {
        hello_ok(&hello, hello_instance);
        let run = probe.run_event(echo, "access", |_| Some(Value::from("v")));
        assert_eq!(run.end, EventEnd::Returned);
    }
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "other events waited for the blocked ones: {:?}",
        started.elapsed()
    );
    for handle in blocked {
        let run = handle.join().unwrap();
        assert_eq!(run.end, EventEnd::Returned);
        assert_eq!(run.calls[1].args[0], Value::from("x-blocked"));
    }
}

#[test]
fn a_handler_waiting_on_its_own_io_is_resumed_by_the_daemons_waker() {
    let scratch = Scratch::with_plugins(&["e2e-probe"]);
    let daemon = scratch.start(&["e2e-probe"]);
    let kong = Arc::new(daemon.kong());
    let waiting = kong
        .start_instance("e2e-probe", json!({"mode": "wait", "delay_ms": 300}))
        .unwrap();
    let runs: Vec<_> = (0..8)
        .map(|_| {
            let kong = kong.clone();
            thread::spawn(move || {
                let started = Instant::now();
                let run = kong.run_event(waiting, "access", |_| None);
                (run, started.elapsed())
            })
        })
        .collect();
    for handle in runs {
        let (run, took) = handle.join().unwrap();
        assert_eq!(run.end, EventEnd::Returned, "{run:?}");
        assert_eq!(run.calls[1].args[0], Value::from("x-waited"));
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
}

#[test]
fn panics_and_failures_are_counted_per_plugin() {
    let scratch = Scratch::with_plugins(&["e2e-probe"]);
    let daemon = scratch.start(&["e2e-probe"]);
    let kong = daemon.kong();
    let panicking = kong
        .start_instance("e2e-probe", json!({"mode": "panic"}))
        .unwrap();
    let failing = kong
        .start_instance("e2e-probe", json!({"mode": "fail"}))
        .unwrap();
    for _ in 0..3 {
        kong.run_event(panicking, "access", |_| None);
    }
    kong.run_event(failing, "access", |_| None);
    let _ = kong.start_instance("e2e-probe", json!({"mode": "echo", "panic_in_new": true}));
    let status = kong.status();
    assert_eq!(status["e2e-probe.Panics"], 4, "{status:?}");
    assert_eq!(status["e2e-probe.Failures"], 1, "{status:?}");
    assert_eq!(status["e2e-probe.Events"], 4, "{status:?}");
    assert_eq!(status["LiveEvents"], 0, "{status:?}");
    let stderr = daemon.stderr();
    assert!(
        stderr.contains(&format!(
            "panicked: probe handler panic; ending the request with 500 (kong.response.error) plugin=e2e-probe phase=access instance={panicking}"
        )),
        "{stderr}"
    );
}

#[test]
fn abandoned_events_are_freed_after_the_event_timeout() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = scratch.start_with(&["rust-hello"], |cmd| {
        cmd.args(["--event-timeout", "1"]);
    });
    let kong = daemon.kong();
    let instance = kong.start_instance("rust-hello", json!({})).unwrap();
    // Kong starts 20 events and never sends their Steps (client gone, timeout...).
    for _ in 0..20 {
        kong.handle_event(instance, "access").unwrap();
    }
    assert_eq!(kong.status()["LiveEvents"], 20);
    let deadline = Instant::now() + Duration::from_secs(10);
    while kong.status()["LiveEvents"] > 0 {
        assert!(
            Instant::now() < deadline,
            "abandoned events were never freed"
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(kong.status()["rust-hello.Abandoned"], 20);
    hello_ok(&kong, instance);
}

#[test]
fn a_full_event_budget_frees_the_longest_waiting_events_instead_of_refusing() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = scratch.start_with(&["rust-hello"], |cmd| {
        cmd.args(["--max-events-per-instance", "2"]);
    });
    let kong = daemon.kong();
    let instance = kong.start_instance("rust-hello", json!({})).unwrap();
    // Two events wait for Steps Kong will never send (its Lua raised inside a PDK call).
    let abandoned = kong.handle_event(instance, "access").unwrap();
    kong.handle_event(instance, "access").unwrap();
    // A new event is not refused: the longest-waiting one makes room.
    for _ in 0..5 {
        let run = kong.run_event(instance, "access", |_| Some(Value::from("h")));
        assert_eq!(run.end, EventEnd::Returned, "{run:?}");
    }
    assert!(kong.status()["rust-hello.Evicted"] >= 1);
    // A late Step for a freed event ends its request (503), never an error reply.
    let id = get(&abandoned, "EventId").unwrap().clone();
    let late = kong
        .call(
            "plugin.Step",
            map([("EventId", id), ("Data", Value::from("h"))]),
        )
        .unwrap();
    let data = get(&late, "Data").unwrap();
    assert_eq!(
        get(data, "Method"),
        Some(&Value::from("kong.response.error"))
    );
    assert_eq!(
        get(data, "Args"),
        Some(&Value::Array(vec![Value::from(503)]))
    );
}

#[test]
fn a_budget_full_of_running_events_ends_new_requests_with_503() {
    let scratch = Scratch::with_plugins(&["e2e-probe"]);
    let daemon = scratch.start_with(&["e2e-probe"], |cmd| {
        cmd.args(["--max-events-per-instance", "2"]);
    });
    let kong = daemon.kong();
    let instance = kong
        .start_instance("e2e-probe", json!({"mode": "wait", "delay_ms": 1500}))
        .unwrap();
    // Two events run (their handlers await their own I/O): nothing waits for Kong, so
    // nothing can be freed.
    let running: Vec<_> = (0..2)
        .map(|_| {
            let socket = scratch.socket("e2e-probe");
            std::thread::spawn(move || {
                Kong::new(socket).run_event(instance, "access", |_| Some(Value::from("v")))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let run = kong.run_event(instance, "access", |_| Some(Value::from("v")));
    assert_eq!(
        run.end,
        EventEnd::Ended {
            method: "kong.response.error".into(),
            status: 503
        }
    );
    for thread in running {
        assert_eq!(thread.join().unwrap().end, EventEnd::Returned);
    }
    assert!(daemon.stderr().contains("reason=\"overloaded\""));
}

#[test]
fn messages_over_the_size_limit_close_only_their_connection() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = scratch.start_with(&["rust-hello"], |cmd| {
        cmd.args(["--max-message-size", "1024"]);
    });
    let kong = daemon.kong();
    let instance = kong.start_instance("rust-hello", json!({})).unwrap();
    let mut stream = UnixStream::connect(scratch.socket("rust-hello")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // A request whose Config claims 2 KiB.
    let big = kong_rust_pluginserver_e2e::msgpack::encode(&Value::Array(vec![
        Value::from(0),
        Value::from(1),
        Value::from("plugin.StartInstance"),
        Value::Array(vec![map([
            ("Name", Value::from("rust-hello")),
            ("Config", Value::from("x".repeat(2048))),
        ])]),
    ]));
    stream.write_all(&big[..64]).unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "closed without an answer");
    hello_ok(&kong, instance);
    assert!(
        daemon
            .stderr()
            .contains("message larger than the 1024 byte limit")
    );
}

#[test]
fn numbers_of_every_width_and_invalid_utf8_are_handled() {
    let scratch = Scratch::with_plugins(&["rust-hello", "e2e-probe"]);
    let daemon = scratch.start(&["rust-hello", "e2e-probe"]);
    let kong = daemon.kong();
    let instance = kong.start_instance("rust-hello", json!({})).unwrap();
    // InstanceId as uint64, int64 and an integral float64, written by hand.
    let mut stream = UnixStream::connect(scratch.socket("rust-hello")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let encodings: [Vec<u8>; 3] = [
        [&[0xcf][..], &instance.to_be_bytes()].concat(),
        [&[0xd3][..], &(instance as i64).to_be_bytes()].concat(),
        [&[0xcb][..], &(instance as f64).to_be_bytes()].concat(),
    ];
    for (msgid, id) in encodings.iter().enumerate() {
        let mut request = vec![0x94, 0x00, msgid as u8, 0xb5];
        request.extend_from_slice(b"plugin.InstanceStatus");
        request.push(0x91);
        request.extend_from_slice(id);
        stream.write_all(&request).unwrap();
        let mut reply = read_value(&mut stream).unwrap();
        if msgid == 0 {
            // serverPid, before the first response.
            assert_eq!(reply.as_array().unwrap()[0], Value::from(2));
            reply = read_value(&mut stream).unwrap();
        }
        let reply = reply.as_array().unwrap();
        assert_eq!(reply[2], Value::Nil, "{reply:?}");
        assert_eq!(get(&reply[3], "Id").and_then(Value::as_u64), Some(instance));
    }
    // A header value that is not UTF-8: rust-hello greets it as it is.
    let run = kong.run_event(instance, "access", |call| {
        (call.method == "kong.request.get_header").then(|| Value::Binary(vec![0xff, 0xfe]))
    });
    assert_eq!(run.end, EventEnd::Returned, "{run:?}");
    assert_eq!(
        run.calls[1].args[1],
        Value::from("Rust says hello to \u{fffd}\u{fffd}")
    );
    // The probe reads its header as text: its handler fails with a clear message, and the
    // request is ended (never proxied past the plugin); the daemon carries on.
    let probe = Kong::new(scratch.socket("e2e-probe"));
    let echo = probe
        .start_instance("e2e-probe", json!({"mode": "echo"}))
        .unwrap();
    let run = probe.run_event(echo, "access", |_| Some(Value::Binary(vec![0xff, 0xfe])));
    assert_eq!(run.end.status(), Some(500), "{run:?}");
    let stderr = daemon.stderr();
    assert!(
        stderr.contains("kong.request.get_header returned an unexpected value"),
        "{stderr}"
    );
    // A plugin name and a method name that are not UTF-8.
    let err = kong
        .call(
            "plugin.StartInstance",
            map([
                ("Name", Value::Binary(vec![0xc3, 0x28])),
                ("Config", Value::from("{}")),
            ]),
        )
        .unwrap_err();
    assert!(err.to_string().contains("unknown plugin"), "{err}");
    hello_ok(&kong, instance);
}

#[test]
fn insecure_plugin_files_are_refused_unless_allowed() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let probe = scratch.add_plugin("e2e-probe");
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o666)).unwrap();
    let daemon = scratch.start(&["rust-hello"]);
    let stderr = daemon.stderr();
    assert!(
        stderr.contains(
            "libe2e_probe.so: refusing to load: group members or others may write it (mode 666)"
        ),
        "{stderr}"
    );
    assert!(!scratch.socket("e2e-probe").exists());
    drop(daemon);

    let daemon = scratch.start_with(&["rust-hello", "e2e-probe"], |cmd| {
        cmd.arg("--allow-insecure-plugins");
    });
    Kong::new(scratch.socket("e2e-probe"))
        .start_instance("e2e-probe", json!({"mode": "echo"}))
        .unwrap();
    drop(daemon);

    std::fs::set_permissions(
        scratch.plugins_dir(),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let out = scratch.command().output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to load"));
}

#[test]
fn a_socket_group_opens_the_sockets_to_that_group_only() {
    use std::os::unix::fs::MetadataExt;
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let _daemon = scratch.start_with(&["rust-hello"], |cmd| {
        cmd.args(["--socket-group", "0"]);
    });
    let meta = std::fs::metadata(scratch.socket("rust-hello")).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), 0);
}

#[test]
fn event_loops_serve_interleaved_events_and_resume_waiting_handlers() {
    let scratch = Scratch::with_plugins(&["e2e-probe", "rust-hello"]);
    let daemon = scratch.start_with(&["e2e-probe", "rust-hello"], |cmd| {
        cmd.args(["--event-loops", "2"]);
    });
    let hello = Arc::new(Kong::new(scratch.socket("rust-hello")));
    let instance = hello.start_instance("rust-hello", json!({})).unwrap();
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let hello = hello.clone();
            thread::spawn(move || {
                for _ in 0..100 {
                    hello_ok(&hello, instance);
                }
            })
        })
        .collect();
    // A handler waiting on its own I/O is resumed by the loop's waker.
    let probe = daemon.kong_on(scratch.socket("e2e-probe"));
    let waiting = probe
        .start_instance("e2e-probe", json!({"mode": "wait", "delay_ms": 100}))
        .unwrap();
    let run = probe.run_event(waiting, "access", |_| None);
    assert_eq!(run.end, EventEnd::Returned, "{run:?}");
    assert_eq!(run.calls[1].args[0], Value::from("x-waited"));
    for worker in workers {
        worker.join().unwrap();
    }
}
