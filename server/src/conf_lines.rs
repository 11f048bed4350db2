//! `kong-rust-pluginserver kong-conf`: the kong.conf lines that serve a plugins directory.

use std::{fmt::Write, path::Path};

/// Which Kong versions the lines are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Kong 3.9+: one pluginserver entry per plugin (Kong reads one plugin per entry). Every
    /// entry has a start command, as Kong 3.1-3.4 require; the daemons it starts agree on
    /// one server through the serve lock.
    EntryPerPlugin,
    /// Kong 3.0-3.8: one entry whose query command dumps every plugin.
    SingleEntry,
}

/// The name of the single entry.
pub const SINGLE_ENTRY: &str = "kong-rust-pluginserver";

/// The kong.conf lines for `plugins` (names, sorted) served from `plugins_dir` on `prefix`
/// by the daemon binary `binary`. Paths should be absolute. `flags` (e.g. `--protocol
/// protobuf`) go on both commands: the dump must announce what the sockets speak.
pub fn render(
    form: Form,
    binary: &Path,
    plugins_dir: &Path,
    prefix: &Path,
    plugins: &[&str],
    flags: &str,
) -> String {
    let bin = shell_quote(&binary.display().to_string());
    let bin = if flags.is_empty() {
        bin
    } else {
        format!("{bin} {flags}")
    };
    let dir = shell_quote(&plugins_dir.display().to_string());
    let pfx = shell_quote(&prefix.display().to_string());
    let start_cmd = format!("{bin} --plugins-directory {dir} --kong-prefix {pfx}");
    let socket = |plugin: &str| {
        prefix
            .join(format!("{plugin}.socket"))
            .display()
            .to_string()
    };
    let mut out = String::new();
    let versions = match form {
        Form::EntryPerPlugin => "Kong 3.9 and later (one pluginserver entry per plugin)",
        Form::SingleEntry => "Kong 3.0 to 3.8 (one pluginserver entry for every plugin)",
    };
    let _ = writeln!(
        out,
        "# kong-rust-pluginserver: {} from {}",
        plugins.join(", "),
        plugins_dir.display()
    );
    let _ = writeln!(out, "# for {versions}");
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
                    "pluginserver_{key}_query_cmd = {bin} --plugins-directory {dir} --dump-plugin {plugin}"
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
                "pluginserver_{key}_query_cmd = {bin} --plugins-directory {dir} --dump-all-plugins"
            );
        }
    }
    out
}

/// Kong's key for a pluginserver name: lowercased, `-` replaced by `_`.
pub fn conf_key(name: &str) -> String {
    name.to_lowercase().replace('-', "_")
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

    #[test]
    fn entry_per_plugin_lines() {
        let text = render(
            Form::EntryPerPlugin,
            &PathBuf::from("/usr/local/bin/kong-rust-pluginserver"),
            &PathBuf::from("/opt/rust plugins"),
            &PathBuf::from("/usr/local/kong"),
            &["rate-limit", "rust-hello"],
            "",
        );
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
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
    fn single_entry_lines() {
        let text = render(
            Form::SingleEntry,
            &PathBuf::from("/b/krp"),
            &PathBuf::from("/p"),
            &PathBuf::from("/k"),
            &["a", "b"],
            "--protocol protobuf",
        );
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "plugins = bundled,a,b",
                "pluginserver_names = kong-rust-pluginserver",
                "pluginserver_kong_rust_pluginserver_socket = /k/a.socket",
                "pluginserver_kong_rust_pluginserver_start_cmd = /b/krp --protocol protobuf --plugins-directory /p --kong-prefix /k",
                "pluginserver_kong_rust_pluginserver_query_cmd = /b/krp --protocol protobuf --plugins-directory /p --dump-all-plugins",
            ]
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
