//! `kong-conf`: the kong.conf lines that serve every plugin of the plugins directory.

use std::{io::Write, path::PathBuf};

use anyhow::{Context, bail};
use kong_rust_pluginserver::{
    conf_lines::{self, Form},
    settings::Settings,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The one-entry form for Kong 3.0 to 3.8 (default: one entry per plugin, for 3.9+).
    #[arg(long)]
    single_entry: bool,

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
    let form = if args.single_entry {
        Form::SingleEntry
    } else {
        Form::EntryPerPlugin
    };
    let names = super::dump::sorted_names(&scan);
    let text = conf_lines::render(
        form,
        &binary,
        &plugins_dir,
        &prefix,
        &names,
        settings.protocol.flag(),
    );
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush().context("writing to stdout")
}
