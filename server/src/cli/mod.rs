//! The command line: one module per subcommand, each turning its arguments into calls of
//! the library.

mod dump;
pub mod invocation;
mod kong_conf;
mod links;
mod new;
mod serve;
mod status;
mod try_event;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use kong_rust_pluginserver::settings::{Settings, SettingsArgs};

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
///
/// Run through a link named after a plugin (`links` makes them), the binary is that
/// plugin's drop-in executable for Kong's defaults: `NAME -dump` prints its dump, `NAME`
/// serves (settings from KONG_PREFIX and /etc/kong-rust-pluginserver.toml).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
pub struct Cli {
    #[command(flatten)]
    pub settings: SettingsArgs,

    /// A TOML file of settings (keys as the long flags, e.g. `max-connections = 100`).
    /// Flags and KONG_RUST_PLUGINSERVER_* variables take precedence over it.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "KONG_RUST_PLUGINSERVER_CONFIG"
    )]
    pub config: Option<PathBuf>,

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
    KongConf(kong_conf::Args),
    /// Create or refresh a link per plugin to this binary in Kong's bin directory, so
    /// Kong's default pluginserver commands run it (`NAME`, `NAME -dump`, `query_NAME`).
    Links(links::Args),
    /// Show what a running daemon serves: plugins, versions, instances, counters.
    Status(status::Args),
    /// Play Kong for one event: run a plugin's phase handler against a described request
    /// and print every PDK call it makes and the resulting response.
    Try(try_event::Args),
    /// Create a plugin crate that builds and passes its tests as created.
    New(new::Args),
}

/// Runs what the command line asks for.
pub fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::KongConf(args)) => kong_conf::run(&settings, args),
        Some(Command::Links(args)) => links::run(&settings, args),
        Some(Command::Status(args)) => status::run(&settings, args),
        Some(Command::Try(args)) => try_event::run(&settings, args),
        Some(Command::New(args)) => new::run(args),
        None => match (cli.dump_plugin, cli.dump_all_plugins) {
            (Some(name), _) => dump::one(&settings, &name),
            (None, true) => dump::all(&settings),
            (None, false) => serve::run(&settings),
        },
    }
}

/// Writes `value` as one line of JSON on stdout.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, value)?;
    writeln!(stdout)?;
    stdout.flush()?;
    Ok(())
}
