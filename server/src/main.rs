//! `kong-rust-pluginserver`: serves Rust plugins to Kong Gateway.
//!
//! This file only reads the command line, the environment and the config file, sets up
//! logging, and hands over to [`cli`]; everything else is the library.

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use kong_rust_pluginserver::{
    isolation::worker,
    probe,
    settings::{self, Settings, SettingsArgs},
};

use cli::Cli;

fn main() -> ExitCode {
    // Processes the daemon starts itself (a library probe, a plugin worker): no command
    // line of their own, no settings to resolve again.
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    match args.first().and_then(|a| a.to_str()) {
        Some(probe::SUBCOMMAND) => return probe::child_main(&args[1..]),
        Some(worker::SUBCOMMAND) => return worker::main(&args[1..]),
        _ => {}
    }
    let cli = Cli::parse();
    let settings = match resolve_settings(&cli) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("kong-rust-pluginserver: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(&settings);
    match cli::run(cli, settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Flags and environment, then the file, then defaults; unknown variables refused.
fn resolve_settings(cli: &Cli) -> anyhow::Result<Settings> {
    let known: Vec<String> = Cli::command()
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    settings::check_environment(std::env::vars(), &known)?;
    let file = match &cli.config {
        Some(path) => SettingsArgs::from_file(path)?,
        None => SettingsArgs::default(),
    };
    Ok(cli.settings.clone().resolve(file)?)
}

/// Logs go to stderr: Kong copies the daemon's stderr into its error.log, and stdout must
/// stay clean for the dump. RUST_LOG, when set, overrides the level with its own filters.
fn init_logging(settings: &Settings) {
    settings::init_logging(settings.log_level, settings.log_format);
}
