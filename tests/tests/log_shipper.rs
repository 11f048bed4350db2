//! rust-log-shipper end to end: log events through the real daemon, batches shipped to a
//! real HTTP server on 127.0.0.1 and to a file.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::mpsc,
    time::{Duration, Instant},
};

use kong_rust_pluginserver_e2e::{
    daemon::Scratch,
    kong::{EventEnd, Kong},
};
use rmpv::Value;
use serde_json::{Value as Json, json};

const PLUGIN: &str = "rust-log-shipper";

/// An HTTP server on 127.0.0.1 answering every request 200; yields each request body.
fn collector() -> (String, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/bulk", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
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
            if reader.read_exact(&mut body).is_ok() {
                let _ = reader.get_mut().write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                if tx.send(body).is_err() {
                    return;
                }
            }
        }
    });
    (url, rx)
}

/// One log event whose `kong.log.serialize` is a record for `uri`, as Kong's JSON text.
fn log_event(kong: &Kong, instance: u64, uri: &str) {
    let record = json!({"request": {"uri": uri, "method": "GET"}, "response": {"status": 200}, "client_ip": "198.51.100.1"});
    let run = kong.run_event(instance, "log", |call| match call.method.as_str() {
        "kong.log.serialize" => Some(Value::from(record.to_string())),
        other => panic!("unexpected call {other}"),
    });
    assert_eq!(run.end, EventEnd::Returned, "{run:?}");
    assert_eq!(run.calls.len(), 1, "the handler only serializes and queues");
}

#[test]
fn batches_are_posted_to_an_http_endpoint() {
    let (endpoint, bodies) = collector();
    let scratch = Scratch::with_plugins(&[PLUGIN]);
    let daemon = scratch.start(&[PLUGIN]);
    let kong = daemon.kong();
    let instance = kong
        .start_instance(
            PLUGIN,
            json!({"destination": "http", "endpoint": endpoint, "batch_size": 3, "flush_interval_ms": 200}),
        )
        .unwrap();
    for uri in ["/1", "/2", "/3", "/4"] {
        log_event(&kong, instance, uri);
    }
    let wait = Duration::from_secs(10);
    let full: Json =
        serde_json::from_slice(&bodies.recv_timeout(wait).expect("a full batch")).unwrap();
    let uris: Vec<&str> = full
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["request"]["uri"].as_str().unwrap())
        .collect();
    assert_eq!(uris, ["/1", "/2", "/3"]);
    // The fourth record goes out alone once the flush interval has passed.
    let rest: Json =
        serde_json::from_slice(&bodies.recv_timeout(wait).expect("the interval flush")).unwrap();
    assert_eq!(rest[0]["request"]["uri"], "/4");
    assert_eq!(rest[0]["client_ip"], "198.51.100.1");
}

#[test]
fn closing_the_instance_ships_what_is_queued_to_the_file() {
    let scratch = Scratch::with_plugins(&[PLUGIN]);
    let file = scratch.prefix().join("access.jsonl");
    let daemon = scratch.start(&[PLUGIN]);
    let kong = daemon.kong();
    let instance = kong
        .start_instance(
            PLUGIN,
            json!({"destination": "file", "path": file.to_str().unwrap(), "flush_interval_ms": 3600000}),
        )
        .unwrap();
    log_event(&kong, instance, "/a");
    log_event(&kong, instance, "/b");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !file.exists(),
        "nothing is shipped before the batch fills or the interval ends"
    );
    // Kong closes the instance (a configuration change): the plugin is dropped, its
    // flusher ships the queue and stops.
    kong.call("plugin.CloseInstance", Value::from(instance))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.lines().count() >= 2 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let uris: Vec<String> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<Json>(l).unwrap()["request"]["uri"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(uris, ["/a", "/b"]);
}
