//! The load generator against the real daemon and rust-hello (debug builds), briefly, so it
//! cannot rot: every scenario runs and reports sane numbers.

use std::process::Command;

use kong_rust_pluginserver_e2e::{artifacts, daemon::Scratch};
use serde_json::Value;

fn loadgen(scratch: &Scratch, args: &[&str]) -> Value {
    loadgen_spawning(scratch, "", args)
}

/// The daemon started with `flags` too.
fn loadgen_spawning(scratch: &Scratch, flags: &str, args: &[&str]) -> Value {
    let spawn = format!(
        "{} {flags} --plugins-directory {} --kong-prefix {}",
        artifacts::daemon_binary().display(),
        scratch.plugins_dir().display(),
        scratch.prefix().display()
    );
    let socket = scratch.socket("rust-hello");
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("--socket")
        .arg(&socket)
        .args(["--spawn", &spawn, "--json", "--max-seconds", "60"])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run loadgen");
    assert!(
        output.status.success(),
        "loadgen {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON report")
}

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut v = v;
    for key in path {
        v = &v[key];
    }
    v.as_f64()
        .unwrap_or_else(|| panic!("{path:?} missing in {v}"))
}

#[test]
fn closed_loop_reports_throughput_latency_and_server_cost() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let report = loadgen(
        &scratch,
        &[
            "--events",
            "400",
            "--warmup",
            "40",
            "--workers",
            "2",
            "--concurrency",
            "8",
            "--rss-at",
            "100,400",
        ],
    );
    let events = &report["events"];
    assert_eq!(f(events, &["events"]), 400.0, "{report}");
    assert_eq!(f(events, &["error_replies"]), 0.0, "{report}");
    assert_eq!(f(events, &["proxied_past_plugin"]), 0.0, "{report}");
    assert_eq!(f(events, &["returned"]), 400.0, "{report}");
    // rust-hello: HandleEvent + three Steps.
    assert_eq!(f(events, &["round_trips"]), 1600.0, "{report}");
    assert!(f(events, &["events_per_s"]) > 0.0);
    let lat = &events["latency_us"];
    assert!(f(lat, &["p50"]) > 0.0 && f(lat, &["p50"]) <= f(lat, &["p99"]));
    assert!(f(lat, &["p99"]) <= f(lat, &["p999"]) && f(lat, &["p999"]) <= f(lat, &["max"]));
    // Our daemon announces its pid on every new connection, and Kong pools them.
    assert!(f(events, &["connections"]) <= 8.0, "{report}");
    assert!(f(events, &["server_pid_notifications"]) >= 1.0, "{report}");
    let server = &events["server"];
    assert!(f(server, &["peak_rss_kib"]) > 0.0, "{report}");
    assert!(f(server, &["cpu_us_per_event"]) >= 0.0);
    assert_eq!(
        server["rss_at"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
}

#[test]
fn open_loop_and_idle_instances_run() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let report = loadgen(
        &scratch,
        &["--rate", "2000", "--events", "300", "--warmup", "20"],
    );
    let events = &report["events"];
    // The pacer skips the events it reaches too late on a busy machine.
    assert_eq!(
        f(events, &["events"]) + f(events, &["skipped"]),
        300.0,
        "{report}"
    );
    assert!(events["start_lag_us"].is_object(), "{report}");

    let report = loadgen(&scratch, &["--instances", "200"]);
    let instances = &report["instances"];
    assert_eq!(f(instances, &["instances"]), 200.0, "{report}");
    assert!(f(instances, &["rss_kib_after"]) > 0.0, "{report}");
}

#[test]
fn restarts_hand_over_to_new_servers_and_abandoned_events_are_counted() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let report = loadgen_spawning(
        &scratch,
        "--drain-timeout 1",
        &[
            "--duration",
            "4",
            "--restarts",
            "2",
            "--restart-every",
            "1",
            "--abandon",
            "0.1",
            "--warmup",
            "20",
            "--workers",
            "2",
            "--concurrency",
            "4",
        ],
    );
    let events = &report["events"];
    let total = f(events, &["events"]);
    let abandoned = f(events, &["abandoned"]);
    // Every tenth event a worker starts is abandoned, unless it failed before its Step.
    assert!(
        abandoned > 0.0 && abandoned <= total / 10.0 + 2.0,
        "{report}"
    );
    // A healthy daemon never makes Kong proxy past the plugin with an error reply.
    assert_eq!(f(events, &["error_replies"]), 0.0, "{report}");
    // The new servers' instances were started (Kong's "no plugin instance" or serverPid).
    assert!(f(events, &["instance_starts"]) > 2.0, "{report}");
    let restarts = events["restarts"].as_array().expect("restarts");
    assert_eq!(restarts.len(), 2, "{report}");
    let mut pids = Vec::new();
    for (i, restart) in restarts.iter().enumerate() {
        assert_eq!(f(restart, &["restart"]), (i + 1) as f64);
        assert!(
            (f(restart, &["at_s"]) - (i + 1) as f64).abs() < 0.5,
            "{report}"
        );
        assert!(f(restart, &["gap_ms"]) >= f(restart, &["max_latency_ms"]));
        pids.push(f(restart, &["old_pid"]));
        pids.push(f(restart, &["new_pid"]));
    }
    assert_eq!(
        pids[1], pids[2],
        "the second restart stops the first one's server"
    );
    assert_ne!(pids[0], pids[1]);
    // The workers reconnected: the last stretch served requests on the last server.
    assert!(f(&restarts[1], &["returned"]) > 0.0, "{report}");
    assert!(events["before_restarts"]["events"].as_f64().unwrap() > 0.0);
    assert!(
        events["server"].is_null(),
        "no /proc readings across restarts"
    );
}

#[test]
fn protobuf_mode_runs_whole_events_on_pooled_connections() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let report = loadgen_spawning(
        &scratch,
        "--protocol protobuf",
        &[
            "--protocol",
            "protobuf",
            "--events",
            "400",
            "--warmup",
            "40",
            "--workers",
            "2",
            "--concurrency",
            "8",
        ],
    );
    let events = &report["events"];
    assert_eq!(f(events, &["events"]), 400.0, "{report}");
    assert_eq!(f(events, &["error_replies"]), 0.0, "{report}");
    assert_eq!(f(events, &["returned"]), 400.0, "{report}");
    // rust-hello: the call, then three PDK calls, all on one connection.
    assert_eq!(f(events, &["round_trips"]), 1600.0, "{report}");
    assert_eq!(f(events, &["server_pid_notifications"]), 0.0, "{report}");
    assert!(f(events, &["connections"]) <= 8.0, "{report}");
}
