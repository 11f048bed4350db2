//! The daemon for a given Kong release (`--kong-version`), and as Kong 3.9+'s drop-in
//! plugin executable (a link named after the plugin).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use kong_rust_pluginserver_e2e::{
    artifacts,
    daemon::Scratch,
    kong::{EventEnd, Kong},
};
use serde_json::json;

/// A link named `name` to the daemon binary, in a fresh directory under `scratch`.
fn link(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::os::unix::fs::symlink(artifacts::daemon_binary(), &path).unwrap();
    path
}

/// The link run as Kong runs it: no arguments but its own, settings from the environment.
fn as_kong_runs(scratch: &Scratch, program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env(
            "KONG_RUST_PLUGINSERVER_PLUGINS_DIRECTORY",
            scratch.plugins_dir(),
        )
        .env("KONG_PREFIX", scratch.prefix())
        // No default config file of the machine may leak into the test.
        .env("KONG_RUST_PLUGINSERVER_CONFIG", "/dev/null")
        .stdin(Stdio::null());
    cmd
}

#[test]
fn a_link_named_after_a_plugin_answers_dash_dump_like_a_go_plugin() {
    let scratch = Scratch::with_plugins(&["rust-hello", "e2e-probe"]);
    let bin = tempfile::tempdir().unwrap();
    let hello = link(bin.path(), "rust-hello");

    let out = as_kong_runs(&scratch, &hello)
        .arg("-dump")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).expect("pure JSON");
    assert_eq!(dump["Protocol"], "MsgPack:1");
    let plugins = dump["Plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 1, "Kong 3.9+ read one plugin per query");
    assert_eq!(plugins[0]["Name"], "rust-hello");

    // Kong 3.0-3.8's default query command is /usr/local/bin/query_NAME.
    let query = link(bin.path(), "query_e2e-probe");
    let out = as_kong_runs(&scratch, &query).output().unwrap();
    assert!(out.status.success());
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(dump["Plugins"][0]["Name"], "e2e-probe");

    let out = as_kong_runs(&scratch, &hello)
        .arg("--help")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing else"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Invoked as itself, `-dump` is no longer read as `-d ump`.
    let out = scratch.command().arg("-dump").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dump-plugin"));
}

#[test]
fn links_started_by_kong_agree_on_one_daemon_on_kongs_prefix() {
    let scratch = Scratch::with_plugins(&["rust-hello", "e2e-probe"]);
    let bin = tempfile::tempdir().unwrap();
    let mut children = Vec::new();
    for plugin in ["rust-hello", "e2e-probe"] {
        let program = link(bin.path(), plugin);
        let child = as_kong_runs(&scratch, &program)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        children.push(child);
    }
    // KONG_PREFIX is where Kong 3.9+ looks for <plugin>.socket.
    let socket = scratch.socket("e2e-probe");
    let deadline = Instant::now() + Duration::from_secs(20);
    let kong = Kong::new(&socket);
    while kong
        .start_instance("e2e-probe", json!({"mode": "echo"}))
        .is_err()
    {
        assert!(Instant::now() < deadline, "no daemon served {socket:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // One serves both plugins; the other stands by.
    let hello = Kong::new(scratch.socket("rust-hello"));
    hello.start_instance("rust-hello", json!({})).unwrap();
    assert_eq!(hello.server_pids().last(), kong.server_pids().last());
    for mut child in children {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
fn the_links_subcommand_makes_and_refreshes_the_links() {
    let scratch = Scratch::with_plugins(&["rust-hello", "e2e-probe"]);
    let bin = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let out = scratch
            .command()
            .args(["links", "--bin-dir"])
            .arg(bin.path())
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let made = run(&[]);
    assert!(made.contains("created"), "{made}");
    assert!(bin.path().join("rust-hello").exists());
    assert!(
        !bin.path().join("query_rust-hello").exists(),
        "3.9+ need none"
    );

    // For Kong 3.0-3.8, also query_NAME; a second run keeps what is right.
    let again = run(&["--kong-version", "3.4"]);
    assert!(again.contains("kept"), "{again}");
    assert!(bin.path().join("query_e2e-probe").exists());
    let out = as_kong_runs(&scratch, &bin.path().join("rust-hello"))
        .arg("-dump")
        .output()
        .unwrap();
    assert!(out.status.success());

    // Back to 3.9+: the query links go.
    let pruned = run(&[]);
    assert!(pruned.contains("removed"), "{pruned}");
    assert!(!bin.path().join("query_e2e-probe").exists());
}

#[test]
fn dumps_follow_the_schema_rules_of_the_kong_version() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let dump = |version: &str| -> serde_json::Value {
        let out = scratch
            .command()
            .args(["--kong-version", version, "--dump-plugin", "rust-hello"])
            .output()
            .unwrap();
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let old = dump("3.3").to_string();
    assert!(
        !old.contains("description"),
        "Kong 3.0-3.3 refuse it: {old}"
    );
    let new = dump("3.4").to_string();
    assert!(new.contains("description"), "{new}");

    let out = scratch
        .command()
        .args(["--kong-version", "2.8", "--dump-plugin", "rust-hello"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Kong 3.0 and later"));
}

#[test]
fn kong_3_0_gets_an_instance_for_a_refused_config_and_each_event_fails_closed() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    // Kong 3.1+ get the error (and raise it: a 500 for the request).
    let head = scratch.start(&["rust-hello"]);
    let err = head
        .kong()
        .start_instance("rust-hello", json!({"message": 5}))
        .unwrap_err();
    assert!(format!("{err:?}").contains("message"), "{err:?}");
    drop(head);

    // Kong 3.0 would store the error as the instance and hang: it gets an id instead.
    let v30 = scratch.start_with(&["rust-hello"], |cmd| {
        cmd.args(["--kong-version", "3.0"]);
    });
    let kong = v30.kong();
    let id = kong
        .start_instance("rust-hello", json!({"message": 5}))
        .unwrap();
    for _ in 0..2 {
        let run = kong.run_event(id, "access", |_| None);
        assert_eq!(
            run.end,
            EventEnd::Ended {
                method: "kong.response.error".into(),
                status: 500
            },
            "{run:?}"
        );
    }
    assert!(v30.stderr().contains("refused its configuration"));
    // A good configuration still works.
    let good = kong.start_instance("rust-hello", json!({})).unwrap();
    let run = kong.run_event(good, "access", |_| None);
    assert!(run.end.proxied(), "{run:?}");
}

#[test]
fn calls_the_kong_version_lacks_fail_in_the_plugin_without_reaching_kong() {
    let scratch = Scratch::with_plugins(&["pdk-probe"]);
    let daemon = scratch.start_with(&["pdk-probe"], |cmd| {
        cmd.args(["--kong-version", "3.0"]);
    });
    let kong = daemon.kong();
    let id = kong
        .start_instance("pdk-probe", json!({"mode": "every"}))
        .unwrap();
    let run = kong.run_event(id, "access", |_| None);
    assert!(matches!(run.end, EventEnd::Ended { .. }), "{run:?}");
    let methods: Vec<&str> = run.calls.iter().map(|c| c.method.as_str()).collect();
    for lacking in [
        "kong.plugin.get_id",
        "kong.request.get_uri_captures",
        "kong.service.set_retries",
        "kong.service.set_timeouts",
        "kong.service.request.clear_query_arg",
        "kong.vault.flush",
        "kong.telemetry.log",
        "kong.log.trace",
    ] {
        assert!(!methods.contains(&lacking), "{lacking} reached Kong 3.0");
    }
    let report = run
        .calls
        .iter()
        .find(|c| {
            c.method == "kong.log.notice" && c.args[0].as_str().is_some_and(|t| t.contains('\n'))
        })
        .and_then(|c| c.args[0].as_str())
        .expect("the probe's report");
    assert!(
        report.contains(
            "service.set_retries = Err(kong.service.set_retries is not available: \
             kong.service.set_retries exists from Kong 3.8 on; the configured Kong is 3.0"
        ),
        "{report}"
    );
    assert!(methods.contains(&"kong.request.get_header"));
}
