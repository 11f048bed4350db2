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

use std::{ffi::OsString, path::PathBuf};

use clap::{
    CommandFactory, FromArgMatches, Parser, Subcommand,
    error::{ContextKind, ContextValue, ErrorKind},
};
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

/// The global flags each subcommand ignores: its `--help` leaves them out. (They are the
/// daemon's settings, global so that the daemon's own command line takes them anywhere.)
const IGNORED_GLOBALS: [(&str, &[&str]); 4] = [
    (
        "new",
        &[
            "plugins_directory",
            "kong_prefix",
            "protocol",
            "kong_version",
            "log_level",
            "log_format",
            "config",
        ],
    ),
    ("status", &["plugins_directory", "protocol", "kong_version"]),
    ("links", &["kong_prefix", "protocol"]),
    ("try", &["plugins_directory", "protocol"]),
];

/// The command line as clap describes it, each subcommand's help without the global flags
/// it ignores.
pub fn command() -> clap::Command {
    let mut command = Cli::command();
    for (name, ignored) in IGNORED_GLOBALS {
        // A subcommand's own copy of a global flag keeps clap from copying the shown one
        // in; a global value given after the subcommand still reaches the top level.
        let hidden: Vec<clap::Arg> = command
            .get_arguments()
            .filter(|arg| ignored.contains(&arg.get_id().as_str()))
            .map(|arg| arg.clone().hide(true))
            .collect();
        assert_eq!(hidden.len(), ignored.len(), "{name}: unknown global flags");
        command = command.mut_subcommand(name, |sub| sub.args(hidden));
    }
    command
}

/// Parses the command line. A bad value that came from a `KONG_RUST_PLUGINSERVER_*`
/// variable is reported as that variable (clap would name the flag the operator never
/// typed); `help --help` prints the help of `help`.
pub fn parse(mut args: Vec<OsString>) -> Result<Cli, clap::Error> {
    let mut command = command();
    if args.len() == 3 && args[1] == "help" && (args[2] == "--help" || args[2] == "-h") {
        // clap's help subcommand has no --help flag, but it answers `help help`.
        args[2] = "help".into();
    }
    let matches = command
        .clone()
        .try_get_matches_from(&args)
        .map_err(|err| from_environment(&command, &args, err))?;
    Cli::from_arg_matches(&matches).map_err(|err| err.format(&mut command))
}

/// `err` about a value from the environment, when that is where the value came from.
fn from_environment(command: &clap::Command, args: &[OsString], err: clap::Error) -> clap::Error {
    if !matches!(
        err.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return err;
    }
    let Some(ContextValue::String(shown)) = err.get(ContextKind::InvalidArg) else {
        return err;
    };
    let Some(long) = shown
        .strip_prefix("--")
        .and_then(|rest| rest.split([' ', '=']).next())
    else {
        return err;
    };
    let typed = args.iter().skip(1).any(|a| {
        let a = a.to_string_lossy();
        a == format!("--{long}") || a.starts_with(&format!("--{long}="))
    });
    let variable = command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))
        .and_then(|arg| arg.get_env())
        .map(|name| name.to_string_lossy().into_owned());
    let (Some(variable), false) = (variable, typed) else {
        return err;
    };
    let Some(value) = std::env::var_os(&variable) else {
        return err;
    };
    // clap's own text says why the value is refused, after "for '--flag <X>': ".
    let text = err.to_string();
    let reason = text
        .lines()
        .next()
        .and_then(|line| line.split_once(&format!("for '{shown}'")))
        .map(|(_, why)| why.trim_start_matches(':').trim().to_owned())
        .filter(|why| !why.is_empty());
    let mut message = format!(
        "invalid value '{}' in environment variable {variable} (the setting of {shown})",
        value.to_string_lossy()
    );
    if let Some(reason) = reason {
        message.push_str(": ");
        message.push_str(&reason);
    }
    let mut command = command.clone();
    clap::Error::raw(ErrorKind::ValueValidation, format!("{message}\n")).format(&mut command)
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

/// An outcome that ends the command with a particular exit status (`try` tells a handler
/// failure from a refused configuration), after `message` is logged.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    /// The exit status.
    pub code: u8,
    /// What to tell the user.
    pub message: String,
}

impl Exit {
    fn new(code: u8, message: impl Into<String>) -> Exit {
        Exit {
            code,
            message: message.into(),
        }
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
