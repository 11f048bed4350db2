//! The sockets: one per plugin at `<kong prefix>/<plugin name>.socket`, as Kong expects,
//! each with an accept thread that hands connections to a thread of their own or to an
//! event loop.

use std::{
    collections::HashSet,
    io,
    os::unix::{
        fs::{FileTypeExt, PermissionsExt},
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::{
    connection,
    daemon::{Daemon, Scope},
    protobuf,
    settings::Protocol,
};

/// Why a socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The prefix directory cannot be created.
    #[error("cannot create the kong prefix {path}: {source}")]
    Prefix {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A live process already serves this socket.
    #[error("{path} is served by another running process; refusing to take it over")]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Something that is not a socket sits where the socket goes.
    #[error("{path} exists and is not a socket; refusing to remove it")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// Binding, or removing a stale socket, or setting its access, failed.
    #[error("cannot set up {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// Who may connect to the sockets: the daemon's user, and optionally one group.
#[derive(Debug, Clone, Copy, Default)]
pub struct SocketAccess {
    /// A group whose members may connect too (mode 0660 instead of 0600).
    pub group: Option<u32>,
}

/// A bound socket of one plugin.
pub struct PluginSocket {
    /// The plugin it is named after.
    pub plugin: String,
    /// Its path.
    pub path: PathBuf,
    /// What its connections may use.
    pub scope: Scope,
    listener: UnixListener,
}

/// The socket path Kong uses by default for `plugin`.
pub fn socket_path(prefix: &Path, plugin: &str) -> PathBuf {
    prefix.join(format!("{plugin}.socket"))
}

/// Binds `<prefix>/<plugin>.socket` for connections limited to `scope`, replacing a stale
/// socket file left by a dead process.
pub fn bind(
    prefix: &Path,
    plugin: &str,
    scope: Scope,
    access: SocketAccess,
) -> Result<PluginSocket, SocketError> {
    std::fs::create_dir_all(prefix).map_err(|source| SocketError::Prefix {
        path: prefix.to_owned(),
        source,
    })?;
    let path = socket_path(prefix, plugin);
    let bind_error = |source| SocketError::Bind {
        path: path.clone(),
        source,
    };
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                return Err(SocketError::InUse { path });
            }
            tracing::info!("replacing stale socket {}", path.display());
            std::fs::remove_file(&path).map_err(bind_error)?;
        }
        Ok(_) => return Err(SocketError::NotASocket { path }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(bind_error(err)),
    }
    let listener = UnixListener::bind(&path).map_err(bind_error)?;
    let mode = match access.group {
        Some(gid) => {
            std::os::unix::fs::chown(&path, None, Some(gid)).map_err(bind_error)?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(bind_error)?;
    Ok(PluginSocket {
        plugin: plugin.to_owned(),
        path,
        scope,
        listener,
    })
}

/// How connections are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Threading {
    /// A thread per connection (the default). A plugin handler that blocks holds up only
    /// the request on its connection; each message costs a thread wake-up.
    #[default]
    PerConnection,
    /// Connections are dealt round-robin to this many single-threaded event loops. A loop
    /// wakes once for all its ready connections, which costs less CPU under load, but a
    /// handler that blocks stalls every connection of its loop: only for plugins whose
    /// handlers never block (they await their I/O).
    EventLoops(usize),
}

/// Accepts connections on the plugin sockets and serves them as [`Threading`] says.
pub struct Listener {
    daemon: Arc<Daemon>,
    connections: Arc<AtomicUsize>,
    listening: Mutex<HashSet<String>>,
    loops: Vec<tokio::sync::mpsc::UnboundedSender<(UnixStream, Scope)>>,
    next_loop: AtomicUsize,
}

impl Listener {
    /// A server for `daemon`, listening nowhere yet.
    pub fn new(daemon: Arc<Daemon>, threading: Threading) -> io::Result<Arc<Listener>> {
        let connections = Arc::new(AtomicUsize::new(0));
        let loops = match threading {
            Threading::PerConnection => Vec::new(),
            Threading::EventLoops(n) => (0..n.max(1))
                .map(|i| start_event_loop(i, daemon.clone(), connections.clone()))
                .collect::<io::Result<_>>()?,
        };
        Ok(Arc::new(Listener {
            daemon,
            connections,
            listening: Mutex::new(HashSet::new()),
            loops,
            next_loop: AtomicUsize::new(0),
        }))
    }

    /// The daemon served.
    pub fn daemon(&self) -> &Arc<Daemon> {
        &self.daemon
    }

    /// Whether a socket of `plugin` is served.
    pub fn is_listening(&self, plugin: &str) -> bool {
        self.listening
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(plugin)
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Starts accepting connections on `socket`.
    pub fn listen(self: &Arc<Self>, socket: PluginSocket) -> io::Result<()> {
        tracing::info!(plugin = %socket.plugin, "listening on {}", socket.path.display());
        self.listening
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(socket.plugin.clone());
        let server = self.clone();
        std::thread::Builder::new()
            .name(format!("accept-{}", socket.plugin))
            .spawn(move || server.accept_loop(socket))
            .map(|_| ())
    }

    fn accept_loop(&self, socket: PluginSocket) {
        let max = self.daemon.limits().max_connections;
        loop {
            let stream = match socket.listener.accept() {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::error!(plugin = %socket.plugin, "accept failed: {err}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if self.connections.fetch_add(1, Ordering::Relaxed) >= max {
                self.connections.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(
                    plugin = %socket.plugin,
                    "refusing a connection: {max} connections open (--max-connections)"
                );
                continue;
            }
            if let Err(err) = self.hand_over(stream, socket.scope.clone()) {
                self.connections.fetch_sub(1, Ordering::Relaxed);
                tracing::error!(plugin = %socket.plugin, "cannot serve a connection: {err}");
            }
        }
    }

    /// Starts serving an accepted connection: on a new thread, or on an event loop.
    fn hand_over(&self, stream: UnixStream, scope: Scope) -> io::Result<()> {
        if self.loops.is_empty() {
            let daemon = self.daemon.clone();
            let connections = self.connections.clone();
            return std::thread::Builder::new()
                .name("kong-connection".into())
                .spawn(move || {
                    match daemon.protocol() {
                        Protocol::Msgpack => connection::serve_blocking(stream, &daemon, &scope),
                        Protocol::Protobuf => protobuf::serve_blocking(stream, &daemon, &scope),
                    }
                    connections.fetch_sub(1, Ordering::Relaxed);
                })
                .map(|_| ());
        }
        stream.set_nonblocking(true)?;
        let i = self.next_loop.fetch_add(1, Ordering::Relaxed) % self.loops.len();
        self.loops[i]
            .send((stream, scope))
            .map_err(|_| io::Error::other("the event loop has stopped"))
    }
}

/// A single-threaded event loop serving the connections sent to it.
fn start_event_loop(
    index: usize,
    daemon: Arc<Daemon>,
    connections: Arc<AtomicUsize>,
) -> io::Result<tokio::sync::mpsc::UnboundedSender<(UnixStream, Scope)>> {
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<(UnixStream, Scope)>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    std::thread::Builder::new()
        .name(format!("event-loop-{index}"))
        .spawn(move || {
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                while let Some((stream, scope)) = receiver.recv().await {
                    let (daemon, connections) = (daemon.clone(), connections.clone());
                    tokio::task::spawn_local(async move {
                        match tokio::net::UnixStream::from_std(stream) {
                            Ok(stream) => match daemon.protocol() {
                                Protocol::Msgpack => {
                                    connection::serve(stream, &daemon, &scope).await
                                }
                                Protocol::Protobuf => {
                                    protobuf::serve(stream, &daemon, &scope).await
                                }
                            },
                            Err(err) => tracing::error!("cannot serve a connection: {err}"),
                        }
                        connections.fetch_sub(1, Ordering::Relaxed);
                    });
                }
            });
        })?;
    Ok(sender)
}
