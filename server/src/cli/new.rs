//! `new NAME`: a plugin crate that builds and passes its tests as created.

use std::path::PathBuf;

use kong_rust_pluginserver::template::{self, PdkSource};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The plugin name, also the package name: 1-64 characters of a-z, 0-9, '-' and '_',
    /// starting with a letter or digit (a package name must start with a letter).
    name: String,
    /// The directory to create (default: ./NAME). It must not exist.
    #[arg(long, value_name = "DIR")]
    path: Option<PathBuf>,
    /// Depend on this local kong-rust-pdk (the plugin-abi directory of a
    /// kong-rust-pluginserver checkout) instead of the crates.io release.
    #[arg(long, value_name = "DIR")]
    pdk_path: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let dir = args.path.unwrap_or_else(|| PathBuf::from(&args.name));
    let pdk = args
        .pdk_path
        .map_or_else(PdkSource::published, PdkSource::Path);
    let created = template::create(&dir, &args.name, pdk)?;
    print!("{}", created.next_steps());
    Ok(())
}
