//! `kong-rust-pluginserver kong-conf`: the lines it prints work as Kong runs them.

use std::{collections::HashMap, process::Command, time::Duration};

use kong_rust_pluginserver_e2e::{daemon::Scratch, kong::Kong};
use serde_json::json;

fn kong_conf(scratch: &Scratch, extra: &[&str]) -> HashMap<String, String> {
    let out = scratch
        .command()
        .arg("kong-conf")
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(" = ").expect("key = value");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// Runs a command line as Kong does: `/bin/sh -c`.
fn sh(command_line: &str) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(command_line);
    cmd
}

#[test]
fn entry_per_plugin_lines_start_and_query_the_daemon() {
    let scratch = Scratch::with_plugins(&["rust-hello", "e2e-probe"]);
    let conf = kong_conf(&scratch, &[]);
    assert_eq!(conf["plugins"], "bundled,e2e-probe,rust-hello");
    assert_eq!(conf["pluginserver_names"], "e2e-probe,rust-hello");
    let socket = conf["pluginserver_rust_hello_socket"].clone();
    assert_eq!(socket, scratch.socket("rust-hello").display().to_string());
    assert!(std::path::Path::new(&socket).is_absolute());
    assert!(conf.contains_key("pluginserver_e2e_probe_start_cmd"));

    // The query command prints the dump of that one plugin.
    let out = sh(&conf["pluginserver_rust_hello_query_cmd"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(dump["Plugins"][0]["Name"], "rust-hello");
    assert_eq!(dump["Plugins"].as_array().unwrap().len(), 1);

    // The start command serves the socket.
    let mut child = sh(&format!(
        "exec {}",
        conf["pluginserver_rust_hello_start_cmd"]
    ))
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let kong = Kong::new(&socket);
    while kong.start_instance("rust-hello", json!({})).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the start command did not serve"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn single_entry_lines_dump_every_plugin() {
    let scratch = Scratch::with_plugins(&["rust-hello", "e2e-probe"]);
    let conf = kong_conf(&scratch, &["--single-entry"]);
    assert_eq!(conf["pluginserver_names"], "kong-rust-pluginserver");
    let out = sh(&conf["pluginserver_kong_rust_pluginserver_query_cmd"])
        .output()
        .unwrap();
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = dump["Plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["e2e-probe", "rust-hello"]);
}

#[test]
fn the_kong_version_reaches_the_commands_kong_runs() {
    let scratch = Scratch::with_plugins(&["rust-hello", "e2e-probe"]);
    let conf = kong_conf(&scratch, &["--kong-version", "3.3"]);
    for key in [
        "pluginserver_rust_hello_start_cmd",
        "pluginserver_rust_hello_query_cmd",
    ] {
        assert!(conf[key].contains("--kong-version 3.3"), "{}", conf[key]);
    }
    // The query Kong 3.3 runs prints a dump Kong 3.3 accepts: no field descriptions.
    let out = sh(&conf["pluginserver_rust_hello_query_cmd"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("description"));

    let short = kong_conf(&scratch, &["--short"]);
    assert_eq!(short.len(), 2, "{short:?}");
    assert_eq!(short["pluginserver_names"], "e2e-probe,rust-hello");

    let out = scratch
        .command()
        .args(["kong-conf", "--single-entry", "--kong-version", "3.9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("first plugin of an entry"));
}

#[test]
fn plugin_names_that_share_a_conf_key_are_refused_naming_both() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    // A second plugin named `rust_hello`: rust-hello's library with its name rewritten (the
    // same length, so nothing else moves); the dump shows the rewrite took.
    let library = std::fs::read(scratch.plugins_dir().join("librust_hello.so")).unwrap();
    let (from, to) = (b"rust-hello".as_slice(), b"rust_hello".as_slice());
    let mut renamed = Vec::with_capacity(library.len());
    let mut rest = library.as_slice();
    while let Some(at) = rest.windows(from.len()).position(|w| w == from) {
        renamed.extend_from_slice(&rest[..at]);
        renamed.extend_from_slice(to);
        rest = &rest[at + from.len()..];
    }
    renamed.extend_from_slice(rest);
    let copy = scratch.plugins_dir().join("librust_hello_renamed.so");
    std::fs::write(&copy, renamed).unwrap();
    let dump = scratch
        .command()
        .args(["--dump-plugin", "rust_hello"])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );

    for form in [&[][..], &["--short"][..]] {
        let out = scratch
            .command()
            .arg("kong-conf")
            .args(form)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{form:?}");
        assert!(out.stdout.is_empty(), "{form:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(
                "plugins rust-hello and rust_hello map to the same kong.conf keys (pluginserver_rust_hello_*)"
            ),
            "{form:?}: {stderr}"
        );
    }
}
