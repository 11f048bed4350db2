//! `--isolation process` keeps every operator feature: `status` and `/metrics` gather every
//! worker, SIGHUP upgrades a plugin on a new worker while the old one finishes its events,
//! a successor daemon takes over without refusing or closing anything, and a standby takes
//! over when the supervisor dies.

use std::{
    io::{Read, Write},
    time::{Duration, Instant},
};

use kong_rust_pluginserver_e2e::{
    daemon::{Daemon, Scratch},
    kong::{EventEnd, Kong, PdkCall},
    msgpack::{get, map, to_json},
};
use rmpv::Value;
use serde_json::json;

const PROCESS: [&str; 2] = ["--isolation", "process"];

fn start(scratch: &Scratch, plugins: &[&str], extra: &[&str]) -> Daemon {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    scratch.start_with(plugins, |cmd| {
        cmd.args(PROCESS).args(&extra);
    })
}

/// rust-hello's greeting for `instance`, or the error Kong would log.
fn greeting(kong: &Kong, instance: u64) -> Result<String, String> {
    let mut greeting = None;
    let run = kong.run_event(instance, "access", |call: &PdkCall| {
        if call.method == "kong.response.set_header"
            && call.args[0].as_str() == Some("x-hello-from-rust")
        {
            greeting = call.args[1].as_str().map(str::to_owned);
        }
        (call.method == "kong.request.get_header").then(|| Value::from("h"))
    });
    match run.end {
        EventEnd::Returned => Ok(greeting.unwrap()),
        EventEnd::ErrorReply(e) => Err(e),
        other => Err(format!("{other:?}")),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn metrics(port: u16) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn status_and_metrics_gather_every_worker() {
    let scratch = Scratch::with_plugins(&["rust-hello", "e2e-probe"]);
    let port = free_port();
    let daemon = start(
        &scratch,
        &["rust-hello", "e2e-probe"],
        &["--metrics-listen", &port.to_string()],
    );
    let hello = Kong::new(scratch.socket("rust-hello"));
    let id = hello.start_instance("rust-hello", json!({})).unwrap();
    for _ in 0..3 {
        greeting(&hello, id).unwrap();
    }
    let probe = Kong::new(scratch.socket("e2e-probe"));
    let id = probe
        .start_instance("e2e-probe", json!({"mode": "echo"}))
        .unwrap();
    probe.run_event(id, "access", |_| None);
    // Asked on either plugin's socket, the status covers both workers.
    let status = to_json(&probe.call("plugin.GetStatus", Value::Nil).unwrap());
    assert_eq!(status["Isolation"], "process", "{status}");
    assert_eq!(status["Pid"], daemon.pid(), "the supervisor's pid");
    assert_eq!(status["Plugins"]["rust-hello"]["Events"], 3, "{status}");
    assert_eq!(status["Plugins"]["e2e-probe"]["Events"], 1, "{status}");
    assert_eq!(
        status["Plugins"]["rust-hello"]["Instances"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    for plugin in ["rust-hello", "e2e-probe"] {
        let worker = &status["Workers"][plugin];
        assert_eq!(worker["Up"], true, "{status}");
        assert_ne!(worker["Pid"], daemon.pid());
        assert_eq!(worker["Crashes"], 0);
    }
    // Each plugin runs in a process of its own, which is what Kong is told.
    assert_ne!(hello.server_pids()[0], probe.server_pids()[0]);
    assert_eq!(
        Some(hello.server_pids()[0]),
        status["Workers"]["rust-hello"]["Pid"].as_u64()
    );
    let text = metrics(port);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for series in [
        "kong_rust_pluginserver_events_total{phase=\"access\",plugin=\"rust-hello\"} 3",
        "kong_rust_pluginserver_events_total{phase=\"access\",plugin=\"e2e-probe\"} 1",
        "kong_rust_pluginserver_worker_up{plugin=\"rust-hello\"} 1",
        "kong_rust_pluginserver_worker_up{plugin=\"e2e-probe\"} 1",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    assert_eq!(
        text.matches("# TYPE kong_rust_pluginserver_events_total ")
            .count(),
        1,
        "{text}"
    );
    // The `status` command reads the same.
    let out = scratch
        .command()
        .args(["status", "--json", "--socket"])
        .arg(scratch.socket("rust-hello"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["Isolation"], "process");
}

#[test]
fn sighup_upgrades_a_plugin_on_a_new_worker_while_the_old_one_finishes() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = start(&scratch, &["rust-hello"], &[]);
    let kong = daemon.kong();
    let old = kong
        .start_instance("rust-hello", json!({"message": "m"}))
        .unwrap();
    assert_eq!(greeting(&kong, old).unwrap(), "Rust says m to h");
    let in_flight = kong.handle_event(old, "access").unwrap();
    let event = get(&in_flight, "EventId").unwrap().clone();

    let staged = scratch.add_plugin("hello-v2");
    std::fs::rename(&staged, scratch.plugins_dir().join("librust_hello.so")).unwrap();
    scratch.add_plugin("e2e-probe");
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(daemon.pid() as i32, libc::SIGHUP) };
    daemon.wait_for_log(
        "reload done: 1 added, 1 upgraded, 0 failed",
        Duration::from_secs(20),
    );

    // The event in flight finishes on the old worker, with the old code.
    let next = kong
        .call(
            "plugin.Step",
            map([("EventId", event), ("Data", Value::from("h"))]),
        )
        .unwrap();
    let args = get(get(&next, "Data").unwrap(), "Args").unwrap();
    assert_eq!(args.as_array().unwrap()[1], Value::from("Rust says m to h"));
    // The next events reach the new worker: a new pid, so Kong starts its instance there.
    // The old worker retires when the supervisor tells it (after "reload done"), so one more
    // event may still run there, on the old code (nothing refused).
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        match greeting(&kong, old) {
            Ok(greeting) => {
                assert_eq!(greeting, "Rust says m to h");
                assert!(Instant::now() < deadline, "the old worker never retired");
            }
            Err(err) => break err,
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(err.contains("no plugin instance"), "{err}");
    let new = kong
        .start_instance("rust-hello", json!({"message": "m"}))
        .unwrap();
    assert_eq!(greeting(&kong, new).unwrap(), "v2 says m");
    let pids = kong.server_pids();
    assert_eq!(pids.len(), 2, "{pids:?}");
    // The new plugin has its worker and its socket.
    Kong::new(scratch.socket("e2e-probe"))
        .start_instance("e2e-probe", json!({"mode": "echo"}))
        .unwrap();
    // The old worker, with no event or connection left, is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{}", pids[0])).exists()
        && !std::fs::read_to_string(format!("/proc/{}/stat", pids[0]))
            .unwrap_or_default()
            .contains(") Z")
    {
        assert!(Instant::now() < deadline, "the old worker lingers");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_successor_takes_over_a_supervisor_refusing_and_closing_nothing() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let mut old = start(&scratch, &["rust-hello"], &[]);
    let kong = old.kong();
    let mut instance = kong.start_instance("rust-hello", json!({})).unwrap();
    greeting(&kong, instance).unwrap();
    let first_worker = kong.server_pids()[0];
    let in_flight = kong.handle_event(instance, "access").unwrap();
    let event = get(&in_flight, "EventId").unwrap().clone();

    let new = scratch.start_successor_with(&PROCESS);
    old.wait_for_log("a successor serves rust-hello", Duration::from_secs(20));
    // The event in flight finishes where it started.
    for data in [Some(Value::from("h")), None, None] {
        let mut entries = vec![("EventId", event.clone())];
        entries.extend(data.map(|d| ("Data", d)));
        kong.call("plugin.Step", map(entries)).unwrap();
    }
    // The next requests go, with their connections, to the successor's worker: until the old
    // worker has handed its idle connection over it may still serve one (nothing refused).
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        match greeting(&kong, instance) {
            Ok(_) => assert!(Instant::now() < deadline, "never reached the successor"),
            Err(err) => break err,
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(err.contains("no plugin instance"), "{err}");
    instance = kong.start_instance("rust-hello", json!({})).unwrap();
    greeting(&kong, instance).unwrap();
    let pids = kong.server_pids();
    assert_ne!(*pids.last().unwrap(), first_worker, "{pids:?}");
    let status = old.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        old.stderr()
    );
    // A fresh connection reaches the successor too; the pooled one still works.
    let fresh = Kong::new(scratch.socket("rust-hello"));
    let id = fresh.start_instance("rust-hello", json!({})).unwrap();
    greeting(&fresh, id).unwrap();
    greeting(&kong, instance).unwrap();
    assert!(new.stderr().contains("taking over from the serving daemon"));
}

#[test]
fn a_standby_takes_over_when_the_supervisor_is_killed() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let mut first = start(&scratch, &["rust-hello"], &[]);
    let standby = scratch.spawn(|cmd| {
        cmd.args(PROCESS);
    });
    standby.wait_for_log("standing by to take over", Duration::from_secs(20));
    let killed = Instant::now();
    first
        .signal_and_wait(libc::SIGKILL, Duration::from_secs(10))
        .unwrap();
    loop {
        let kong = Kong::new(scratch.socket("rust-hello"));
        if let Ok(id) = kong.start_instance("rust-hello", json!({}))
            && greeting(&kong, id).is_ok()
        {
            let status = to_json(&kong.call("plugin.GetStatus", Value::Nil).unwrap());
            if status["Pid"] == standby.pid() {
                break;
            }
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "no takeover:\n{}",
            standby.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(standby.stderr().contains("taking over"));
}
