//! One connection from Kong: a stream of requests, each answered by exactly one response.
//!
//! Every connection has its own thread. Kong never pipelines (one request in flight per
//! connection), so the thread reads a request, runs it (plugin code included) and writes
//! the response: two system calls per round trip, no hand-off between threads, and a
//! plugin handler that blocks holds up only the connection it runs on, never another
//! plugin or another request. Buffers are reused for the life of the connection. A stream
//! that cannot be framed is closed (there is no way to find the next message in it); other
//! connections are unaffected.

use std::{
    future::Future,
    io::{Read, Write},
    os::unix::net::UnixStream,
    pin::pin,
    sync::Arc,
    task::{Context, Poll, Wake, Waker},
    thread::Thread,
};

use crate::{
    methods,
    protocol::{self, RequestError, encode, frame},
    state::Daemon,
};

/// Initial size of a connection's input buffer; it grows for larger messages (up to the
/// message size limit) and shrinks back after them.
const INPUT_BUFFER: usize = 8 * 1024;

/// Serves one connection until Kong closes it or sends something unusable.
pub fn serve(mut stream: UnixStream, daemon: &Daemon) {
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let max_message = daemon.limits.max_message;
    let mut out = Vec::with_capacity(512);
    encode::server_pid(&mut out, daemon.pid);
    if stream.write_all(&out).is_err() {
        return;
    }
    let mut input = vec![0u8; INPUT_BUFFER];
    let mut filled = 0;
    loop {
        let len = match frame::value_len(&input[..filled], max_message) {
            Ok(Some(len)) => len,
            Ok(None) => {
                if filled == input.len() {
                    input.resize(input.len() * 2, 0);
                }
                match stream.read(&mut input[filled..]) {
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
                    Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
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
        out.clear();
        match protocol::parse_request(&input[..len]) {
            Ok(request) => block_on(methods::dispatch(daemon, &request, &mut out), &waker),
            Err(RequestError::Malformed { msgid, reason }) => {
                tracing::warn!("malformed request {msgid}: {reason}");
                encode::error(&mut out, msgid, &format!("malformed request: {reason}"));
            }
            Err(err @ RequestError::Unanswerable(_)) => {
                tracing::warn!("closing connection: {err} ({})", preview(&input[..len]));
                return;
            }
        }
        if stream.write_all(&out).is_err() {
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

/// Wakes the connection's thread: a plugin that waits on its own I/O resumes it.
struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a request to completion on this thread. It only parks when a plugin handler waits
/// on its own I/O; a handler stopping at a PDK call completes the request at once.
fn block_on<F: Future>(future: F, waker: &Waker) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

/// The first bytes of a message in hex, for logs.
fn preview(bytes: &[u8]) -> String {
    let shown: Vec<String> = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let more = if bytes.len() > 16 { " …" } else { "" };
    format!("{}{more}", shown.join(" "))
}
