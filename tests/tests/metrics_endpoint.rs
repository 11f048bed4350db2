//! The metrics endpoint serves every client at once: a slow one stalls no scrape.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};

use kong_rust_pluginserver_e2e::daemon::Scratch;

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scrape(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn a_slow_metrics_client_does_not_stall_other_scrapes() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let port = free_port();
    let _daemon = scratch.start_with(&["rust-hello"], |cmd| {
        cmd.args(["--metrics-listen", &port.to_string()]);
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "no metrics listener");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(scrape(port).contains("kong_rust_pluginserver_build_info"));
    // Three clients connect and send half a request, then nothing.
    let slow: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /metr").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let text = scrape(port);
    let took = started.elapsed();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("kong_rust_pluginserver_build_info"), "{text}");
    assert!(took < Duration::from_secs(2), "the scrape waited {took:?}");
    drop(slow);
}
