//! Two files that declare one plugin name, and files that are not whole: one rule at start
//! and at every reload, and no file is ever mapped twice.

use std::{
    collections::HashSet,
    thread,
    time::{Duration, Instant},
};

use kong_rust_pluginserver_e2e::{
    daemon::{Daemon, Scratch},
    kong::{EventEnd, Kong, PdkCall},
    msgpack::get,
};
use rmpv::Value;
use serde_json::json;

fn reload(daemon: &Daemon, done_count: usize) {
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(daemon.pid() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while daemon.stderr().matches("reload done").count() < done_count {
        assert!(Instant::now() < deadline, "no reload:\n{}", daemon.stderr());
        thread::sleep(Duration::from_millis(20));
    }
}

fn version(kong: &Kong) -> String {
    let info = kong
        .call("plugin.GetPluginInfo", Value::from("rust-hello"))
        .unwrap();
    get(&info, "Version")
        .and_then(Value::as_str)
        .unwrap()
        .to_owned()
}

fn greets(kong: &Kong, instance: u64) -> Result<(), String> {
    let run = kong.run_event(instance, "access", |call: &PdkCall| {
        (call.method == "kong.request.get_header").then(|| Value::from("h"))
    });
    match run.end {
        EventEnd::Returned => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

/// How many distinct files of rust-hello builds the daemon has mapped.
fn mapped_builds(pid: u32) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    maps.lines()
        .filter(|line| line.contains("rust_hello") || line.contains("hello_v2"))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some((fields.get(3)?.to_string(), fields.get(4)?.to_string()))
        })
        .collect::<HashSet<_>>()
        .len()
}

#[test]
fn two_files_declaring_one_name_serve_neither_at_start() {
    let scratch = Scratch::with_plugins(&["rust-hello", "hello-v2", "e2e-probe"]);
    let daemon = scratch.start(&["e2e-probe"]);
    // The good plugin is served; the clash is named, with both files.
    Kong::new(scratch.socket("e2e-probe"))
        .start_instance("e2e-probe", json!({"mode": "echo"}))
        .unwrap();
    let stderr = daemon.stderr();
    assert!(
        stderr.contains("plugin name `rust-hello` is declared by 2 files")
            && stderr.contains("libhello_v2.so")
            && stderr.contains("librust_hello.so"),
        "{stderr}"
    );
    assert!(!scratch.socket("rust-hello").exists(), "{stderr}");
}

#[test]
fn a_second_file_with_a_served_name_never_replaces_it_nor_maps_again() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = scratch.start(&["rust-hello"]);
    let kong = daemon.kong();
    let instance = kong.start_instance("rust-hello", json!({})).unwrap();
    assert_eq!(version(&kong), "0.1.0");

    scratch.add_plugin("hello-v2");
    reload(&daemon, 1);
    let builds = mapped_builds(daemon.pid());
    for round in 2..=6 {
        assert_eq!(
            version(&kong),
            "0.1.0",
            "round {round}:\n{}",
            daemon.stderr()
        );
        greets(&kong, instance)
            .unwrap_or_else(|e| panic!("round {round}: the instance was released: {e}"));
        reload(&daemon, round);
    }
    assert_eq!(
        mapped_builds(daemon.pid()),
        builds,
        "every reload mapped another copy"
    );
    let stderr = daemon.stderr();
    assert!(
        stderr.contains("plugin name `rust-hello` is declared by 2 files"),
        "{stderr}"
    );
    assert!(!stderr.contains("upgraded from"), "{stderr}");
}

/// Writes the first 95 % of `crate_name`'s library as `file_name`, the way an unfinished
/// copy looks, and renames it into place.
fn install_truncated(scratch: &Scratch, crate_name: &str, file_name: &str) {
    let bytes = std::fs::read(kong_rust_pluginserver_e2e::artifacts::plugin_library(
        crate_name,
    ))
    .unwrap();
    let staged = scratch.root().join("staged");
    std::fs::write(&staged, &bytes[..bytes.len() * 95 / 100]).unwrap();
    std::fs::set_permissions(&staged, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::rename(&staged, scratch.plugins_dir().join(file_name)).unwrap();
}

#[test]
fn a_truncated_build_is_refused_at_start_and_at_reload() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    install_truncated(&scratch, "e2e-probe", "libe2e_probe.so");
    let daemon = scratch.start(&["rust-hello"]);
    let stderr = daemon.stderr();
    assert!(
        stderr.contains("libe2e_probe.so: not a whole library"),
        "{stderr}"
    );
    assert!(!scratch.socket("e2e-probe").exists());

    let kong = daemon.kong();
    let instance = kong.start_instance("rust-hello", json!({})).unwrap();
    install_truncated(&scratch, "hello-v2", "librust_hello.so");
    reload(&daemon, 1);
    let stderr = daemon.stderr();
    assert!(
        stderr.contains("librust_hello.so: not a whole library"),
        "{stderr}"
    );
    assert!(!stderr.contains("upgraded from"), "{stderr}");
    assert_eq!(version(&kong), "0.1.0");
    greets(&kong, instance).unwrap();
}
