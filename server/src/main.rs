//! `kong-rust-pluginserver`: serves Rust plugins to Kong Gateway.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use kong_rust_pluginserver::{
    connection::Limits,
    dump::Dump,
    kong_conf::{self, Form},
    loader::{self, Scan},
    serve_lock::{self, Acquired, ServeLock},
    server,
    state::Daemon,
};
use tokio::signal::unix::{SignalKind, signal};

/// Serves Rust plugins (cdylib .so files built with kong-rust-pdk) to Kong Gateway.
///
/// Loads every *.so in the plugins directory and listens on <kong prefix>/<plugin>.socket
/// for each plugin, speaking Kong's MsgPack:1 pluginserver protocol. Point kong.conf's
/// pluginserver_<name>_start_cmd at this command and its _query_cmd at the same command
/// with --dump-plugin <name> (`kong-conf` prints the lines). Logs go to stderr (RUST_LOG
/// sets the level, default info).
///
/// Several daemons started for the same plugins directory and prefix agree on one: the
/// first serves every plugin, the others stand by and take over if it dies.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(flatten)]
    location: Location,

    #[command(flatten)]
    serve: ServeArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

/// Where the plugins and Kong's prefix are.
#[derive(Debug, Args)]
struct Location {
    /// Directory holding the plugin libraries (*.so) to serve.
    #[arg(
        short = 'd',
        long,
        global = true,
        value_name = "DIR",
        env = "KONG_RUST_PLUGINSERVER_PLUGINS_DIRECTORY",
        default_value = "/usr/local/lib/kong/rust-plugins"
    )]
    plugins_directory: PathBuf,

    /// Kong's prefix directory; sockets are created there as <plugin>.socket.
    #[arg(
        short = 'p',
        long,
        global = true,
        value_name = "DIR",
        env = "KONG_RUST_PLUGINSERVER_KONG_PREFIX",
        default_value = "/usr/local/kong"
    )]
    kong_prefix: PathBuf,
}

#[derive(Debug, Args)]
struct ServeArgs {
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

    /// Seconds without an event after which an instance is released (0: never). Kong starts
    /// an expired instance again on its next request (it gets "no plugin instance").
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    instance_idle_timeout: u64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the kong.conf lines that serve every plugin of the plugins directory.
    KongConf {
        /// The one-entry form for Kong 3.0 to 3.8 (default: one entry per plugin, for 3.9+).
        #[arg(long)]
        single_entry: bool,

        /// The daemon binary kong.conf should run (default: this binary).
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
    },
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
    let location = cli.location;
    if let Some(Command::KongConf {
        single_entry,
        binary,
    }) = cli.command
    {
        return print_kong_conf(&location, single_entry, binary);
    }
    let serve = cli.serve;
    if let Some(name) = &serve.dump_plugin {
        let scan = load_plugins(&location.plugins_directory)?;
        let Some(plugin) = scan.plugins.get(name) else {
            bail!(
                "no plugin named {name:?} in {} (found: {})",
                location.plugins_directory.display(),
                names_or_none(&scan)
            );
        };
        return print_json(&Dump::of([&plugin.info]));
    }
    if serve.dump_all_plugins {
        let scan = load_plugins(&location.plugins_directory)?;
        let mut infos: Vec<_> = scan.plugins.values().map(|p| &p.info).collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        return print_json(&Dump::of(infos));
    }
    run_daemon(location, serve)
}

fn load_plugins(dir: &Path) -> anyhow::Result<Scan> {
    let scan = loader::scan(dir)?;
    for failure in &scan.failures {
        tracing::error!("skipped: {failure}");
    }
    Ok(scan)
}

fn sorted_names(scan: &Scan) -> Vec<&str> {
    let mut names: Vec<&str> = scan.plugins.keys().map(String::as_str).collect();
    names.sort_unstable();
    names
}

fn names_or_none(scan: &Scan) -> String {
    let names = sorted_names(scan);
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, value)?;
    writeln!(stdout)?;
    stdout.flush().context("writing to stdout")
}

fn print_kong_conf(
    location: &Location,
    single_entry: bool,
    binary: Option<PathBuf>,
) -> anyhow::Result<()> {
    let scan = load_plugins(&location.plugins_directory)?;
    if scan.plugins.is_empty() {
        bail!(
            "no usable plugin in {}",
            location.plugins_directory.display()
        );
    }
    let plugins_dir = std::fs::canonicalize(&location.plugins_directory)?;
    let prefix = std::path::absolute(&location.kong_prefix)?;
    let binary = match binary {
        Some(path) => std::path::absolute(path)?,
        None => std::env::current_exe().context("locating this binary")?,
    };
    let form = if single_entry {
        Form::SingleEntry
    } else {
        Form::EntryPerPlugin
    };
    let text = kong_conf::render(form, &binary, &plugins_dir, &prefix, &sorted_names(&scan));
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush().context("writing to stdout")
}

fn run_daemon(location: Location, serve: ServeArgs) -> anyhow::Result<()> {
    // Fail fast on an unusable directory, before waiting for the lock.
    load_plugins(&location.plugins_directory)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kong-rust-pluginserver")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut shutdown = Box::pin(shutdown_signal()?);
        std::fs::create_dir_all(&location.kong_prefix).with_context(|| {
            format!(
                "creating the kong prefix {}",
                location.kong_prefix.display()
            )
        })?;
        let Some(_lock) = wait_for_serve_lock(&location, shutdown.as_mut()).await? else {
            tracing::info!("standby stopped");
            return Ok(());
        };
        // Load now, not before the wait: a standby that takes over serves current files.
        let scan = load_plugins(&location.plugins_directory)?;
        if scan.plugins.is_empty() {
            bail!(
                "no usable plugin in {}; nothing to serve",
                location.plugins_directory.display()
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
        let names = sorted_names(&scan)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        let daemon = Arc::new(Daemon::new(scan.plugins));
        let sockets = server::bind_all(&location.kong_prefix, names.iter().map(String::as_str))?;
        if serve.instance_idle_timeout > 0 {
            let idle = Duration::from_secs(serve.instance_idle_timeout);
            tokio::spawn(expire_idle_instances(daemon.clone(), idle));
        }
        let limits = Limits {
            max_message: serve.max_message_size,
        };
        server::serve(daemon, sockets, limits, shutdown).await;
        tracing::info!("shutting down");
        Ok(())
    })
}

/// How often a standby checks whether the serving daemon is gone.
const STANDBY_POLL: Duration = Duration::from_millis(200);

/// Takes the serve lock, standing by while another daemon holds it. `None` when shutdown
/// came first.
async fn wait_for_serve_lock(
    location: &Location,
    mut shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> anyhow::Result<Option<ServeLock>> {
    let path = serve_lock::lock_path(&location.kong_prefix, &location.plugins_directory);
    let mut announced = false;
    loop {
        match serve_lock::try_acquire(&path)
            .with_context(|| format!("locking {}", path.display()))?
        {
            Acquired::Serving(lock) => {
                if announced {
                    tracing::info!("the serving daemon is gone; taking over");
                }
                return Ok(Some(lock));
            }
            Acquired::Held { pid } => {
                if !announced {
                    tracing::info!(
                        "another daemon{} serves {} on {}; standing by to take over",
                        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                        location.plugins_directory.display(),
                        location.kong_prefix.display()
                    );
                    announced = true;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(STANDBY_POLL) => {}
            _ = shutdown.as_mut() => return Ok(None),
        }
    }
}

async fn expire_idle_instances(daemon: Arc<Daemon>, idle: Duration) {
    let period = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
    let mut ticks = tokio::time::interval(period);
    loop {
        ticks.tick().await;
        let expired = daemon.expire_idle_instances(idle);
        if expired > 0 {
            tracing::info!("released {expired} instances idle for {}s", idle.as_secs());
        }
    }
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
