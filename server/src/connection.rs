//! One connection from Kong: a stream of requests, each answered by exactly one response.
//!
//! Kong never pipelines (one request in flight per connection), so the loop is simple:
//! frame, answer, write, repeat. The first response carries the `serverPid` notification in
//! front of it (Kong reads notifications before the response of any call; one write instead
//! of two). Buffers are reused for the life of the connection. A stream that cannot be
//! framed is closed (there is no way to find the next message in it); other connections
//! are unaffected.
//!
//! The loop runs over a [`Transport`]: a socket on an event loop, or a blocking socket on a
//! thread of its own (see [`crate::serving`]). A transport's read can also end early with a
//! [`Stop`]: the connection sat idle too long, a message took too long to arrive, or the
//! daemon is handing its connections to a successor.

pub mod budget;

use std::future::Future;

use kong_rust_plugin_abi::Phase;
use kong_rust_pluginserver_protocol::{RequestError, encode, frame, parse_request};

use crate::{
    board::{ConnSlot, NO_PLUGIN, RequestKind},
    daemon::{Daemon, EventIds, Scope},
    rpc::{Rpc, RpcError},
};
use budget::BufferBudget;

/// Initial size of a connection's input buffer; it grows for larger messages (up to the
/// message size limit, within the daemon-wide buffer budget) and shrinks back after them.
pub const INPUT_BUFFER: usize = 8 * 1024;

/// Why a read ended without data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// No request for longer than the idle timeout.
    Idle,
    /// A message started arriving and did not finish within the message timeout.
    MessageTimeout,
    /// The daemon is handing its connections to a successor.
    HandOver,
}

/// What a read gave.
#[derive(Debug)]
pub enum Read {
    /// This many bytes.
    Data(usize),
    /// The end of the stream: Kong closed the connection.
    Eof,
    /// A watcher stopped the read.
    Stop(Stop),
    /// The socket failed.
    Failed(std::io::Error),
}

/// A byte stream to Kong.
pub trait Transport {
    /// Reads some bytes into `buf`. `mid_message` says whether part of a message is
    /// already buffered (the message deadline applies then, the idle deadline otherwise).
    fn read(&mut self, buf: &mut [u8], mid_message: bool) -> impl Future<Output = Read>;
    /// Writes all of `buf`.
    fn write_all(&mut self, buf: &[u8]) -> impl Future<Output = std::io::Result<()>>;
    /// Writes what it can of `buf` at once without waiting (0 if the socket is full).
    fn write_some(&mut self, buf: &[u8]) -> impl Future<Output = std::io::Result<usize>>;
    /// Waits for bytes like [`read`](Self::read) (idle deadline), then copies what is
    /// there into `buf` without taking it from the socket.
    fn peek(&mut self, buf: &mut [u8]) -> impl Future<Output = Read>;
    /// Takes `n` bytes that a [`peek`](Self::peek) saw from the socket, dropping them.
    fn consume(&mut self, n: usize) -> impl Future<Output = std::io::Result<()>>;
}

/// What a connection is served with.
pub struct Context<'a> {
    /// The daemon.
    pub daemon: &'a Daemon,
    /// What the socket it came on may use.
    pub scope: &'a Scope,
    /// The daemon-wide budget of bytes buffered beyond each connection's first buffer.
    pub budget: &'a BufferBudget,
    /// Where the connection records what it is doing (see [`crate::board`]).
    pub slot: Option<&'a ConnSlot>,
    /// Whether a supervisor reads the slot (process isolation): then a request is
    /// recorded as handled *before* its bytes leave the socket, so a process that dies at
    /// any point leaves either the request in the socket (for the next worker) or a slot
    /// that names it (for the supervisor to answer). One more syscall per request; off
    /// without isolation.
    pub peek_requests: bool,
}

/// How serving a connection ended.
#[derive(Debug)]
pub enum Served {
    /// Kong closed it, it broke, or it was closed for misbehaving.
    Closed,
    /// It must go to the successor daemon, with these bytes already read from it (part of
    /// a message, or a whole request this daemon did not answer).
    HandOver {
        /// Bytes read and not answered, in order.
        pending: Vec<u8>,
    },
}

/// Serves one connection until Kong closes it, it misbehaves, or it is to be handed over.
/// `pending` holds bytes already read from it (a predecessor's hand-over); `announced` is
/// whether this daemon's `serverPid` has already been sent on it.
pub async fn serve<T: Transport>(
    stream: &mut T,
    cx: &Context<'_>,
    pending: Vec<u8>,
    announced: bool,
) -> Served {
    let daemon = cx.daemon;
    let max_message = daemon.limits().max_message;
    let mut out = Vec::with_capacity(512);
    if !announced {
        // Announced in front of the first response.
        encode::server_pid(&mut out, daemon.pid());
    }
    let mut input = pending;
    let mut filled = input.len();
    input.resize(filled.max(INPUT_BUFFER), 0);
    // Bytes of `input` beyond INPUT_BUFFER, held against the daemon-wide budget.
    let mut reserved = cx
        .budget
        .reserve_to(0, input.len() - INPUT_BUFFER)
        .unwrap_or(0);
    // Whether this message has been peeked at (process isolation; reset per message).
    let mut peeked = false;
    let served = loop {
        // Whether input[..len] is still in the socket (peeked, not yet taken).
        let mut in_socket = false;
        let len = match frame::value_len(&input[..filled], max_message) {
            Ok(Some(len)) => len,
            Ok(None) if cx.peek_requests && filled == 0 && !peeked => {
                peeked = true;
                match stream.peek(&mut input).await {
                    Read::Data(n) => match frame::value_len(&input[..n], max_message) {
                        Ok(Some(len)) => {
                            in_socket = true;
                            len
                        }
                        // Not all there yet (or not a frame): read it as without a
                        // supervisor; the slot says Reading once a byte is taken.
                        _ => continue,
                    },
                    other => match ended(other, filled) {
                        Ended::Closed => break Served::Closed,
                        Ended::HandOver => {
                            input.truncate(filled);
                            break Served::HandOver { pending: input };
                        }
                    },
                }
            }
            Ok(None) => {
                if filled == input.len() {
                    let grown = input.len() * 2;
                    match cx.budget.reserve_to(reserved, grown - INPUT_BUFFER) {
                        Some(now) => reserved = now,
                        None => {
                            tracing::warn!(
                                bytes = filled,
                                "closing a connection: the daemon's buffers are full (--max-buffered-bytes)"
                            );
                            break Served::Closed;
                        }
                    }
                    input.resize(grown, 0);
                }
                // Part of a message is buffered, or (peeked) about to be: a process that
                // dies now cannot leave the slot saying Idle over a request it took.
                if (filled > 0 || peeked)
                    && let Some(slot) = cx.slot
                {
                    slot.reading();
                }
                match stream.read(&mut input[filled..], filled > 0).await {
                    Read::Data(n) => {
                        filled += n;
                        continue;
                    }
                    other => match ended(other, filled) {
                        Ended::Closed => break Served::Closed,
                        Ended::HandOver => {
                            input.truncate(filled);
                            break Served::HandOver { pending: input };
                        }
                    },
                }
            }
            Err(err) => {
                crate::warn_throttled!(
                    crate::log_throttle::CONNECTIONS,
                    "closing connection: {err} (starts with {})",
                    preview(&input[..filled])
                );
                break Served::Closed;
            }
        };
        match parse_request(&input[..len]) {
            Ok(request) => match Rpc::parse(&request) {
                Ok(rpc) => {
                    if daemon.is_handing_over() && !keeps(daemon, cx.scope, &rpc) {
                        input.truncate(filled);
                        break Served::HandOver { pending: input };
                    }
                    if let Some(slot) = cx.slot {
                        record(slot, cx.scope, request.msgid, &rpc);
                    }
                    if in_socket && stream.consume(len).await.is_err() {
                        break Served::Closed;
                    }
                    rpc.apply(daemon, cx.scope, request.msgid, &mut out).await;
                }
                Err(err) => {
                    if daemon.is_handing_over() {
                        input.truncate(filled);
                        break Served::HandOver { pending: input };
                    }
                    if in_socket && !take_other(stream, cx, request.msgid, len).await {
                        break Served::Closed;
                    }
                    err.write(request.msgid, &mut out);
                }
            },
            Err(RequestError::Malformed { msgid, reason }) => {
                if in_socket && !take_other(stream, cx, msgid, len).await {
                    break Served::Closed;
                }
                RpcError::Malformed(reason).write(msgid, &mut out);
            }
            Err(err @ RequestError::Unanswerable(_)) => {
                crate::warn_throttled!(
                    crate::log_throttle::CONNECTIONS,
                    "closing connection: {err} ({})",
                    preview(&input[..len])
                );
                break Served::Closed;
            }
        }
        let written = match cx.slot {
            // With a supervisor, the slot says Handling until part of the response may be
            // out: a worker dying before its response's first byte leaves a request the
            // supervisor answers, not a connection it must close (Kong would proxy).
            Some(slot) if cx.peek_requests => match stream.write_some(&out).await {
                Ok(n) if n == out.len() => Ok(()),
                Ok(n) => {
                    slot.writing();
                    stream.write_all(&out[n..]).await
                }
                Err(err) => Err(err),
            },
            Some(slot) => {
                slot.writing();
                stream.write_all(&out).await
            }
            None => stream.write_all(&out).await,
        };
        out.clear();
        if written.is_err() {
            break Served::Closed;
        }
        if let Some(slot) = cx.slot {
            slot.idle();
        }
        peeked = false;
        if !in_socket {
            input.copy_within(len..filled, 0);
            filled -= len;
        }
        // Do not keep a buffer that one large message grew.
        if input.len() > 1 << 20 && filled <= INPUT_BUFFER {
            input.truncate(INPUT_BUFFER);
            input.shrink_to_fit();
            reserved = cx.budget.reserve_to(reserved, 0).unwrap_or(0);
        }
    };
    cx.budget.reserve_to(reserved, 0);
    served
}

/// How a read that gave no data ends the connection.
enum Ended {
    Closed,
    HandOver,
}

/// What a read that gave no data means, with `filled` bytes of a message buffered.
fn ended(read: Read, filled: usize) -> Ended {
    match read {
        // Only reads that gave nothing come here.
        Read::Data(_) => Ended::Closed,
        Read::Eof => {
            if filled > 0 {
                crate::warn_throttled!(
                    crate::log_throttle::CONNECTIONS,
                    bytes = filled,
                    "connection closed in the middle of a message"
                );
            }
            Ended::Closed
        }
        Read::Stop(Stop::HandOver) => Ended::HandOver,
        Read::Stop(Stop::Idle) => {
            tracing::debug!("closing a connection idle past --connection-idle-timeout");
            Ended::Closed
        }
        Read::Stop(Stop::MessageTimeout) => {
            tracing::warn!(
                bytes = filled,
                "closing a connection: a message did not arrive within --message-timeout"
            );
            Ended::Closed
        }
        Read::Failed(err) => {
            tracing::debug!("connection read failed: {err}");
            Ended::Closed
        }
    }
}

/// Takes a peeked request answered with an error reply, recorded first (as a request of
/// no particular kind) so that a process dying before the reply leaves it answerable.
async fn take_other<T: Transport>(
    stream: &mut T,
    cx: &Context<'_>,
    msgid: u64,
    len: usize,
) -> bool {
    if let Some(slot) = cx.slot {
        slot.handling(msgid, RequestKind::Other, None, plugin_of(cx.scope), 0);
    }
    stream.consume(len).await.is_ok()
}

fn plugin_of(scope: &Scope) -> u16 {
    match scope {
        Scope::One(own) => own.0 as u16,
        Scope::All => NO_PLUGIN,
    }
}

/// While handing over, what this daemon still answers itself: the Steps of its own events
/// (their handlers live here). Everything else goes to the successor.
fn keeps(daemon: &Daemon, scope: &Scope, rpc: &Rpc<'_>) -> bool {
    match rpc {
        Rpc::Step(step) => daemon.has_waiting_event(scope, step.event_id),
        _ => false,
    }
}

/// Records in the connection's slot the request about to be handled: what a supervisor
/// needs to answer it if this process dies, and what names it if it gets stuck.
fn record(slot: &ConnSlot, scope: &Scope, msgid: u64, rpc: &Rpc<'_>) {
    let plugin = plugin_of(scope);
    let (kind, phase, subject) = match rpc {
        Rpc::HandleEvent(event) => (
            RequestKind::HandleEvent,
            Phase::from_name(event.event_name),
            event.instance_id,
        ),
        Rpc::Step(step) => (
            RequestKind::Step,
            EventIds::phase_of(step.event_id),
            step.event_id,
        ),
        Rpc::StartInstance(_) => (RequestKind::StartInstance, None, 0),
        _ => (RequestKind::Other, None, 0),
    };
    slot.handling(msgid, kind, phase, plugin, subject);
}

/// The first bytes of a message in hex, for logs.
fn preview(bytes: &[u8]) -> String {
    let shown: Vec<String> = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let more = if bytes.len() > 16 { " …" } else { "" };
    format!("{}{more}", shown.join(" "))
}
