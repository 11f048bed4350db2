//! Handlers that await tokio futures, through the real daemon: waiting holds no thread,
//! and the plugin library's runtime comes and goes with its plugins.

use std::{
    sync::{Arc, Barrier, Mutex},
    thread,
    time::{Duration, Instant},
};

use kong_rust_pluginserver_e2e::{
    daemon::{Daemon, Scratch},
    kong::{EventEnd, EventRun},
};
use rmpv::Value;
use serde_json::json;

const PROBE: &str = "e2e-probe";

/// The daemon's thread count, from `/proc/<pid>/status`.
fn thread_count(daemon: &Daemon) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("a Threads line")
}

/// The names of the daemon's threads.
fn thread_names(daemon: &Daemon) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{}/task", daemon.pid()))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect()
}

fn slept(run: &EventRun) {
    assert_eq!(run.end, EventEnd::Returned, "{run:?}");
    let last = run.calls.last().expect("calls");
    assert_eq!(last.method, "kong.response.set_header");
    assert_eq!(last.args, [Value::from("x-slept"), Value::from("yes")]);
}

/// 200 events in flight at once, each awaiting a 50 ms tokio timer, finish together in
/// about the time of one, and the daemon starts no thread for them.
///
/// The default configuration: the plugin's one event loop serves all 200 connections.
#[test]
fn two_hundred_events_await_timers_at_once_without_a_thread_each() {
    const EVENTS: usize = 200;
    let scratch = Scratch::with_plugins(&[PROBE]);
    let daemon = scratch.start(&[PROBE]);
    let kong = Arc::new(daemon.kong());
    let instance = kong
        .start_instance(PROBE, json!({"mode": "sleep", "delay_ms": 50}))
        .unwrap();
    // One event first: the plugin's runtime starts its one thread on the first wait.
    slept(&kong.run_event(instance, "access", |_| None));
    let before = thread_count(&daemon);

    let start = Arc::new(Barrier::new(EVENTS + 1));
    let done = Arc::new(Mutex::new(Vec::new()));
    let events: Vec<_> = (0..EVENTS)
        .map(|_| {
            let (kong, start, done) = (kong.clone(), start.clone(), done.clone());
            thread::spawn(move || {
                start.wait();
                let run = kong.run_event(instance, "access", |_| None);
                done.lock().unwrap().push(Instant::now());
                run
            })
        })
        .collect();
    start.wait();
    let started = Instant::now();
    let mut most = before;
    while done.lock().unwrap().len() < EVENTS && started.elapsed() < Duration::from_secs(10) {
        most = most.max(thread_count(&daemon));
        thread::sleep(Duration::from_millis(2));
    }
    for event in events {
        slept(&event.join().unwrap());
    }
    let last = *done.lock().unwrap().iter().max().unwrap();
    let wall = last - started;
    eprintln!(
        "{EVENTS} events awaiting 50 ms timers: {} ms of wall time; daemon threads {before} before, at most {most} during",
        wall.as_millis()
    );
    assert!(
        wall < Duration::from_millis(700),
        "{EVENTS} concurrent 50 ms waits took {wall:?}"
    );
    assert_eq!(most, before, "waiting events must not hold threads");
}

/// The runtime stops with the last plugin of its library, and a new plugin gets a new one.
#[test]
fn the_runtime_stops_when_the_last_instance_goes_and_returns_with_the_next() {
    let scratch = Scratch::with_plugins(&[PROBE]);
    let daemon = scratch.start(&[PROBE]);
    let kong = daemon.kong();
    let runtime_threads = |daemon: &Daemon| {
        thread_names(daemon)
            .iter()
            .filter(|name| name.as_str() == "rt:e2e-probe")
            .count()
    };
    let wait_for_threads = |want: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while runtime_threads(&daemon) != want {
            assert!(
                Instant::now() < deadline,
                "expected {want} runtime threads, have {:?}",
                thread_names(&daemon)
            );
            thread::sleep(Duration::from_millis(10));
        }
    };

    // A plugin that never waits starts no thread.
    let plain = kong
        .start_instance(PROBE, json!({"mode": "calls"}))
        .unwrap();
    let run = kong.run_event(plain, "access", |_| None);
    assert_eq!(run.end, EventEnd::Returned, "{run:?}");
    assert_eq!(runtime_threads(&daemon), 0, "{:?}", thread_names(&daemon));

    // The first wait starts it; two configurations share it.
    let sleeping = kong
        .start_instance(PROBE, json!({"mode": "sleep", "delay_ms": 5}))
        .unwrap();
    slept(&kong.run_event(sleeping, "access", |_| None));
    assert_eq!(runtime_threads(&daemon), 1);

    kong.call("plugin.CloseInstance", Value::from(sleeping))
        .unwrap();
    thread::sleep(Duration::from_millis(100));
    assert_eq!(runtime_threads(&daemon), 1, "another instance holds it");
    kong.call("plugin.CloseInstance", Value::from(plain))
        .unwrap();
    wait_for_threads(0);

    // A new instance: a new runtime, started on its first wait.
    let again = kong
        .start_instance(PROBE, json!({"mode": "sleep", "delay_ms": 5}))
        .unwrap();
    slept(&kong.run_event(again, "access", |_| None));
    assert_eq!(runtime_threads(&daemon), 1);
}
