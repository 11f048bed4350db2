//! `--dump-plugin NAME` and `--dump-all-plugins`: what Kong's query command prints.

use anyhow::bail;
use kong_rust_pdk::kong_versions::QueryOutput;
use kong_rust_pluginserver::{
    dump::Dump,
    loader::probe::Probe,
    loader::{self, LoadOptions, Scan},
    settings::Settings,
};

/// Loads for the dump and kong-conf: read-only, checks applied; skipped files are logged
/// on stderr (stdout stays pure JSON).
pub fn load(settings: &Settings) -> anyhow::Result<Scan> {
    let options = LoadOptions {
        allow_insecure: settings.allow_insecure_plugins,
        // A library that crashes or hangs when loaded must not stop Kong's start.
        probe: Some(Probe {
            timeout: settings.probe_timeout,
            kong_version: settings.kong_version,
        }),
        kong_version: settings.kong_version,
    };
    let scan = loader::scan(&settings.plugins_directory, &options)?;
    for failure in &scan.failures {
        tracing::error!("skipped: {failure}");
    }
    Ok(scan)
}

/// The served plugin names, sorted.
pub fn sorted_names(scan: &Scan) -> Vec<&str> {
    let mut names: Vec<&str> = scan.plugins.keys().map(String::as_str).collect();
    names.sort_unstable();
    names
}

/// Prints plugin `name`'s description.
pub fn one(settings: &Settings, name: &str) -> anyhow::Result<()> {
    let scan = load(settings)?;
    let Some(plugin) = scan.plugins.get(name) else {
        let names = sorted_names(&scan);
        bail!(
            "no plugin named {name:?} in {} (found: {})",
            settings.plugins_directory.display(),
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        );
    };
    super::print_json(
        &Dump::for_kong([&plugin.manifest], settings.kong())
            .speaking(settings.protocol.dump_name()),
    )
}

/// Prints every plugin's description, by name. No usable plugin is an error: Kong would
/// start without any of them.
pub fn all(settings: &Settings) -> anyhow::Result<()> {
    let scan = load(settings)?;
    if scan.plugins.is_empty() {
        bail!(
            "no usable plugin in {}",
            settings.plugins_directory.display()
        );
    }
    let mut manifests: Vec<_> = scan.plugins.values().map(|p| &p.manifest).collect();
    manifests.sort_by(|a, b| a.name.cmp(&b.name));
    let first_only = settings
        .kong_version
        .is_some_and(|v| v.behaviour().query == QueryOutput::FirstPluginOnly);
    if first_only && manifests.len() > 1 {
        tracing::warn!(
            "Kong {} reads only the first plugin of a query's output ({}): give each plugin \
             its own pluginserver entry with --dump-plugin NAME (kong-conf prints them)",
            settings.kong(),
            manifests[0].name
        );
    }
    super::print_json(
        &Dump::for_kong(manifests, settings.kong()).speaking(settings.protocol.dump_name()),
    )
}
