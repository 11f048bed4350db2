//! The metrics endpoint (`--metrics-listen`): `GET /metrics` in Prometheus's text format.
//!
//! It reads what it serves through [`MetricsSource`], so it knows nothing of the daemon's
//! other parts. HTTP is hyper's, on a single-threaded event loop of its own: every client
//! is served at once, so a slow or silent one delays nobody, and each is held to deadlines
//! (the request head within [`HEAD_TIMEOUT`], the whole exchange within
//! [`EXCHANGE_TIMEOUT`]). At most [`MAX_CLIENTS`] are served at once; more are closed.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};

/// Whatever renders the metrics text at scrape time.
pub trait MetricsSource: Send + Sync + 'static {
    /// The Prometheus text exposition, as of now.
    fn render_metrics(&self) -> String;
}

/// A client must send its request head within this.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole exchange (request and response) must end within this.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Clients served at once.
pub const MAX_CLIENTS: usize = 64;

/// Serves `GET /metrics` on `addr` from a background thread; returns the bound address.
pub fn serve(addr: SocketAddr, source: Arc<dyn MetricsSource>) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || runtime.block_on(accept_loop(listener, source)))?;
    tracing::info!("serving metrics on http://{bound}/metrics");
    Ok(bound)
}

async fn accept_loop(listener: std::net::TcpListener, source: Arc<dyn MetricsSource>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!("metrics endpoint: {err}");
            return;
        }
    };
    let clients = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of descriptors, most likely: wait instead of spinning.
                tracing::debug!("metrics endpoint: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = clients.clone().try_acquire_owned() else {
            tracing::debug!("metrics endpoint: {MAX_CLIENTS} clients already; closing a new one");
            continue;
        };
        let source = source.clone();
        tokio::task::spawn(async move {
            let service = service_fn(move |request| {
                let source = source.clone();
                async move { Ok::<_, Infallible>(answer(&request, &*source)) }
            });
            let exchange = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::debug!("metrics request failed: {err}"),
                Err(_) => tracing::debug!("metrics request took over {EXCHANGE_TIMEOUT:?}; closed"),
            }
            drop(permit);
        });
    }
}

/// `GET /metrics`, or 404.
fn answer(request: &Request<Incoming>, source: &dyn MetricsSource) -> Response<Full<Bytes>> {
    let (status, content_type, body) =
        if request.method() == Method::GET && request.uri().path() == "/metrics" {
            (
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                source.render_metrics(),
            )
        } else {
            (
                StatusCode::NOT_FOUND,
                "text/plain",
                "try /metrics\n".to_owned(),
            )
        };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
