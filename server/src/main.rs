//! `kong-rust-pluginserver`: serves Rust plugins to Kong Gateway.
//!
//! This file only reads the command line, the environment and the config file, sets up
//! logging, and hands over to [`cli`]; everything else is the library.

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use kong_rust_pluginserver::settings::{self, LogFormat, Settings, SettingsArgs};

use cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match resolve_settings(&cli) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("kong-rust-pluginserver: {}", report(&err));
            return ExitCode::FAILURE;
        }
    };
    init_logging(&settings);
    match cli::run(cli, settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{}", report(&err));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each said once: the library's errors already
/// name their cause in their own message.
fn report(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(settings.log_level.directive()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match settings.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
