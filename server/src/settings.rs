//! Daemon settings: command-line flags, `KONG_RUST_PLUGINSERVER_*` environment variables,
//! and an optional TOML file (`--config`), in that order of precedence, then defaults.
//!
//! One type, [`SettingsArgs`], is both the flags (clap) and the file (serde), so a setting
//! has one name everywhere: `--max-connections`, `KONG_RUST_PLUGINSERVER_MAX_CONNECTIONS`,
//! `max-connections = ...`. Unknown file keys, unknown `KONG_RUST_PLUGINSERVER_*`
//! variables and bad values are refused at start, naming them.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use kong_rust_pdk::kong_versions::{DefaultSocket, KongVersion, LostInstance};
use serde::{Deserialize, Serialize};

/// Limits that protect the daemon from runaway clients and plugins.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted request, in bytes.
    pub max_message: usize,
    /// Most events one instance may have in flight at once.
    pub max_events_per_instance: usize,
    /// Most connections served at once.
    pub max_connections: usize,
    /// An event that waits longer than this for Kong's next Step is abandoned.
    pub event_timeout: Duration,
    /// Most instances one plugin may have at once.
    pub max_instances_per_plugin: usize,
    /// Most bytes of distinct configurations (canonical JSON) one plugin may hold at once.
    pub max_config_bytes_per_plugin: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message: 16 << 20,
            max_events_per_instance: 10_000,
            max_connections: 16_384,
            event_timeout: Duration::from_secs(60),
            max_instances_per_plugin: 50_000,
            max_config_bytes_per_plugin: 64 << 20,
        }
    }
}

/// The prefix of every environment variable the daemon reads.
pub const ENV_PREFIX: &str = "KONG_RUST_PLUGINSERVER_";

/// Why the settings are refused.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file cannot be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file has an unknown key or a bad value.
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// An environment variable with the daemon's prefix that is no setting.
    #[error("unknown environment variable {name} (the settings are: {known})")]
    UnknownVariable {
        /// The variable.
        name: String,
        /// The variables the daemon reads.
        known: String,
    },
    /// A value that is not what the setting takes.
    #[error("{setting}: {message}")]
    Value {
        /// The setting.
        setting: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// Start, stop, reloads, and everything above (the default).
    Info,
    /// One line per event, and everything above.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The `tracing` filter directive for this level.
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    Text,
    /// One JSON object per line.
    Json,
}

/// What a crash of plugin code takes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Every plugin in the daemon's own process (the default): panics are contained, but
    /// an abort, a segfault, a stack overflow or `exit` in any plugin stops every plugin.
    #[default]
    None,
    /// One worker process per plugin library, supervised: a crash stops only that plugin
    /// for the moment its worker takes to restart, and its requests in flight are still
    /// answered (failing closed).
    Process,
}

impl Isolation {
    /// The setting's value, as written.
    pub fn label(self) -> &'static str {
        match self {
            Isolation::None => "none",
            Isolation::Process => "process",
        }
    }
}

/// The pluginserver protocol the plugin sockets speak (the dump announces it to Kong).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `MsgPack:1` (the default): MessagePack-RPC, one RPC per pooled connection.
    #[default]
    Msgpack,
    /// `ProtoBuf:1` (go-pdk's protocol): a whole event on one connection, encoded in C on
    /// Kong's side. Carries 74 PDK functions; the others fail in the plugin.
    Protobuf,
}

impl Protocol {
    /// The name the dump's `"Protocol"` key gives Kong.
    pub fn dump_name(self) -> &'static str {
        match self {
            Protocol::Msgpack => "MsgPack:1",
            Protocol::Protobuf => kong_rust_pluginserver_protocol::protobuf::PROTOCOL,
        }
    }

    /// The flag that selects it (empty for the default).
    pub fn flag(self) -> &'static str {
        match self {
            Protocol::Msgpack => "",
            Protocol::Protobuf => "--protocol protobuf",
        }
    }
}

/// Every setting, each optional: as given by flags, environment or file.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SettingsArgs {
    /// Directory holding the plugin libraries (*.so) to serve
    /// [default: /usr/local/lib/kong/rust-plugins].
    #[arg(
        short = 'd',
        long,
        global = true,
        value_name = "DIR",
        env = "KONG_RUST_PLUGINSERVER_PLUGINS_DIRECTORY"
    )]
    pub plugins_directory: Option<PathBuf>,

    /// Kong's prefix directory; sockets are created there as PLUGIN.socket
    /// [default: /usr/local/kong].
    #[arg(
        short = 'p',
        long,
        global = true,
        value_name = "DIR",
        env = "KONG_RUST_PLUGINSERVER_KONG_PREFIX"
    )]
    pub kong_prefix: Option<PathBuf>,

    /// Largest accepted request, in bytes [default: 16777216].
    #[arg(
        long,
        value_name = "BYTES",
        env = "KONG_RUST_PLUGINSERVER_MAX_MESSAGE_SIZE"
    )]
    pub max_message_size: Option<usize>,

    /// Seconds without an event after which an instance is released; 0: never. Kong starts
    /// an expired instance again on its next request [default: 600].
    #[arg(
        long,
        value_name = "SECONDS",
        env = "KONG_RUST_PLUGINSERVER_INSTANCE_IDLE_TIMEOUT"
    )]
    pub instance_idle_timeout: Option<u64>,

    /// Seconds an event may wait for Kong's next Step before it is freed as abandoned
    /// [default: 60, Kong's own socket timeout].
    #[arg(
        long,
        value_name = "SECONDS",
        env = "KONG_RUST_PLUGINSERVER_EVENT_TIMEOUT"
    )]
    pub event_timeout: Option<u64>,

    /// Most events one instance may have in flight at once [default: 10000].
    #[arg(
        long,
        value_name = "N",
        env = "KONG_RUST_PLUGINSERVER_MAX_EVENTS_PER_INSTANCE"
    )]
    pub max_events_per_instance: Option<usize>,

    /// Most connections served at once, over all sockets [default: 16384].
    #[arg(long, value_name = "N", env = "KONG_RUST_PLUGINSERVER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Most connections at once on one plugin's socket, so a flood on one socket cannot
    /// take every other plugin's [default: 8192].
    #[arg(
        long,
        value_name = "N",
        env = "KONG_RUST_PLUGINSERVER_MAX_CONNECTIONS_PER_PLUGIN"
    )]
    pub max_connections_per_plugin: Option<usize>,

    /// Most bytes all connections together may buffer for messages larger than 8 KiB
    /// [default: 268435456].
    #[arg(
        long,
        value_name = "BYTES",
        env = "KONG_RUST_PLUGINSERVER_MAX_BUFFERED_BYTES"
    )]
    pub max_buffered_bytes: Option<usize>,

    /// Seconds a connection may stay without a request before it is closed; longer than
    /// Kong's own keepalive timeout (60 s), so Kong never picks a connection the daemon is
    /// closing [default: 300].
    #[arg(
        long,
        value_name = "SECONDS",
        env = "KONG_RUST_PLUGINSERVER_CONNECTION_IDLE_TIMEOUT"
    )]
    pub connection_idle_timeout: Option<u64>,

    /// Seconds a message that started arriving may take to arrive whole [default: 30].
    #[arg(
        long,
        value_name = "SECONDS",
        env = "KONG_RUST_PLUGINSERVER_MESSAGE_TIMEOUT"
    )]
    pub message_timeout: Option<u64>,

    /// Most instances one plugin may have at once; StartInstance beyond it is refused (Kong
    /// ends that request with 500) [default: 50000].
    #[arg(
        long,
        value_name = "N",
        env = "KONG_RUST_PLUGINSERVER_MAX_INSTANCES_PER_PLUGIN"
    )]
    pub max_instances_per_plugin: Option<usize>,

    /// Most bytes of distinct configurations one plugin may hold at once; StartInstance of
    /// a new configuration beyond it is refused [default: 67108864].
    #[arg(
        long,
        value_name = "BYTES",
        env = "KONG_RUST_PLUGINSERVER_MAX_CONFIG_BYTES_PER_PLUGIN"
    )]
    pub max_config_bytes_per_plugin: Option<usize>,

    /// Most lines a second of each kind of repeated warning (failed events, bad
    /// connections...); the rest are counted in a summary line; 0: no limit [default: 10].
    #[arg(
        long,
        value_name = "N",
        env = "KONG_RUST_PLUGINSERVER_MAX_WARNINGS_PER_SECOND"
    )]
    pub max_warnings_per_second: Option<u32>,

    /// Seconds to let this daemon's events in flight finish after SIGTERM or a successor's
    /// takeover [default: 10].
    #[arg(
        long,
        value_name = "SECONDS",
        env = "KONG_RUST_PLUGINSERVER_DRAIN_TIMEOUT"
    )]
    pub drain_timeout: Option<u64>,

    /// Also let members of this group (name or gid) connect to the sockets (mode 0660
    /// instead of 0600), e.g. when Kong's workers run as another user.
    #[arg(
        long,
        value_name = "GROUP",
        env = "KONG_RUST_PLUGINSERVER_SOCKET_GROUP"
    )]
    pub socket_group: Option<String>,

    /// Load plugin files and directories that other users own or may write, and plugin
    /// files that are symbolic links. Such a file runs anyone's code in the gateway's
    /// request path: for development only.
    #[arg(
        long,
        env = "KONG_RUST_PLUGINSERVER_ALLOW_INSECURE_PLUGINS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub allow_insecure_plugins: Option<bool>,

    /// Serve from a Kong prefix that users other than root and the daemon's user may write
    /// (they could hold the serve lock or squat socket names): for development only.
    #[arg(
        long,
        env = "KONG_RUST_PLUGINSERVER_ALLOW_INSECURE_PREFIX",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub allow_insecure_prefix: Option<bool>,

    /// Log level; RUST_LOG, when set, takes precedence with its finer filters
    /// [default: info].
    #[arg(
        long,
        value_enum,
        global = true,
        env = "KONG_RUST_PLUGINSERVER_LOG_LEVEL"
    )]
    pub log_level: Option<LogLevel>,

    /// Log line format on stderr [default: text].
    #[arg(
        long,
        value_enum,
        global = true,
        env = "KONG_RUST_PLUGINSERVER_LOG_FORMAT"
    )]
    pub log_format: Option<LogFormat>,

    /// Event loops per plugin: each plugin's connections are served on its own loop(s), so
    /// a handler that blocks stalls only its own plugin [default: 1].
    #[arg(long, value_name = "N", env = "KONG_RUST_PLUGINSERVER_EVENT_LOOPS")]
    pub event_loops: Option<usize>,

    /// Serve each connection on a thread of its own instead of on the plugin's event
    /// loop: for plugins whose handlers block (each message then costs a thread wake-up).
    #[arg(
        long,
        env = "KONG_RUST_PLUGINSERVER_THREAD_PER_CONNECTION",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub thread_per_connection: Option<bool>,

    /// Milliseconds a handler may hold its event loop before the log names it
    /// [default: 100].
    #[arg(
        long,
        value_name = "MS",
        env = "KONG_RUST_PLUGINSERVER_SLOW_HANDLER_MS"
    )]
    pub slow_handler_ms: Option<u64>,

    /// The protocol of the plugin sockets: msgpack (Kong's MsgPack:1, the default) or
    /// protobuf (Kong's ProtoBuf:1, cheaper for Kong; 74 PDK functions). Give it to the
    /// query command too: the dump tells Kong which protocol to speak.
    #[arg(
        long,
        value_enum,
        global = true,
        env = "KONG_RUST_PLUGINSERVER_PROTOCOL"
    )]
    pub protocol: Option<Protocol>,

    /// Serve Prometheus metrics at http://ADDR/metrics. A bare port listens on 127.0.0.1.
    #[arg(
        long,
        value_name = "ADDR",
        env = "KONG_RUST_PLUGINSERVER_METRICS_LISTEN"
    )]
    pub metrics_listen: Option<String>,

    /// `none`: every plugin runs in the daemon's process; `process`: one supervised worker
    /// process per plugin library, so an abort, a segfault or an exit in one plugin stops
    /// no other, and its requests in flight still fail closed [default: none].
    #[arg(long, value_enum, env = "KONG_RUST_PLUGINSERVER_ISOLATION")]
    pub isolation: Option<Isolation>,

    /// Seconds a handler may take to answer one request (HandleEvent or Step) before it is
    /// named as stuck in the log, the status and the metrics; with `--isolation process` its
    /// worker is then replaced once its other events finish, and the stuck request fails
    /// closed. 0: never [default: 30].
    #[arg(
        long,
        value_name = "SECONDS",
        env = "KONG_RUST_PLUGINSERVER_STUCK_TIMEOUT"
    )]
    pub stuck_timeout: Option<u64>,

    /// With `--isolation process`: a plugin configuration whose events crash its worker
    /// twice within this many seconds is quarantined for as long (its events fail closed
    /// with 503 without running the plugin), or until its file changes [default: 300].
    #[arg(
        long,
        value_name = "SECONDS",
        env = "KONG_RUST_PLUGINSERVER_QUARANTINE_WINDOW"
    )]
    pub quarantine_window: Option<u64>,

    /// With `--isolation process`: the most address space a worker may use (RLIMIT_AS), so
    /// a runaway allocation ends that worker instead of the node; 0: no limit [default: 0].
    #[arg(
        long,
        value_name = "BYTES",
        env = "KONG_RUST_PLUGINSERVER_WORKER_MEMORY_LIMIT"
    )]
    pub worker_memory_limit: Option<u64>,

    /// Seconds a library may take to load in the probe process that checks it before the
    /// daemon maps it [default: 10].
    #[arg(
        long,
        value_name = "SECONDS",
        env = "KONG_RUST_PLUGINSERVER_PROBE_TIMEOUT"
    )]
    pub probe_timeout: Option<u64>,

    /// The Kong release that runs the plugins (3.0 or later, e.g. 3.4): dumps follow its
    /// schema rules, calls of PDK functions it lacks fail in the plugin, and its quirks are
    /// worked around (docs/kong-versions.md) [default: Kong's development branch, 3.10].
    #[arg(
        long,
        global = true,
        value_name = "X.Y",
        value_parser = KongVersion::parse,
        env = "KONG_RUST_PLUGINSERVER_KONG_VERSION"
    )]
    pub kong_version: Option<KongVersion>,
}

/// The settings in force.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the plugin libraries are.
    pub plugins_directory: PathBuf,
    /// Kong's prefix: sockets, lock file, private library copies.
    pub kong_prefix: PathBuf,
    /// Limits on messages, events, connections.
    pub limits: Limits,
    /// Idle instances are released after this; `None`: never.
    pub instance_idle_timeout: Option<Duration>,
    /// How long SIGTERM waits for events in flight.
    pub drain_timeout: Duration,
    /// The socket group, as given.
    pub socket_group: Option<String>,
    /// Skip the ownership checks of plugin files.
    pub allow_insecure_plugins: bool,
    /// Skip the ownership checks of the prefix.
    pub allow_insecure_prefix: bool,
    /// Lines a second of each kind of repeated warning; 0: no limit.
    pub max_warnings_per_second: u32,
    /// Log verbosity.
    pub log_level: LogLevel,
    /// Log format.
    pub log_format: LogFormat,
    /// Where to serve metrics.
    pub metrics_listen: Option<SocketAddr>,
    /// Event loops per plugin.
    pub event_loops: usize,
    /// A thread per connection instead of the plugin loops.
    pub thread_per_connection: bool,
    /// Most connections on one plugin's socket.
    pub max_connections_per_plugin: usize,
    /// Most bytes buffered beyond the connections' first buffers.
    pub max_buffered_bytes: usize,
    /// Idle connections are closed after this.
    pub connection_idle_timeout: Duration,
    /// A message must arrive whole within this.
    pub message_timeout: Duration,
    /// A handler holding its loop longer than this is named in the log.
    pub slow_handler: Duration,
    /// Where plugin code runs.
    pub isolation: Isolation,
    /// A request handled longer than this is stuck; `None`: never.
    pub stuck_timeout: Option<Duration>,
    /// Two crashes of one configuration within this quarantine it for as long.
    pub quarantine_window: Duration,
    /// RLIMIT_AS of each worker process, if any.
    pub worker_memory_limit: Option<u64>,
    /// How long the probe process may take to load a library.
    pub probe_timeout: Duration,
    /// The protocol of the plugin sockets.
    pub protocol: Protocol,
    /// The Kong release served, if configured (`None`: Kong's development branch).
    pub kong_version: Option<KongVersion>,
    /// Settings that work but fight the configured Kong, to log once logging is up.
    pub warnings: Vec<String>,
}

impl Settings {
    /// The Kong release whose rules apply: the configured one, else Kong's development
    /// branch.
    pub fn kong(&self) -> KongVersion {
        self.kong_version.unwrap_or(KongVersion::HEAD)
    }
}

impl SettingsArgs {
    /// Reads a TOML settings file.
    pub fn from_file(path: &Path) -> Result<SettingsArgs, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| SettingsError::File {
            path: path.to_owned(),
            // toml's message points at the line and column with a caret: keep its lines.
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// Each setting from `self` (flags and environment), else from `file`, else the
    /// default.
    pub fn resolve(self, file: SettingsArgs) -> Result<Settings, SettingsError> {
        self.resolve_with(file, None)
    }

    /// [`resolve`](Self::resolve), with Kong's own `KONG_PREFIX` from the environment: it
    /// sets the prefix when no flag or `KONG_RUST_PLUGINSERVER_KONG_PREFIX` does, ahead of
    /// the file. Not for Kong 3.0–3.8, whose default socket ignores Kong's prefix.
    pub fn resolve_with(
        self,
        file: SettingsArgs,
        kong_prefix_env: Option<PathBuf>,
    ) -> Result<Settings, SettingsError> {
        let defaults = Limits::default();
        let kong_version = self.kong_version.or(file.kong_version);
        let kong = kong_version.unwrap_or(KongVersion::HEAD).behaviour();
        let mut warnings = Vec::new();
        let metrics_listen = self
            .metrics_listen
            .or(file.metrics_listen)
            .map(|addr| parse_listen_address(&addr))
            .transpose()?;
        let idle_given = self.instance_idle_timeout.or(file.instance_idle_timeout);
        // Kong 3.5 and 3.6 loop forever on an instance the server let go: never expire one
        // there unless told to.
        let storms = kong.lost_instance == LostInstance::Storm;
        let instance_idle_timeout = idle_given.unwrap_or(if storms { 0 } else { 600 });
        if storms && instance_idle_timeout > 0 {
            warnings.push(format!(
                "instance-idle-timeout = {instance_idle_timeout} with Kong {}: Kong 3.5 and 3.6 \
                 retry an expired instance forever (a HandleEvent storm per request); set 0",
                kong.first
            ));
        }
        let env_prefix = kong_prefix_env
            .filter(|_| kong.default_socket == DefaultSocket::Prefix)
            .filter(|p| !p.as_os_str().is_empty());
        let limits = Limits {
            max_message: self
                .max_message_size
                .or(file.max_message_size)
                .unwrap_or(defaults.max_message),
            max_events_per_instance: self
                .max_events_per_instance
                .or(file.max_events_per_instance)
                .unwrap_or(defaults.max_events_per_instance),
            max_connections: self
                .max_connections
                .or(file.max_connections)
                .unwrap_or(defaults.max_connections),
            event_timeout: self
                .event_timeout
                .or(file.event_timeout)
                .map(Duration::from_secs)
                .unwrap_or(defaults.event_timeout),
            max_instances_per_plugin: self
                .max_instances_per_plugin
                .or(file.max_instances_per_plugin)
                .unwrap_or(defaults.max_instances_per_plugin),
            max_config_bytes_per_plugin: self
                .max_config_bytes_per_plugin
                .or(file.max_config_bytes_per_plugin)
                .unwrap_or(defaults.max_config_bytes_per_plugin),
        };
        for (setting, value) in [
            ("max-message-size", limits.max_message),
            ("max-events-per-instance", limits.max_events_per_instance),
            ("max-connections", limits.max_connections),
            ("event-timeout", limits.event_timeout.as_secs() as usize),
            ("max-instances-per-plugin", limits.max_instances_per_plugin),
            (
                "max-config-bytes-per-plugin",
                limits.max_config_bytes_per_plugin,
            ),
        ] {
            if value == 0 {
                return Err(SettingsError::Value {
                    setting,
                    message: "must be greater than 0".into(),
                });
            }
        }
        Ok(Settings {
            plugins_directory: self
                .plugins_directory
                .or(file.plugins_directory)
                .unwrap_or_else(|| "/usr/local/lib/kong/rust-plugins".into()),
            kong_prefix: self
                .kong_prefix
                .or(env_prefix)
                .or(file.kong_prefix)
                .unwrap_or_else(|| "/usr/local/kong".into()),
            limits,
            instance_idle_timeout: (instance_idle_timeout > 0)
                .then(|| Duration::from_secs(instance_idle_timeout)),
            drain_timeout: Duration::from_secs(
                self.drain_timeout.or(file.drain_timeout).unwrap_or(10),
            ),
            socket_group: self.socket_group.or(file.socket_group),
            allow_insecure_plugins: self
                .allow_insecure_plugins
                .or(file.allow_insecure_plugins)
                .unwrap_or(false),
            allow_insecure_prefix: self
                .allow_insecure_prefix
                .or(file.allow_insecure_prefix)
                .unwrap_or(false),
            max_warnings_per_second: self
                .max_warnings_per_second
                .or(file.max_warnings_per_second)
                .unwrap_or(10),
            log_level: self.log_level.or(file.log_level).unwrap_or(LogLevel::Info),
            log_format: self
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            metrics_listen,
            event_loops: self.event_loops.or(file.event_loops).unwrap_or(1).max(1),
            thread_per_connection: self
                .thread_per_connection
                .or(file.thread_per_connection)
                .unwrap_or(false),
            max_connections_per_plugin: self
                .max_connections_per_plugin
                .or(file.max_connections_per_plugin)
                .unwrap_or(8_192),
            max_buffered_bytes: self
                .max_buffered_bytes
                .or(file.max_buffered_bytes)
                .unwrap_or(256 << 20),
            connection_idle_timeout: Duration::from_secs(
                self.connection_idle_timeout
                    .or(file.connection_idle_timeout)
                    .unwrap_or(300)
                    .max(1),
            ),
            message_timeout: Duration::from_secs(
                self.message_timeout
                    .or(file.message_timeout)
                    .unwrap_or(30)
                    .max(1),
            ),
            slow_handler: Duration::from_millis(
                self.slow_handler_ms.or(file.slow_handler_ms).unwrap_or(100),
            ),
            isolation: self.isolation.or(file.isolation).unwrap_or_default(),
            stuck_timeout: Some(self.stuck_timeout.or(file.stuck_timeout).unwrap_or(30))
                .filter(|&secs| secs > 0)
                .map(Duration::from_secs),
            quarantine_window: Duration::from_secs(
                self.quarantine_window
                    .or(file.quarantine_window)
                    .unwrap_or(300)
                    .max(1),
            ),
            worker_memory_limit: self
                .worker_memory_limit
                .or(file.worker_memory_limit)
                .filter(|&bytes| bytes > 0),
            probe_timeout: Duration::from_secs(
                self.probe_timeout
                    .or(file.probe_timeout)
                    .unwrap_or(10)
                    .max(1),
            ),
            protocol: self.protocol.or(file.protocol).unwrap_or_default(),
            kong_version,
            warnings,
        })
    }
}

/// Logs go to stderr: Kong copies the daemon's stderr into its error.log, and stdout must
/// stay clean for the dump. RUST_LOG, when set, overrides the level with its own filters.
/// (Also what a worker process of process isolation sets up, with the daemon's settings.)
pub fn init_logging(level: LogLevel, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.directive()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// `9542` → `127.0.0.1:9542`; `host:port` as given.
pub fn parse_listen_address(addr: &str) -> Result<SocketAddr, SettingsError> {
    if let Ok(port) = addr.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    addr.parse().map_err(|_| SettingsError::Value {
        setting: "metrics-listen",
        message: format!("{addr:?} is neither a port nor an address like 127.0.0.1:9542"),
    })
}

/// Refuses `KONG_RUST_PLUGINSERVER_*` variables that are not among `known`: a typo would
/// otherwise be silently ignored.
pub fn check_environment(
    vars: impl IntoIterator<Item = (String, String)>,
    known: &[String],
) -> Result<(), SettingsError> {
    for (name, _) in vars {
        if name.starts_with(ENV_PREFIX) && !known.contains(&name) {
            return Err(SettingsError::UnknownVariable {
                name,
                known: known.join(", "),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file: SettingsArgs = toml::from_str(
            "kong-prefix = \"/k\"\nmax-connections = 7\nlog-format = \"json\"\nmetrics-listen = \"9542\"\n",
        )
        .unwrap();
        let flags = SettingsArgs {
            max_connections: Some(9),
            ..SettingsArgs::default()
        };
        let settings = flags.resolve(file).unwrap();
        assert_eq!(settings.kong_prefix, PathBuf::from("/k"));
        assert_eq!(settings.limits.max_connections, 9);
        assert_eq!(settings.log_format, LogFormat::Json);
        assert_eq!(settings.log_level, LogLevel::Info);
        assert_eq!(
            settings.metrics_listen,
            Some("127.0.0.1:9542".parse().unwrap())
        );
        assert_eq!(
            settings.instance_idle_timeout,
            Some(Duration::from_secs(600))
        );
        assert_eq!(settings.protocol, Protocol::Msgpack);
        let file: SettingsArgs = toml::from_str("protocol = \"protobuf\"").unwrap();
        let settings = SettingsArgs::default().resolve(file).unwrap();
        assert_eq!(settings.protocol.dump_name(), "ProtoBuf:1");
    }

    #[test]
    fn a_bad_file_is_reported_with_toml_s_lines_and_caret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.toml");
        std::fs::write(&path, "kong-prefix = \"/k\"\nmax-connections = \"many\"\n").unwrap();
        let err = SettingsArgs::from_file(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("config file {}: ", path.display())),
            "{err}"
        );
        assert!(
            err.lines().count() > 2,
            "one line per line of toml's message: {err}"
        );
        assert!(err.contains("max-connections = \"many\""), "{err}");
        assert!(err.contains('^'), "{err}");
    }

    #[test]
    fn the_kong_version_sets_its_defaults() {
        let v36 = SettingsArgs {
            kong_version: Some(KongVersion::V3_6),
            ..SettingsArgs::default()
        };
        let settings = v36.clone().resolve(SettingsArgs::default()).unwrap();
        assert_eq!(settings.instance_idle_timeout, None, "3.6 storms on expiry");
        assert!(settings.warnings.is_empty());
        let forced = SettingsArgs {
            instance_idle_timeout: Some(60),
            ..v36
        };
        let settings = forced.resolve(SettingsArgs::default()).unwrap();
        assert_eq!(
            settings.instance_idle_timeout,
            Some(Duration::from_secs(60))
        );
        assert!(
            settings.warnings[0].contains("storm"),
            "{:?}",
            settings.warnings
        );

        let file: SettingsArgs =
            toml::from_str("kong-version = \"3.4\"\nkong-prefix = \"/file\"").unwrap();
        let settings = SettingsArgs::default()
            .resolve_with(file.clone(), Some("/from-kong".into()))
            .unwrap();
        assert_eq!(settings.kong(), KongVersion::V3_4);
        assert_eq!(
            settings.kong_prefix,
            PathBuf::from("/file"),
            "3.4's default socket ignores Kong's prefix"
        );
        let head = SettingsArgs::default()
            .resolve_with(SettingsArgs::default(), Some("/from-kong".into()))
            .unwrap();
        assert_eq!(head.kong_prefix, PathBuf::from("/from-kong"));
        assert_eq!(head.kong(), KongVersion::HEAD);
        let flag = SettingsArgs {
            kong_prefix: Some("/flag".into()),
            ..SettingsArgs::default()
        };
        let settings = flag
            .resolve_with(SettingsArgs::default(), Some("/from-kong".into()))
            .unwrap();
        assert_eq!(settings.kong_prefix, PathBuf::from("/flag"));
        assert!(toml::from_str::<SettingsArgs>("kong-version = \"2.8\"").is_err());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = toml::from_str::<SettingsArgs>("max-conections = 1").unwrap_err();
        assert!(err.to_string().contains("max-conections"), "{err}");
        let err = toml::from_str::<SettingsArgs>("log-level = \"loud\"").unwrap_err();
        assert!(err.to_string().contains("loud"), "{err}");
        let err = parse_listen_address("localhost").unwrap_err();
        assert!(err.to_string().contains("metrics-listen"), "{err}");
        let zero = SettingsArgs {
            max_connections: Some(0),
            ..SettingsArgs::default()
        };
        assert!(
            zero.resolve(SettingsArgs::default())
                .unwrap_err()
                .to_string()
                .contains("max-connections")
        );
        let known = vec!["KONG_RUST_PLUGINSERVER_KONG_PREFIX".to_owned()];
        let err = check_environment(
            [(
                "KONG_RUST_PLUGINSERVER_KONG_PREFX".to_owned(),
                "x".to_owned(),
            )],
            &known,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("KONG_RUST_PLUGINSERVER_KONG_PREFX"),
            "{err}"
        );
        check_environment([("PATH".to_owned(), "/bin".to_owned())], &known).unwrap();
    }
}
