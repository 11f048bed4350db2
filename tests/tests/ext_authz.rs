//! rust-ext-authz end to end: access events through the real daemon, each asking a real
//! HTTP authorization service on 127.0.0.1, allowed, denied, or denied because the service
//! is too slow.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use kong_rust_pluginserver_e2e::{
    daemon::Scratch,
    kong::{EventEnd, EventRun, Kong},
    msgpack::map,
};
use rmpv::Value;
use serde_json::{Value as Json, json};

const PLUGIN: &str = "rust-ext-authz";

/// An authorization service on 127.0.0.1: `Bearer good` is allowed as alice, `Bearer
/// slow` is answered after 2 s, anything else is 403. A connection per request.
fn authz_service() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/check", listener.local_addr().unwrap());
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let check: Json = serde_json::from_slice(&body).unwrap();
                let answer = match check["headers"]["authorization"].as_str() {
                    Some("Bearer good") => "200 OK\r\nx-user-id: alice",
                    Some("Bearer slow") => {
                        thread::sleep(Duration::from_secs(2));
                        "200 OK"
                    }
                    _ => "403 Forbidden",
                };
                let _ = reader.get_mut().write_all(
                    format!("HTTP/1.1 {answer}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .as_bytes(),
                );
            });
        }
    });
    url
}

/// One access event for a request carrying `token`, answered as Kong would.
fn access(kong: &Kong, instance: u64, token: &str) -> EventRun {
    kong.run_event(instance, "access", |call| match call.method.as_str() {
        "kong.request.get_headers" => Some(map([
            ("authorization", Value::from(format!("Bearer {token}"))),
            ("x-user-id", Value::from("forged")),
        ])),
        "kong.request.get_method" => Some(Value::from("GET")),
        "kong.request.get_path" => Some(Value::from("/orders/7")),
        "kong.client.get_forwarded_ip" => Some(Value::from("198.51.100.7")),
        _ => None,
    })
}

#[test]
fn the_service_decides_and_a_slow_one_is_a_denial() {
    let url = authz_service();
    let scratch = Scratch::with_plugins(&[PLUGIN]);
    let daemon = scratch.start(&[PLUGIN]);
    let kong = Arc::new(daemon.kong());
    let instance = kong
        .start_instance(
            PLUGIN,
            json!({"url": url, "timeout_ms": 200, "upstream_headers": ["x-user-id"]}),
        )
        .unwrap();

    let allowed = access(&kong, instance, "good");
    assert_eq!(allowed.end, EventEnd::Returned, "{allowed:?}");
    let set = allowed.calls.last().unwrap();
    assert_eq!(set.method, "kong.service.request.set_header");
    assert_eq!(set.args, [Value::from("x-user-id"), Value::from("alice")]);

    let denied = access(&kong, instance, "other");
    assert_eq!(
        denied.end,
        EventEnd::Ended {
            method: "kong.response.error".into(),
            status: 403
        }
    );

    // Slow answers fail closed, each after the timeout, and concurrently: waiting for the
    // service holds up no other event.
    let started = Instant::now();
    let slow: Vec<_> = (0..8)
        .map(|_| {
            let kong = kong.clone();
            thread::spawn(move || access(&kong, instance, "slow"))
        })
        .collect();
    let good = access(&kong, instance, "good");
    assert_eq!(good.end, EventEnd::Returned, "{good:?}");
    for run in slow {
        let run = run.join().unwrap();
        assert_eq!(run.end.status(), Some(503), "{run:?}");
        assert!(
            run.calls.iter().any(|c| c.method == "kong.log.err"
                && c.args[0]
                    .as_str()
                    .unwrap()
                    .contains("no answer within 200 ms")),
            "{run:?}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}
