//! One connection from Kong: a stream of requests, each answered by exactly one response.
//!
//! Kong never pipelines on a connection and creates a fresh decoder per call, so the loop
//! is simple: announce the pid, then frame, dispatch, write, repeat. Buffers are reused for
//! the life of the connection. A stream that cannot be framed is closed (there is no way to
//! find the next message in it); other connections are unaffected.

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
};

use crate::{
    methods,
    protocol::{self, RequestError, encode, frame},
    state::Daemon,
};

/// Limits applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted message, in bytes.
    pub max_message: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message: 16 << 20,
        }
    }
}

/// Serves one connection until Kong closes it or sends something unusable.
pub async fn serve(mut stream: UnixStream, daemon: &Daemon, limits: Limits) {
    let mut out = Vec::with_capacity(512);
    encode::server_pid(&mut out, daemon.pid);
    if stream.write_all(&out).await.is_err() {
        return;
    }
    let mut input = Vec::with_capacity(4096);
    loop {
        let len = match frame::value_len(&input, limits.max_message) {
            Ok(Some(len)) => len,
            Ok(None) => match stream.read_buf(&mut input).await {
                Ok(0) => {
                    if !input.is_empty() {
                        tracing::warn!(
                            bytes = input.len(),
                            "connection closed in the middle of a message"
                        );
                    }
                    return;
                }
                Ok(_) => continue,
                Err(err) => {
                    tracing::debug!("connection read failed: {err}");
                    return;
                }
            },
            Err(err) => {
                tracing::warn!(
                    "closing connection: {err} (starts with {})",
                    preview(&input)
                );
                return;
            }
        };
        out.clear();
        match protocol::parse_request(&input[..len]) {
            Ok(request) => methods::dispatch(daemon, &request, &mut out).await,
            Err(RequestError::Malformed { msgid, reason }) => {
                tracing::warn!("malformed request {msgid}: {reason}");
                encode::error(&mut out, msgid, &format!("malformed request: {reason}"));
            }
            Err(err @ RequestError::Unanswerable(_)) => {
                tracing::warn!("closing connection: {err} ({})", preview(&input[..len]));
                return;
            }
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
        if len == input.len() {
            input.clear();
        } else {
            input.drain(..len);
        }
        // Do not keep a buffer that one large message grew.
        if input.capacity() > 1 << 20 && input.len() < 4096 {
            input.shrink_to(4096);
        }
    }
}

/// The first bytes of a message in hex, for logs.
fn preview(bytes: &[u8]) -> String {
    let shown: Vec<String> = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let more = if bytes.len() > 16 { " …" } else { "" };
    format!("{}{more}", shown.join(" "))
}
