//! Signals and the daemon's lifecycle: SIGTERM drains, the daemon exits with Kong, SIGHUP
//! reloads plugins without a restart.

use std::{
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use kong_rust_pluginserver_e2e::{
    artifacts,
    daemon::Scratch,
    kong::{EventEnd, Kong, PdkCall},
    msgpack::{get, map},
};
use rmpv::Value;
use serde_json::json;

#[test]
fn sigterm_refuses_nothing_finishes_running_events_and_exits_zero() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let mut daemon = scratch.start(&["rust-hello"]);
    let kong = daemon.kong();
    let instance = kong.start_instance("rust-hello", json!({})).unwrap();
    let first = kong.handle_event(instance, "access").unwrap();
    let event = get(&first, "EventId").unwrap().clone();

    // SIGTERM, without waiting for the exit.
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(daemon.pid() as i32, libc::SIGTERM) };
    daemon.wait_for_log("shutting down: finishing 1 events", Duration::from_secs(10));
    // A refusal would be an error reply, which Kong logs before proxying the request
    // without the plugin: new events are still served.
    let run = kong.run_event(instance, "access", |_| Some(Value::from("h")));
    assert_eq!(run.end, EventEnd::Returned, "{run:?}");
    // The running event gets its Steps answered, on a new connection too.
    let step = |data: Option<Value>| {
        let mut entries = vec![("EventId", event.clone())];
        entries.extend(data.map(|d| ("Data", d)));
        Kong::new(scratch.socket("rust-hello")).call("plugin.Step", map(entries))
    };
    step(Some(Value::from("h"))).unwrap();
    step(None).unwrap();
    let last = step(None).unwrap();
    assert_eq!(get(&last, "Data"), Some(&Value::from("ret")));
    // With no successor to hand them to, the daemon exits once Kong's connections are gone
    // (Kong is stopping) rather than closing them under Kong.
    drop(kong);
    let status = daemon.signal_and_wait(0, Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        daemon.stderr()
    );
}

#[test]
fn sigterm_gives_up_on_events_kong_never_finishes_after_the_drain_timeout() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let mut daemon = scratch.start_with(&["rust-hello"], |cmd| {
        cmd.args(["--drain-timeout", "1"]);
    });
    let kong = daemon.kong();
    let instance = kong.start_instance("rust-hello", json!({})).unwrap();
    kong.handle_event(instance, "access").unwrap();
    let started = Instant::now();
    let status = daemon.signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(daemon.stderr().contains("stopped with 1 events unfinished"));
}

#[test]
fn the_daemon_exits_when_its_parent_dies() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    // Kong's worker runs the start command through a shell; here the shell stays the
    // daemon's parent (`& wait`), and is killed outright.
    let command_line = format!(
        "{} --plugins-directory {} --kong-prefix {} & wait",
        artifacts::daemon_binary().display(),
        scratch.plugins_dir().display(),
        scratch.prefix().display()
    );
    let mut parent = Command::new("/bin/sh")
        .arg("-c")
        .arg(command_line)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let socket = scratch.socket("rust-hello");
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid = loop {
        let kong = Kong::new(&socket);
        if kong.start_instance("rust-hello", json!({})).is_ok() {
            break kong.server_pids()[0];
        }
        assert!(Instant::now() < deadline, "the daemon did not start");
        thread::sleep(Duration::from_millis(20));
    };
    parent.kill().unwrap();
    parent.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_alive(pid) {
        assert!(Instant::now() < deadline, "the daemon outlived its parent");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a process exists and is not a zombie.
fn is_alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat[stat.rfind(')').unwrap() + 2..].chars().next();
            state != Some('Z')
        })
        .unwrap_or(false)
}

fn reload(daemon: &kong_rust_pluginserver_e2e::daemon::Daemon, done_count: usize) {
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(daemon.pid() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while daemon.stderr().matches("reload done").count() < done_count {
        assert!(Instant::now() < deadline, "no reload:\n{}", daemon.stderr());
        thread::sleep(Duration::from_millis(20));
    }
}

/// Installs `crate_name`'s library as `file_name` the safe way: a new file renamed over.
fn install(scratch: &Scratch, crate_name: &str, file_name: &str) {
    let staged = scratch.add_plugin(crate_name);
    let target = scratch.plugins_dir().join(file_name);
    if staged != target {
        std::fs::rename(&staged, &target).unwrap();
    }
}

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

#[test]
fn sighup_adds_new_plugins_and_upgrades_builds_without_a_restart() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = scratch.start(&["rust-hello"]);
    let kong = daemon.kong();
    let old = kong
        .start_instance("rust-hello", json!({"message": "m"}))
        .unwrap();
    assert_eq!(greeting(&kong, old).unwrap(), "Rust says m to h");
    // An event of the old build is in flight during the upgrade.
    let in_flight = kong.handle_event(old, "access").unwrap();
    let event = get(&in_flight, "EventId").unwrap().clone();

    // A new plugin, a new build of rust-hello, and a file that is not a plugin.
    scratch.add_plugin("e2e-probe");
    install(&scratch, "hello-v2", "librust_hello.so");
    std::fs::write(scratch.plugins_dir().join("broken.so"), b"not a library").unwrap();
    reload(&daemon, 1);
    let stderr = daemon.stderr();
    assert!(stderr.contains("upgraded from 0.1.0"), "{stderr}");
    assert!(
        stderr.contains("broken.so: not a loadable kong-rust-pdk plugin"),
        "{stderr}"
    );
    assert!(
        stderr.contains("reload done: 1 added, 1 upgraded, 1 failed"),
        "{stderr}"
    );

    // The new plugin has its socket.
    Kong::new(scratch.socket("e2e-probe"))
        .start_instance("e2e-probe", json!({"mode": "echo"}))
        .unwrap();
    // The in-flight event finishes on the old code.
    let next = kong
        .call(
            "plugin.Step",
            map([("EventId", event.clone()), ("Data", Value::from("h"))]),
        )
        .unwrap();
    let args = get(get(&next, "Data").unwrap(), "Args").unwrap();
    assert_eq!(args.as_array().unwrap()[1], Value::from("Rust says m to h"));
    // The old instance is released: Kong gets "no plugin instance" and starts it again,
    // on the new build.
    let err = greeting(&kong, old).unwrap_err();
    assert!(err.contains("no plugin instance"), "{err}");
    let new = kong
        .start_instance("rust-hello", json!({"message": "m"}))
        .unwrap();
    assert_eq!(greeting(&kong, new).unwrap(), "v2 says m");
    let info = kong
        .call("plugin.GetPluginInfo", Value::from("rust-hello"))
        .unwrap();
    assert_eq!(get(&info, "Version"), Some(&Value::from("0.2.0")));

    // A broken build of a served plugin leaves the running one serving.
    let target = scratch.plugins_dir().join("librust_hello.so");
    let staged = scratch.plugins_dir().join("staged.tmp");
    std::fs::write(&staged, b"garbage").unwrap();
    std::fs::rename(&staged, &target).unwrap();
    reload(&daemon, 2);
    assert_eq!(greeting(&kong, new).unwrap(), "v2 says m");
    assert!(
        daemon
            .stderr()
            .contains("the running version keeps serving")
    );
    assert!(Path::new(&scratch.socket("rust-hello")).exists());
}
