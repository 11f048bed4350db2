//! A thread per connection: the mode for plugins whose handlers block.
//!
//! Each connection gets a thread that reads a request, runs it (plugin code included) and
//! writes the response. A handler that blocks holds up only its own connection; the price
//! is a thread wake-up per message. Reads wake once a second (a receive timeout) to check
//! the idle and message deadlines and whether the daemon hands its connections over.

use std::{
    io::{self, Read as _, Write},
    os::unix::net::{UnixListener, UnixStream},
    sync::Arc,
    time::{Duration, Instant},
};

use super::{Admission, Handed, Shared};
use crate::{
    connection::{self, Context, Read, Served, Stop, Transport},
    daemon::Scope,
    settings::Protocol,
};

/// How often a waiting read wakes to look at its deadlines.
const WAKE_EVERY: Duration = Duration::from_secs(1);

/// Accepts connections on `listener` on a thread of its own until `stop` is set; each gets
/// a thread.
pub(crate) fn listen(
    listener: UnixListener,
    plugin: Arc<str>,
    scope: Scope,
    stop: Arc<std::sync::atomic::AtomicBool>,
    shared: Arc<Shared>,
) -> io::Result<()> {
    use std::sync::atomic::Ordering;
    // Non-blocking with a short sleep when idle: the accept thread must notice `stop`.
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name(format!("accept-{plugin}"))
        .spawn(move || {
            loop {
                let stopping = stop.load(Ordering::Relaxed);
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Some(admission) = shared.admit(&plugin) {
                            spawn(
                                stream,
                                plugin.clone(),
                                scope.clone(),
                                Vec::new(),
                                admission,
                                shared.clone(),
                            );
                        }
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        if stopping {
                            // The backlog is empty: the successor owns the path now.
                            tracing::debug!(plugin = %plugin, "stopped accepting");
                            return;
                        }
                        wait_readable(&listener, Duration::from_millis(100));
                    }
                    Err(err) => {
                        tracing::error!(plugin = %plugin, "accept failed: {err}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map(|_| ())
}

/// Waits until `listener` has a connection to accept, or `timeout`.
fn wait_readable(listener: &UnixListener, timeout: Duration) {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut fds = [PollFd::new(listener, PollFlags::IN)];
    let timeout = rustix::event::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    let _ = poll(&mut fds, Some(&timeout));
}

/// Serves `stream` on a new thread.
pub(crate) fn spawn(
    stream: UnixStream,
    plugin: Arc<str>,
    scope: Scope,
    pending: Vec<u8>,
    admission: Admission,
    shared: Arc<Shared>,
) {
    let spawned = std::thread::Builder::new()
        .name("kong-connection".into())
        .spawn(move || serve(stream, plugin, scope, pending, admission, shared));
    if let Err(err) = spawned {
        tracing::error!("cannot start a connection thread: {err}");
    }
}

fn serve(
    stream: UnixStream,
    plugin: Arc<str>,
    scope: Scope,
    pending: Vec<u8>,
    mut admission: Admission,
    shared: Arc<Shared>,
) {
    if let Err(err) = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(WAKE_EVERY)))
    {
        tracing::error!(plugin = %plugin, "cannot serve a connection: {err}");
        return;
    }
    let (idle, message) = shared.deadlines();
    let mut transport = ThreadStream {
        stream,
        shared: shared.clone(),
        active: Instant::now(),
        idle,
        message,
    };
    // A heartbeat for this connection's thread, so a handler running here is named too.
    let _heartbeat = crate::heartbeat::lease();
    let cx = Context {
        daemon: &shared.daemon,
        scope: &scope,
        budget: &shared.budget,
        slot: admission.tracked.as_ref().map(|t| t.slot()),
        peek_requests: shared.supervised(),
    };
    let served = crate::wait::block_on(async {
        match shared.daemon.protocol() {
            Protocol::Msgpack => connection::serve(&mut transport, &cx, pending, false).await,
            Protocol::Protobuf => crate::protobuf::serve(&mut transport, &cx, pending).await,
        }
    });
    if let Served::HandOver { pending } = served {
        let mut slot = admission.tracked.take();
        if let Some(tracked) = &mut slot {
            tracked.handed_over();
        }
        shared.hand_over(Handed {
            stream: transport.stream,
            plugin,
            pending,
            slot,
        });
    }
    drop(admission);
}

/// A blocking socket whose reads wake every second to check deadlines and hand-over.
struct ThreadStream {
    stream: UnixStream,
    shared: Arc<Shared>,
    active: Instant,
    idle: Duration,
    message: Duration,
}

impl Transport for ThreadStream {
    async fn read(&mut self, buf: &mut [u8], mid_message: bool) -> Read {
        loop {
            match self.stream.read(buf) {
                Ok(0) => return Read::Eof,
                Ok(n) => {
                    self.active = Instant::now();
                    return Read::Data(n);
                }
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.shared.handing_over_idle() {
                        return Read::Stop(Stop::HandOver);
                    }
                    let waited = self.active.elapsed();
                    if mid_message && waited > self.message {
                        return Read::Stop(Stop::MessageTimeout);
                    }
                    if !mid_message && waited > self.idle {
                        return Read::Stop(Stop::Idle);
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Read::Failed(err),
            }
        }
    }

    async fn peek(&mut self, buf: &mut [u8]) -> Read {
        loop {
            // Blocking, woken by the read timeout like `read`.
            match rustix::net::recv(&self.stream, &mut *buf, rustix::net::RecvFlags::PEEK) {
                Ok((0, _)) => return Read::Eof,
                Ok((n, _)) => {
                    self.active = Instant::now();
                    return Read::Data(n);
                }
                Err(rustix::io::Errno::AGAIN) => {
                    if self.shared.handing_over_idle() {
                        return Read::Stop(Stop::HandOver);
                    }
                    if self.active.elapsed() > self.idle {
                        return Read::Stop(Stop::Idle);
                    }
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(err) => return Read::Failed(err.into()),
            }
        }
    }

    async fn consume(&mut self, n: usize) -> io::Result<()> {
        super::consume(n, |scratch| io::Read::read(&mut self.stream, scratch))
    }

    async fn write_some(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match Write::write(&mut self.stream, buf) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                written => return written,
            }
        }
    }

    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Write::write_all(&mut self.stream, buf)
    }
}
