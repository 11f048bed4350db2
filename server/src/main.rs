//! `kong-rust-pluginserver`: serves Rust plugins to Kong Gateway.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Args, CommandFactory, Parser, Subcommand};
use kong_rust_pdk::{Phase, Value, testkit::TestRequest};
use kong_rust_pluginserver::{
    client::{self, Client},
    dump::Dump,
    kong_conf::{self, Form},
    loader::{self, LoadOptions, Scan},
    metrics, reload,
    serve_lock::{self, Acquired, ServeLock},
    server::{self, Server, SocketAccess, Threading},
    settings::{self, LogFormat, Settings, SettingsArgs},
    state::Daemon,
    template::{self, PdkSource},
    try_event::{self, Ending, Target},
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
    settings: SettingsArgs,

    /// A TOML file of settings (keys as the long flags, e.g. `max-connections = 100`).
    /// Flags and KONG_RUST_PLUGINSERVER_* variables take precedence over it.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "KONG_RUST_PLUGINSERVER_CONFIG"
    )]
    config: Option<PathBuf>,

    /// Print the description Kong needs for plugin NAME as JSON on stdout, and exit.
    /// Use it as kong.conf's pluginserver_<name>_query_cmd. Binds nothing.
    #[arg(long, value_name = "NAME", conflicts_with = "dump_all_plugins")]
    dump_plugin: Option<String>,

    /// Print the description of every plugin as JSON on stdout, and exit (for Kong 3.0-3.8
    /// setups that serve all plugins from one pluginserver entry). Binds nothing.
    #[arg(long)]
    dump_all_plugins: bool,

    #[command(subcommand)]
    command: Option<Command>,
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
    /// Show what a running daemon serves: plugins, versions, instances, counters.
    Status {
        /// The socket to ask (default: the first *.socket in the kong prefix).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,

        /// Print the raw status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Play Kong for one event: run a plugin's phase handler against a described request
    /// and print every PDK call it makes and the resulting response.
    Try(TryArgs),
    /// Create a plugin crate that builds and passes its tests as created.
    New {
        /// The plugin name, also the package name: 1-64 characters of a-z, 0-9, '-' and '_',
        /// starting with a letter.
        name: String,
        /// The directory to create (default: ./NAME). It must not exist.
        #[arg(long, value_name = "DIR")]
        path: Option<PathBuf>,
        /// Depend on this local kong-rust-pdk (the plugin-abi directory of a
        /// kong-rust-pluginserver checkout) instead of the crates.io release.
        #[arg(long, value_name = "DIR")]
        pdk_path: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct TryArgs {
    /// The plugin to run.
    plugin: String,

    /// The plugin configuration, as JSON (what Kong sends, defaults included).
    #[arg(long, default_value = "{}")]
    config_json: String,

    /// The phase to run.
    #[arg(long, default_value = "access", value_parser = parse_phase)]
    phase: Phase,

    /// Request method.
    #[arg(long, default_value = "GET")]
    method: String,

    /// Request path, with an optional ?query.
    #[arg(long, default_value = "/")]
    path: String,

    /// A request header, `name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,

    /// The request body.
    #[arg(long)]
    body: Option<String>,

    /// The client address.
    #[arg(long, default_value = "127.0.0.1")]
    client_ip: String,

    /// Run the plugin from this library file in-process instead of in a running daemon.
    #[arg(long, value_name = "PLUGIN.so", conflicts_with = "socket")]
    file: Option<PathBuf>,

    /// The running daemon's socket (default: <kong prefix>/<plugin>.socket).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

fn parse_phase(name: &str) -> Result<Phase, String> {
    Phase::from_name(name.as_bytes()).ok_or_else(|| {
        let names: Vec<&str> = Phase::ALL.iter().map(|p| p.name()).collect();
        format!("not a phase; one of {}", names.join(", "))
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match resolve_settings(&cli) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("kong-rust-pluginserver: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(&settings);
    match run(cli, settings) {
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

fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::KongConf {
            single_entry,
            binary,
        }) => return print_kong_conf(&settings, single_entry, binary),
        Some(Command::Status { socket, json }) => return print_status(&settings, socket, json),
        Some(Command::Try(args)) => return try_event(&settings, args),
        Some(Command::New {
            name,
            path,
            pdk_path,
        }) => {
            let dir = path.unwrap_or_else(|| PathBuf::from(&name));
            let pdk = pdk_path.map_or_else(PdkSource::published, PdkSource::Path);
            let created = template::create(&dir, &name, pdk)?;
            print!("{}", created.next_steps());
            return Ok(());
        }
        None => {}
    }
    if let Some(name) = &cli.dump_plugin {
        let scan = load_plugins(&settings.plugins_directory)?;
        let Some(plugin) = scan.plugins.get(name) else {
            bail!(
                "no plugin named {name:?} in {} (found: {})",
                settings.plugins_directory.display(),
                names_or_none(&scan)
            );
        };
        return print_json(&Dump::of([&plugin.info]));
    }
    if cli.dump_all_plugins {
        let scan = load_plugins(&settings.plugins_directory)?;
        let mut infos: Vec<_> = scan.plugins.values().map(|p| &p.info).collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        return print_json(&Dump::of(infos));
    }
    run_daemon(settings)
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
    location: &Settings,
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

fn print_status(settings: &Settings, socket: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let socket = match socket {
        Some(socket) => socket,
        None => client::any_socket(&settings.kong_prefix).with_context(|| {
            format!(
                "no *.socket in {}: is the daemon running with this --kong-prefix?",
                settings.kong_prefix.display()
            )
        })?,
    };
    let mut client = Client::connect(&socket)?;
    let status = client.call("plugin.GetStatus", &())?;
    if json {
        return print_json(&status);
    }
    let mut out = std::io::stdout().lock();
    let number = |v: &serde_json::Value, key: &str| v[key].as_u64().unwrap_or(0);
    writeln!(
        out,
        "daemon pid {}  events in flight {}{}",
        number(&status, "Pid"),
        number(&status, "LiveEvents"),
        if status["Draining"] == true {
            "  (shutting down)"
        } else {
            ""
        }
    )?;
    writeln!(
        out,
        "{:<24} {:<9} {:>9} {:>7} {:>10} {:>8} {:>6} {:>9}  FILE",
        "PLUGIN", "VERSION", "INSTANCES", "CONFIGS", "EVENTS", "FAILURES", "PANICS", "ABANDONED"
    )?;
    for (name, plugin) in status["Plugins"].as_object().into_iter().flatten() {
        writeln!(
            out,
            "{:<24} {:<9} {:>9} {:>7} {:>10} {:>8} {:>6} {:>9}  {}",
            name,
            plugin["Version"].as_str().unwrap_or("?"),
            plugin["Instances"].as_array().map_or(0, Vec::len),
            number(plugin, "Configurations"),
            number(plugin, "Events"),
            number(plugin, "Failures"),
            number(plugin, "Panics"),
            number(plugin, "Abandoned"),
            plugin["File"].as_str().unwrap_or("?"),
        )?;
    }
    Ok(())
}

fn try_event(settings: &Settings, args: TryArgs) -> anyhow::Result<()> {
    let config: serde_json::Value =
        serde_json::from_str(&args.config_json).context("--config-json is not JSON")?;
    let (path, query) = match args.path.split_once('?') {
        Some((path, query)) => (path.to_owned(), query.to_owned()),
        None => (args.path.clone(), String::new()),
    };
    let mut request = TestRequest::new(&args.method, &path).client_ip(&args.client_ip);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        request = match pair.split_once('=') {
            Some((name, value)) => request.query(name, value),
            None => request.query_flag(pair),
        };
    }
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .with_context(|| format!("--header {header:?} is not `name: value`"))?;
        request = request.header(name.trim(), value.trim());
    }
    if let Some(body) = &args.body {
        request = request.body(body.clone());
    }
    let socket;
    let target = match &args.file {
        Some(file) => Target::File(file),
        None => {
            socket = args
                .socket
                .clone()
                .unwrap_or_else(|| server::socket_path(&settings.kong_prefix, &args.plugin));
            Target::Daemon(&socket)
        }
    };
    let played = try_event::play(target, &args.plugin, &config, args.phase, request)?;
    let mut out = std::io::stdout().lock();
    for call in &played.calls {
        let args: Vec<String> = call.args.iter().map(show).collect();
        writeln!(out, "-> {}({})", call.method, args.join(", "))?;
        match &call.answer {
            Ok(Some(value)) => writeln!(out, "<- {}", show(value))?,
            Ok(None)
                if matches!(
                    call.method.as_str(),
                    "kong.response.exit" | "kong.response.error"
                ) => {}
            Ok(None) => writeln!(out, "<- nil")?,
            Err(error) => writeln!(out, "<- Kong raises: {error}")?,
        }
    }
    let recorded = played.simulation.recorded();
    match &played.ending {
        Ending::Returned => writeln!(out, "== {} handler returned", args.phase)?,
        Ending::Exited => writeln!(out, "== {} handler ended the request", args.phase)?,
        Ending::KongError(error) => writeln!(out, "== aborted by Kong: {error}")?,
        Ending::Failed(error) => writeln!(out, "== failed: {error}")?,
    }
    match &recorded.exit {
        Some(exit) => {
            writeln!(out, "response (from the plugin): {}", exit.status)?;
            for (name, values) in &exit.headers.0 {
                writeln!(out, "  {name}: {}", values.join(", "))?;
            }
            if let Some(body) = &exit.body {
                writeln!(out, "  body: {}", show(body))?;
            }
        }
        None => {
            let response = &recorded.response;
            writeln!(out, "response headers set by the plugin:")?;
            for (name, values) in &response.headers.0 {
                writeln!(out, "  {name}: {}", values.join(", "))?;
            }
            let upstream = &recorded.upstream_request;
            writeln!(
                out,
                "upstream request: {} {}{}{}",
                upstream.method,
                upstream.path,
                if upstream.raw_query.is_empty() {
                    ""
                } else {
                    "?"
                },
                upstream.raw_query
            )?;
            for (name, values) in &upstream.headers.0 {
                writeln!(out, "  {name}: {}", values.join(", "))?;
            }
        }
    }
    for line in &recorded.logs {
        writeln!(out, "log [{}] {}", line.level, line.message)?;
    }
    Ok(())
}

/// A PDK value as JSON, for people to read.
fn show(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| format!("{value:?}"))
}

fn run_daemon(settings: Settings) -> anyhow::Result<()> {
    let options = LoadOptions {
        copy_dir: Some(settings.kong_prefix.join(".kong-rust-pluginserver-libs")),
        allow_insecure: settings.allow_insecure_plugins,
    };
    // Fail fast on an unusable directory, before waiting for the lock.
    loader::plugin_files(&settings.plugins_directory, &options)?;
    let access = SocketAccess {
        group: settings
            .socket_group
            .as_deref()
            .map(resolve_group)
            .transpose()?,
    };
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).context("installing signal handlers")?;
    exit_with_parent();
    std::fs::create_dir_all(&settings.kong_prefix).with_context(|| {
        format!(
            "creating the kong prefix {}",
            settings.kong_prefix.display()
        )
    })?;

    let Some(_lock) = wait_for_serve_lock(&settings, &mut signals)? else {
        tracing::info!("standby stopped");
        return Ok(());
    };
    let copy_dir = options.copy_dir.as_deref().expect("set above");
    create_private_dir(copy_dir)?;
    // Load now, not before the wait: a standby that takes over serves current files.
    let scan = loader::scan(&settings.plugins_directory, &options)?;
    for failure in &scan.failures {
        tracing::error!("skipped: {failure}");
    }
    if scan.plugins.is_empty() {
        bail!(
            "no usable plugin in {}; nothing to serve",
            settings.plugins_directory.display()
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
    let daemon = Arc::new(Daemon::new(scan.plugins, settings.limits));
    let threading = match settings.event_loops {
        0 => Threading::PerConnection,
        n => Threading::EventLoops(n),
    };
    let server = Server::new(daemon.clone(), threading).context("starting the event loops")?;
    for plugin in daemon.plugins() {
        let socket = server::bind(&settings.kong_prefix, &plugin.plugin.info.name, access)?;
        server.listen(socket)?;
    }
    if let Some(addr) = settings.metrics_listen {
        metrics::serve(addr, server.clone())
            .with_context(|| format!("serving metrics on {addr}"))?;
    }
    start_housekeeping(daemon.clone(), settings.instance_idle_timeout)?;

    for signal in signals.forever() {
        if signal == SIGHUP {
            tracing::info!(
                "SIGHUP: rescanning {}",
                settings.plugins_directory.display()
            );
            let reloaded = reload::reload(
                &server,
                &settings.plugins_directory,
                &settings.kong_prefix,
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
    drain(&daemon, settings.drain_timeout);
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
    location: &Settings,
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
