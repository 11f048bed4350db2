//! `--dump-plugin NAME` and `--dump-all-plugins`: what Kong's query command prints.

use anyhow::bail;
use kong_rust_pluginserver::{
    dump::Dump,
    loader::{self, LoadOptions, Scan},
    settings::Settings,
};

/// Loads for the dump and kong-conf: in place, read-only, checks applied; skipped files
/// are logged on stderr (stdout stays pure JSON).
pub fn load(settings: &Settings) -> anyhow::Result<Scan> {
    let options = LoadOptions {
        copy_dir: None,
        allow_insecure: settings.allow_insecure_plugins,
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
    super::print_json(&Dump::of([&plugin.manifest]).speaking(settings.protocol.dump_name()))
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
    super::print_json(&Dump::of(manifests).speaking(settings.protocol.dump_name()))
}
