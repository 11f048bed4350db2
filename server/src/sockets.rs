//! The sockets Kong connects to: `<kong prefix>/<plugin name>.socket` for each plugin, as
//! Kong expects, and `<kong prefix>/kong-rust-pluginserver.socket` for every plugin (Kong
//! 3.0-3.8 set up with one pluginserver entry for all plugins).
//!
//! A socket is bound at a temporary name and renamed onto its path, so the path always
//! leads to a listening socket: when a successor daemon takes over from a running one,
//! Kong's next connect reaches the successor, and no connect in between is refused.
//! Whatever else sits at a path is left alone, and only that plugin goes unserved: a live
//! socket of another process (another daemon serving the same plugin name from another
//! plugins directory), a file, a directory, a link.

use std::{
    io,
    os::unix::{
        fs::{FileTypeExt, PermissionsExt},
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
};

use crate::daemon::Scope;

/// The name under which the socket of every plugin is handed over.
pub const EVERY_PLUGIN: &str = "*";

/// The file name (without `.socket`) of the socket of every plugin.
pub const SHARED_SOCKET: &str = "kong-rust-pluginserver";

/// The longest path a unix socket can have (`sun_path` holds 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Why a socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The path is longer than a unix socket address can hold.
    #[error(
        "{path}: a socket path can be at most {MAX_SOCKET_PATH} bytes, this one is {len}; use a shorter --kong-prefix"
    )]
    PathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// Another live process serves this path.
    #[error(
        "{path} is served by another running process{}; refusing to take it over (another daemon serving a plugin of the same name from another plugins directory?)",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    InUse {
        /// The socket path.
        path: PathBuf,
        /// The process listening on it, if the kernel says.
        pid: Option<u32>,
    },
    /// Something that is not a socket sits where the socket goes.
    #[error("{path} exists and is not a socket; refusing to remove it")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// Binding, renaming or setting its access failed.
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

/// Which live socket at a path may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// None: only a stale socket (no process listens) is replaced.
    StaleOnly,
    /// This daemon's predecessor's (it is handing over to this one).
    Predecessor(u32),
}

/// A bound socket.
pub struct PluginSocket {
    /// The plugin it is named after ([`EVERY_PLUGIN`] for the socket of every plugin).
    pub plugin: String,
    /// Its path.
    pub path: PathBuf,
    /// What its connections may use.
    pub scope: Scope,
    /// The listening socket.
    pub listener: UnixListener,
}

/// The socket path Kong uses by default for `plugin` (Kong 3.9+: in its prefix).
pub fn socket_path(prefix: &Path, plugin: &str) -> PathBuf {
    prefix.join(format!("{plugin}.socket"))
}

/// Binds `<prefix>/<name>.socket` for connections limited to `scope`.
pub fn bind(
    prefix: &Path,
    name: &str,
    scope: Scope,
    access: SocketAccess,
    replace: Replace,
) -> Result<PluginSocket, SocketError> {
    let path = socket_path(prefix, name);
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(SocketError::PathTooLong { path, len });
    }
    let bind_error = |source| SocketError::Bind {
        path: path.clone(),
        source,
    };
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(&path) {
            Ok(stream) => {
                let pid = listener_pid(&stream);
                let ours = matches!(replace, Replace::Predecessor(p) if Some(p) == pid);
                if !ours {
                    return Err(SocketError::InUse { path, pid });
                }
            }
            Err(_) => tracing::info!("replacing stale socket {}", path.display()),
        },
        Ok(_) => return Err(SocketError::NotASocket { path }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(bind_error(err)),
    }
    // Bound aside, made accessible, then renamed onto the path in one step.
    let temporary = prefix.join(format!(".{name}.socket.{}", std::process::id()));
    if temporary.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(SocketError::PathTooLong { path, len });
    }
    let _ = std::fs::remove_file(&temporary);
    let listener = UnixListener::bind(&temporary).map_err(bind_error)?;
    let mode = match access.group {
        Some(gid) => {
            std::os::unix::fs::chown(&temporary, None, Some(gid)).map_err(bind_error)?;
            0o660
        }
        None => 0o600,
    };
    let placed = std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode))
        .and_then(|()| std::fs::rename(&temporary, &path));
    if let Err(err) = placed {
        let _ = std::fs::remove_file(&temporary);
        return Err(bind_error(err));
    }
    Ok(PluginSocket {
        plugin: name.to_owned(),
        path,
        scope,
        listener,
    })
}

/// The pid of the process listening on the other end of `stream`, as the kernel recorded
/// it when that socket started listening.
fn listener_pid(stream: &UnixStream) -> Option<u32> {
    let credentials = rustix::net::sockopt::socket_peercred(stream).ok()?;
    Some(credentials.pid.as_raw_nonzero().get() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope::All
    }

    #[test]
    fn stale_sockets_are_replaced_and_live_ones_kept_unless_a_predecessor_hands_over() {
        let dir = tempfile::tempdir().unwrap();
        let first = bind(
            dir.path(),
            "p",
            scope(),
            SocketAccess::default(),
            Replace::StaleOnly,
        )
        .unwrap();
        let mode = std::fs::metadata(&first.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Live, ours: only a successor of this very process may replace it.
        let err = bind(
            dir.path(),
            "p",
            scope(),
            SocketAccess::default(),
            Replace::StaleOnly,
        )
        .err()
        .unwrap();
        assert!(
            matches!(err, SocketError::InUse { pid: Some(_), .. }),
            "{err}"
        );
        let second = bind(
            dir.path(),
            "p",
            scope(),
            SocketAccess::default(),
            Replace::Predecessor(std::process::id()),
        )
        .unwrap();
        // The path leads to the new socket; the old one no longer has a path.
        drop(first);
        UnixStream::connect(&second.path).unwrap();
        drop(second);
        // Stale (nobody listens): replaced.
        bind(
            dir.path(),
            "p",
            scope(),
            SocketAccess::default(),
            Replace::StaleOnly,
        )
        .unwrap();
    }

    #[test]
    fn files_and_long_paths_are_refused_for_that_plugin() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.socket"), b"x").unwrap();
        let err = bind(
            dir.path(),
            "f",
            scope(),
            SocketAccess::default(),
            Replace::StaleOnly,
        )
        .err()
        .unwrap();
        assert!(matches!(err, SocketError::NotASocket { .. }), "{err}");
        let long = "x".repeat(120);
        let err = bind(
            dir.path(),
            &long,
            scope(),
            SocketAccess::default(),
            Replace::StaleOnly,
        )
        .err()
        .unwrap();
        assert!(matches!(err, SocketError::PathTooLong { .. }), "{err}");
    }
}
