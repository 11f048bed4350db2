//! `kong-rust-pluginserver kong-conf`: the kong.conf lines that serve a plugins directory.

use std::{fmt::Write, path::Path};

use kong_rust_pdk::kong_versions::{DefaultSocket, KongVersion, QueryOutput, Readiness};

/// Which shape the lines take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// One pluginserver entry per plugin, each with its socket, a start command and a
    /// query command that dumps that one plugin: works on every Kong from 3.0 (3.9+ read
    /// one plugin per entry; 3.0–3.8 must never see a plugin in two entries, and do not).
    /// Every entry starts the same daemon, as Kong 3.1–3.4 require; the daemons it starts
    /// agree on one server through the serve lock.
    EntryPerPlugin,
    /// Legacy, Kong 3.0–3.8 only: one entry whose query command dumps every plugin.
    SingleEntry,
    /// Only `plugins` and `pluginserver_names`: Kong's defaults run the plugin links the
    /// `links` subcommand makes in `/usr/local/bin` (`NAME`, `NAME -dump`; 3.0–3.8 query
    /// `query_NAME`).
    Short,
}

/// The name of the single entry.
pub const SINGLE_ENTRY: &str = "kong-rust-pluginserver";

/// Where Kong 3.0–3.8 look for a socket, and where Kong looks for plugin executables.
pub const KONG_DEFAULT_PREFIX: &str = "/usr/local/kong";

/// The kong.conf lines for `plugins` (names, sorted) served from `plugins_dir` on `prefix`
/// by the daemon binary `binary`, for Kong `kong_version` (`None`: any release; the
/// commands then carry no `--kong-version`). Paths should be absolute. `flags` (e.g.
/// `--protocol protobuf`) go on every command: the dump must announce what the sockets
/// speak.
pub fn render(
    form: Form,
    binary: &Path,
    plugins_dir: &Path,
    prefix: &Path,
    plugins: &[&str],
    flags: &str,
    kong_version: Option<KongVersion>,
) -> String {
    let bin = shell_quote(&binary.display().to_string());
    let bin = if flags.is_empty() {
        bin
    } else {
        format!("{bin} {flags}")
    };
    let dir = shell_quote(&plugins_dir.display().to_string());
    let pfx = shell_quote(&prefix.display().to_string());
    let version_flag = kong_version
        .map(|v| format!(" --kong-version {v}"))
        .unwrap_or_default();
    let start_cmd = format!("{bin} --plugins-directory {dir} --kong-prefix {pfx}{version_flag}");
    let query = |what: &str| format!("{bin} --plugins-directory {dir}{version_flag} {what}");
    let socket = |plugin: &str| {
        prefix
            .join(format!("{plugin}.socket"))
            .display()
            .to_string()
    };
    let mut out = String::new();
    let release =
        kong_version.map_or_else(|| "Kong 3.0 and later".to_owned(), |v| format!("Kong {v}"));
    let shape = match form {
        Form::EntryPerPlugin => "one pluginserver entry per plugin",
        Form::SingleEntry => "one pluginserver entry for every plugin (legacy, Kong 3.0-3.8 only)",
        Form::Short => "Kong's default commands, run through the plugin links",
    };
    let _ = writeln!(
        out,
        "# kong-rust-pluginserver: {} from {}",
        plugins.join(", "),
        plugins_dir.display()
    );
    let _ = writeln!(out, "# for {release}: {shape}");
    for note in notes(form, kong_version) {
        let _ = writeln!(out, "# {note}");
    }
    let _ = writeln!(out, "plugins = bundled,{}", plugins.join(","));
    match form {
        Form::EntryPerPlugin => {
            let _ = writeln!(out, "pluginserver_names = {}", plugins.join(","));
            for plugin in plugins {
                let key = conf_key(plugin);
                let _ = writeln!(out, "pluginserver_{key}_socket = {}", socket(plugin));
                let _ = writeln!(out, "pluginserver_{key}_start_cmd = {start_cmd}");
                let _ = writeln!(
                    out,
                    "pluginserver_{key}_query_cmd = {}",
                    query(&format!("--dump-plugin {plugin}"))
                );
            }
        }
        Form::SingleEntry => {
            let key = conf_key(SINGLE_ENTRY);
            let first = plugins.first().copied().unwrap_or("none");
            let _ = writeln!(out, "pluginserver_names = {SINGLE_ENTRY}");
            let _ = writeln!(out, "pluginserver_{key}_socket = {}", socket(first));
            let _ = writeln!(out, "pluginserver_{key}_start_cmd = {start_cmd}");
            let _ = writeln!(
                out,
                "pluginserver_{key}_query_cmd = {}",
                query("--dump-all-plugins")
            );
        }
        Form::Short => {
            let _ = writeln!(out, "pluginserver_names = {}", plugins.join(","));
        }
    }
    out
}

/// What an operator must know about these lines on that release.
fn notes(form: Form, kong_version: Option<KongVersion>) -> Vec<String> {
    let mut notes = Vec::new();
    let behaviour = kong_version.map(KongVersion::behaviour);
    if form == Form::Short {
        notes.push(
            "needs `kong-rust-pluginserver links --bin-dir /usr/local/bin` (run it again after \
             adding or removing a plugin)"
                .to_owned(),
        );
        let old_defaults =
            behaviour.is_some_and(|b| b.default_socket == DefaultSocket::UsrLocalKong);
        notes.push(if old_defaults {
            "Kong 3.0-3.8 query /usr/local/bin/query_NAME and use /usr/local/kong/NAME.socket: \
             the daemon's kong-prefix must be /usr/local/kong"
                .to_owned()
        } else {
            "Kong runs the links with an empty environment: set plugins-directory and \
             kong-prefix (Kong's prefix) in /etc/kong-rust-pluginserver.toml"
                .to_owned()
        });
    }
    if let Some(behaviour) = behaviour {
        if let Readiness::SocketProbe20s { .. } = behaviour.readiness {
            notes.push(
                "Kong 3.1-3.4 skip a plugin until its socket answers and disable it for good \
                 if it does not within 20 s of start: keep the start commands"
                    .to_owned(),
            );
        }
        if form == Form::SingleEntry && behaviour.query == QueryOutput::FirstPluginOnly {
            notes.push(
                "this Kong reads only the first plugin of an entry: use the default form"
                    .to_owned(),
            );
        }
    }
    notes
}

/// Kong's key for a pluginserver name: lowercased, `-` replaced by `_`.
pub fn conf_key(name: &str) -> String {
    name.to_lowercase().replace('-', "_")
}

/// Pairs of plugin names Kong reads the same kong.conf keys for (`rust-hello` and
/// `rust_hello` both give `pluginserver_rust_hello_*`), with that key. Kong cannot tell
/// their entries apart: one would be served with the other's settings.
pub fn key_collisions<'a>(names: &[&'a str]) -> Vec<(&'a str, &'a str, String)> {
    let mut seen: std::collections::BTreeMap<String, &'a str> = Default::default();
    let mut collisions = Vec::new();
    for name in names {
        let key = conf_key(name);
        match seen.get(&key) {
            Some(first) => collisions.push((*first, *name, key)),
            None => {
                seen.insert(key, name);
            }
        }
    }
    collisions
}

/// Kong runs the commands through `/bin/sh -c`: quote what the shell would split.
fn shell_quote(s: &str) -> String {
    let plain = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:,=@".contains(&b));
    if plain && !s.is_empty() {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn names_with_the_same_conf_key_are_found() {
        assert_eq!(
            key_collisions(&["a", "rust-hello", "rust_hello", "x-y", "x_y", "x-y"]),
            [
                ("rust-hello", "rust_hello", "rust_hello".to_owned()),
                ("x-y", "x_y", "x_y".to_owned()),
                ("x-y", "x-y", "x_y".to_owned()),
            ]
        );
        assert!(key_collisions(&["rust-hello", "rust-hello2"]).is_empty());
    }

    #[test]
    fn entry_per_plugin_lines() {
        let text = render(
            Form::EntryPerPlugin,
            &PathBuf::from("/usr/local/bin/kong-rust-pluginserver"),
            &PathBuf::from("/opt/rust plugins"),
            &PathBuf::from("/usr/local/kong"),
            &["rate-limit", "rust-hello"],
            "",
            None,
        );
        assert_eq!(
            lines(&text),
            [
                "plugins = bundled,rate-limit,rust-hello",
                "pluginserver_names = rate-limit,rust-hello",
                "pluginserver_rate_limit_socket = /usr/local/kong/rate-limit.socket",
                "pluginserver_rate_limit_start_cmd = /usr/local/bin/kong-rust-pluginserver --plugins-directory '/opt/rust plugins' --kong-prefix /usr/local/kong",
                "pluginserver_rate_limit_query_cmd = /usr/local/bin/kong-rust-pluginserver --plugins-directory '/opt/rust plugins' --dump-plugin rate-limit",
                "pluginserver_rust_hello_socket = /usr/local/kong/rust-hello.socket",
                "pluginserver_rust_hello_start_cmd = /usr/local/bin/kong-rust-pluginserver --plugins-directory '/opt/rust plugins' --kong-prefix /usr/local/kong",
                "pluginserver_rust_hello_query_cmd = /usr/local/bin/kong-rust-pluginserver --plugins-directory '/opt/rust plugins' --dump-plugin rust-hello",
            ]
        );
    }

    #[test]
    fn the_kong_version_goes_into_every_command() {
        let text = render(
            Form::EntryPerPlugin,
            &PathBuf::from("/b/krp"),
            &PathBuf::from("/p"),
            &PathBuf::from("/k"),
            &["a", "b"],
            "",
            Some(KongVersion::V3_4),
        );
        let commands: Vec<&str> = lines(&text)
            .into_iter()
            .filter(|l| l.contains("_cmd = "))
            .collect();
        assert_eq!(commands.len(), 4);
        assert!(commands.iter().all(|c| c.contains(" --kong-version 3.4")));
        assert!(text.contains("within 20 s"), "{text}");
        // Kong 3.0-3.8 register every plugin of every entry's output: no plugin twice.
        let queried: Vec<&str> = commands
            .iter()
            .filter_map(|c| c.split("--dump-plugin ").nth(1))
            .collect();
        assert_eq!(queried, ["a", "b"]);
    }

    #[test]
    fn single_entry_and_short_lines() {
        let text = render(
            Form::SingleEntry,
            &PathBuf::from("/b/krp"),
            &PathBuf::from("/p"),
            &PathBuf::from("/k"),
            &["a", "b"],
            "--protocol protobuf",
            None,
        );
        assert_eq!(
            lines(&text),
            [
                "plugins = bundled,a,b",
                "pluginserver_names = kong-rust-pluginserver",
                "pluginserver_kong_rust_pluginserver_socket = /k/a.socket",
                "pluginserver_kong_rust_pluginserver_start_cmd = /b/krp --protocol protobuf --plugins-directory /p --kong-prefix /k",
                "pluginserver_kong_rust_pluginserver_query_cmd = /b/krp --protocol protobuf --plugins-directory /p --dump-all-plugins",
            ]
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");

        let short = render(
            Form::Short,
            &PathBuf::from("/b/krp"),
            &PathBuf::from("/p"),
            &PathBuf::from("/k"),
            &["a", "b"],
            "",
            Some(KongVersion::V3_9),
        );
        assert_eq!(
            lines(&short),
            ["plugins = bundled,a,b", "pluginserver_names = a,b"]
        );
        assert!(short.contains("links --bin-dir /usr/local/bin"), "{short}");
    }
}
