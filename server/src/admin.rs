//! The metrics endpoint (`--metrics-listen`): `GET /metrics` in Prometheus's text format.
//!
//! It reads what it serves through [`MetricsSource`], so it knows nothing of the daemon's
//! other parts.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::Arc,
    time::Duration,
};

/// Whatever renders the metrics text at scrape time.
pub trait MetricsSource: Send + Sync + 'static {
    /// The Prometheus text exposition, as of now.
    fn render_metrics(&self) -> String;
}

/// Serves `GET /metrics` on `addr` from a background thread; returns the bound address.
pub fn serve(addr: SocketAddr, source: Arc<dyn MetricsSource>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(err) = answer(stream, &*source) {
                    tracing::debug!("metrics request failed: {err}");
                }
            }
        })?;
    tracing::info!("serving metrics on http://{bound}/metrics");
    Ok(bound)
}

/// One HTTP/1.x exchange; the connection is closed after the response.
fn answer(mut stream: TcpStream, source: &dyn MetricsSource) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let request_line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let (status, content_type, body) =
        if request_line.starts_with(b"GET /metrics ") || request_line == b"GET /metrics" {
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                source.render_metrics(),
            )
        } else {
            ("404 Not Found", "text/plain", "try /metrics\n".to_owned())
        };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
