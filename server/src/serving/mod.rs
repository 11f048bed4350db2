//! Serving connections: on whose thread each connection runs, the limits on connections and
//! buffered bytes, and handing connections to a successor daemon.
//!
//! Two threading modes ([`Threading`]):
//!
//! - **plugin loops** (the default): every plugin has its own event loop(s), and its
//!   socket's connections are served there. A loop wakes once for all its ready
//!   connections: the cheapest mode per message. A handler that blocks stalls only its own
//!   plugin's loop, and the watchdog names it in the log and the metrics.
//! - **a thread per connection**: for plugins whose handlers block. Each message costs a
//!   thread wake-up.

mod loops;
mod registry;
mod threads;
pub mod tracking;
mod watchdog;

use std::{
    collections::HashMap,
    io,
    os::unix::net::UnixStream,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc,
    },
    time::Duration,
};

use crate::connection::budget::BufferBudget;
use loops::{Command, EventLoop, Incoming};
use tokio::sync::Notify;
use tracking::Tracked;

use crate::{
    board::Board,
    daemon::{Daemon, Scope},
    sockets::PluginSocket,
    waitable::WaitableCount,
};

/// On whose thread connections are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threading {
    /// Each plugin's connections on that plugin's own event loops (this many per plugin).
    PluginLoops {
        /// Loops per plugin (at least 1).
        per_plugin: usize,
    },
    /// A thread per connection.
    ThreadPerConnection,
}

impl Default for Threading {
    fn default() -> Threading {
        Threading::PluginLoops { per_plugin: 1 }
    }
}

/// How connections are served and bounded.
#[derive(Debug, Clone)]
pub struct ServingOptions {
    /// The threading mode.
    pub threading: Threading,
    /// A connection without a request for this long is closed. Kong closes its pooled
    /// connections after 60 s idle (`lua_socket_keepalive_timeout`), so this is longer: the
    /// daemon never closes a connection Kong may be about to use.
    pub idle_timeout: Duration,
    /// A message that started arriving must be complete within this long.
    pub message_timeout: Duration,
    /// Most bytes all connections together may buffer beyond their first buffer.
    pub max_buffered: usize,
    /// Most connections at once, over all sockets.
    pub max_connections: usize,
    /// Most connections at once on one plugin's socket: a flood on one socket cannot take
    /// every other plugin's connections.
    pub max_connections_per_plugin: usize,
    /// A plugin handler that holds its event loop longer than this is named in the log.
    pub slow_handler: Duration,
    /// A request handled longer than this is named as stuck; `None`: never.
    pub stuck_timeout: Option<Duration>,
    /// Where connections record what they do: the supervisor's shared board (process
    /// isolation); `None`: a board of this process, with a slot per allowed connection.
    pub board: Option<Arc<Board>>,
}

impl Default for ServingOptions {
    fn default() -> ServingOptions {
        ServingOptions {
            threading: Threading::default(),
            idle_timeout: Duration::from_secs(300),
            message_timeout: Duration::from_secs(30),
            max_buffered: 256 << 20,
            max_connections: 16_384,
            max_connections_per_plugin: 8_192,
            slow_handler: Duration::from_millis(100),
            stuck_timeout: Some(Duration::from_secs(30)),
            board: None,
        }
    }
}

/// A connection going to the successor daemon.
pub struct Handed {
    /// The connection.
    pub stream: UnixStream,
    /// The plugin whose socket it came on (`*` for the socket of every plugin).
    pub plugin: Arc<str>,
    /// Bytes read from it and not answered.
    pub pending: Vec<u8>,
    /// Its board slot, released when this is dropped: only once the connection has gone
    /// on, so a supervisor holding a copy of it never lets go before it has it back.
    pub slot: Option<Tracked>,
}

/// What every connection's task shares.
pub(crate) struct Shared {
    daemon: Arc<Daemon>,
    budget: BufferBudget,
    board: Arc<Board>,
    options: ServingOptions,
    connections: WaitableCount,
    per_plugin: Mutex<HashMap<Arc<str>, Arc<AtomicUsize>>>,
    successor: Mutex<Option<mpsc::Sender<Handed>>>,
    handing_over_idle: AtomicBool,
}

/// A connection's place in the limits (and its slot on the board), given back when
/// dropped.
pub(crate) struct Admission {
    total: Arc<Shared>,
    plugin: Arc<AtomicUsize>,
    pub(crate) tracked: Option<Tracked>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.plugin.fetch_sub(1, Ordering::Relaxed);
        self.total.connections.remove();
    }
}

/// Takes `n` bytes already in a socket (a peek saw them) with `read`, dropping them.
fn consume(mut n: usize, mut read: impl FnMut(&mut [u8]) -> io::Result<usize>) -> io::Result<()> {
    let mut scratch = [0u8; 4096];
    while n > 0 {
        let want = n.min(scratch.len());
        match read(&mut scratch[..want]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(got) => n -= got,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

impl Shared {
    /// Whether a supervisor reads this process's board (process isolation): then requests
    /// are peeked at and recorded before they are taken from their sockets.
    pub(crate) fn supervised(&self) -> bool {
        self.options.board.is_some()
    }

    /// A place for a new connection on `plugin`'s socket, if the limits allow it.
    fn admit(self: &Arc<Self>, plugin: &Arc<str>) -> Option<Admission> {
        let counter = self
            .per_plugin
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(plugin.clone())
            .or_default()
            .clone();
        let total = self.connections.get();
        self.connections.add();
        let mine = counter.fetch_add(1, Ordering::Relaxed);
        let admission = Admission {
            total: self.clone(),
            plugin: counter,
            tracked: None,
        };
        if total >= self.options.max_connections {
            tracing::warn!(
                plugin = %plugin,
                "refusing a connection: {} connections open (--max-connections)",
                self.options.max_connections
            );
            return None;
        }
        if mine >= self.options.max_connections_per_plugin {
            tracing::warn!(
                plugin = %plugin,
                "refusing a connection: {} connections open on this plugin's socket (--max-connections-per-plugin)",
                self.options.max_connections_per_plugin
            );
            return None;
        }
        let mut admission = admission;
        admission.tracked = Tracked::local(&self.board);
        Some(admission)
    }

    /// The idle and message deadlines, as durations.
    fn deadlines(&self) -> (Duration, Duration) {
        (self.options.idle_timeout, self.options.message_timeout)
    }

    /// The idle and message deadlines in sweeps (one a second).
    fn sweep_deadlines(&self) -> (u64, u64) {
        let (idle, message) = self.deadlines();
        (idle.as_secs().max(1), message.as_secs().max(1))
    }

    /// Sends `handed` to the successor; without one, closes it.
    fn hand_over(&self, handed: Handed) {
        let successor = self.successor.lock().unwrap_or_else(|e| e.into_inner());
        match successor.as_ref() {
            Some(sink) => {
                if let Err(mpsc::SendError(handed)) = sink.send(handed) {
                    tracing::warn!(plugin = %handed.plugin, "the successor is gone; closing a connection");
                }
            }
            None => tracing::warn!(plugin = %handed.plugin, "no successor; closing a connection"),
        }
    }

    fn handing_over_idle(&self) -> bool {
        self.handing_over_idle.load(Ordering::Relaxed)
    }
}

/// How the sockets of one plugin are stopped.
enum Accepting {
    Loops(Arc<Notify>),
    Thread(Arc<AtomicBool>),
}

/// The daemon's connections: accepts them on the plugin sockets and serves them.
pub struct Serving {
    shared: Arc<Shared>,
    /// Each plugin's loops (plugin loop mode), by plugin name; `*` serves the socket of
    /// every plugin.
    loops: Mutex<HashMap<Arc<str>, Arc<Vec<EventLoop>>>>,
    next_loop: AtomicUsize,
    accepting: Mutex<HashMap<String, Accepting>>,
}

impl Serving {
    /// Serving for `daemon`, listening nowhere yet.
    pub fn new(daemon: Arc<Daemon>, options: ServingOptions) -> io::Result<Arc<Serving>> {
        let board = options.board.clone().unwrap_or_else(|| {
            Arc::new(Board::in_process(options.max_connections.min(1 << 20) + 1))
        });
        watchdog::start(
            daemon.clone(),
            board.clone(),
            options.slow_handler,
            options.stuck_timeout,
        )?;
        Ok(Arc::new(Serving {
            shared: Arc::new(Shared {
                board,
                budget: BufferBudget::new(options.max_buffered),
                daemon,
                options,
                connections: WaitableCount::default(),
                per_plugin: Mutex::new(HashMap::new()),
                successor: Mutex::new(None),
                handing_over_idle: AtomicBool::new(false),
            }),
            loops: Mutex::new(HashMap::new()),
            next_loop: AtomicUsize::new(0),
            accepting: Mutex::new(HashMap::new()),
        }))
    }

    /// The daemon served.
    pub fn daemon(&self) -> &Arc<Daemon> {
        &self.shared.daemon
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.shared.connections.get()
    }

    /// Waits until no connection is open, or `deadline`; returns how many are left.
    pub fn wait_for_connections(&self, deadline: std::time::Instant) -> usize {
        self.shared.connections.wait_idle(deadline)
    }

    /// Whether `plugin`'s socket is served.
    pub fn is_listening(&self, plugin: &str) -> bool {
        self.accepting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(plugin)
    }

    /// The loops of `plugin`, started on first use.
    fn loops_of(&self, plugin: &Arc<str>) -> io::Result<Arc<Vec<EventLoop>>> {
        let mut loops = self.loops.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = loops.get(plugin) {
            return Ok(existing.clone());
        }
        let per_plugin = match self.shared.options.threading {
            Threading::PluginLoops { per_plugin } => per_plugin.max(1),
            Threading::ThreadPerConnection => 1,
        };
        let started = (0..per_plugin)
            .map(|i| EventLoop::start(format!("loop-{plugin}-{i}"), plugin, self.shared.clone()))
            .collect::<io::Result<Vec<_>>>()?;
        let started = Arc::new(started);
        loops.insert(plugin.clone(), started.clone());
        Ok(started)
    }

    /// One of `plugin`'s loops, in turn.
    fn some_loop_of(&self, plugin: &Arc<str>) -> io::Result<(Arc<Vec<EventLoop>>, usize)> {
        let loops = self.loops_of(plugin)?;
        let i = self.next_loop.fetch_add(1, Ordering::Relaxed) % loops.len();
        Ok((loops, i))
    }

    /// Starts accepting connections on `socket`.
    pub fn listen(&self, socket: PluginSocket) -> io::Result<()> {
        tracing::info!(plugin = %socket.plugin, "listening on {}", socket.path.display());
        let plugin: Arc<str> = Arc::from(socket.plugin.as_str());
        let accepting = match self.shared.options.threading {
            Threading::PluginLoops { .. } => {
                let stop = Arc::new(Notify::new());
                let loops = self.loops_of(&plugin)?;
                for event_loop in loops.iter() {
                    let listener = socket.listener.try_clone()?;
                    event_loop.send(Command::Listen {
                        listener,
                        plugin: plugin.clone(),
                        scope: socket.scope.clone(),
                        stop: stop.clone(),
                    });
                }
                Accepting::Loops(stop)
            }
            Threading::ThreadPerConnection => {
                let stop = Arc::new(AtomicBool::new(false));
                threads::listen(
                    socket.listener,
                    plugin,
                    socket.scope,
                    stop.clone(),
                    self.shared.clone(),
                )?;
                Accepting::Thread(stop)
            }
        };
        self.accepting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(socket.plugin, accepting);
        Ok(())
    }

    /// Serves a connection a predecessor handed over (`plugin` as it named the socket),
    /// with the bytes it had read.
    pub fn adopt(&self, stream: UnixStream, plugin: &str, pending: Vec<u8>) {
        self.adopt_tracked(stream, plugin, pending, None);
    }

    /// Like [`adopt`](Self::adopt), recording what the connection does in `tracked` (a
    /// slot the supervisor assigned) instead of a slot of this process.
    pub fn adopt_tracked(
        &self,
        stream: UnixStream,
        plugin: &str,
        pending: Vec<u8>,
        tracked: Option<Tracked>,
    ) {
        let scope = if plugin == crate::sockets::EVERY_PLUGIN {
            Scope::All
        } else {
            match self.shared.daemon.scope_of(plugin) {
                Some(scope) => scope,
                None => {
                    drop(tracked);
                    tracing::warn!(
                        plugin,
                        "a handed-over connection for a plugin this daemon does not serve; closing it"
                    );
                    return;
                }
            }
        };
        let plugin: Arc<str> = Arc::from(plugin);
        let Some(mut admission) = self.shared.admit(&plugin) else {
            return;
        };
        if tracked.is_some() {
            admission.tracked = tracked;
        }
        match self.shared.options.threading {
            Threading::PluginLoops { .. } => match self.some_loop_of(&plugin) {
                Ok((loops, i)) => {
                    loops[i].send(Command::Serve(Incoming {
                        stream,
                        plugin,
                        scope,
                        pending,
                        admission,
                    }));
                }
                Err(err) => tracing::error!(plugin = %plugin, "cannot serve a connection: {err}"),
            },
            Threading::ThreadPerConnection => {
                threads::spawn(
                    stream,
                    plugin,
                    scope,
                    pending,
                    admission,
                    self.shared.clone(),
                );
            }
        }
    }

    /// Stops accepting on the sockets of `plugins` (a successor owns their paths now);
    /// connections already queued are still served.
    pub fn stop_accepting(&self, plugins: &[String]) {
        let mut accepting = self.accepting.lock().unwrap_or_else(|e| e.into_inner());
        for plugin in plugins {
            match accepting.remove(plugin.as_str()) {
                Some(Accepting::Loops(stop)) => stop.notify_waiters(),
                Some(Accepting::Thread(stop)) => stop.store(true, Ordering::Relaxed),
                None => {}
            }
        }
    }

    /// From now on, connections go to `successor` at their next request this daemon does
    /// not answer itself (the Steps of its own events).
    pub fn hand_over_to(&self, successor: mpsc::Sender<Handed>) {
        *self
            .shared
            .successor
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(successor);
        self.shared.daemon.begin_handover();
    }

    /// Ends the hand-over: connections that still come to an end here are closed, and the
    /// thread sending them to the successor finishes.
    pub fn end_hand_over(&self) {
        self.shared
            .successor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Hands every connection over now, idle ones included (the daemon has no event left,
    /// or its drain time is up).
    pub fn hand_over_idle(&self) {
        self.shared.handing_over_idle.store(true, Ordering::Relaxed);
        let loops = self.loops.lock().unwrap_or_else(|e| e.into_inner());
        for event_loop in loops.values().flat_map(|l| l.iter()) {
            event_loop.send(Command::HandOver);
        }
    }
}
