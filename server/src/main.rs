//! `kong-rust-pluginserver`: serves Rust plugins to Kong Gateway.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use anyhow::{Context, bail};
use clap::Parser;
use kong_rust_pluginserver::{
    connection::Limits,
    dump::Dump,
    loader::{self, Scan},
    server,
    state::Daemon,
};
use tokio::signal::unix::{SignalKind, signal};

/// Serves Rust plugins (cdylib .so files built with kong-rust-pdk) to Kong Gateway.
///
/// Loads every *.so in the plugins directory and listens on <kong prefix>/<plugin>.socket
/// for each plugin, speaking Kong's MsgPack:1 pluginserver protocol. Point kong.conf's
/// pluginserver_<name>_start_cmd at this command and its _query_cmd at the same command
/// with --dump-plugin <name>. Logs go to stderr (RUST_LOG sets the level, default info).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Directory holding the plugin libraries (*.so) to serve.
    #[arg(
        short = 'd',
        long,
        value_name = "DIR",
        env = "KONG_RUST_PLUGINSERVER_PLUGINS_DIRECTORY",
        default_value = "/usr/local/lib/kong/rust-plugins"
    )]
    plugins_directory: PathBuf,

    /// Kong's prefix directory; sockets are created there as <plugin>.socket.
    #[arg(
        short = 'p',
        long,
        value_name = "DIR",
        env = "KONG_RUST_PLUGINSERVER_KONG_PREFIX",
        default_value = "/usr/local/kong"
    )]
    kong_prefix: PathBuf,

    /// Print the description Kong needs for plugin NAME as JSON on stdout, and exit.
    /// Use it as kong.conf's pluginserver_<name>_query_cmd. Binds nothing.
    #[arg(long, value_name = "NAME", conflicts_with = "dump_all_plugins")]
    dump_plugin: Option<String>,

    /// Print the description of every plugin as JSON on stdout, and exit (for Kong 3.0-3.8
    /// setups that serve all plugins from one pluginserver entry). Binds nothing.
    #[arg(long)]
    dump_all_plugins: bool,

    /// Largest accepted request, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_message)]
    max_message_size: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let scan = load_plugins(&cli.plugins_directory)?;
    if let Some(name) = &cli.dump_plugin {
        let Some(plugin) = scan.plugins.get(name) else {
            let mut served: Vec<&str> = scan.plugins.keys().map(String::as_str).collect();
            served.sort_unstable();
            bail!(
                "no plugin named {name:?} in {} (found: {})",
                cli.plugins_directory.display(),
                if served.is_empty() {
                    "none".to_owned()
                } else {
                    served.join(", ")
                }
            );
        };
        return print_json(&Dump::of([&plugin.info]));
    }
    if cli.dump_all_plugins {
        let mut infos: Vec<_> = scan.plugins.values().map(|p| &p.info).collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        return print_json(&Dump::of(infos));
    }
    serve(cli, scan)
}

fn load_plugins(dir: &Path) -> anyhow::Result<Scan> {
    let scan = loader::scan(dir)?;
    for failure in &scan.failures {
        tracing::error!("skipped: {failure}");
    }
    Ok(scan)
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, value)?;
    writeln!(stdout)?;
    stdout.flush().context("writing the dump to stdout")
}

fn serve(cli: Cli, scan: Scan) -> anyhow::Result<()> {
    if scan.plugins.is_empty() {
        bail!(
            "no usable plugin in {}; nothing to serve",
            cli.plugins_directory.display()
        );
    }
    for plugin in scan.plugins.values() {
        let info = &plugin.info;
        tracing::info!(
            plugin = %info.name,
            version = %info.version,
            priority = info.priority,
            phases = ?info.phases.iter().map(|p| p.name()).collect::<Vec<_>>(),
            "loaded {}",
            plugin.path.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kong-rust-pluginserver")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let daemon = Arc::new(Daemon::new(scan.plugins));
        let mut names: Vec<&str> = daemon.plugins.keys().map(String::as_str).collect();
        names.sort_unstable();
        let sockets = server::bind_all(&cli.kong_prefix, names)?;
        let limits = Limits {
            max_message: cli.max_message_size,
        };
        server::serve(daemon.clone(), sockets, limits, shutdown_signal()?).await;
        tracing::info!("shutting down");
        Ok(())
    })
}

/// Completes on SIGTERM (what Kong sends when it stops) or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
