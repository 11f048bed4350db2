//! `kong-rust-pluginserver links`: a link per plugin to the daemon binary, named after the
//! plugin, where Kong looks for plugin executables (`/usr/local/bin`).
//!
//! Kong 3.9+ run `/usr/local/bin/NAME` and `/usr/local/bin/NAME -dump` for a pluginserver
//! entry without commands; Kong 3.0–3.8 run `/usr/local/bin/NAME` and query
//! `/usr/local/bin/query_NAME`. The binary recognises both names (see the `cli` module's
//! `invocation`). Refreshing keeps what is right, adds what is missing, and removes links
//! to this binary whose plugin is gone; it never touches anything else.

use std::{
    io,
    path::{Path, PathBuf},
};

/// Why the links could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A file of that name exists and is not a link to the binary.
    #[error("{path} exists and is not a link to {binary}; remove it, or pick another --bin-dir")]
    Occupied {
        /// The file in the way.
        path: PathBuf,
        /// The binary.
        binary: PathBuf,
    },
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// What a refresh did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LinkReport {
    /// Links made.
    pub created: Vec<PathBuf>,
    /// Links that were already right.
    pub kept: Vec<PathBuf>,
    /// Links to the binary whose name is no longer wanted.
    pub removed: Vec<PathBuf>,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> LinkError + '_ {
    move |source| LinkError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Whether `path` is a symbolic link that resolves to `binary` (canonical).
fn links_to(path: &Path, binary: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
        && std::fs::canonicalize(path).is_ok_and(|target| target == binary)
}

/// The link names for `plugins`: each plugin's name, and `query_NAME` too when
/// `query_links` (for Kong 3.0–3.8).
pub fn link_names(plugins: &[&str], query_links: bool) -> Vec<String> {
    let mut names: Vec<String> = plugins.iter().map(|p| (*p).to_owned()).collect();
    if query_links {
        names.extend(plugins.iter().map(|p| format!("query_{p}")));
    }
    names
}

/// Makes `bin_dir/<name>` a link to `binary` for each of `names`, and removes the other
/// links in `bin_dir` that point to `binary`. Nothing changes if any name is taken by a
/// file that is not such a link.
pub fn refresh(bin_dir: &Path, binary: &Path, names: &[String]) -> Result<LinkReport, LinkError> {
    let binary = std::fs::canonicalize(binary).map_err(io_error(binary))?;
    let mut report = LinkReport::default();
    let mut missing = Vec::new();
    for name in names {
        let path = bin_dir.join(name);
        if links_to(&path, &binary) {
            report.kept.push(path);
        } else if std::fs::symlink_metadata(&path).is_ok() {
            return Err(LinkError::Occupied {
                path,
                binary: binary.clone(),
            });
        } else {
            missing.push(path);
        }
    }
    for entry in std::fs::read_dir(bin_dir).map_err(io_error(bin_dir))? {
        let entry = entry.map_err(io_error(bin_dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let wanted = names.iter().any(|n| *n == name);
        // The binary's own links (a `kong-rust-pluginserver` link in bin_dir) stay.
        if wanted || name.starts_with("kong-rust-pluginserver") {
            continue;
        }
        let path = entry.path();
        if links_to(&path, &binary) {
            std::fs::remove_file(&path).map_err(io_error(&path))?;
            report.removed.push(path);
        }
    }
    for path in missing {
        std::os::unix::fs::symlink(&binary, &path).map_err(io_error(&path))?;
        report.created.push(path);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_made_kept_and_pruned_and_nothing_else_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let binary = dir.path().join("kong-rust-pluginserver");
        std::fs::write(&binary, b"#!/bin/sh\n").unwrap();
        let other = dir.path().join("other");
        std::fs::write(&other, b"x").unwrap();
        std::os::unix::fs::symlink(&other, bin.join("unrelated")).unwrap();

        let names = link_names(&["a", "b"], true);
        assert_eq!(names, ["a", "b", "query_a", "query_b"]);
        let report = refresh(&bin, &binary, &names).unwrap();
        assert_eq!(report.created.len(), 4);
        assert!(links_to(
            &bin.join("query_b"),
            &binary.canonicalize().unwrap()
        ));

        let report = refresh(&bin, &binary, &link_names(&["a"], false)).unwrap();
        assert_eq!(report.kept, [bin.join("a")]);
        let mut removed = report.removed.clone();
        removed.sort();
        assert_eq!(
            removed,
            [bin.join("b"), bin.join("query_a"), bin.join("query_b")]
        );
        assert!(
            bin.join("unrelated").exists(),
            "another program's link stays"
        );

        std::fs::write(bin.join("c"), b"a file").unwrap();
        let err = refresh(&bin, &binary, &link_names(&["a", "c"], false)).unwrap_err();
        assert!(matches!(err, LinkError::Occupied { .. }), "{err}");
        assert!(bin.join("a").exists(), "a refused refresh changes nothing");
    }
}
