//! The plugin against the test kit and a real HTTP authorization service on 127.0.0.1.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use kong_rust_pdk_testkit::{Simulation, TestRequest, instance};
use serde_json::{Value as Json, json};

use super::*;

/// An authorization service on 127.0.0.1 deciding by the `authorization` header it is
/// sent: `good` allows as alice, `bad` is 401, `banned` 403, `broken` 500, `slow` answers
/// after 2 s. Yields every check it received.
fn authz_service() -> (String, mpsc::Receiver<Json>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/check", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
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
                let token = check["headers"]["authorization"].as_str().unwrap_or("");
                let answer = match token.trim_start_matches("Bearer ") {
                    "good" => "200 OK\r\nx-user-id: alice",
                    "bad" => "401 Unauthorized\r\nwww-authenticate: Bearer realm=\"api\"",
                    "banned" => "403 Forbidden",
                    "slow" => {
                        std::thread::sleep(Duration::from_secs(2));
                        "200 OK"
                    }
                    _ => "500 Internal Server Error",
                };
                let _ = tx.send(check);
                let _ = reader.get_mut().write_all(
                    format!("HTTP/1.1 {answer}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .as_bytes(),
                );
            });
        }
    });
    (url, rx)
}

fn plugin(url: &str, extra: Json) -> Arc<ExtAuthz> {
    let mut config = json!({"url": url, "upstream_headers": ["x-user-id"]});
    config
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    instance::<ExtAuthz>(config).unwrap()
}

fn with_token(token: &str) -> TestRequest {
    TestRequest::get("/orders/7")
        .client_ip("198.51.100.7")
        .header("Authorization", &format!("Bearer {token}"))
        .header("x-user-id", "forged")
}

#[test]
fn an_allowed_request_goes_on_with_the_services_headers_only() {
    let (url, checks) = authz_service();
    let sim = with_token("good").run(&plugin(&url, json!({})), Phase::Access);
    assert!(sim.exit.is_none());
    assert_eq!(sim.upstream_request.header("x-user-id"), Some("alice"));
    let check = checks.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        check,
        json!({"method": "GET", "path": "/orders/7", "client_ip": "198.51.100.7",
               "headers": {"authorization": "Bearer good"}})
    );
}

#[test]
fn denials_keep_the_services_status_and_challenge() {
    let (url, _checks) = authz_service();
    let plugin = plugin(&url, json!({}));
    let sim = with_token("bad").run(&plugin, Phase::Access);
    let exit = sim.exit.as_ref().expect("denied");
    assert_eq!(
        (exit.method.as_str(), exit.status),
        ("kong.response.error", 401)
    );
    assert_eq!(
        exit.headers.get("WWW-Authenticate"),
        Some("Bearer realm=\"api\"")
    );
    let sim = with_token("banned").run(&plugin, Phase::Access);
    assert_eq!(sim.exit.as_ref().map(|e| e.status), Some(403));
}

#[test]
fn a_slow_service_is_cut_off_and_the_request_denied() {
    let (url, _checks) = authz_service();
    let plugin = plugin(&url, json!({"timeout_ms": 100}));
    let started = Instant::now();
    let sim = with_token("slow").run(&plugin, Phase::Access);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    let exit = sim.exit.as_ref().expect("fails closed");
    assert_eq!(exit.status, 503);
    assert!(
        sim.logged("err", "no answer within 100 ms"),
        "{:?}",
        sim.logs
    );
}

#[test]
fn an_unreachable_or_failing_service_denies_with_the_configured_status() {
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/check", closed.local_addr().unwrap());
    drop(closed);
    let sim = with_token("good").run(
        &plugin(&url, json!({"status_on_error": 500})),
        Phase::Access,
    );
    assert_eq!(sim.exit.as_ref().map(|e| e.status), Some(500));
    assert!(sim.logged("err", "request denied"), "{:?}", sim.logs);

    let (url, _checks) = authz_service();
    let mut sim = Simulation::new(with_token("broken"));
    sim.run(&plugin(&url, json!({})), Phase::Access);
    assert_eq!(sim.exit.as_ref().map(|e| e.status), Some(503));
    assert!(sim.logged("err", "unexpected status 500"), "{:?}", sim.logs);
}

#[test]
fn only_http_urls_are_accepted() {
    let err = instance::<ExtAuthz>(json!({"url": "ftp://authz/check"}))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("http://"), "{err}");
}
