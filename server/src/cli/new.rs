//! `new NAME`: a plugin crate that builds and passes its tests as created.

use std::path::PathBuf;

use kong_rust_pluginserver::template::{self, PdkSource};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The plugin name, also the package name: 1-64 characters of a-z, 0-9, '-' and '_',
    /// starting with a letter (a package name cannot start with a digit).
    name: String,
    /// The directory to create (default: ./NAME). It must not exist.
    #[arg(long, value_name = "DIR")]
    path: Option<PathBuf>,
    /// Depend on this local kong-rust-pdk (the plugin-abi directory of a
    /// kong-rust-pluginserver checkout) instead of the sources built into this binary.
    #[arg(long, value_name = "DIR", conflicts_with = "pdk_registry")]
    pdk_path: Option<PathBuf>,
    /// Depend on kong-rust-pdk from crates.io (VERSION, default: this daemon's major.minor)
    /// instead of the sources built into this binary.
    #[arg(long, value_name = "VERSION")]
    #[allow(clippy::option_option)]
    pdk_registry: Option<Option<String>>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let dir = args.path.unwrap_or_else(|| PathBuf::from(&args.name));
    // By default the sources this binary carries, written into the crate (vendor/): no
    // checkout and no registry release needed, and the PDK matches this daemon's ABI.
    let pdk = match (args.pdk_path, args.pdk_registry) {
        (Some(path), _) => PdkSource::Path(path),
        (None, Some(Some(version))) => PdkSource::Version(version),
        (None, Some(None)) => PdkSource::published(),
        (None, None) => PdkSource::bundled()?,
    };
    let created = template::create(&dir, &args.name, pdk)?;
    print!("{}", created.next_steps());
    Ok(())
}
