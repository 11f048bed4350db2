//! SIGHUP: pick up new plugins and new builds without restarting Kong or the daemon.
//!
//! The plugins directory is scanned as at start (the same checks, the same rule for a
//! plugin name that two files declare: neither is loaded, and the version serving keeps
//! serving). A file already mapped is never mapped again (the loader remembers every file
//! it mapped), so a plugin whose file is unchanged is left as it is. A new plugin gets its
//! socket. A new build of a served plugin replaces it: its instances are released, so
//! Kong's next event for them gets `no plugin instance` and Kong starts them again on the new
//! code, while events already running finish on the old code. A file that fails to load
//! leaves the running version serving. Code is never unloaded (a library cannot be unloaded
//! safely while anything of it may still run), so every upgrade keeps the old build's code
//! mapped until the daemon restarts.

use std::{path::Path, sync::Arc};

use crate::{
    loader::{self, LoadOptions},
    serving::Serving,
    sockets::{self, Replace, SocketAccess},
};

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Plugins served for the first time.
    pub added: Vec<String>,
    /// Plugins replaced by a new build.
    pub upgraded: Vec<String>,
    /// Files that could not be loaded (the running versions keep serving).
    pub failed: usize,
}

/// Rescans `dir` and applies what changed.
pub fn reload(
    server: &Arc<Serving>,
    dir: &Path,
    prefix: &Path,
    access: SocketAccess,
    options: &LoadOptions,
) -> Reloaded {
    let mut result = Reloaded::default();
    let daemon = server.daemon();
    let scan = match loader::scan(dir, options) {
        Ok(scan) => scan,
        Err(err) => {
            tracing::error!("reload: {err}; keeping every running plugin");
            result.failed += 1;
            return result;
        }
    };
    for failure in &scan.failures {
        tracing::error!("reload: {failure}; the running version keeps serving");
        result.failed += 1;
    }
    let mut plugins: Vec<_> = scan.plugins.into_values().collect();
    plugins.sort_by(|a, b| a.manifest.name.cmp(&b.manifest.name));
    for plugin in plugins {
        let name = plugin.manifest.name.clone();
        let served = daemon.plugin(&name);
        if served.as_ref().is_some_and(|p| {
            p.loaded().identity.is_some() && p.loaded().identity == plugin.identity
        }) {
            continue;
        }
        let version = plugin.manifest.version.clone();
        let path = plugin.path.clone();
        match daemon.install(plugin) {
            Some(old) => {
                tracing::info!(
                    plugin = %name,
                    "upgraded from {} ({}) to {version} ({}); instances restart on the new build",
                    old.manifest().version,
                    old.loaded().path.display(),
                    path.display()
                );
                result.upgraded.push(name.clone());
            }
            None => {
                tracing::info!(plugin = %name, version = %version, "added {}", path.display());
                result.added.push(name.clone());
            }
        }
        if !server.is_listening(&name) {
            let scope = daemon.scope_of(&name).expect("installed above");
            let listened = sockets::bind(prefix, &name, scope, access, Replace::StaleOnly)
                .map_err(|e| e.to_string())
                .and_then(|socket| server.listen(socket).map_err(|e| e.to_string()));
            if let Err(err) = listened {
                tracing::error!(plugin = %name, "reload: cannot serve the new plugin: {err}");
            }
        }
    }
    result
}
