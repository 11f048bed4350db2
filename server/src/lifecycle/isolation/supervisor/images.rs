//! The plugin libraries the supervisor serves: each file opened once and checked, and copied
//! into a sealed in-memory file, by the loader's own functions, and probed there (see [`crate::loader::probe`]), without
//! ever being mapped into the supervisor. Workers load that very copy, so every restart of
//! a worker loads the bytes that were probed, whatever happens to the file since.

use std::{
    collections::BTreeMap,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use kong_rust_plugin_abi::Manifest;

use crate::{
    loader::probe::{Probe, Report},
    loader::{self, FileIdentity, LoadError, LoadOptions},
};

/// A plugin library, probed, in memory.
#[derive(Debug)]
pub struct Image {
    /// What the plugin says about itself (validated).
    pub manifest: Manifest,
    /// The file in the plugins directory.
    pub path: PathBuf,
    /// The file as it was when copied.
    pub identity: Option<FileIdentity>,
    /// Its modification time.
    pub modified: SystemTime,
    /// The sealed in-memory copy.
    pub fd: OwnedFd,
}

impl Image {
    /// The plugin name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// Checks, copies and probes the library at `path`.
    pub fn load(path: &Path, options: &LoadOptions, probe: &Probe) -> Result<Image, LoadError> {
        let refused = |reason: String| LoadError::Library {
            path: path.to_owned(),
            reason,
        };
        let (file, meta, identity) = loader::open_checked(path, options)?;
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let fd: OwnedFd = loader::sealed_copy(&file, &name, meta.len())
            .map_err(|source| LoadError::Copy {
                path: path.to_owned(),
                source,
            })?
            .into();
        match probe.fd(&fd).map_err(|e| refused(e.to_string()))? {
            Report::Plugin(manifest) => Ok(Image {
                manifest: *manifest,
                path: path.to_owned(),
                identity: Some(identity),
                modified,
                fd,
            }),
            // The probe named its own view of the file; name the file instead.
            Report::Refused(reason) => {
                Err(refused(reason.replace("/proc/self/fd/3: ", "").replacen(
                    "not a loadable kong-rust-pdk plugin: ",
                    "",
                    1,
                )))
            }
        }
    }
}

/// What scanning the plugins directory found.
#[derive(Debug, Default)]
pub struct Images {
    /// Usable libraries by plugin name.
    pub plugins: BTreeMap<String, Arc<Image>>,
    /// Files refused, with the reason.
    pub failures: Vec<LoadError>,
}

/// Checks, copies and probes every `*.so` of `dir` (the probes run in parallel).
pub fn scan(dir: &Path, options: &LoadOptions, probe: &Probe) -> Result<Images, LoadError> {
    let files = loader::plugin_files(dir, options)?;
    let loaded: Vec<Result<Image, LoadError>> = std::thread::scope(|scope| {
        let running: Vec<_> = files
            .iter()
            .map(|path| scope.spawn(move || Image::load(path, options, probe)))
            .collect();
        running
            .into_iter()
            .zip(&files)
            .map(|(thread, path)| {
                thread.join().unwrap_or_else(|_| {
                    Err(LoadError::Library {
                        path: path.clone(),
                        reason: "checking it failed".into(),
                    })
                })
            })
            .collect()
    });
    let mut images = Images::default();
    // One rule with the loader's: a name two files claim is served by neither.
    let mut by_name: BTreeMap<String, Vec<Image>> = BTreeMap::new();
    for image in loaded {
        match image {
            Ok(image) => by_name
                .entry(image.name().to_owned())
                .or_default()
                .push(image),
            Err(err) => images.failures.push(err),
        }
    }
    for (name, mut claimants) in by_name {
        if claimants.len() == 1 {
            let image = claimants.pop().expect("one claimant");
            images.plugins.insert(name, Arc::new(image));
        } else {
            images.failures.push(LoadError::Duplicate {
                name,
                paths: claimants.into_iter().map(|image| image.path).collect(),
            });
        }
    }
    Ok(images)
}
