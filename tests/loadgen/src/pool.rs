//! A Kong worker's keepalive pool of connections to one pluginserver socket, on the
//! worker's single-threaded event loop: the only transport code of the load generator.
//!
//! As with ngx_lua's cosocket pool, a connection is taken for one call and put back after
//! it; an idle connection that the server closed is dropped from the pool rather than
//! handed out, and a connection whose call failed is never put back.

use std::{
    cell::{Cell, RefCell},
    future::Future,
    ops::Range,
    path::PathBuf,
    task::{Context, Poll, Waker},
    time::Duration,
};

use kong_rust_pluginserver_protocol::{
    frame,
    kong::{Incoming, KongSideError, incoming},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, Interest},
    net::UnixStream,
};

/// Largest response accepted.
const MAX_MESSAGE: usize = 16 << 20;

/// Why a call got no response.
#[derive(Debug)]
pub enum CallFailure {
    /// No connection could be opened (no server listening, socket gone): Kong logs
    /// "trying to connect" and goes on without the plugin.
    Refused(String),
    /// The connection broke or closed before the response: Kong logs the error ("no
    /// data") and goes on without the plugin.
    Lost(String),
    /// The bytes are not what Kong's client accepts (its asserts raise): a broken server.
    Protocol(String),
}

impl From<KongSideError> for CallFailure {
    fn from(err: KongSideError) -> Self {
        CallFailure::Protocol(err.to_string())
    }
}

/// One connection with its reusable buffers.
pub struct Conn {
    stream: UnixStream,
    rbuf: Vec<u8>,
    /// The request to send; the caller encodes into it.
    pub wbuf: Vec<u8>,
}

impl Conn {
    /// Sends `wbuf` and reads the response to `msgid`; notifications before it (the
    /// `serverPid`) go to `notify`. Returns where the response sits in the read buffer.
    async fn exchange(
        &mut self,
        msgid: u64,
        mut notify: impl FnMut(&[u8], Option<u64>),
    ) -> Result<Range<usize>, CallFailure> {
        let lost = |what: &str, err: std::io::Error| CallFailure::Lost(format!("{what}: {err}"));
        self.stream
            .write_all(&self.wbuf)
            .await
            .map_err(|e| lost("send", e))?;
        self.rbuf.clear();
        let mut start = 0;
        loop {
            let measured = frame::value_len(&self.rbuf[start..], MAX_MESSAGE)
                .map_err(|e| CallFailure::Protocol(e.to_string()))?;
            match measured {
                Some(n) => {
                    let range = start..start + n;
                    match incoming(&self.rbuf[range.clone()], msgid)? {
                        Incoming::Notification { method, value } => {
                            notify(method, value);
                            start += n;
                        }
                        Incoming::Ok(_) | Incoming::Err(_) => return Ok(range),
                    }
                }
                None => {
                    if self.rbuf.capacity() - self.rbuf.len() < 1024 {
                        self.rbuf.reserve(4096);
                    }
                    let read = self.stream.read_buf(&mut self.rbuf).await;
                    match read {
                        Ok(0) => {
                            return Err(CallFailure::Lost(
                                "no data: the server closed the connection".into(),
                            ));
                        }
                        Ok(_) => {}
                        Err(err) => return Err(lost("receive", err)),
                    }
                }
            }
        }
    }

    /// The stream and the read and write buffers, for exchanges of another shape
    /// (ProtoBuf:1's whole-event loop).
    pub fn parts(&mut self) -> (&mut UnixStream, &mut Vec<u8>, &mut Vec<u8>) {
        (&mut self.stream, &mut self.rbuf, &mut self.wbuf)
    }

    /// The response read by the last exchange.
    pub fn response(&self, range: Range<usize>, msgid: u64) -> Result<Incoming<'_>, KongSideError> {
        incoming(&self.rbuf[range], msgid)
    }

    /// Whether the server closed this idle connection: the pool then drops it, as
    /// ngx_lua's does when an idle pooled connection sees the peer close. Read from the
    /// event loop's readiness (the peer's close sets "read closed"), without a syscall.
    fn closed_while_idle(&self) -> bool {
        let mut ready = std::pin::pin!(self.stream.ready(Interest::READABLE));
        let mut cx = Context::from_waker(Waker::noop());
        match ready.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(ready)) => ready.is_read_closed() || ready.is_error(),
            Poll::Ready(Err(_)) => true,
            Poll::Pending => false,
        }
    }
}

/// Counters of a pool.
#[derive(Debug, Default, Clone, Copy)]
pub struct PoolCounts {
    /// Connections opened.
    pub opened: u64,
    /// Idle connections dropped because the server had closed them.
    pub dropped_closed: u64,
}

/// The keepalive pool of one worker for one socket.
pub struct Pool {
    socket: PathBuf,
    idle: RefCell<Vec<Conn>>,
    counts: Cell<PoolCounts>,
}

impl Pool {
    /// An empty pool for `socket`.
    pub fn new(socket: PathBuf) -> Pool {
        Pool {
            socket,
            idle: RefCell::new(Vec::new()),
            counts: Cell::new(PoolCounts::default()),
        }
    }

    /// What the pool did so far.
    pub fn counts(&self) -> PoolCounts {
        self.counts.get()
    }

    /// A live idle connection (most recently used first, as ngx_lua's pool), or a new one.
    pub async fn checkout(&self) -> Result<Conn, CallFailure> {
        loop {
            let pooled = self.idle.borrow_mut().pop();
            let Some(conn) = pooled else { break };
            if !conn.closed_while_idle() {
                return Ok(conn);
            }
            let mut counts = self.counts.get();
            counts.dropped_closed += 1;
            self.counts.set(counts);
        }
        // A full listen backlog answers EAGAIN: wait a little, as a busy nginx would.
        let mut attempts = 0;
        let stream = loop {
            match UnixStream::connect(&self.socket).await {
                Ok(stream) => break stream,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock && attempts < 1000 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(err) => {
                    return Err(CallFailure::Refused(format!(
                        "trying to connect to {}: {err}",
                        self.socket.display()
                    )));
                }
            }
        };
        let mut counts = self.counts.get();
        counts.opened += 1;
        self.counts.set(counts);
        Ok(Conn {
            stream,
            rbuf: Vec::with_capacity(4096),
            wbuf: Vec::with_capacity(512),
        })
    }

    /// Puts a connection back after a complete exchange.
    pub fn checkin(&self, conn: Conn) {
        self.idle.borrow_mut().push(conn);
    }

    /// One call on a pooled connection: `encode` writes the request into the connection's
    /// buffer, `read` sees the response; notifications go to `notify`. The connection goes
    /// back to the pool only after a complete response.
    pub async fn call<T>(
        &self,
        msgid: u64,
        encode: impl FnOnce(&mut Vec<u8>),
        notify: impl FnMut(&[u8], Option<u64>),
        read: impl FnOnce(Incoming<'_>) -> T,
    ) -> Result<T, CallFailure> {
        let mut conn = self.checkout().await?;
        conn.wbuf.clear();
        encode(&mut conn.wbuf);
        let range = conn.exchange(msgid, notify).await?;
        let result = read(conn.response(range, msgid)?);
        self.checkin(conn);
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use kong_rust_pluginserver_protocol::kong::request;
    use tokio::net::UnixListener;

    use super::*;

    /// `[1, msgid, nil, "ok"]` for a request with msgid 1..=127.
    fn answer(msgid: u8) -> [u8; 7] {
        [0x94, 0x01, msgid, 0xc0, 0xa2, b'o', b'k']
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn socket_path(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("loadgen-{name}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    async fn call(pool: &Pool, msgid: u64) -> Result<bool, CallFailure> {
        pool.call(
            msgid,
            |out| request(out, msgid, "plugin.GetStatus", &[0xc0]),
            |_, _| {},
            |incoming| matches!(incoming, Incoming::Ok(b"\xa2ok")),
        )
        .await
    }

    #[test]
    fn a_connection_the_server_closed_while_idle_is_dropped_not_used() {
        let path = socket_path("idle");
        runtime().block_on(async {
            let listener = UnixListener::bind(&path).unwrap();
            let server = tokio::spawn(async move {
                // Answers one request, then closes, as a server that stops.
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 64];
                let _ = stream.read(&mut buf).await.unwrap();
                stream.write_all(&answer(1)).await.unwrap();
            });
            let pool = Pool::new(path.clone());
            assert!(call(&pool, 1).await.unwrap());
            server.await.unwrap();
            // Let the event loop see the close.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = std::fs::remove_file(&path);
            // The pooled connection is closed and nothing listens any more: the pool
            // drops it and the connect is refused, rather than a write into a dead socket.
            let failure = call(&pool, 2).await.unwrap_err();
            assert!(matches!(failure, CallFailure::Refused(_)), "{failure:?}");
            assert_eq!(pool.counts().dropped_closed, 1);
            assert_eq!(pool.counts().opened, 1);
        });
    }

    #[test]
    fn a_call_whose_connection_closes_before_the_answer_is_lost() {
        let path = socket_path("lost");
        runtime().block_on(async {
            let listener = UnixListener::bind(&path).unwrap();
            let server = tokio::spawn(async move {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 64];
                let _ = stream.read(&mut buf).await.unwrap();
                // Closes without answering.
            });
            let pool = Pool::new(path.clone());
            let failure = call(&pool, 1).await.unwrap_err();
            assert!(matches!(failure, CallFailure::Lost(_)), "{failure:?}");
            server.await.unwrap();
            // Not put back: the pool is empty.
            assert!(pool.idle.borrow().is_empty());
        });
        let _ = std::fs::remove_file(&path);
    }
}
