//! A bounded soak: many events from concurrent workers, a share of them abandoned at random
//! points (as when Kong times out or a client goes away). At the end no event may be left
//! alive and the daemon's memory must not have grown.
//!
//! `SOAK_EVENTS` sets the number of events (default 20000; the closing note of the
//! hardening work used 1000000 with `--release`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use kong_rust_pluginserver_e2e::{
    daemon::Scratch,
    kong::Kong,
    msgpack::{get, map},
};
use rmpv::Value;
use serde_json::json;

const WORKERS: u64 = 8;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// xorshift64*: deterministic, no dependency.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Runs `events` rust-hello events; about one in ten is abandoned after 0 to 2 Steps.
fn run(kong: &Arc<Kong>, instance: u64, events: u64) -> u64 {
    let abandoned = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (kong, abandoned) = (kong.clone(), abandoned.clone());
            thread::spawn(move || {
                let mut rng = 0x9e37_79b9_7f4a_7c15 ^ ((w + 1) * 0x1234_5678);
                for _ in 0..events / WORKERS {
                    let abandon_at = match next(&mut rng) % 10 {
                        0 => Some(next(&mut rng) % 3),
                        _ => None,
                    };
                    let mut reply = kong.handle_event(instance, "access").unwrap();
                    let id = get(&reply, "EventId").unwrap().clone();
                    for step in 0.. {
                        if get(&reply, "Data") == Some(&Value::from("ret")) {
                            break;
                        }
                        if abandon_at == Some(step) {
                            abandoned.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        let data = (step == 0).then(|| ("Data", Value::from("soak.test")));
                        let entries = [("EventId", id.clone())].into_iter().chain(data);
                        reply = kong.call("plugin.Step", map(entries)).unwrap();
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    abandoned.load(Ordering::Relaxed)
}

#[test]
fn abandoned_events_do_not_accumulate_and_memory_stays_flat() {
    let events: u64 = std::env::var("SOAK_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = scratch.start_with(&["rust-hello"], |cmd| {
        cmd.args(["--event-timeout", "1"]);
    });
    let kong = Arc::new(daemon.kong());
    let instance = kong.start_instance("rust-hello", json!({})).unwrap();

    let started = Instant::now();
    let wait_for_reaping = || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while kong.status()["LiveEvents"] > 0 {
            assert!(Instant::now() < deadline, "events were left alive");
            thread::sleep(Duration::from_millis(100));
        }
    };
    // A warm-up lets the pools, buffers and per-thread allocator arenas reach their working
    // size; then two equal halves. Leaked per-event state would grow the RSS in the second
    // half as much as in the first; a flat daemon does not grow in the second.
    let warmup = events / 4;
    let half = (events - warmup) / 2;
    let mut abandoned = run(&kong, instance, warmup);
    wait_for_reaping();
    let rss_warm = rss_kib(daemon.pid());
    abandoned += run(&kong, instance, half);
    wait_for_reaping();
    let rss_mid = rss_kib(daemon.pid());
    abandoned += run(&kong, instance, half);
    wait_for_reaping();
    let rss_end = rss_kib(daemon.pid());
    let status = kong.status();
    println!(
        "soak: {} events in {:.1}s, {abandoned} abandoned; daemon RSS {rss_warm} KiB after warm-up, {rss_mid} KiB halfway, {rss_end} KiB at the end; live events {}; reaped {}",
        warmup + 2 * half,
        started.elapsed().as_secs_f64(),
        status["LiveEvents"],
        status["rust-hello.Abandoned"],
    );
    assert_eq!(status["LiveEvents"], 0);
    assert_eq!(status["rust-hello.Abandoned"], abandoned);
    assert!(abandoned > 0);
    assert!(
        rss_end <= rss_mid + (rss_mid / 20).max(1024),
        "RSS kept growing: {rss_warm} KiB after warm-up, {rss_mid} KiB halfway, {rss_end} KiB at the end"
    );
}
