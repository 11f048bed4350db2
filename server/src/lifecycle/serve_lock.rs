//! One serving daemon per plugins directory and Kong prefix.
//!
//! Kong 3.9+ reads one plugin per pluginserver entry, so a node with N Rust plugins has N
//! entries, and Kong may start this daemon N times. The first process takes an exclusive
//! lock on a file in the prefix and serves every plugin; the others find the lock taken and
//! stand by without touching the sockets (exiting would make Kong respawn them every
//! second). The kernel drops the lock the moment the serving process dies, however it dies,
//! and a standby waiting for it in the kernel takes over.

use std::{
    fs::{File, OpenOptions, TryLockError},
    io::{self, Read, Seek, Write},
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

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
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
}
