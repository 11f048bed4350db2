//! Finding and loading plugin libraries.
//!
//! Every `*.so` of the plugins directory is opened once, without following a symbolic link,
//! checked through that descriptor, and mapped from a sealed copy of exactly the bytes
//! checked (the `library` module). `abi_stable` then checks the library's ABI version and the
//! layout of its root module before anything is called. Each library is loaded by its own
//! path, never through `RootModule::load_from*`, which caches a single module per interface
//! type and would serve the first plugin N times. A file that fails any check is reported
//! with its reason and skipped; the rest still load.
//!
//! A file (device, inode, size, modification time) is mapped at most once in the life of
//! the process: a scan that meets it again reuses what was mapped, or the reason it was
//! refused. Two files that declare one plugin name are both refused, at start and at every
//! reload alike: a clash never changes what is served.

mod elf;
pub use elf::{Truncated, check_whole as check_whole_elf};
mod library;
pub use library::sealed_copy;
pub mod probe;
pub mod secure_path;

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Mutex,
    time::SystemTime,
};

use abi_stable::{library::LibraryError, std_types::RResult};
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
    /// The file cannot be opened or is no regular file.
    #[error("{path}: cannot open it: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error, or what the file is instead.
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
    /// The file is shorter than its own headers say: cut short, or still being written.
    #[error(
        "{path}: not a whole library (cut short, or still being written?): {reason}; install new builds by renaming a finished file into place"
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What does not fit.
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
    /// The sealed copy the library is loaded from could not be made.
    #[error("{path}: cannot copy it for loading: {source}")]
    Copy {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Several files declare the same plugin name: none of them is loaded.
    #[error(
        "plugin name `{name}` is declared by {} files: {}; none of them is loaded until only one is left (a version already serving keeps serving)",
        paths.len(),
        paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    Duplicate {
        /// The plugin name.
        name: String,
        /// The files, in name order.
        paths: Vec<PathBuf>,
    },
}

impl From<secure_path::Insecure> for LoadError {
    fn from(err: secure_path::Insecure) -> LoadError {
        LoadError::Insecure {
            path: err.path,
            reason: err.reason,
        }
    }
}

/// How libraries are loaded.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Skip the ownership and permission checks, and follow a plugin file that is a symbolic
    /// link (development only).
    pub allow_insecure: bool,
    /// Try each library in a short-lived process before mapping it here (see
    /// [`crate::loader::probe`]); `None`: map it directly.
    pub probe: Option<probe::Probe>,
    /// The Kong release served: a plugin whose dump it would refuse is not loaded
    /// (`None`: Kong's development branch, whose rules every plugin is checked against).
    pub kong_version: Option<kong_rust_pdk::kong_versions::KongVersion>,
}

/// Identifies a file's content as loaded, to tell whether a reload must load it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    device: u64,
    inode: u64,
    size: u64,
    modified: SystemTime,
}

impl FileIdentity {
    /// The identity of the file at `path` now (following a symbolic link).
    pub fn of(path: &Path) -> std::io::Result<FileIdentity> {
        FileIdentity::from_metadata(&std::fs::metadata(path)?)
    }

    /// The identity of a file from its metadata.
    pub fn from_metadata(meta: &std::fs::Metadata) -> std::io::Result<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
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

/// The `*.so` entries of `dir`, in file name order, under the directory's canonical path.
/// Unless insecure plugins are allowed, the directory and every directory above it must
/// pass the ownership checks.
pub fn plugin_files(dir: &Path, options: &LoadOptions) -> Result<Vec<PathBuf>, LoadError> {
    let dir_error = |source| LoadError::Directory {
        dir: dir.to_owned(),
        source,
    };
    let dir = if options.allow_insecure {
        std::fs::canonicalize(dir).map_err(dir_error)?
    } else {
        match secure_path::check_chain(dir) {
            Ok(canonical) => canonical,
            Err(secure_path::CheckError::Insecure(err)) => return Err(err.into()),
            Err(secure_path::CheckError::Io { source, .. }) => return Err(dir_error(source)),
        }
    };
    if !std::fs::metadata(&dir).map_err(dir_error)?.is_dir() {
        return Err(dir_error(std::io::Error::other("not a directory")));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(dir_error)?
        .filter_map(Result::ok)
        // Symbolic links are listed, so that refusing them says why.
        .filter(|entry| entry.file_type().is_ok_and(|t| !t.is_dir()))
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "so"))
        .collect();
    files.sort();
    Ok(files)
}

/// Loads every `*.so` in `dir`. A plugin name declared by more than one file is refused
/// (a [`LoadError::Duplicate`] naming them all) and none of those files is served.
pub fn scan(dir: &Path, options: &LoadOptions) -> Result<Scan, LoadError> {
    let mut scan = Scan::default();
    let mut by_name: BTreeMap<String, Vec<LoadedPlugin>> = BTreeMap::new();
    for path in plugin_files(dir, options)? {
        match load(&path, options) {
            Ok(plugin) => by_name
                .entry(plugin.manifest.name.clone())
                .or_default()
                .push(plugin),
            Err(err) => scan.failures.push(err),
        }
    }
    for (name, mut claimants) in by_name {
        if claimants.len() == 1 {
            scan.plugins
                .insert(name, claimants.pop().expect("one claimant"));
        } else {
            scan.failures.push(LoadError::Duplicate {
                name,
                paths: claimants.into_iter().map(|p| p.path).collect(),
            });
        }
    }
    Ok(scan)
}

/// What became of a file mapped once: kept for the life of the process, so the same file
/// is never mapped again.
#[derive(Clone)]
enum Mapped {
    Plugin {
        manifest: Box<Manifest>,
        module: PluginModuleRef,
        loaded: SystemTime,
    },
    /// Refused after mapping: `abi_stable` said no, or the description is invalid.
    Refused { invalid_info: bool, reason: String },
}

/// Every file mapped so far, by identity.
static MAPPED: Mutex<Option<HashMap<FileIdentity, Mapped>>> = Mutex::new(None);

/// Opens the library at `path` once (a link is followed only with `allow_insecure`, for
/// development setups that link builds in) and checks its owner and mode through that
/// descriptor: every later read goes through it, never through the path again.
pub fn open_checked(
    path: &Path,
    options: &LoadOptions,
) -> Result<(std::fs::File, std::fs::Metadata, FileIdentity), LoadError> {
    let open_error = |source| LoadError::Open {
        path: path.to_owned(),
        source,
    };
    let (file, meta) = library::open_once(path, options.allow_insecure).map_err(open_error)?;
    if !options.allow_insecure {
        secure_path::check_owner_and_mode(path, &meta)?;
    }
    let identity = FileIdentity::from_metadata(&meta).map_err(open_error)?;
    Ok((file, meta, identity))
}

/// The line that says a plugin is served, with what Kong will be told about it.
pub fn log_served(manifest: &Manifest, what: std::fmt::Arguments<'_>) {
    tracing::info!(
        plugin = %manifest.name,
        version = %manifest.version,
        priority = manifest.priority,
        phases = ?manifest.phases.iter().map(|p| p.name()).collect::<Vec<_>>(),
        on_failure = manifest.on_failure.label(),
        "{what}"
    );
}

/// Loads one plugin library (or finds it among those already mapped).
pub fn load(path: &Path, options: &LoadOptions) -> Result<LoadedPlugin, LoadError> {
    let (file, meta, identity) = open_checked(path, options)?;
    let mut mapped = MAPPED.lock().unwrap_or_else(|e| e.into_inner());
    let mapped = mapped.get_or_insert_with(HashMap::new);
    let outcome = match mapped.get(&identity) {
        Some(known) => known.clone(),
        None => {
            let outcome = map(&file, path, meta.len(), options.probe.as_ref())?;
            mapped.insert(identity, outcome.clone());
            outcome
        }
    };
    match outcome {
        Mapped::Plugin {
            manifest,
            module,
            loaded,
        } => {
            // Per load, not per mapping: the same file may be fine for another release.
            if let Some(version) = options.kong_version {
                crate::kong_compat::check_dump(&manifest, version).map_err(|reason| {
                    LoadError::InvalidInfo {
                        path: path.to_owned(),
                        reason,
                    }
                })?;
            }
            Ok(LoadedPlugin {
                manifest: *manifest,
                path: path.to_owned(),
                identity: Some(identity),
                modified: identity.modified,
                loaded,
                module,
            })
        }
        Mapped::Refused {
            invalid_info: true,
            reason,
        } => Err(LoadError::InvalidInfo {
            path: path.to_owned(),
            reason,
        }),
        Mapped::Refused { reason, .. } => Err(LoadError::Library {
            path: path.to_owned(),
            reason,
        }),
    }
}

/// Maps `file` for the first time. Errors before the mapping are returned (nothing to
/// remember); a refusal after it is an outcome to remember.
fn map(
    file: &std::fs::File,
    path: &Path,
    len: u64,
    probe: Option<&probe::Probe>,
) -> Result<Mapped, LoadError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let header = match library::map(file, &name, len, probe) {
        Ok(header) => header,
        Err(library::MapError::Copy(source)) => {
            return Err(LoadError::Copy {
                path: path.to_owned(),
                source,
            });
        }
        Err(library::MapError::Truncated(cut)) => {
            return Err(LoadError::Truncated {
                path: path.to_owned(),
                reason: cut.to_string(),
            });
        }
        Err(library::MapError::Probe(reason)) => {
            return Ok(Mapped::Refused {
                invalid_info: false,
                reason,
            });
        }
        Err(library::MapError::Library(err)) => {
            return Ok(Mapped::Refused {
                invalid_info: false,
                reason: summarize(path, &err),
            });
        }
    };
    let module = match header.init_root_module::<PluginModuleRef>() {
        Ok(module) => module,
        Err(err) => {
            return Ok(Mapped::Refused {
                invalid_info: false,
                reason: summarize(path, &err),
            });
        }
    };
    if let Some(set_host_logger) = module.set_host_logger() {
        set_host_logger(crate::plugin_log::host_logger());
    }
    Ok(match LoadedPlugin::from_module(module, path) {
        Ok(plugin) => Mapped::Plugin {
            manifest: Box::new(plugin.manifest),
            module,
            loaded: plugin.loaded,
        },
        Err(LoadError::InvalidInfo { reason, .. }) => Mapped::Refused {
            invalid_info: true,
            reason,
        },
        Err(other) => Mapped::Refused {
            invalid_info: true,
            reason: other.to_string(),
        },
    })
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
    fn a_symbolic_link_is_refused_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.bin");
        std::fs::write(&target, b"not an ELF file").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("linked.so")).unwrap();
        let scan = scan(dir.path(), &LoadOptions::default()).unwrap();
        assert_eq!(scan.failures.len(), 1);
        let err = scan.failures[0].to_string();
        assert!(
            err.contains("linked.so: cannot open it: it is a symbolic link"),
            "{err}"
        );
        // In development, a link to a build is followed.
        let relaxed = LoadOptions {
            allow_insecure: true,
            ..LoadOptions::default()
        };
        let scan = super::scan(dir.path(), &relaxed).unwrap();
        let err = scan.failures[0].to_string();
        assert!(
            err.contains("linked.so: not a loadable kong-rust-pdk plugin"),
            "{err}"
        );
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
