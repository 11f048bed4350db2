//! `kong-rust-pluginserver`: serves Rust plugins to Kong Gateway.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use kong_rust_pluginserver::{
    dump::Dump,
    kong_conf::{self, Form},
    loader::{self, LoadOptions, Scan},
    reload,
    serve_lock::{self, Acquired, ServeLock},
    server::{self, Server, SocketAccess},
    state::{Daemon, Limits},
};
use signal_hook::{
    consts::{SIGHUP, SIGINT, SIGTERM},
    iterator::Signals,
};

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

    /// Seconds an event may wait for Kong's next Step before it is freed as abandoned
    /// (Kong's own socket timeout is 60 s).
    #[arg(long, value_name = "SECONDS", default_value_t = Limits::default().event_timeout.as_secs())]
    event_timeout: u64,

    /// Most events one instance may have in flight at once.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_events_per_instance)]
    max_events_per_instance: usize,

    /// Most connections served at once (each gets a thread).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_connections)]
    max_connections: usize,

    /// Seconds to let events in flight finish after SIGTERM.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    drain_timeout: u64,

    /// Also let members of this group (name or gid) connect to the sockets (mode 0660
    /// instead of 0600), e.g. when Kong's workers run as another user than the daemon.
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,

    /// Load plugin files and directories that other users own or may write. Such a file
    /// runs anyone's code in the gateway's request path: for development only.
    #[arg(long)]
    allow_insecure_plugins: bool,
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

/// Loads for the dump and kong-conf: in place, read-only, checks applied.
fn load_plugins(dir: &Path) -> anyhow::Result<Scan> {
    let scan = loader::scan(dir, &LoadOptions::default())?;
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
    let options = LoadOptions {
        copy_dir: Some(location.kong_prefix.join(".kong-rust-pluginserver-libs")),
        allow_insecure: serve.allow_insecure_plugins,
    };
    // Fail fast on an unusable directory, before waiting for the lock.
    loader::plugin_files(&location.plugins_directory, &options)?;
    let access = SocketAccess {
        group: serve
            .socket_group
            .as_deref()
            .map(resolve_group)
            .transpose()?,
    };
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).context("installing signal handlers")?;
    exit_with_parent();
    std::fs::create_dir_all(&location.kong_prefix).with_context(|| {
        format!(
            "creating the kong prefix {}",
            location.kong_prefix.display()
        )
    })?;

    let Some(_lock) = wait_for_serve_lock(&location, &mut signals)? else {
        tracing::info!("standby stopped");
        return Ok(());
    };
    let copy_dir = options.copy_dir.as_deref().expect("set above");
    create_private_dir(copy_dir)?;
    // Load now, not before the wait: a standby that takes over serves current files.
    let scan = loader::scan(&location.plugins_directory, &options)?;
    for failure in &scan.failures {
        tracing::error!("skipped: {failure}");
    }
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
    let limits = Limits {
        max_message: serve.max_message_size,
        max_events_per_instance: serve.max_events_per_instance,
        max_connections: serve.max_connections,
        event_timeout: Duration::from_secs(serve.event_timeout),
    };
    let daemon = Arc::new(Daemon::new(scan.plugins, limits));
    let server = Server::new(daemon.clone());
    for plugin in daemon.plugins() {
        let socket = server::bind(&location.kong_prefix, &plugin.plugin.info.name, access)?;
        server.listen(socket)?;
    }
    let idle =
        (serve.instance_idle_timeout > 0).then(|| Duration::from_secs(serve.instance_idle_timeout));
    start_housekeeping(daemon.clone(), idle)?;

    for signal in signals.forever() {
        if signal == SIGHUP {
            tracing::info!(
                "SIGHUP: rescanning {}",
                location.plugins_directory.display()
            );
            let reloaded = reload::reload(
                &server,
                &location.plugins_directory,
                &location.kong_prefix,
                access,
                &options,
            );
            tracing::info!(
                "reload done: {} added, {} upgraded, {} failed",
                reloaded.added.len(),
                reloaded.upgraded.len(),
                reloaded.failed
            );
        } else {
            break;
        }
    }
    drain(&daemon, Duration::from_secs(serve.drain_timeout));
    Ok(())
}

/// After SIGTERM: refuse new events, let the running ones finish (Kong still sends their
/// Steps), up to `timeout`.
fn drain(daemon: &Daemon, timeout: Duration) {
    daemon.draining.store(true, Ordering::Relaxed);
    let live = daemon.live_events.load(Ordering::Relaxed);
    tracing::info!(
        "shutting down: finishing {live} events in flight (at most {}s)",
        timeout.as_secs()
    );
    let deadline = Instant::now() + timeout;
    while daemon.live_events.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let left = daemon.live_events.load(Ordering::Relaxed);
    if left > 0 {
        tracing::warn!(
            "stopped with {left} events unfinished after {}s",
            timeout.as_secs()
        );
    } else {
        tracing::info!("stopped");
    }
}

/// Kong starts the daemon; when Kong is gone, so is the daemon. The kernel sends SIGTERM
/// when the parent process exits, which takes the normal shutdown path.
fn exit_with_parent() {
    // SAFETY: getppid(2) and prctl(2) with PR_SET_PDEATHSIG have no memory preconditions.
    unsafe {
        let parent = libc::getppid();
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        // The parent may have died before prctl: then the signal never comes.
        if libc::getppid() != parent {
            libc::raise(libc::SIGTERM);
        }
    }
}

/// A directory only the daemon's user can enter, for the private library copies.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", dir.display()))
}

/// A group name or number, as a gid.
fn resolve_group(group: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let name = std::ffi::CString::new(group).context("group name")?;
    // SAFETY: getgrnam(3) with a valid C string; the result is read before any other call.
    let entry = unsafe { libc::getgrnam(name.as_ptr()) };
    if entry.is_null() {
        bail!("--socket-group: no group named {group:?}");
    }
    // SAFETY: non-null result of getgrnam.
    Ok(unsafe { (*entry).gr_gid })
}

/// How often a standby checks whether the serving daemon is gone.
const STANDBY_POLL: Duration = Duration::from_millis(200);

/// Takes the serve lock, standing by while another daemon holds it. `None` when SIGTERM or
/// SIGINT came first.
fn wait_for_serve_lock(
    location: &Location,
    signals: &mut Signals,
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
        std::thread::sleep(STANDBY_POLL);
        // A standby has nothing to reload: it loads the plugins when it takes over.
        if signals.pending().any(|s| s != SIGHUP) {
            return Ok(None);
        }
    }
}

/// Releases idle instances and frees abandoned events, in the background.
fn start_housekeeping(daemon: Arc<Daemon>, idle: Option<Duration>) -> anyhow::Result<()> {
    let timeouts = [Some(daemon.limits.event_timeout), idle];
    let period = timeouts
        .iter()
        .flatten()
        .map(|t| *t / 4)
        .min()
        .unwrap_or(Duration::from_secs(30))
        .clamp(Duration::from_millis(100), Duration::from_secs(30));
    std::thread::Builder::new()
        .name("housekeeping".into())
        .spawn(move || {
            loop {
                std::thread::sleep(period);
                if let Some(idle) = idle {
                    let expired = daemon.expire_idle_instances(idle);
                    if expired > 0 {
                        tracing::info!("released {expired} instances idle for {}s", idle.as_secs());
                    }
                }
                daemon.reap_abandoned_events();
            }
        })
        .context("starting the housekeeping thread")?;
    Ok(())
}
