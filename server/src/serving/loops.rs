//! Event loops: single-threaded tokio runtimes that serve connections.
//!
//! Each plugin has its own loop (or loops), and its socket's connections are served there.
//! A loop wakes once for all its ready connections and runs the plugin's handlers right on
//! its thread between two PDK calls: no thread hop, no channel, one read and one write per
//! round trip. A handler that blocks stalls only its own plugin's loop; the watchdog names
//! it.

use std::{
    io,
    os::unix::net::{UnixListener, UnixStream},
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncWriteExt, ReadBuf},
    sync::{Notify, mpsc},
};

use super::{Admission, Handed, Shared, registry::Registry};
use crate::{
    connection::{self, Context, Read, Served, Transport},
    daemon::Scope,
    heartbeat,
    settings::Protocol,
};

/// What a loop is told to do.
pub(crate) enum Command {
    /// Accept connections on this socket until `stop` is notified.
    Listen {
        listener: UnixListener,
        plugin: Arc<str>,
        scope: Scope,
        stop: Arc<Notify>,
    },
    /// Serve this connection (accepted elsewhere, or handed over by a predecessor).
    Serve(Incoming),
    /// Stop every waiting read: the daemon hands its connections to its successor.
    HandOver,
}

/// A connection to serve.
pub(crate) struct Incoming {
    pub(crate) stream: UnixStream,
    pub(crate) plugin: Arc<str>,
    pub(crate) scope: Scope,
    /// Bytes already read from it.
    pub(crate) pending: Vec<u8>,
    /// Holds its place in the connection limits.
    pub(crate) admission: Admission,
}

/// A running loop, as the rest of the daemon sees it.
pub(crate) struct EventLoop {
    commands: mpsc::UnboundedSender<Command>,
}

impl EventLoop {
    /// Starts a loop thread named `name`, whose heartbeat the watchdog names `label`.
    pub(crate) fn start(name: String, label: &str, shared: Arc<Shared>) -> io::Result<EventLoop> {
        let (commands, mut receiver) = mpsc::unbounded_channel::<Command>();
        let heartbeat = heartbeat::labelled(label.to_owned());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        std::thread::Builder::new().name(name).spawn(move || {
            heartbeat::attach(heartbeat);
            let local = tokio::task::LocalSet::new();
            let registry = Rc::new(Registry::default());
            local.spawn_local(sweep(registry.clone(), shared.clone()));
            local.block_on(&runtime, async move {
                while let Some(command) = receiver.recv().await {
                    match command {
                        Command::Listen {
                            listener,
                            plugin,
                            scope,
                            stop,
                        } => {
                            let (shared, registry) = (shared.clone(), registry.clone());
                            tokio::task::spawn_local(accept(
                                listener, plugin, scope, stop, shared, registry,
                            ));
                        }
                        Command::Serve(incoming) => {
                            let (shared, registry) = (shared.clone(), registry.clone());
                            tokio::task::spawn_local(serve(incoming, shared, registry));
                        }
                        Command::HandOver => {
                            let (idle, message) = shared.sweep_deadlines();
                            registry.hand_over(idle, message);
                        }
                    }
                }
            });
        })?;
        Ok(EventLoop { commands })
    }

    /// Sends `command`; false if the loop has stopped.
    pub(crate) fn send(&self, command: Command) -> bool {
        self.commands.send(command).is_ok()
    }
}

/// Once a second: stop the reads that waited past their deadlines.
async fn sweep(registry: Rc<Registry>, shared: Arc<Shared>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let (idle, message) = shared.sweep_deadlines();
        registry.sweep(idle, message);
    }
}

/// Accepts connections on `listener` until `stop`; then takes what is left in its backlog
/// (connections Kong already made to it) and closes it.
async fn accept(
    listener: UnixListener,
    plugin: Arc<str>,
    scope: Scope,
    stop: Arc<Notify>,
    shared: Arc<Shared>,
    registry: Rc<Registry>,
) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixListener::from_std(listener))
    {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(plugin = %plugin, "cannot listen: {err}");
            return;
        }
    };
    let take = |stream: tokio::net::UnixStream| {
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(err) => {
                tracing::debug!(plugin = %plugin, "cannot serve a connection: {err}");
                return;
            }
        };
        let Some(admission) = shared.admit(&plugin) else {
            return;
        };
        let incoming = Incoming {
            stream,
            plugin: plugin.clone(),
            scope: scope.clone(),
            pending: Vec::new(),
            admission,
        };
        tokio::task::spawn_local(serve(incoming, shared.clone(), registry.clone()));
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => take(stream),
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::error!(plugin = %plugin, "accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = stop.notified() => break,
        }
    }
    // The successor owns the socket's path now; what is still queued here reached this
    // daemon first and is served (and handed over) like any connection.
    while let Some(Ok((stream, _))) = std::future::poll_fn(|cx| match listener.poll_accept(cx) {
        Poll::Pending => Poll::Ready(None),
        ready => ready.map(Some),
    })
    .await
    {
        take(stream);
    }
    tracing::debug!(plugin = %plugin, "stopped accepting");
}

/// Serves one connection on this loop; hands it over or closes it at the end.
async fn serve(incoming: Incoming, shared: Arc<Shared>, registry: Rc<Registry>) {
    let Incoming {
        stream,
        plugin,
        scope,
        pending,
        mut admission,
    } = incoming;
    let stream = match stream
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(stream))
    {
        Ok(stream) => stream,
        Err(err) => {
            tracing::error!(plugin = %plugin, "cannot serve a connection: {err}");
            return;
        }
    };
    let slot = registry.add();
    let mut transport = LoopStream {
        stream,
        slot,
        registry: registry.clone(),
    };
    let cx = Context {
        daemon: &shared.daemon,
        scope: &scope,
        budget: &shared.budget,
        slot: admission.tracked.as_ref().map(|t| t.slot()),
        peek_requests: shared.supervised(),
    };
    let served = match shared.daemon.protocol() {
        Protocol::Msgpack => connection::serve(&mut transport, &cx, pending, false).await,
        Protocol::Protobuf => crate::protobuf::serve(&mut transport, &cx, pending).await,
    };
    registry.remove(slot);
    if let Served::HandOver { pending } = served {
        let mut slot = admission.tracked.take();
        if let Some(tracked) = &mut slot {
            tracked.handed_over();
        }
        match transport.stream.into_std() {
            Ok(stream) => shared.hand_over(Handed {
                stream,
                plugin,
                pending,
                slot,
            }),
            Err(err) => tracing::warn!(plugin = %plugin, "cannot hand a connection over: {err}"),
        }
    }
    drop(admission);
}

/// A connection on an event loop, whose reads the loop's sweeper can stop.
struct LoopStream {
    stream: tokio::net::UnixStream,
    slot: usize,
    registry: Rc<Registry>,
}

impl Transport for LoopStream {
    async fn read(&mut self, buf: &mut [u8], mid_message: bool) -> Read {
        std::future::poll_fn(|cx: &mut TaskContext<'_>| {
            if let Some(stop) = self.registry.take_stop(self.slot) {
                return Poll::Ready(Read::Stop(stop));
            }
            let mut read_buf = ReadBuf::new(buf);
            match tokio::io::AsyncRead::poll_read(Pin::new(&mut self.stream), cx, &mut read_buf) {
                Poll::Ready(Ok(())) => {
                    let n = read_buf.filled().len();
                    self.registry.active(self.slot);
                    Poll::Ready(if n == 0 { Read::Eof } else { Read::Data(n) })
                }
                Poll::Ready(Err(err)) => Poll::Ready(Read::Failed(err)),
                Poll::Pending => {
                    self.registry.waiting(self.slot, cx.waker(), mid_message);
                    Poll::Pending
                }
            }
        })
        .await
    }

    async fn peek(&mut self, buf: &mut [u8]) -> Read {
        std::future::poll_fn(|cx: &mut TaskContext<'_>| {
            loop {
                if let Some(stop) = self.registry.take_stop(self.slot) {
                    return Poll::Ready(Read::Stop(stop));
                }
                match self.stream.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(err)) => return Poll::Ready(Read::Failed(err)),
                    Poll::Pending => {
                        self.registry.waiting(self.slot, cx.waker(), false);
                        return Poll::Pending;
                    }
                }
                let peeked = self.stream.try_io(tokio::io::Interest::READABLE, || {
                    rustix::net::recv(
                        &self.stream,
                        &mut *buf,
                        rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
                    )
                    .map(|(n, _)| n)
                    .map_err(io::Error::from)
                });
                match peeked {
                    Ok(0) => return Poll::Ready(Read::Eof),
                    Ok(n) => {
                        self.registry.active(self.slot);
                        return Poll::Ready(Read::Data(n));
                    }
                    // Readiness was stale (now cleared): wait again.
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Poll::Ready(Read::Failed(err)),
                }
            }
        })
        .await
    }

    async fn consume(&mut self, n: usize) -> io::Result<()> {
        super::consume(n, |scratch| self.stream.try_read(scratch))
    }

    async fn write_some(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.stream.try_write(buf) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(0),
            written => written,
        }
    }

    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        // Most responses fit the socket buffer: try once without the future machinery.
        match self.stream.try_write(buf) {
            Ok(n) if n == buf.len() => Ok(()),
            Ok(n) => AsyncWriteExt::write_all(&mut self.stream, &buf[n..]).await,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                AsyncWriteExt::write_all(&mut self.stream, buf).await
            }
            Err(err) => Err(err),
        }
    }
}
