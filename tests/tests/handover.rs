//! Restarts refuse nothing: a successor daemon takes over from a running one, which
//! finishes its own events and hands every connection over, without a refusal, an error
//! reply or a connection closed under Kong (each of which Kong would answer by proxying
//! the request without its plugins).

use std::time::Duration;

use kong_rust_pluginserver_e2e::{
    daemon::Scratch,
    kong::{EventEnd, Kong},
    msgpack::{get, map},
};
use rmpv::Value;
use serde_json::json;

/// Runs rust-hello's access phase to its end, as Kong would: restarting the instance when
/// the daemon does not know it (what Kong does on "no plugin instance").
fn hello(kong: &Kong, instance: &mut u64) {
    for _ in 0..2 {
        let run = kong.run_event(*instance, "access", |call| {
            (call.method == "kong.request.get_header").then(|| Value::from("h"))
        });
        match run.end {
            EventEnd::Returned => return,
            EventEnd::ErrorReply(e) if e.contains("no plugin instance") => {
                *instance = kong.start_instance("rust-hello", json!({})).unwrap();
            }
            other => panic!("{other:?}"),
        }
    }
    panic!("the event never ran");
}

/// Finishes rust-hello event `event` by hand: three Steps (get_header, set_header twice).
fn finish(kong: &Kong, event: &Value) {
    let steps = [Some(Value::from("h")), None, None];
    let mut last = Value::Nil;
    for data in steps {
        let mut entries = vec![("EventId", event.clone())];
        entries.extend(data.map(|d| ("Data", d)));
        last = kong.call("plugin.Step", map(entries)).unwrap();
    }
    assert_eq!(get(&last, "Data"), Some(&Value::from("ret")), "{last}");
}

#[test]
fn a_successor_takes_over_without_refusing_or_closing_anything() {
    successor_takes_over(&[]);
}

#[test]
fn a_successor_takes_over_from_a_thread_per_connection_daemon() {
    successor_takes_over(&["--thread-per-connection"]);
}

fn successor_takes_over(mode: &[&str]) {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let mut old = scratch.start_with(&["rust-hello"], |cmd| {
        cmd.args(mode);
    });
    let old_pid = u64::from(old.pid());
    let kong = old.kong();
    let mut instance = kong.start_instance("rust-hello", json!({})).unwrap();
    hello(&kong, &mut instance);
    // An event in flight across the hand-over: started here, its Steps come later.
    let in_flight = kong.handle_event(instance, "access").unwrap();
    let event = get(&in_flight, "EventId").unwrap().clone();

    // Kong reloads: a new nginx worker starts a new daemon.
    let new = scratch.start_successor();
    old.wait_for_log("a successor serves rust-hello", Duration::from_secs(20));
    // The event in flight finishes on the daemon that started it, on Kong's pooled
    // connection.
    finish(&kong, &event);
    // The next event goes to the successor with the connection it travels on: Kong sees
    // the new pid and restarts its instance there.
    hello(&kong, &mut instance);
    let pids = kong.server_pids();
    assert_eq!(pids.first(), Some(&old_pid), "{pids:?}");
    let new_pid = *pids.last().unwrap();
    assert_ne!(new_pid, old_pid, "{pids:?}");
    // The old daemon, with no event and no connection left, is done.
    let status = old.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        old.stderr()
    );
    // A fresh connection reaches the successor; the pooled one still works.
    let fresh = Kong::new(scratch.socket("rust-hello"));
    let mut fresh_instance = fresh.start_instance("rust-hello", json!({})).unwrap();
    hello(&fresh, &mut fresh_instance);
    assert_eq!(fresh.server_pids(), [new_pid]);
    hello(&kong, &mut instance);
    let stderr = new.stderr();
    assert!(
        stderr.contains("taking over from the serving daemon"),
        "{stderr}"
    );
    assert!(stderr.contains("handed over 1 connections"), "{stderr}");
}

#[test]
fn a_standby_takes_over_at_sigterm_and_the_events_in_flight_finish() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let mut old = scratch.start(&["rust-hello"]);
    let standby = scratch.spawn(|_| {});
    standby.wait_for_log("standing by to take over", Duration::from_secs(20));
    let kong = old.kong();
    let mut instance = kong.start_instance("rust-hello", json!({})).unwrap();
    let in_flight = kong.handle_event(instance, "access").unwrap();
    let event = get(&in_flight, "EventId").unwrap().clone();

    // SIGTERM (Kong stops or restarts the daemon): the standby serves at once.
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(old.pid() as i32, libc::SIGTERM) };
    standby.wait_for_log("the daemon before", Duration::from_secs(20));
    finish(&kong, &event);
    hello(&kong, &mut instance);
    let status = old.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        old.stderr()
    );
    assert_eq!(kong.server_pids().last(), Some(&u64::from(standby.pid())));
}
