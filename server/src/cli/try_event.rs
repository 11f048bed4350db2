//! `try PLUGIN`: play Kong for one event and print what the plugin did.

use std::{io::Write, path::PathBuf};

use anyhow::Context;
use kong_rust_pdk::{Phase, Value};
use kong_rust_pdk_testkit::TestRequest;
use kong_rust_pluginserver::{
    playback::{self, Ending, Target},
    settings::Settings,
    sockets,
};

#[derive(Debug, clap::Args)]
pub struct Args {
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
        let (name, value) = header
            .split_once(':')
            .with_context(|| format!("--header {header:?} is not `name: value`"))?;
        request = request.header(name.trim(), value.trim());
    }
    if let Some(body) = &args.body {
        request = request.body(body.clone());
    }
    Ok(request)
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
            Target::Daemon(&socket)
        }
    };
    let played = playback::play(target, &args.plugin, &config, args.phase, request)?;
    let mut out = std::io::stdout().lock();
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
    Ok(())
}

/// A PDK value as JSON, for people to read.
fn show(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| format!("{value:?}"))
}
