//! No subcommand: run the daemon.

use kong_rust_pluginserver::{lifecycle, settings::Settings};

/// Serves until SIGTERM (or stands by while another daemon serves).
pub fn run(settings: &Settings) -> anyhow::Result<()> {
    lifecycle::run(settings)?;
    Ok(())
}
