//! One connection from Kong: a stream of requests, each answered by exactly one response.
//!
//! Kong never pipelines (one request in flight per connection), so the loop is simple:
//! frame, answer, write, repeat. The first response carries the `serverPid` notification in
//! front of it (Kong reads notifications before the response of any call; one write instead
//! of two). Buffers are reused for the life of the connection. A stream that cannot be
//! framed is closed (there is no way to find the next message in it); other connections
//! are unaffected.
//!
//! The same loop runs over two transports (see [`crate::listener::Threading`]): a blocking
//! socket on a thread of its own (the default: a plugin handler that blocks holds up only
//! its connection), or a non-blocking socket on a shared single-threaded event loop (fewer
//! context switches per message, for plugins that never block).

use std::{
    future::Future,
    io::{Read, Write},
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use kong_rust_pluginserver_protocol::{RequestError, encode, frame, parse_request};

use crate::{
    daemon::{Daemon, Scope},
    rpc::{self, RpcError},
};

/// Initial size of a connection's input buffer; it grows for larger messages (up to the
/// message size limit) and shrinks back after them.
const INPUT_BUFFER: usize = 8 * 1024;

/// A byte stream to Kong.
pub trait Transport {
    /// Reads some bytes; 0 at the end of the stream.
    fn read(&mut self, buf: &mut [u8]) -> impl Future<Output = std::io::Result<usize>>;
    /// Writes all of `buf`.
    fn write_all(&mut self, buf: &[u8]) -> impl Future<Output = std::io::Result<()>>;
}

/// A blocking socket, on a thread of its own: the futures complete at once.
impl Transport for std::os::unix::net::UnixStream {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match Read::read(self, buf) {
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    async fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        Write::write_all(self, buf)
    }
}

/// A non-blocking socket on an event loop.
impl Transport for tokio::net::UnixStream {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        AsyncReadExt::read(self, buf).await
    }

    async fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        AsyncWriteExt::write_all(self, buf).await
    }
}

/// Serves a blocking connection on the calling thread until Kong closes it. The thread
/// only parks when a plugin handler waits on its own I/O.
pub fn serve_blocking(stream: std::os::unix::net::UnixStream, daemon: &Daemon, scope: &Scope) {
    crate::wait::block_on(serve(stream, daemon, scope));
}

/// Serves one connection until Kong closes it or sends something unusable. `scope` is
/// what the socket it came on may use.
pub async fn serve<T: Transport>(mut stream: T, daemon: &Daemon, scope: &Scope) {
    let max_message = daemon.limits().max_message;
    let mut out = Vec::with_capacity(512);
    // Announced in front of the first response.
    encode::server_pid(&mut out, daemon.pid());
    let mut input = vec![0u8; INPUT_BUFFER];
    let mut filled = 0;
    loop {
        let len = match frame::value_len(&input[..filled], max_message) {
            Ok(Some(len)) => len,
            Ok(None) => {
                if filled == input.len() {
                    input.resize(input.len() * 2, 0);
                }
                match stream.read(&mut input[filled..]).await {
                    Ok(0) => {
                        if filled > 0 {
                            tracing::warn!(
                                bytes = filled,
                                "connection closed in the middle of a message"
                            );
                        }
                        return;
                    }
                    Ok(n) => {
                        filled += n;
                        continue;
                    }
                    Err(err) => {
                        tracing::debug!("connection read failed: {err}");
                        return;
                    }
                }
            }
            Err(err) => {
                tracing::warn!(
                    "closing connection: {err} (starts with {})",
                    preview(&input[..filled])
                );
                return;
            }
        };
        match parse_request(&input[..len]) {
            Ok(request) => rpc::respond(daemon, scope, &request, &mut out).await,
            Err(RequestError::Malformed { msgid, reason }) => {
                RpcError::Malformed(reason).write(msgid, &mut out);
            }
            Err(err @ RequestError::Unanswerable(_)) => {
                tracing::warn!("closing connection: {err} ({})", preview(&input[..len]));
                return;
            }
        }
        let written = stream.write_all(&out).await;
        out.clear();
        if written.is_err() {
            return;
        }
        input.copy_within(len..filled, 0);
        filled -= len;
        // Do not keep a buffer that one large message grew.
        if input.len() > 1 << 20 && filled <= INPUT_BUFFER {
            input.truncate(INPUT_BUFFER);
            input.shrink_to_fit();
        }
    }
}

/// The first bytes of a message in hex, for logs.
fn preview(bytes: &[u8]) -> String {
    let shown: Vec<String> = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let more = if bytes.len() > 16 { " …" } else { "" };
    format!("{}{more}", shown.join(" "))
}
