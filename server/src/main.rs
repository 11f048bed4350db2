//! `kong-rust-pluginserver`: serves Rust plugins to Kong Gateway.
//!
//! This file only reads the command line, the environment and the config file, sets up
//! logging, and hands over to [`cli`]; everything else is the library.

mod cli;

use std::{path::Path, process::ExitCode};

use clap::CommandFactory;
use kong_rust_pluginserver::{
    lifecycle::isolation::worker,
    loader::probe,
    settings::{self, Settings, SettingsArgs},
};

use cli::{
    Cli,
    invocation::{self, DEFAULT_CONFIG, Invocation},
};

fn main() -> ExitCode {
    // Processes the daemon starts itself (a library probe, a plugin worker): no command
    // line of their own, no settings to resolve again.
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    match args.first().and_then(|a| a.to_str()) {
        Some(probe::SUBCOMMAND) => return probe::child_main(&args[1..]),
        Some(worker::SUBCOMMAND) => return worker::main(&args[1..]),
        _ => {}
    }
    let invoked = invocation::read(
        std::env::args_os().collect(),
        Path::new(DEFAULT_CONFIG).exists(),
        std::env::var_os("KONG_RUST_PLUGINSERVER_CONFIG").is_some(),
    );
    let (args, link) = match invoked {
        Ok(Invocation::Full(args)) => (args, None),
        Ok(Invocation::Link { plugin, args }) => (args, Some(plugin)),
        Err(err) => {
            eprintln!("kong-rust-pluginserver: {err}");
            return ExitCode::FAILURE;
        }
    };
    let cli = match cli::parse(args) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    let settings = match resolve_settings(&cli) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("kong-rust-pluginserver: {}", report(&err));
            return ExitCode::FAILURE;
        }
    };
    init_logging(&settings);
    std::panic::set_hook(Box::new(log_panic));
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    if let Some(plugin) = link {
        tracing::debug!("invoked as plugin {plugin}'s link (Kong's default command)");
    }
    match cli::run(cli, settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{}", report(&err));
            match err.downcast_ref::<cli::Exit>() {
                Some(exit) => ExitCode::from(exit.code),
                None => ExitCode::FAILURE,
            }
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
    let kong_prefix = std::env::var_os("KONG_PREFIX").map(std::path::PathBuf::from);
    Ok(cli.settings.clone().resolve_with(file, kong_prefix)?)
}

/// Logs go to stderr: Kong copies the daemon's stderr into its error.log, and stdout must
/// stay clean for the dump. RUST_LOG, when set, overrides the level with its own filters.
fn init_logging(settings: &Settings) {
    settings::init_logging(settings.log_level, settings.log_format);
}

/// The daemon's panic hook: a panic is reported through the logger (one JSON line with
/// `--log-format json`), not as text on stderr. Plugin libraries report their own panics
/// through the host logger (kong-rust-pdk's host_log).
fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)");
    let location = info
        .location()
        .map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column()))
        .unwrap_or_default();
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("unnamed");
    let backtrace = std::backtrace::Backtrace::capture();
    if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
        tracing::error!(target: "panic", %backtrace, "thread '{thread}' panicked{location}: {message}");
    } else {
        tracing::error!(target: "panic", "thread '{thread}' panicked{location}: {message}");
    }
}
