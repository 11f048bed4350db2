//! The sockets: one per plugin at `<kong prefix>/<plugin name>.socket`, as Kong expects.

use std::{
    io,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::{net::UnixListener, task::JoinSet};

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

/// Accepts connections on every socket until `shutdown` completes.
pub async fn serve(
    daemon: Arc<Daemon>,
    sockets: Vec<PluginSocket>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut acceptors = JoinSet::new();
    for socket in sockets {
        let daemon = daemon.clone();
        tracing::info!(
            plugin = %socket.plugin,
            "listening on {}",
            socket.path.display()
        );
        acceptors.spawn(accept_loop(daemon, socket, limits));
    }
    shutdown.await;
    acceptors.shutdown().await;
}

async fn accept_loop(daemon: Arc<Daemon>, socket: PluginSocket, limits: Limits) {
    loop {
        match socket.listener.accept().await {
            Ok((stream, _)) => {
                let daemon = daemon.clone();
                tokio::spawn(async move { connection::serve(stream, &daemon, limits).await });
            }
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::error!(plugin = %socket.plugin, "accept failed: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
