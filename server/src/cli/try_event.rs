//! `try PLUGIN`: play Kong for one event and print what the plugin did.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::Context;
use kong_rust_pdk::{Phase, Value};
use kong_rust_pdk_testkit::{TestRequest, UpstreamResponse};
use kong_rust_pluginserver::{
    playback::{self, Ending, Failure, Target, TryError},
    settings::Settings,
    sockets,
};

use super::Exit;

/// The exit status when the handler returned an error (or Kong raised one for a PDK call).
pub const EXIT_HANDLER_FAILED: u8 = 5;
/// The exit status when the handler panicked.
pub const EXIT_HANDLER_PANICKED: u8 = 6;
/// The exit status when Kong (or the plugin's constructor) refuses the configuration.
pub const EXIT_CONFIG_REFUSED: u8 = 3;
/// The exit status when the plugin has no handler for the phase.
pub const EXIT_NO_HANDLER: u8 = 4;

/// The exit statuses, for `--help`.
pub const EXIT_STATUSES: &str = "Exit status: 0 the handler ran (it returned, or ended the \
request itself); 1 the trial could not run (no daemon, unknown plugin, unloadable file); 2 bad \
command line; 3 the configuration is refused (Kong's schema check, or the plugin's \
constructor); 4 the plugin has no handler for the phase; 5 the handler failed (returned an \
error, or a PDK call raised an error in Kong); 6 the handler panicked.";

#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUSES)]
pub struct Args {
    /// The plugin to run.
    plugin: String,

    /// The plugin configuration, as JSON, as given to Kong's Admin API: it is checked against
    /// the plugin's schema and completed with its defaults, as Kong does.
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

    /// The upstream's response status, for the phases after proxying (response,
    /// header_filter, body_filter, log) [default: 200].
    #[arg(long, value_name = "STATUS")]
    upstream_status: Option<u16>,

    /// An upstream response header, `name: value` (repeatable).
    #[arg(long = "upstream-header", value_name = "NAME: VALUE")]
    upstream_headers: Vec<String>,

    /// The upstream's response body.
    #[arg(long, value_name = "TEXT")]
    upstream_body: Option<String>,

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

/// The request the arguments describe.
fn request(args: &Args) -> anyhow::Result<TestRequest> {
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
        let (name, value) = header_pair("--header", header)?;
        request = request.header(name, value);
    }
    if let Some(body) = &args.body {
        request = request.body(body.clone());
    }
    if args.upstream_status.is_some()
        || !args.upstream_headers.is_empty()
        || args.upstream_body.is_some()
    {
        let mut upstream = UpstreamResponse::new(args.upstream_status.unwrap_or(200));
        for header in &args.upstream_headers {
            let (name, value) = header_pair("--upstream-header", header)?;
            upstream = upstream.header(name, value);
        }
        if let Some(body) = &args.upstream_body {
            upstream = upstream.body(body.clone());
        }
        request = request.upstream_response(upstream);
    }
    Ok(request)
}

fn header_pair<'a>(flag: &str, header: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    let (name, value) = header
        .split_once(':')
        .with_context(|| format!("{flag} {header:?} is not `name: value`"))?;
    Ok((name.trim(), value.trim()))
}

/// `<prefix>/<plugin>.socket` does not exist: say which plugins the prefix has sockets for
/// (the socket shared by every plugin is not one of them).
fn no_socket(socket: &Path, plugin: &str) -> anyhow::Error {
    let dir = socket.parent().unwrap_or(Path::new("."));
    let mut served: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".socket")
                .filter(|name| *name != sockets::SHARED_SOCKET)
                .map(str::to_owned)
        })
        .collect();
    served.sort();
    let served = if served.is_empty() {
        "none: is the daemon running with this --kong-prefix?".to_owned()
    } else {
        served.join(", ")
    };
    anyhow::anyhow!(
        "no plugin {plugin} is served here ({} does not exist); the plugins served in {}: {served}",
        socket.display(),
        dir.display()
    )
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<()> {
    let config: serde_json::Value =
        serde_json::from_str(&args.config_json).context("--config-json is not JSON")?;
    let mut request = request(&args)?;
    if let Some(version) = settings.kong_version {
        // Kong's phase checks as that release makes them.
        request = request.kong_version(version);
    }
    let socket;
    let target = match &args.file {
        Some(file) => Target::File(file),
        None => {
            socket = args
                .socket
                .clone()
                .unwrap_or_else(|| sockets::socket_path(&settings.kong_prefix, &args.plugin));
            if !socket.exists() {
                return Err(no_socket(&socket, &args.plugin));
            }
            Target::Daemon(&socket)
        }
    };
    let played = match playback::play(target, &args.plugin, &config, args.phase, request) {
        Ok(played) => played,
        Err(err @ TryError::NoHandler { .. }) => {
            return Err(Exit::new(EXIT_NO_HANDLER, err.to_string()).into());
        }
        Err(err) if err.refuses_config() => {
            return Err(Exit::new(EXIT_CONFIG_REFUSED, err.to_string()).into());
        }
        Err(err) => return Err(err.into()),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "config (with Kong's defaults): {}", played.config)?;
    for call in &played.calls {
        let shown: Vec<String> = call.args.iter().map(show).collect();
        writeln!(out, "-> {}({})", call.method, shown.join(", "))?;
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
    match (&played.ending, played.failure) {
        (_, Some(Failure::Panic)) => writeln!(
            out,
            "== {} handler panicked; the daemon {}",
            args.phase,
            daemon_action(&played.ending)
        )?,
        (_, Some(Failure::Error)) => writeln!(
            out,
            "== {} handler failed; the daemon {}",
            args.phase,
            daemon_action(&played.ending)
        )?,
        (Ending::Returned, None) => writeln!(out, "== {} handler returned", args.phase)?,
        (Ending::Exited, None) => writeln!(out, "== {} handler ended the request", args.phase)?,
        (Ending::KongError(error), None) => writeln!(out, "== aborted by Kong: {error}")?,
        (Ending::Failed(error), None) => writeln!(out, "== failed: {error}")?,
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
            let query = if upstream.raw_query.is_empty() {
                ""
            } else {
                "?"
            };
            writeln!(
                out,
                "upstream request: {} {}{query}{}",
                upstream.method, upstream.path, upstream.raw_query
            )?;
            for (name, values) in &upstream.headers.0 {
                writeln!(out, "  {name}: {}", values.join(", "))?;
            }
        }
    }
    for line in &recorded.logs {
        writeln!(out, "log [{}] {}", line.level, line.message)?;
    }
    out.flush()?;
    drop(out);
    let phase = args.phase;
    match (played.failure, &played.ending) {
        (Some(Failure::Panic), _) => Err(Exit::new(
            EXIT_HANDLER_PANICKED,
            format!("the {phase} handler panicked (the daemon's log says where)"),
        )
        .into()),
        (Some(Failure::Error), _) => Err(Exit::new(
            EXIT_HANDLER_FAILED,
            format!("the {phase} handler failed (the daemon's log says why)"),
        )
        .into()),
        (None, Ending::KongError(error)) => Err(Exit::new(
            EXIT_HANDLER_FAILED,
            format!("the {phase} handler was aborted by Kong: {error}"),
        )
        .into()),
        (None, Ending::Failed(error)) => Err(Exit::new(
            EXIT_HANDLER_FAILED,
            format!("the {phase} event failed: {error}"),
        )
        .into()),
        (None, Ending::Returned | Ending::Exited) => Ok(()),
    }
}

/// What the daemon did about a failed handler, from how the event ended.
fn daemon_action(ending: &Ending) -> &'static str {
    match ending {
        Ending::Exited => "ended the request in its place (fail closed)",
        _ => "let the request go on (the phase cannot end it, or the plugin fails open)",
    }
}

/// A PDK value as JSON, for people to read.
fn show(value: &Value) -> String {
    if let Value::Bytes(bytes) = value
        && let Ok(text) = std::str::from_utf8(bytes)
    {
        // A body sent as bytes is usually text: show it as a string.
        return serde_json::to_string(text).unwrap_or_default();
    }
    serde_json::to_string(value).unwrap_or_else(|_| format!("{value:?}"))
}
