//! rust-rate-limiting end to end: the real daemon, driven as Kong drives it, with counters
//! in the daemon's memory and in a real Redis server.
//!
//! The Redis tests use `REDIS_URL` (`redis://host:port`, default `redis://127.0.0.1:6399`,
//! the server `.ci/run` starts). They are ignored unless built with `CI` set (see
//! `tests/build.rs`), so cargo shows them as ignored on a machine without Redis; when they
//! run, a Redis that does not answer fails them. Start one with
//! `redis-server --port 6399 --save '' --appendonly no` and run
//! `cargo test -p kong-rust-pluginserver-e2e --test rate_limiting -- --ignored`.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use kong_rust_pluginserver_e2e::{
    daemon::Scratch,
    kong::{EventEnd, Kong, PdkCall},
};
use rmpv::Value;
use serde_json::json;

const PLUGIN: &str = "rust-rate-limiting";

/// What one access event did: the status Kong would answer, and the headers set.
#[derive(Debug)]
struct Outcome {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Option<Value>,
    logged: Vec<String>,
}

fn headers_of(value: &Value) -> BTreeMap<String, String> {
    value
        .as_map()
        .map(|entries| {
            entries
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().unwrap().to_owned(),
                        v.as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Runs the access phase for a client at `ip`, optionally authenticated as `consumer`.
fn request(kong: &Kong, instance: u64, ip: &str, consumer: Option<&str>) -> Outcome {
    let mut outcome = Outcome {
        status: 200,
        headers: BTreeMap::new(),
        body: None,
        logged: Vec::new(),
    };
    let run = kong.run_event(instance, "access", |call: &PdkCall| {
        match call.method.as_str() {
            "kong.client.get_consumer" => consumer.map(|id| {
                Value::Map(vec![
                    (Value::from("id"), Value::from(id)),
                    (Value::from("username"), Value::from("u")),
                ])
            }),
            "kong.client.get_forwarded_ip" => Some(Value::from(ip)),
            "kong.response.set_headers" => {
                outcome.headers = headers_of(&call.args[0]);
                None
            }
            "kong.log.err" => {
                outcome
                    .logged
                    .push(call.args[0].as_str().unwrap().to_owned());
                None
            }
            other => panic!("unexpected call {other}: {call:?}"),
        }
    });
    match run.end {
        EventEnd::Returned => {}
        EventEnd::Ended { .. } => {
            let exit = run.calls.last().unwrap();
            outcome.status = exit.args[0].as_u64().unwrap() as u16;
            outcome.body = exit.args.get(1).cloned();
            if let Some(headers) = exit.args.get(2) {
                outcome.headers = headers_of(headers);
            }
        }
        other => panic!("the event failed: {other:?}"),
    }
    outcome
}

/// Runs `f` until it ran within one window of `seconds` (at most three tries), so a test
/// never straddles a window boundary, where counts legitimately restart.
fn within_one_window<T>(seconds: u64, mut f: impl FnMut() -> T) -> T {
    let window = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            / seconds
    };
    for _ in 0..3 {
        let start = window();
        let result = f();
        if window() == start {
            return result;
        }
    }
    panic!("three runs crossed a window boundary");
}

/// A client id no earlier run used (Redis keeps counters between runs, until they expire).
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn plugin_config(extra: serde_json::Value, plugin_id: &str) -> serde_json::Value {
    let mut config =
        json!({"limit": 2, "window_seconds": 3600, "limit_by": "ip", "__plugin_id": plugin_id});
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    config
}

#[test]
fn local_counters_are_shared_by_every_worker_of_the_node() {
    let scratch = Scratch::with_plugins(&[PLUGIN]);
    let daemon = scratch.start(&[PLUGIN]);
    // Two nginx workers, each with its own instance of the same plugin entity.
    let (worker_a, worker_b) = (daemon.kong(), daemon.kong());
    let config = plugin_config(json!({}), "6f1e2b4e-0000-4000-8000-00000000aaaa");
    let a = worker_a.start_instance(PLUGIN, config.clone()).unwrap();
    let b = worker_b.start_instance(PLUGIN, config).unwrap();
    let (first, second, third, other) = within_one_window(3600, || {
        let ip = format!("198.51.100.{}", std::process::id() % 200);
        let first = request(&worker_a, a, &ip, None);
        let second = request(&worker_b, b, &ip, None);
        let third = request(&worker_a, a, &ip, None);
        let other = request(&worker_b, b, "203.0.113.1", None);
        (first, second, third, other)
    });
    assert_eq!(
        (first.status, first.headers["RateLimit-Remaining"].as_str()),
        (200, "1")
    );
    assert_eq!(
        (
            second.status,
            second.headers["RateLimit-Remaining"].as_str()
        ),
        (200, "0")
    );
    assert_eq!(third.status, 429, "{third:?}");
    assert_eq!(third.headers["RateLimit-Limit"], "2");
    assert!(third.headers["Retry-After"].parse::<u64>().unwrap() >= 1);
    // A JSON body reaches Kong as JSON text with Kong's JSON content type.
    let body: serde_json::Value =
        serde_json::from_str(third.body.as_ref().and_then(|b| b.as_str()).unwrap()).unwrap();
    assert_eq!(body, json!({"message": "API rate limit exceeded"}));
    assert_eq!(
        third.headers["Content-Type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(other.status, 200, "another client has its own quota");
}

#[test]
fn an_unreachable_redis_is_tolerated_or_refused_as_configured() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let scratch = Scratch::with_plugins(&[PLUGIN]);
    let daemon = scratch.start(&[PLUGIN]);
    let kong = daemon.kong();
    let redis = json!({"host": "127.0.0.1", "port": port, "timeout_ms": 500});
    let tolerant = kong
        .start_instance(
            PLUGIN,
            plugin_config(json!({"policy": "redis", "redis": redis}), "p-tolerant"),
        )
        .unwrap();
    let outcome = request(&kong, tolerant, "198.51.100.7", None);
    assert_eq!(outcome.status, 200);
    assert!(
        outcome.logged[0].contains(&format!(
            "request allowed (fault_tolerant): redis 127.0.0.1:{port}/0"
        )),
        "{outcome:?}"
    );

    let strict = kong
        .start_instance(
            PLUGIN,
            plugin_config(
                json!({"policy": "redis", "redis": redis, "fault_tolerant": false}),
                "p-strict",
            ),
        )
        .unwrap();
    let outcome = request(&kong, strict, "198.51.100.7", None);
    assert_eq!(outcome.status, 500, "{outcome:?}");
    assert!(outcome.logged[0].contains("request refused"), "{outcome:?}");
}

/// `host:port` of the test Redis; panics when none answers (the test was asked to run).
fn test_redis() -> (String, u16) {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6399".into());
    let address = url.trim_start_matches("redis://").trim_end_matches('/');
    let (host, port) = address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_owned(), p.parse().ok()?)))
        .unwrap_or_else(|| panic!("REDIS_URL must look like redis://host:port, got {url}"));
    if let Err(reason) = ping(&host, port) {
        panic!(
            "no Redis at {url} ({reason}); start one with `redis-server --port 6399 --save '' \
             --appendonly no` or set REDIS_URL (.ci/run starts one)"
        );
    }
    (host, port)
}

fn ping(host: &str, port: u16) -> Result<(), String> {
    let mut stream = TcpStream::connect((host, port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    stream.write_all(b"PING\r\n").map_err(|e| e.to_string())?;
    let mut answer = [0; 7];
    stream.read_exact(&mut answer).map_err(|e| e.to_string())?;
    if &answer == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(format!("answered {:?}", String::from_utf8_lossy(&answer)))
    }
}

#[test]
#[cfg_attr(
    not(krps_ci),
    ignore = "needs Redis at REDIS_URL (default 127.0.0.1:6399); CI runs it (run: CI=1 cargo test, or -- --ignored)"
)]
fn redis_counters_are_shared_by_every_node() {
    let (host, port) = test_redis();
    // Two Kong nodes: two daemons, each with its own prefix, one Redis.
    let (node_a, node_b) = (
        Scratch::with_plugins(&[PLUGIN]),
        Scratch::with_plugins(&[PLUGIN]),
    );
    let (daemon_a, daemon_b) = (node_a.start(&[PLUGIN]), node_b.start(&[PLUGIN]));
    let (kong_a, kong_b) = (daemon_a.kong(), daemon_b.kong());
    let plugin_id = unique("plugin");
    for window in ["fixed", "sliding"] {
        let config = plugin_config(
            json!({
                "policy": "redis", "limit_by": "consumer", "window": window, "headers": "x-ratelimit",
                "fault_tolerant": false, "redis": {"host": host, "port": port, "timeout_ms": 2000}
            }),
            &format!("{plugin_id}-{window}"),
        );
        let a = kong_a.start_instance(PLUGIN, config.clone()).unwrap();
        let b = kong_b.start_instance(PLUGIN, config).unwrap();
        let outcomes = within_one_window(3600, || {
            let consumer = unique("consumer");
            [
                request(&kong_a, a, "198.51.100.1", Some(&consumer)),
                request(&kong_b, b, "198.51.100.2", Some(&consumer)),
                request(&kong_a, a, "198.51.100.3", Some(&consumer)),
                request(&kong_b, b, "198.51.100.4", Some(&consumer)),
                // The same IP, anonymous: counted apart from the consumer.
                request(&kong_b, b, "198.51.100.1", None),
            ]
        });
        let statuses: Vec<u16> = outcomes.iter().map(|o| o.status).collect();
        assert_eq!(
            statuses,
            [200, 200, 429, 429, 200],
            "{window}: {outcomes:?}"
        );
        assert_eq!(
            outcomes[1].headers["X-RateLimit-Remaining"], "0",
            "{window}"
        );
        assert_eq!(outcomes[2].headers["X-RateLimit-Limit"], "2", "{window}");
    }
}
