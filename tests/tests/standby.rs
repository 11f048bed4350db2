//! Several daemons for one plugins directory and prefix, as Kong 3.9+ starts them (one per
//! pluginserver entry): one serves, the others stand by and take over when it dies.

use std::time::{Duration, Instant};

use kong_rust_pluginserver_e2e::{daemon::Scratch, kong::Kong};
use serde_json::json;

/// The pid announced on a fresh connection to `socket`, if it accepts one.
fn serving_pid(socket: &std::path::Path) -> Option<u64> {
    let kong = Kong::new(socket);
    kong.start_instance("rust-hello", json!({})).ok()?;
    kong.server_pids().first().copied()
}

#[test]
fn later_daemons_stand_by_and_take_over_within_a_second() {
    let scratch = Scratch::with_plugins(&["rust-hello", "e2e-probe"]);
    let socket = scratch.socket("rust-hello");
    let mut first = scratch.start(&["rust-hello", "e2e-probe"]);
    let mut second = scratch.spawn(|_| {});
    let mut third = scratch.spawn(|_| {});
    for standby in [&second, &third] {
        standby.wait_for_log("standing by to take over", Duration::from_secs(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        second.is_running() && third.is_running(),
        "standbys stay alive"
    );
    assert_eq!(
        serving_pid(&socket),
        Some(u64::from(first.pid())),
        "the first one serves"
    );

    // Stopping a standby changes nothing.
    let status = third.signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert_eq!(serving_pid(&socket), Some(u64::from(first.pid())));

    // The serving daemon dies hard: the standby serves within a second.
    let killed = Instant::now();
    first
        .signal_and_wait(libc::SIGKILL, Duration::from_secs(10))
        .unwrap();
    let second_pid = u64::from(second.pid());
    loop {
        if serving_pid(&socket) == Some(second_pid) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "no takeover:\n{}",
            second.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let takeover = killed.elapsed();
    assert!(takeover < Duration::from_secs(1), "took {takeover:?}");
    assert!(second.stderr().contains("taking over"));
    // Every plugin socket is served again.
    let probe = Kong::new(scratch.socket("e2e-probe"));
    probe
        .start_instance("e2e-probe", json!({"mode": "echo"}))
        .unwrap();

    // SIGTERM stops the serving daemon cleanly once Kong's connections are gone.
    drop(probe);
    let status = second.signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}
