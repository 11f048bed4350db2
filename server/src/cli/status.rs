//! `status`: what a running daemon serves.

use std::{io::Write, path::PathBuf};

use anyhow::Context;
use kong_rust_pluginserver::settings::Settings;
use kong_rust_pluginserver_protocol::kong::Client;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The socket to ask (default: the first *.socket in the kong prefix).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,

    /// Print the raw status as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<()> {
    let socket = match args.socket {
        Some(socket) => socket,
        None => any_socket(&settings.kong_prefix).with_context(|| {
            format!(
                "no *.socket in {}: is the daemon running with this --kong-prefix?",
                settings.kong_prefix.display()
            )
        })?,
    };
    let mut client = Client::connect(&socket)?;
    let status = client.call("plugin.GetStatus", &())?;
    if args.json {
        return super::print_json(&status);
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
        "{:<24} {:<9} {:<11} {:>9} {:>7} {:>10} {:>8} {:>6} {:>9} {:>7}  FILE",
        "PLUGIN",
        "VERSION",
        "ON FAILURE",
        "INSTANCES",
        "CONFIGS",
        "EVENTS",
        "FAILURES",
        "PANICS",
        "ABANDONED",
        "EVICTED"
    )?;
    for (name, plugin) in status["Plugins"].as_object().into_iter().flatten() {
        writeln!(
            out,
            "{:<24} {:<9} {:<11} {:>9} {:>7} {:>10} {:>8} {:>6} {:>9} {:>7}  {}",
            name,
            plugin["Version"].as_str().unwrap_or("?"),
            plugin["OnFailure"].as_str().unwrap_or("?"),
            plugin["InstanceCount"]
                .as_u64()
                .unwrap_or_else(|| plugin["Instances"].as_array().map_or(0, |i| i.len() as u64)),
            number(plugin, "Configurations"),
            number(plugin, "Events"),
            number(plugin, "Failures"),
            number(plugin, "Panics"),
            number(plugin, "Abandoned"),
            number(plugin, "Evicted"),
            plugin["File"].as_str().unwrap_or("?"),
        )?;
    }
    Ok(())
}

/// The socket to reach a running daemon through: the first `*.socket` in `prefix`.
fn any_socket(prefix: &std::path::Path) -> Option<PathBuf> {
    let mut sockets: Vec<PathBuf> = std::fs::read_dir(prefix)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "socket"))
        .collect();
    sockets.sort();
    sockets.into_iter().next()
}
