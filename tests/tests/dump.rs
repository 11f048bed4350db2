//! The query command: `--dump-plugin` / `--dump-all-plugins` print pure JSON on stdout.

use kong_rust_pluginserver_e2e::daemon::Scratch;
use serde_json::json;

fn rust_hello_info() -> serde_json::Value {
    json!({
        "Name": "rust-hello",
        "Version": "0.1.0",
        "Priority": 1000,
        "Phases": ["access"],
        "Schema": {
            "name": "rust-hello",
            "fields": [{"config": {
                "type": "record",
                "description": "The plugin configuration (`config` of the plugin entity in Kong).",
                "fields": [{"message": {
                    "type": "string",
                    "description": "Who to greet with; `hello` when unset.",
                }}],
            }}],
        },
    })
}

#[test]
fn dump_plugin_prints_kongs_object_form_and_nothing_else() {
    let scratch = Scratch::with_plugins(&["rust-hello", "e2e-probe"]);
    let out = scratch
        .command()
        .args(["--dump-plugin", "rust-hello"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.ends_with('\n') && stdout.lines().count() == 1,
        "{stdout:?}"
    );
    let dump: serde_json::Value = serde_json::from_str(&stdout).expect("pure JSON");
    assert_eq!(
        dump,
        json!({"Protocol": "MsgPack:1", "Plugins": [rust_hello_info()]})
    );
    assert!(
        std::fs::read_dir(scratch.prefix())
            .unwrap()
            .next()
            .is_none(),
        "the dump must not create sockets"
    );
}

#[test]
fn dump_all_plugins_lists_every_plugin_sorted() {
    let scratch = Scratch::with_plugins(&["rust-hello", "e2e-probe"]);
    let out = scratch
        .command()
        .arg("--dump-all-plugins")
        .output()
        .unwrap();
    assert!(out.status.success());
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).expect("pure JSON");
    assert_eq!(dump["Protocol"], "MsgPack:1");
    let names: Vec<&str> = dump["Plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["e2e-probe", "rust-hello"]);
    assert_eq!(dump["Plugins"][1], rust_hello_info());
}

#[test]
fn dumping_an_unknown_plugin_fails_with_nothing_on_stdout() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let out = scratch
        .command()
        .args(["--dump-plugin", "no-such-plugin"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no-such-plugin") && stderr.contains("rust-hello"),
        "{stderr}"
    );
}
