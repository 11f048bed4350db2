//! The plugin against the test kit, shipping to a temporary file and to a real HTTP
//! server on 127.0.0.1.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::{Arc, mpsc},
    time::Duration,
};

use kong_rust_pdk_testkit::{Simulation, TestRequest, instance};
use serde_json::{Value as Json, json};

use super::*;

/// One HTTP request as the collector received it.
#[derive(Debug)]
struct Received {
    head: String,
    body: Vec<u8>,
}

/// A one-thread HTTP server on 127.0.0.1 that answers every request `204` (or never, when
/// `answer` is false) and hands what it received to the returned channel.
fn collector(answer: bool) -> (String, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/logs", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            if tx.send(Received { head, body }).is_err() {
                return;
            }
            let mut stream = reader.into_inner();
            if answer {
                let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            } else {
                // Keep the connection open, unanswered, until the client gives up.
                std::thread::spawn(move || {
                    let _ = stream.read(&mut [0; 1]);
                });
            }
        }
    });
    (url, rx)
}

fn log_request(plugin: &Arc<LogShipper>, path: &str) -> Simulation {
    TestRequest::get(path).run(plugin, Phase::Log)
}

#[test]
fn ships_json_lines_to_a_file_and_flushes_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kong.jsonl");
    let plugin = instance::<LogShipper>(json!({
        "destination": "file", "path": file.to_str().unwrap(), "flush_interval_ms": 600000
    }))
    .unwrap();
    for path in ["/a", "/b", "/c"] {
        let sim = log_request(&plugin, path);
        assert_eq!(
            sim.methods(),
            ["kong.log.serialize"],
            "one PDK call, nothing logged"
        );
    }
    // Nothing is shipped before the batch fills or the interval passes...
    assert!(!file.exists());
    // ...and everything queued is shipped when the instance goes away.
    drop(plugin);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&file).map_or(0, |t| t.lines().count()) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing shipped on drop"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let text = std::fs::read_to_string(&file).unwrap();
    let uris: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Json>(l).unwrap()["request"]["uri"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(uris, ["/a", "/b", "/c"]);
}

#[test]
fn posts_batches_as_json_arrays() {
    let (endpoint, received) = collector(true);
    let plugin = instance::<LogShipper>(json!({
        "destination": "http", "endpoint": endpoint, "batch_size": 2,
        "flush_interval_ms": 600000, "headers": {"Authorization": "Bearer t0ken"}
    }))
    .unwrap();
    log_request(&plugin, "/one");
    log_request(&plugin, "/two");
    let batch = received
        .recv_timeout(Duration::from_secs(10))
        .expect("a full batch is posted at once");
    assert!(
        batch.head.starts_with("POST /logs HTTP/1.1\r\n"),
        "{}",
        batch.head
    );
    let head = batch.head.to_ascii_lowercase();
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(head.contains("authorization: bearer t0ken"), "{head}");
    let records: Json = serde_json::from_slice(&batch.body).unwrap();
    assert_eq!(records[0]["request"]["uri"], "/one");
    assert_eq!(records[1]["request"]["uri"], "/two");
    assert_eq!(records.as_array().unwrap().len(), 2);
    // The shipper counts the batch once the server's answer is in.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while plugin.totals().shipped < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        plugin.totals(),
        Totals {
            shipped: 2,
            dropped: 0,
            failed: 0
        }
    );
}

#[test]
fn a_partial_batch_is_posted_after_the_flush_interval() {
    let (endpoint, received) = collector(true);
    let plugin = instance::<LogShipper>(json!({
        "destination": "http", "endpoint": endpoint, "batch_size": 100, "flush_interval_ms": 50
    }))
    .unwrap();
    log_request(&plugin, "/lonely");
    let batch = received
        .recv_timeout(Duration::from_secs(10))
        .expect("flushed by the interval");
    let records: Json = serde_json::from_slice(&batch.body).unwrap();
    assert_eq!(records.as_array().unwrap().len(), 1);
}

#[test]
fn a_stuck_endpoint_costs_records_not_requests_and_is_reported() {
    let (endpoint, _received) = collector(false);
    let plugin = instance::<LogShipper>(json!({
        "destination": "http", "endpoint": endpoint, "batch_size": 1, "queue_size": 1,
        "timeout_ms": 300
    }))
    .unwrap();
    let started = std::time::Instant::now();
    let sims: Vec<Simulation> = (0..6)
        .map(|i| log_request(&plugin, &format!("/{i}")))
        .collect();
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "handlers never wait for the endpoint"
    );
    assert!(
        sims.iter()
            .any(|s| s.logged("warn", "log records: the queue is full"))
    );
    // The next handler after a timed-out batch reports the failure.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let failure = loop {
        std::thread::sleep(Duration::from_millis(50));
        let sim = log_request(&plugin, "/later");
        if let Some(line) = sim.logs.iter().find(|l| l.level == "err") {
            break line.message.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no failure reported");
    };
    assert!(
        failure.contains("in batches that failed: POST http://127.0.0.1:"),
        "{failure}"
    );
    assert!(plugin.totals().dropped >= 3, "{:?}", plugin.totals());
}

#[test]
fn incomplete_destinations_are_refused() {
    for (config, reason) in [
        (json!({"destination": "file"}), "needs `path`"),
        (json!({"destination": "http"}), "needs `endpoint`"),
        (
            json!({"destination": "http", "endpoint": "ftp://127.0.0.1/"}),
            "http:// or https://",
        ),
        (
            json!({"destination": "syslog", "path": "/tmp/x"}),
            "destination",
        ),
    ] {
        let err = instance::<LogShipper>(config.clone())
            .err()
            .unwrap_or_else(|| panic!("{config} accepted"));
        assert!(err.to_string().contains(reason), "{config}: {err}");
    }
    let https =
        instance::<LogShipper>(json!({"destination": "http", "endpoint": "https://127.0.0.1/"}));
    assert_eq!(https.is_ok(), cfg!(feature = "https"));
}

#[test]
fn only_the_log_phase_is_implemented() {
    assert_eq!(LogShipper::PHASES, [Phase::Log]);
    let schema = LogShipper::config_schema().unwrap();
    let field = |name: &str| {
        schema["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|f| f.get(name))
            .cloned()
            .unwrap()
    };
    assert_eq!(field("destination")["one_of"], json!(["file", "http"]));
    assert_eq!(field("destination")["required"], json!(true));
    assert_eq!(field("batch_size")["default"], json!(100));
    assert_eq!(field("flush_interval_ms")["default"], json!(1000));
    assert_eq!(field("headers")["type"], json!("map"));
}
