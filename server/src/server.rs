//! The sockets: one per plugin at `<kong prefix>/<plugin name>.socket`, as Kong expects,
//! each with an accept thread that starts a thread per connection.

use std::{
    collections::HashSet,
    ffi::CString,
    io,
    os::unix::{
        ffi::OsStrExt,
        fs::{FileTypeExt, PermissionsExt},
        net::UnixListener,
    },
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::{connection, state::Daemon};

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
    listener: UnixListener,
}

/// The socket path Kong uses by default for `plugin`.
pub fn socket_path(prefix: &Path, plugin: &str) -> PathBuf {
    prefix.join(format!("{plugin}.socket"))
}

/// Binds `<prefix>/<plugin>.socket`, replacing a stale socket file left by a dead process.
pub fn bind(
    prefix: &Path,
    plugin: &str,
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
            let c_path = CString::new(path.as_os_str().as_bytes())
                .map_err(|e| bind_error(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
            // SAFETY: chown(2) with a valid C string; -1 keeps the owner.
            if unsafe { libc::chown(c_path.as_ptr(), u32::MAX, gid) } != 0 {
                return Err(bind_error(io::Error::last_os_error()));
            }
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(bind_error)?;
    Ok(PluginSocket {
        plugin: plugin.to_owned(),
        path,
        listener,
    })
}

/// Accepts connections for the daemon and runs a thread per connection.
pub struct Server {
    daemon: Arc<Daemon>,
    connections: Arc<AtomicUsize>,
    listening: Mutex<HashSet<String>>,
}

impl Server {
    /// A server for `daemon`, listening nowhere yet.
    pub fn new(daemon: Arc<Daemon>) -> Arc<Server> {
        Arc::new(Server {
            daemon,
            connections: Arc::new(AtomicUsize::new(0)),
            listening: Mutex::new(HashSet::new()),
        })
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

    /// The daemon's metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.daemon.metrics
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
        let max = self.daemon.limits.max_connections;
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
            let daemon = self.daemon.clone();
            let connections = self.connections.clone();
            let spawned = std::thread::Builder::new()
                .name("kong-connection".into())
                .spawn(move || {
                    connection::serve(stream, &daemon);
                    connections.fetch_sub(1, Ordering::Relaxed);
                });
            if let Err(err) = spawned {
                self.connections.fetch_sub(1, Ordering::Relaxed);
                tracing::error!(plugin = %socket.plugin, "cannot start a connection thread: {err}");
            }
        }
    }
}
