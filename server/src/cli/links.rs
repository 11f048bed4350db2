//! `links`: a link per plugin to this binary, for Kong's default pluginserver commands.

use std::path::{Path, PathBuf};

use anyhow::Context;
use kong_rust_pdk::kong_versions::QueryOutput;
use kong_rust_pluginserver::{
    plugin_links,
    settings::{Settings, SettingsArgs},
};

use super::invocation::DEFAULT_CONFIG;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where Kong looks for plugin executables.
    #[arg(long, value_name = "DIR", default_value = "/usr/local/bin")]
    bin_dir: PathBuf,

    /// The daemon binary the links point at (default: this binary).
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<()> {
    let scan = super::dump::load(settings)?;
    let names = super::dump::sorted_names(&scan);
    anyhow::ensure!(
        !names.is_empty(),
        "no usable plugin in {}",
        settings.plugins_directory.display()
    );
    let binary = match args.binary {
        Some(path) => std::path::absolute(path)?,
        None => std::env::current_exe().context("locating this binary")?,
    };
    // Kong 3.0-3.8 query `query_NAME`; 3.9+ run `NAME -dump`.
    let query_links = settings.kong().behaviour().query == QueryOutput::EveryPlugin;
    let wanted = plugin_links::link_names(&names, query_links);
    let report = plugin_links::refresh(&args.bin_dir, &binary, &wanted)?;
    for path in &report.created {
        println!("created {}", path.display());
    }
    for path in &report.kept {
        println!("kept    {}", path.display());
    }
    for path in &report.removed {
        println!("removed {}", path.display());
    }
    warn_about_the_environment(settings)
}

/// Kong runs the links with an empty environment: the daemon then sees only the default
/// config file. Says so when that gives other directories than this command used.
fn warn_about_the_environment(settings: &Settings) -> anyhow::Result<()> {
    let path = Path::new(DEFAULT_CONFIG);
    let file = if path.exists() {
        SettingsArgs::from_file(path)?
    } else {
        SettingsArgs::default()
    };
    let seen = SettingsArgs::default().resolve(file)?;
    for (what, ours, theirs) in [
        (
            "plugins-directory",
            &settings.plugins_directory,
            &seen.plugins_directory,
        ),
        ("kong-prefix", &settings.kong_prefix, &seen.kong_prefix),
    ] {
        if ours != theirs {
            eprintln!(
                "note: Kong runs the links without environment, so they read {DEFAULT_CONFIG} \
                 ({}), where {what} is {}, not {}: set `{what} = \"{}\"` there",
                if path.exists() { "found" } else { "missing" },
                theirs.display(),
                ours.display(),
                ours.display()
            );
        }
    }
    if settings.kong_version != seen.kong_version {
        eprintln!(
            "note: set `kong-version = \"{}\"` in {DEFAULT_CONFIG} too, so the linked daemon \
             follows the same Kong release",
            settings.kong()
        );
    }
    Ok(())
}
