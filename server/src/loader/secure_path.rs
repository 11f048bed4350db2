//! Who can change a path: the checks OpenSSH's `StrictModes` makes, for every directory on
//! the way to it, not only the last one.
//!
//! A directory someone else may write lets them rename anything in it away and put their
//! own in its place, so a safe plugins directory (or prefix) needs every directory above it
//! to be safe too. A sticky directory (like `/tmp`) is the exception on the way: in it only
//! an entry's owner may rename or remove that entry.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// A path that someone other than root or the daemon's user could change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct Insecure {
    /// The file or directory at fault (the path itself or a directory above it).
    pub path: PathBuf,
    /// Who could change it.
    pub reason: String,
}

/// The daemon's effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() }
}

/// Refuses a file or directory that belongs to someone other than root or the daemon's
/// user, or that group members or others may write.
pub fn check_owner_and_mode(path: &Path, meta: &std::fs::Metadata) -> Result<(), Insecure> {
    let insecure = |reason: String| Insecure {
        path: path.to_owned(),
        reason,
    };
    let euid = euid();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(insecure(format!(
            "it belongs to uid {}, neither root nor the daemon's user (uid {euid})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(insecure(format!(
            "group members or others may write it (mode {:o})",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Checks `path` (made absolute and free of symbolic links first) and every directory
/// above it; returns the path it checked, which is the one to use from now on.
pub fn check_chain(path: &Path) -> Result<PathBuf, CheckError> {
    let canonical = std::fs::canonicalize(path).map_err(|source| CheckError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut current = Some(canonical.as_path());
    let mut first = true;
    while let Some(dir) = current {
        let meta = std::fs::symlink_metadata(dir).map_err(|source| CheckError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let sticky = meta.mode() & 0o1000 != 0;
        match check_owner_and_mode(dir, &meta) {
            Ok(()) => {}
            // Writable but sticky, above the path: nobody else may rename what is in it.
            Err(_) if !first && sticky && (meta.uid() == 0 || meta.uid() == euid()) => {}
            Err(err) => return Err(CheckError::Insecure(err)),
        }
        first = false;
        current = dir.parent();
    }
    Ok(canonical)
}

/// Why [`check_chain`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A directory cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Someone else could change it.
    #[error(transparent)]
    Insecure(Insecure),
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn every_directory_on_the_way_is_checked_and_sticky_ones_pass() {
        let root = tempfile::tempdir().unwrap();
        let middle = root.path().join("middle");
        let leaf = middle.join("leaf");
        std::fs::create_dir_all(&leaf).unwrap();
        chmod(root.path(), 0o755);
        chmod(&middle, 0o755);
        chmod(&leaf, 0o755);
        assert_eq!(check_chain(&leaf).unwrap(), leaf.canonicalize().unwrap());

        chmod(&middle, 0o777);
        match check_chain(&leaf) {
            Err(CheckError::Insecure(err)) => {
                assert_eq!(err.path, middle.canonicalize().unwrap());
                assert!(err.reason.contains("mode 777"), "{err}");
            }
            other => panic!("{other:?}"),
        }
        chmod(&middle, 0o1777);
        check_chain(&leaf).unwrap();
        // The path itself gets no sticky exception.
        chmod(&leaf, 0o1777);
        assert!(matches!(check_chain(&leaf), Err(CheckError::Insecure(_))));
    }

    #[test]
    fn symbolic_links_on_the_way_are_resolved_first() {
        let root = tempfile::tempdir().unwrap();
        chmod(root.path(), 0o755);
        let real = root.path().join("real");
        std::fs::create_dir(&real).unwrap();
        chmod(&real, 0o755);
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(check_chain(&link).unwrap(), real.canonicalize().unwrap());
    }
}
