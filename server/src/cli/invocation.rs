//! How the binary was invoked: as itself, or through a link named after a plugin.
//!
//! Kong 3.9+ needs no pluginserver commands in kong.conf for a plugin `NAME` when
//! `/usr/local/bin/NAME` exists: it starts `/usr/local/bin/NAME` and queries
//! `/usr/local/bin/NAME -dump` (the drop-in convention of go-pdk plugins). Kong 3.0–3.8
//! query `/usr/local/bin/query_NAME` instead. So when the binary runs under another name
//! than `kong-rust-pluginserver*` (a link made by the `links` subcommand):
//!
//! - `NAME -dump` (or `--dump`) and `query_NAME` print plugin NAME's dump;
//! - `NAME` alone serves, exactly as the daemon does (N links started by Kong agree on one
//!   serving daemon through the serve lock);
//! - `-kong-prefix DIR` (go-pdk's flag, also `--kong-prefix`) may come with either;
//! - anything else is refused with a message.
//!
//! Kong starts the server with an empty environment (nginx clears it), so a link-invoked
//! daemon takes its settings from `KONG_PREFIX` when present and otherwise from a config
//! file at a fixed path, [`DEFAULT_CONFIG`], read when it exists (and
//! `KONG_RUST_PLUGINSERVER_CONFIG` does not name another).

use std::{ffi::OsString, path::Path};

/// The config file a link-invoked daemon reads when it exists: `/etc/kong-rust-pluginserver.toml`,
/// or what the build set in `KONG_RUST_PLUGINSERVER_DEFAULT_CONFIG`.
pub const DEFAULT_CONFIG: &str = match option_env!("KONG_RUST_PLUGINSERVER_DEFAULT_CONFIG") {
    Some(path) => path,
    None => "/etc/kong-rust-pluginserver.toml",
};

/// The prefix of 3.0–3.8's default query command.
const QUERY_PREFIX: &str = "query_";

/// What the command line asks for, as a command line the full CLI understands.
#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    /// Invoked as `kong-rust-pluginserver`: the arguments as given.
    Full(Vec<OsString>),
    /// Invoked through a plugin's link: the equivalent full command line.
    Link {
        /// The plugin the link is named after.
        plugin: String,
        /// The equivalent arguments (`--dump-plugin NAME`, `--config FILE`).
        args: Vec<OsString>,
    },
}

/// Reads the command line (`args[0]` is the name the binary was run as); `config_exists`
/// says whether [`DEFAULT_CONFIG`] exists, `config_set` whether the environment names a
/// config file already.
pub fn read(
    args: Vec<OsString>,
    config_exists: bool,
    config_set: bool,
) -> Result<Invocation, String> {
    let invoked = args
        .first()
        .map(|a| Path::new(a).file_name().unwrap_or(a).to_owned())
        .unwrap_or_default();
    let invoked = invoked.to_string_lossy();
    if invoked.is_empty() || invoked.starts_with("kong-rust-pluginserver") {
        if args.iter().skip(1).any(|a| a == "-dump") {
            return Err(
                "`-dump` is the drop-in form of a plugin link (`NAME -dump`, see the \
                 `links` subcommand); invoked as kong-rust-pluginserver, use \
                 --dump-plugin NAME or --dump-all-plugins"
                    .into(),
            );
        }
        return Ok(Invocation::Full(args));
    }
    let (plugin, query) = match invoked.strip_prefix(QUERY_PREFIX) {
        Some(plugin) if !plugin.is_empty() => (plugin.to_owned(), true),
        _ => (invoked.into_owned(), false),
    };
    let usage = || {
        format!(
            "invoked as `{}`, the link Kong runs for plugin {plugin}: it takes `-dump`{} and \
             `-kong-prefix DIR`, nothing else; run kong-rust-pluginserver itself for the full \
             command line",
            args[0].to_string_lossy(),
            if query { " (not as query_NAME)" } else { "" },
        )
    };
    let mut dump = query;
    let mut prefix: Option<OsString> = None;
    let mut rest = args.iter().skip(1).map(OsString::as_os_str);
    while let Some(arg) = rest.next() {
        if !query && (arg == "-dump" || arg == "--dump") {
            dump = true;
        } else if arg == "-kong-prefix" || arg == "--kong-prefix" {
            prefix = Some(rest.next().ok_or_else(usage)?.to_owned());
        } else {
            return Err(usage());
        }
    }
    let mut full: Vec<OsString> = vec!["kong-rust-pluginserver".into()];
    if config_exists && !config_set {
        full.extend(["--config".into(), DEFAULT_CONFIG.into()]);
    }
    if let Some(prefix) = prefix {
        full.extend(["--kong-prefix".into(), prefix]);
    }
    if dump {
        full.extend(["--dump-plugin".into(), plugin.clone().into()]);
    }
    Ok(Invocation::Link { plugin, args: full })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn links_map_to_the_full_command_line() {
        assert_eq!(
            read(
                args(&["/usr/bin/kong-rust-pluginserver", "status"]),
                true,
                false
            ),
            Ok(Invocation::Full(args(&[
                "/usr/bin/kong-rust-pluginserver",
                "status"
            ])))
        );
        assert_eq!(
            read(args(&["/usr/local/bin/rust-hello", "-dump"]), false, false),
            Ok(Invocation::Link {
                plugin: "rust-hello".into(),
                args: args(&["kong-rust-pluginserver", "--dump-plugin", "rust-hello"]),
            })
        );
        assert_eq!(
            read(args(&["/usr/local/bin/query_rust-hello"]), true, false),
            Ok(Invocation::Link {
                plugin: "rust-hello".into(),
                args: args(&[
                    "kong-rust-pluginserver",
                    "--config",
                    DEFAULT_CONFIG,
                    "--dump-plugin",
                    "rust-hello"
                ]),
            })
        );
        assert_eq!(
            read(args(&["rust-hello"]), true, true),
            Ok(Invocation::Link {
                plugin: "rust-hello".into(),
                args: args(&["kong-rust-pluginserver"]),
            })
        );
        assert_eq!(
            read(args(&["rust-hello", "-kong-prefix", "/k"]), false, false),
            Ok(Invocation::Link {
                plugin: "rust-hello".into(),
                args: args(&["kong-rust-pluginserver", "--kong-prefix", "/k"]),
            })
        );
        let err = read(args(&["rust-hello", "--help"]), false, false).unwrap_err();
        assert!(err.contains("nothing else"), "{err}");
        assert!(read(args(&["rust-hello", "-kong-prefix"]), false, false).is_err());
        let err = read(args(&["kong-rust-pluginserver", "-dump"]), false, false).unwrap_err();
        assert!(err.contains("--dump-plugin"), "{err}");
    }
}
