//! One serving daemon per plugins directory and Kong prefix.
//!
//! Kong 3.9+ reads one plugin per pluginserver entry, so a node with N Rust plugins has N
//! entries, and Kong may start this daemon N times. The first process takes an exclusive
//! lock on a file in the prefix and serves every plugin; the others find the lock taken and
//! stand by without touching the sockets (exiting would make Kong respawn them every
//! second). The kernel drops the lock the moment the serving process dies, however it dies,
//! and a standby waiting for it in the kernel takes over.
//!
//! Anyone who can open the lock file can hold its lock and keep every daemon standing by,
//! and a daemon running as root writes its pid into it. So the file is created `0600`, never
//! through a symbolic link, and refused unless it is a regular file of the daemon's user with
//! no other name (a hard link would make the pid overwrite another file).

use std::{
    fs::{File, OpenOptions, TryLockError},
    io::{self, Read, Seek, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

/// The lock file for serving `plugins_dir` on `prefix`. Its name carries a stable hash of
/// the plugins directory, so daemons for other directories on the same prefix do not
/// wait for each other.
pub fn lock_path(prefix: &Path, plugins_dir: &Path) -> PathBuf {
    let dir = std::fs::canonicalize(plugins_dir).unwrap_or_else(|_| plugins_dir.to_owned());
    let hash = fnv1a(dir.as_os_str().as_encoded_bytes());
    prefix.join(format!(".kong-rust-pluginserver-{hash:016x}.lock"))
}

/// FNV-1a: stable across builds and Rust versions, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The held lock; dropping it (or dying) releases it.
#[derive(Debug)]
pub struct ServeLock {
    file: File,
}

impl ServeLock {
    /// The lock held through `file`, an open description of the lock file another daemon
    /// passed over (a flock belongs to the open description, so it never was free).
    pub fn from_passed(mut file: File) -> io::Result<ServeLock> {
        record_holder(&mut file)?;
        Ok(ServeLock { file })
    }

    /// The lock file, to pass the lock to a successor.
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// Who holds the lock, as the holder recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// The serving process.
    pub pid: u32,
    /// Its parent: daemons Kong starts for one nginx worker (the standbys of Kong 3.9+'s
    /// entries) share it; a daemon with another parent comes from a new worker (after
    /// `kong reload`) and takes over.
    pub ppid: Option<u32>,
}

/// What [`try_acquire`] found.
#[derive(Debug)]
pub enum Acquired {
    /// This process now serves.
    Serving(ServeLock),
    /// Another live process serves.
    Held {
        /// The serving process, as it recorded itself.
        holder: Option<Holder>,
    },
}

/// Waits for the lock (in the kernel, however long it takes), then records this process
/// in the file.
pub fn acquire(path: &Path) -> io::Result<ServeLock> {
    let mut file = open(path)?;
    file.lock()?;
    record_holder(&mut file)?;
    Ok(ServeLock { file })
}

/// This process's parent.
pub fn parent_pid() -> u32 {
    std::os::unix::process::parent_id()
}

/// Opens (or creates, `0600`) the lock file, refusing one that another user could hold or
/// that is another file's name.
fn open(path: &Path) -> io::Result<File> {
    let refused = |why: String| io::Error::other(format!("{why}; remove it if it is stale"));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|err| match err.raw_os_error() {
            Some(libc::ELOOP) => {
                refused("it is a symbolic link, which the daemon never follows".into())
            }
            _ => err,
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(refused("it is not a regular file".into()));
    }
    let euid = crate::loader::secure_path::euid();
    if meta.uid() != euid {
        return Err(refused(format!(
            "it belongs to uid {}, not to the daemon's user (uid {euid}): that user could hold the lock and keep every daemon standing by",
            meta.uid()
        )));
    }
    if meta.nlink() != 1 {
        return Err(refused(format!(
            "it has {} links (a hard link to another file?); the daemon writes its pid into it",
            meta.nlink()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        // Made by an older release: only the daemon's user may open it from now on.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

fn record_holder(file: &mut File) -> io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{} {}", std::process::id(), parent_pid())
}

fn parse_holder(text: &str) -> Option<Holder> {
    let mut parts = text.split_whitespace();
    let pid = parts.next()?.parse().ok()?;
    Some(Holder {
        pid,
        ppid: parts.next().and_then(|p| p.parse().ok()),
    })
}

/// Takes the lock if it is free, and records this process's pid in the file.
pub fn try_acquire(path: &Path) -> io::Result<Acquired> {
    let mut file = open(path)?;
    match file.try_lock() {
        Ok(()) => {
            record_holder(&mut file)?;
            Ok(Acquired::Serving(ServeLock { file }))
        }
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            Ok(Acquired::Held {
                holder: parse_holder(&text),
            })
        }
        Err(TryLockError::Error(err)) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_release_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(dir.path(), Path::new("/some/plugins"));
        assert!(path.starts_with(dir.path()));
        assert_ne!(path, lock_path(dir.path(), Path::new("/other/plugins")));
        let Acquired::Serving(lock) = try_acquire(&path).unwrap() else {
            panic!("the first acquire serves")
        };
        match try_acquire(&path).unwrap() {
            Acquired::Held { holder } => assert_eq!(
                holder,
                Some(Holder {
                    pid: std::process::id(),
                    ppid: Some(parent_pid())
                })
            ),
            Acquired::Serving(_) => panic!("the lock is held"),
        }
        drop(lock);
        assert!(matches!(try_acquire(&path).unwrap(), Acquired::Serving(_)));
    }

    #[test]
    fn only_a_private_regular_file_of_its_own_with_one_name_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(dir.path(), Path::new("/some/plugins"));
        drop(try_acquire(&path).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(try_acquire(&path).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);

        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let err = try_acquire(&path).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        std::fs::remove_file(&path).unwrap();
        std::fs::hard_link(&victim, &path).unwrap();
        let err = try_acquire(&path).unwrap_err();
        assert!(err.to_string().contains("2 links"), "{err}");
        std::fs::remove_file(&path).unwrap();
        std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(try_acquire(&path).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }
}
