//! The sockets: one per plugin at `<kong prefix>/<plugin name>.socket`, as Kong expects.

use std::{
    io,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::{
    net::{UnixListener, UnixStream},
    task::JoinSet,
};

use crate::{
    connection::{self, Limits},
    state::Daemon,
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
    /// Binding, or removing a stale socket, failed.
    #[error("cannot bind {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
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

/// Binds `<prefix>/<name>.socket` for every name, replacing stale socket files left by a
/// dead process. Sockets are readable and writable by the owner only.
pub fn bind_all<'a>(
    prefix: &Path,
    plugins: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<PluginSocket>, SocketError> {
    std::fs::create_dir_all(prefix).map_err(|source| SocketError::Prefix {
        path: prefix.to_owned(),
        source,
    })?;
    plugins
        .into_iter()
        .map(|plugin| {
            let path = socket_path(prefix, plugin);
            let listener = bind(&path)?;
            Ok(PluginSocket {
                plugin: plugin.to_owned(),
                path,
                listener,
            })
        })
        .collect()
}

fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    let bind_error = |source| SocketError::Bind {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse {
                    path: path.to_owned(),
                });
            }
            tracing::info!("replacing stale socket {}", path.display());
            std::fs::remove_file(path).map_err(bind_error)?;
        }
        Ok(_) => {
            return Err(SocketError::NotASocket {
                path: path.to_owned(),
            });
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(bind_error(err)),
    }
    let listener = UnixListener::bind(path).map_err(bind_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_error)?;
    Ok(listener)
}

/// Environment variable: how many threads serve connections (default: one per two CPUs).
pub const THREADS_ENV: &str = "KONG_RUST_PLUGINSERVER_THREADS";

/// How many threads serve connections: `KONG_RUST_PLUGINSERVER_THREADS`, else one per two
/// CPUs (at least one). The daemon shares the node with nginx's workers, one per CPU; one
/// loop serves tens of thousands of events per second, and a second loop on a small machine
/// costs more CPU per round trip (less batching, more context switches) than it gains.
pub fn connection_threads() -> usize {
    std::env::var(THREADS_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get().div_ceil(2)))
}

/// Connections are spread over single-threaded event loops, one per thread, and each stays
/// on its loop for life: a round trip is read, dispatched, polled and answered on one thread
/// without waking another (a work-stealing runtime wakes a second thread for much of the
/// traffic, which costs more CPU than the round trip itself). Kong keeps its connections
/// pooled and long-lived, so dealing them out round-robin balances the load. Shard 0 is the
/// caller's own loop (the one that accepts); the others run on threads started here.
struct Shards {
    others: Vec<tokio::sync::mpsc::UnboundedSender<std::os::unix::net::UnixStream>>,
    next: std::sync::atomic::AtomicUsize,
    daemon: Arc<Daemon>,
    limits: Limits,
}

impl Shards {
    fn start(threads: usize, daemon: Arc<Daemon>, limits: Limits) -> Shards {
        let mut others = Vec::new();
        for index in 1..threads {
            let (tx, mut rx) =
                tokio::sync::mpsc::unbounded_channel::<std::os::unix::net::UnixStream>();
            let daemon = daemon.clone();
            let started = std::thread::Builder::new()
                .name(format!("kong-rust-pluginserver-{index}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(err) => {
                            tracing::error!("connection thread {index}: no runtime: {err}");
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        while let Some(stream) = rx.recv().await {
                            match UnixStream::from_std(stream) {
                                Ok(stream) => {
                                    let daemon = daemon.clone();
                                    tokio::spawn(async move {
                                        connection::serve(stream, &daemon, limits).await
                                    });
                                }
                                Err(err) => tracing::error!("cannot serve a connection: {err}"),
                            }
                        }
                    });
                });
            match started {
                Ok(_) => others.push(tx),
                Err(err) => tracing::error!("cannot start connection thread {index}: {err}"),
            }
        }
        Shards {
            others,
            next: std::sync::atomic::AtomicUsize::new(0),
            daemon,
            limits,
        }
    }

    /// Serves `stream` on the next loop in turn.
    fn serve(&self, stream: UnixStream) {
        let turn =
            self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % (self.others.len() + 1);
        let stream = match turn.checked_sub(1).map(|i| &self.others[i]) {
            None => stream,
            Some(other) => match stream.into_std() {
                Ok(std_stream) => match other.send(std_stream) {
                    Ok(()) => return,
                    // That thread is gone; serve it here.
                    Err(tokio::sync::mpsc::error::SendError(std_stream)) => {
                        match UnixStream::from_std(std_stream) {
                            Ok(stream) => stream,
                            Err(err) => {
                                tracing::error!("cannot serve a connection: {err}");
                                return;
                            }
                        }
                    }
                },
                Err(err) => {
                    tracing::error!("cannot hand a connection over: {err}");
                    return;
                }
            },
        };
        let (daemon, limits) = (self.daemon.clone(), self.limits);
        tokio::spawn(async move { connection::serve(stream, &daemon, limits).await });
    }
}

/// Accepts connections on every socket until `shutdown` completes, and serves them on
/// [`connection_threads`] single-threaded loops (the caller's, which must be a
/// current-thread runtime's or any other, and as many more threads as needed).
pub async fn serve(
    daemon: Arc<Daemon>,
    sockets: Vec<PluginSocket>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let shards = Arc::new(Shards::start(connection_threads(), daemon, limits));
    let mut acceptors = JoinSet::new();
    for socket in sockets {
        tracing::info!(
            plugin = %socket.plugin,
            "listening on {}",
            socket.path.display()
        );
        acceptors.spawn(accept_loop(shards.clone(), socket));
    }
    shutdown.await;
    acceptors.shutdown().await;
}

async fn accept_loop(shards: Arc<Shards>, socket: PluginSocket) {
    loop {
        match socket.listener.accept().await {
            Ok((stream, _)) => shards.serve(stream),
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::error!(plugin = %socket.plugin, "accept failed: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
