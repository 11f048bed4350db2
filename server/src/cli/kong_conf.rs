//! `kong-conf`: the kong.conf lines that serve every plugin of the plugins directory.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use kong_rust_pdk::kong_versions::{DefaultSocket, QueryOutput};
use kong_rust_pluginserver::{
    conf_lines::{self, Form},
    settings::Settings,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Legacy: one pluginserver entry for every plugin (Kong 3.0 to 3.8 only). The default,
    /// one entry per plugin, works on every Kong from 3.0.
    #[arg(long, conflicts_with = "short")]
    single_entry: bool,

    /// Only `plugins` and `pluginserver_names`: Kong's default commands then run the plugin
    /// links that `links --bin-dir /usr/local/bin` makes.
    #[arg(long)]
    short: bool,

    /// The daemon binary kong.conf should run (default: this binary).
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<()> {
    let scan = super::dump::load(settings)?;
    if scan.plugins.is_empty() {
        bail!(
            "no usable plugin in {}",
            settings.plugins_directory.display()
        );
    }
    let plugins_dir = std::fs::canonicalize(&settings.plugins_directory)?;
    let prefix = std::path::absolute(&settings.kong_prefix)?;
    let binary = match args.binary {
        Some(path) => std::path::absolute(path)?,
        None => std::env::current_exe().context("locating this binary")?,
    };
    let form = match (args.single_entry, args.short) {
        (true, _) => Form::SingleEntry,
        (_, true) => Form::Short,
        _ => Form::EntryPerPlugin,
    };
    let kong = settings.kong();
    if form == Form::SingleEntry
        && settings
            .kong_version
            .is_some_and(|v| v.behaviour().query == QueryOutput::FirstPluginOnly)
    {
        bail!(
            "--single-entry is for Kong 3.0 to 3.8: Kong {kong} reads only the first plugin of \
             an entry (leave it out for one entry per plugin, or pass --kong-version)"
        );
    }
    if form == Form::Short
        && kong.behaviour().default_socket == DefaultSocket::UsrLocalKong
        && prefix != Path::new(conf_lines::KONG_DEFAULT_PREFIX)
    {
        bail!(
            "--short: Kong {kong} looks for /usr/local/kong/<plugin>.socket whatever its \
             prefix, but the daemon's kong-prefix is {}",
            prefix.display()
        );
    }
    let names = super::dump::sorted_names(&scan);
    if form != Form::SingleEntry
        && let Some((a, b, key)) = conf_lines::key_collisions(&names).into_iter().next()
    {
        bail!(
            "plugins {a} and {b} map to the same kong.conf keys (pluginserver_{key}_*): Kong \
             cannot configure both; rename one of them or take it out of {}",
            settings.plugins_directory.display()
        );
    }
    let text = conf_lines::render(
        form,
        &binary,
        &plugins_dir,
        &prefix,
        &names,
        settings.protocol.flag(),
        settings.kong_version,
    );
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush().context("writing to stdout")
}
