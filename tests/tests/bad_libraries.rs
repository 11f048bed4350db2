//! A library that would crash whatever loads it (a truncated file, a garbage file, a
//! load-time constructor that aborts) is refused with a clear reason before the daemon maps
//! it, in both isolation modes and in the query command, and the other plugins serve.

use kong_rust_pluginserver_e2e::{
    artifacts,
    daemon::Scratch,
    kong::{EventEnd, Kong},
};
use rmpv::Value;
use serde_json::json;

/// rust-hello, plus a truncated copy of it, a garbage file and ctor-abort.
fn scratch_with_bad_libraries() -> Scratch {
    let scratch = Scratch::with_plugins(&["rust-hello", "ctor-abort"]);
    // Cut inside the loadable segments (not just the debug information at the end): mapped,
    // its last pages would be past the end of the file (SIGBUS when touched).
    let library = std::fs::read(artifacts::plugin_library("rust-hello")).unwrap();
    let truncated = scratch.plugins_dir().join("truncated.so");
    std::fs::write(&truncated, &library[..loaded_end(&library) / 2]).unwrap();
    std::fs::write(
        scratch.plugins_dir().join("garbage.so"),
        (0..4096u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    scratch
}

/// Where the last loadable segment of an ELF64 file ends.
fn loaded_end(elf: &[u8]) -> usize {
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap()) as usize;
    let (phoff, size, count) = (u64_at(32), u16_at(54), u16_at(56));
    (0..count)
        .map(|i| phoff + i * size)
        .filter(|&header| u32::from_le_bytes(elf[header..header + 4].try_into().unwrap()) == 1)
        .map(|header| u64_at(header + 8) + u64_at(header + 32))
        .max()
        .unwrap()
}

fn assert_refusals(stderr: &str) {
    assert!(
        stderr.contains("truncated.so: not a whole library (cut short")
            || stderr
                .contains("truncated.so: not a loadable kong-rust-pdk plugin: it is truncated"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "garbage.so: not a loadable kong-rust-pdk plugin: it is not an ELF shared library"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("libctor_abort.so: not a loadable kong-rust-pdk plugin: loading it crashed a test process (SIGABRT"),
        "{stderr}"
    );
}

fn serves_rust_hello(kong: &Kong) {
    let id = kong.start_instance("rust-hello", json!({})).unwrap();
    let run = kong.run_event(id, "access", |call| {
        (call.method == "kong.request.get_header").then(|| Value::from("h"))
    });
    assert_eq!(run.end, EventEnd::Returned);
}

#[test]
fn bad_libraries_are_refused_and_the_rest_serve_in_one_process() {
    let scratch = scratch_with_bad_libraries();
    let daemon = scratch.start(&["rust-hello"]);
    serves_rust_hello(&daemon.kong());
    assert_refusals(&daemon.stderr());
}

#[test]
fn bad_libraries_are_refused_and_the_rest_serve_with_process_isolation() {
    let scratch = scratch_with_bad_libraries();
    let daemon = scratch.start_with(&["rust-hello"], |cmd| {
        cmd.args(["--isolation", "process"]);
    });
    serves_rust_hello(&daemon.kong());
    assert_refusals(&daemon.stderr());
}

#[test]
fn the_query_command_refuses_bad_libraries_and_dumps_the_rest() {
    let scratch = scratch_with_bad_libraries();
    let out = scratch
        .command()
        .arg("--dump-all-plugins")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).expect("pure JSON");
    let names: Vec<&str> = dump["Plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rust-hello"]);
    assert_refusals(&stderr);
    let out = scratch
        .command()
        .args(["--dump-plugin", "rust-hello"])
        .output()
        .unwrap();
    assert!(out.status.success());
}
