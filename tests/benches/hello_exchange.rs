//! Latency of one rust-hello event as Kong runs it: HandleEvent, then three Steps (four
//! round trips over pooled unix-socket connections), measured end to end from a simulated
//! Kong worker against the real daemon binary and the real rust-hello library.
//!
//!     cargo build --release -p kong-rust-pluginserver
//!     cargo bench -p kong-rust-pluginserver-e2e --bench hello_exchange
//!
//! `EVENTS` (default 20000) sets the sample size.

use std::time::{Duration, Instant};

use kong_rust_pluginserver_e2e::{
    daemon::Scratch,
    kong::{EventEnd, Kong},
};
use rmpv::Value;
use serde_json::json;

fn main() {
    let events: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = scratch.start(&["rust-hello"]);
    let kong = Kong::new(scratch.socket("rust-hello"));
    let instance = kong
        .start_instance("rust-hello", json!({"message": "Kong!"}))
        .unwrap();
    let host = Value::from("example.com");
    let run_one = || {
        let start = Instant::now();
        let run = kong.run_event(instance, "access", |call| {
            (call.method == "kong.request.get_header").then(|| host.clone())
        });
        let elapsed = start.elapsed();
        assert_eq!(run.end, EventEnd::Returned);
        assert_eq!(run.calls.len(), 3);
        elapsed
    };
    for _ in 0..1_000 {
        run_one();
    }
    let cpu_before = cpu_time(daemon.pid());
    let mut samples: Vec<Duration> = (0..events).map(|_| run_one()).collect();
    let cpu = cpu_time(daemon.pid()) - cpu_before;
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    let total: Duration = samples.iter().sum();
    println!(
        "rust-hello HandleEvent->ret (4 round trips), {events} sequential events, one Kong worker"
    );
    println!("  median {:>8.1} us", pct(0.50).as_secs_f64() * 1e6);
    println!("  p99    {:>8.1} us", pct(0.99).as_secs_f64() * 1e6);
    println!("  p99.9  {:>8.1} us", pct(0.999).as_secs_f64() * 1e6);
    println!(
        "  mean   {:>8.1} us",
        total.as_secs_f64() * 1e6 / events as f64
    );
    println!(
        "  daemon CPU {:>6.1} us per event (user+system, /proc)",
        cpu.as_secs_f64() * 1e6 / events as f64
    );
    println!(
        "  (daemon pid {}; client is this process, same machine)",
        daemon.pid()
    );
}

/// User+system CPU time of a process, from /proc/<pid>/stat.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}
