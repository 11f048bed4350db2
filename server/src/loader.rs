//! Finding and loading plugin libraries.
//!
//! Every `*.so` of the plugins directory is opened through `abi_stable`, which checks the
//! library's ABI version and the layout of its root module before anything is called. Each
//! library is loaded by path (`lib_header_from_path`), never through `RootModule::load_from*`,
//! which caches a single module per interface type and would serve the first plugin N times.
//! A file that fails any check is reported with its reason and skipped; the rest still load.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::SystemTime,
};

use abi_stable::{
    library::{LibraryError, lib_header_from_path},
    std_types::RResult,
};
use kong_rust_plugin_abi::{ABI_VERSION, Manifest, PluginModuleRef};

/// Why a plugins directory or one plugin file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The directory itself cannot be read.
    #[error("cannot read plugins directory {dir}: {source}")]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `abi_stable` refused the library: not a plugin, or built against another ABI.
    #[error("{path}: not a loadable kong-rust-pdk plugin: {reason}")]
    Library {
        /// The file.
        path: PathBuf,
        /// abi_stable's explanation, first line.
        reason: String,
    },
    /// The plugin loaded but describes itself in a way Kong would refuse.
    #[error("{path}: invalid plugin description: {reason}")]
    InvalidInfo {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file or directory could be changed by someone other than root or the daemon's
    /// user: loading it would run their code in the gateway's request path.
    #[error(
        "{path}: refusing to load: {reason} (--allow-insecure-plugins overrides, for development only)"
    )]
    Insecure {
        /// The file or directory.
        path: PathBuf,
        /// Who could change it.
        reason: String,
    },
    /// The private copy the library is loaded from could not be made.
    #[error("{path}: cannot copy it for loading: {source}")]
    Copy {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Two files declare the same plugin name.
    #[error("{path}: plugin name `{name}` is already provided by {first}")]
    Duplicate {
        /// The plugin name.
        name: String,
        /// The file skipped.
        path: PathBuf,
        /// The file that keeps the name.
        first: PathBuf,
    },
}

/// How libraries are loaded.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Load a private copy made in this directory (then unlinked) instead of the file
    /// itself. The dynamic loader reuses an already loaded library of the same path, so
    /// loading copies is what lets a reload pick up a new build; it also keeps a build
    /// written over the original in place from changing code that is running.
    pub copy_dir: Option<PathBuf>,
    /// Skip the ownership and permission checks (development only).
    pub allow_insecure: bool,
}

/// Identifies a file's content as loaded, to tell whether a reload must load it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    device: u64,
    inode: u64,
    size: u64,
    modified: SystemTime,
}

impl FileIdentity {
    /// The identity of the file at `path` now.
    pub fn of(path: &Path) -> std::io::Result<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        Ok(FileIdentity {
            device: meta.dev(),
            inode: meta.ino(),
            size: meta.len(),
            modified: meta.modified()?,
        })
    }
}

/// A plugin library that passed every check.
pub struct LoadedPlugin {
    /// What the plugin says about itself (validated: Kong would accept it).
    pub manifest: Manifest,
    /// The library file.
    pub path: PathBuf,
    /// The file as it was when loaded.
    pub identity: Option<FileIdentity>,
    /// The file's modification time, as loaded.
    pub modified: SystemTime,
    /// When it was loaded.
    pub loaded: SystemTime,
    /// The root module: constructor and static description.
    pub module: PluginModuleRef,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("manifest", &self.manifest)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The result of scanning a plugins directory.
#[derive(Debug, Default)]
pub struct Scan {
    /// Plugins by name.
    pub plugins: HashMap<String, LoadedPlugin>,
    /// Files that were skipped, with the reason.
    pub failures: Vec<LoadError>,
}

/// The `*.so` files of `dir`, in file name order (so the first of two files claiming one
/// name is predictable). The directory itself must pass the ownership checks.
pub fn plugin_files(dir: &Path, options: &LoadOptions) -> Result<Vec<PathBuf>, LoadError> {
    let dir_error = |source| LoadError::Directory {
        dir: dir.to_owned(),
        source,
    };
    let meta = std::fs::metadata(dir).map_err(dir_error)?;
    if !options.allow_insecure {
        check_owner(dir, &meta)?;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(dir_error)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "so") && path.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Loads every `*.so` in `dir`.
pub fn scan(dir: &Path, options: &LoadOptions) -> Result<Scan, LoadError> {
    let mut scan = Scan::default();
    for path in plugin_files(dir, options)? {
        match load(&path, options) {
            Ok(plugin) => {
                if let Some(first) = scan.plugins.get(&plugin.manifest.name) {
                    scan.failures.push(LoadError::Duplicate {
                        name: plugin.manifest.name.clone(),
                        path,
                        first: first.path.clone(),
                    });
                } else {
                    scan.plugins.insert(plugin.manifest.name.clone(), plugin);
                }
            }
            Err(err) => scan.failures.push(err),
        }
    }
    Ok(scan)
}

/// Loads one plugin library.
pub fn load(path: &Path, options: &LoadOptions) -> Result<LoadedPlugin, LoadError> {
    let library_error = |err: LibraryError| LoadError::Library {
        path: path.to_owned(),
        reason: summarize(path, &err),
    };
    if !options.allow_insecure {
        let meta = std::fs::metadata(path).map_err(|source| LoadError::Copy {
            path: path.to_owned(),
            source,
        })?;
        check_owner(path, &meta)?;
    }
    let identity = FileIdentity::of(path).ok();
    let module = match &options.copy_dir {
        Some(dir) => {
            let copy = private_copy(path, dir)?;
            let loaded = lib_header_from_path(&copy)
                .and_then(|header| header.init_root_module::<PluginModuleRef>());
            // The mapping stays valid without the file; nothing to clean up later.
            let _ = std::fs::remove_file(&copy);
            loaded
        }
        None => lib_header_from_path(path).and_then(|h| h.init_root_module::<PluginModuleRef>()),
    }
    .map_err(library_error)?;
    if let Some(set_host_logger) = module.set_host_logger() {
        set_host_logger(crate::plugin_log::host_logger());
    }
    let mut plugin = LoadedPlugin::from_module(module, path)?;
    plugin.identity = identity;
    plugin.modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    Ok(plugin)
}

impl LoadedPlugin {
    /// A plugin from a root module already in this process (a library loaded by hand, or a
    /// plugin linked in, as the fuzz targets do), its manifest read and validated; `path`
    /// names it in messages.
    pub fn from_module(module: PluginModuleRef, path: &Path) -> Result<LoadedPlugin, LoadError> {
        let manifest = match (module.manifest())() {
            RResult::ROk(json) => serde_json::from_str::<Manifest>(json.as_str())
                .map_err(|e| format!("its manifest is not valid: {e}"))
                .and_then(validate),
            RResult::RErr(err) => Err(err.message.into_string()),
        }
        .map_err(|reason| LoadError::InvalidInfo {
            path: path.to_owned(),
            reason,
        })?;
        Ok(LoadedPlugin {
            manifest,
            path: path.to_owned(),
            identity: None,
            modified: SystemTime::UNIX_EPOCH,
            loaded: SystemTime::now(),
            module,
        })
    }
}

/// Refuses files and directories that someone other than root or the daemon's user owns,
/// or that group members or others may write.
fn check_owner(path: &Path, meta: &std::fs::Metadata) -> Result<(), LoadError> {
    use std::os::unix::fs::MetadataExt;
    let insecure = |reason: String| LoadError::Insecure {
        path: path.to_owned(),
        reason,
    };
    // SAFETY: geteuid(2) has no preconditions.
    let euid = unsafe { libc::geteuid() };
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

/// Copies `path` into `dir` under a name no other load uses.
fn private_copy(path: &Path, dir: &Path) -> Result<PathBuf, LoadError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COPIES: AtomicU64 = AtomicU64::new(0);
    let copy_error = |source| LoadError::Copy {
        path: path.to_owned(),
        source,
    };
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    let copy = dir.join(format!(
        "{stem}-{}-{}.so",
        std::process::id(),
        COPIES.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::copy(path, &copy).map_err(copy_error)?;
    Ok(copy)
}

/// Says in one line why abi_stable refused a library. Its own messages span many lines
/// (a layout mismatch runs to hundreds), so the full text goes to the debug log only.
fn summarize(path: &Path, err: &LibraryError) -> String {
    tracing::debug!("{}: {err}", path.display());
    let abi = ABI_VERSION;
    let major = abi.split('.').next().unwrap_or(abi);
    match err {
        LibraryError::OpenError { err, .. } => format!("cannot open it: {err}"),
        LibraryError::GetSymbolError { .. } => {
            "it exports no plugin (a plugin library marks its impl with #[kong_rust_pdk::plugin])"
                .to_owned()
        }
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => format!(
            "it was built against plugin ABI {actual_version}, and this daemon speaks ABI {abi}; rebuild it with a kong-rust-pdk release for ABI {major}.x"
        ),
        LibraryError::AbiInstability(_) | LibraryError::InvalidCAbi { .. } => format!(
            "it was built against an incompatible plugin ABI (its root module layout differs from ABI {abi}); rebuild it with a kong-rust-pdk release for ABI {major}.x"
        ),
        LibraryError::InvalidAbiHeader(_) => {
            "it was built with an incompatible abi_stable release".to_owned()
        }
        LibraryError::RootModule { err, .. } => format!("its initialization failed: {err}"),
        other => one_line(&other.to_string()),
    }
}

fn one_line(text: &str) -> String {
    const MAX: usize = 300;
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > MAX {
        let mut cut = MAX;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str(" …");
    }
    line
}

/// Checks what Kong checks when it loads the dump, so a bad plugin is refused here with a
/// clear message instead of making Kong fail to start.
fn validate(manifest: Manifest) -> Result<Manifest, String> {
    let name = &manifest.name;
    if !is_valid_name(name) {
        return Err(format!("plugin name {name:?} must be {NAME_RULE}"));
    }
    let version = &manifest.version;
    let parts: Vec<&str> = version.split('.').collect();
    if parts.len() > 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "plugin {name}: version {version:?} must be numeric x.y.z (Kong refuses other forms)"
        ));
    }
    // Kong refuses to start on a schema that breaks its rules: refuse the plugin instead.
    let full = serde_json::json!({"name": name, "fields": [{"config": manifest.config_schema}]});
    kong_rust_pdk::schema::validate_plugin_schema(&full)
        .map_err(|violation| format!("plugin {name}: Kong would refuse its {violation}"))?;
    Ok(manifest)
}

/// What a plugin name may be, as every message states it.
pub const NAME_RULE: &str =
    "1-64 characters of a-z, 0-9, '-' and '_', starting with a letter or digit";

/// Plugin names become file names (`<prefix>/<name>.socket`) and kong.conf keys:
/// [`NAME_RULE`].
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=64).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("open.so");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = load(&file, &LoadOptions::default()).unwrap_err();
        assert!(err.to_string().contains("may write it (mode 666)"), "{err}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = scan(dir.path(), &LoadOptions::default()).unwrap_err();
        assert!(matches!(err, LoadError::Insecure { .. }), "{err}");
        let relaxed = LoadOptions {
            allow_insecure: true,
            ..LoadOptions::default()
        };
        assert!(scan(dir.path(), &relaxed).is_ok());
    }

    #[test]
    fn names_that_could_escape_the_prefix_are_refused() {
        assert!(is_valid_name("rust-hello"));
        assert!(is_valid_name("rate_limit2"));
        for bad in [
            "",
            "../etc",
            "a/b",
            ".hidden",
            "-x",
            "UPPER",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_missing_directory_is_a_clear_error() {
        let err = scan(Path::new("/nonexistent/plugins"), &LoadOptions::default()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/plugins"), "{err}");
    }

    #[test]
    fn files_that_are_not_plugins_are_skipped_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("garbage.so"), b"not an ELF file").unwrap();
        std::fs::write(dir.path().join("readme.txt"), b"ignored").unwrap();
        let scan = scan(dir.path(), &LoadOptions::default()).unwrap();
        assert!(scan.plugins.is_empty());
        assert_eq!(scan.failures.len(), 1);
        assert!(scan.failures[0].to_string().contains("garbage.so"));
    }
}
