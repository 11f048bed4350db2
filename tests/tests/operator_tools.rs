//! What operators and plugin authors use: settings from flags, environment and a TOML file;
//! `/metrics`; `status`; `try`; JSON logs.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use kong_rust_pluginserver_e2e::{daemon::Scratch, kong::EventEnd};
use rmpv::Value;
use serde_json::json;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn settings_come_from_flags_then_environment_then_the_file() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let file = scratch.prefix().join("daemon.toml");
    // The file sets two limits; the environment overrides one of them.
    std::fs::write(
        &file,
        "max-events-per-instance = 1\ninstance-idle-timeout = 3600\nlog-format = \"json\"\n",
    )
    .unwrap();
    let daemon = scratch.start_with(&["rust-hello"], |cmd| {
        cmd.arg("--config")
            .arg(&file)
            .env("KONG_RUST_PLUGINSERVER_MAX_EVENTS_PER_INSTANCE", "2");
    });
    let kong = daemon.kong();
    let instance = kong.start_instance("rust-hello", json!({})).unwrap();
    // A budget of 2 (the environment's, not the file's 1): a third event frees the
    // longest-waiting one.
    for _ in 0..3 {
        kong.handle_event(instance, "access").unwrap();
    }
    assert_eq!(kong.status()["rust-hello.Evicted"], 1);
    // log-format from the file: JSON lines on stderr.
    let first_line = daemon
        .stderr()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let line: serde_json::Value = serde_json::from_str(&first_line).expect("a JSON log line");
    assert!(line["level"].is_string(), "{line}");
}

#[test]
fn unknown_settings_and_bad_values_are_refused_by_name() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let file = scratch.prefix().join("bad.toml");
    std::fs::write(&file, "max-conections = 10\n").unwrap();
    /// Arguments, environment, and the name the refusal must mention.
    type Case = (Vec<String>, Vec<(&'static str, &'static str)>, &'static str);
    let cases: Vec<Case> = vec![
        (
            vec!["--config".into(), file.display().to_string()],
            vec![],
            "max-conections",
        ),
        (
            vec![],
            vec![("KONG_RUST_PLUGINSERVER_MAX_CONECTIONS", "1")],
            "KONG_RUST_PLUGINSERVER_MAX_CONECTIONS",
        ),
        (
            vec!["--max-connections".into(), "lots".into()],
            vec![],
            "--max-connections",
        ),
        (
            vec!["--metrics-listen".into(), "somewhere".into()],
            vec![],
            "metrics-listen",
        ),
        (
            vec!["--log-level".into(), "loud".into()],
            vec![],
            "--log-level",
        ),
    ];
    for (args, env, named) in cases {
        let out = scratch.command().args(&args).envs(env).output().unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(out.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
}

#[test]
fn metrics_are_served_on_loopback() {
    let scratch = Scratch::with_plugins(&["rust-hello", "e2e-probe"]);
    let port = free_port();
    let daemon = scratch.start_with(&["rust-hello", "e2e-probe"], |cmd| {
        cmd.args(["--metrics-listen", &port.to_string()]);
    });
    let kong = daemon.kong();
    let hello = kong.start_instance("rust-hello", json!({})).unwrap();
    for _ in 0..3 {
        let run = kong.run_event(hello, "access", |c| {
            (c.method == "kong.request.get_header").then(|| Value::from("h"))
        });
        assert_eq!(run.end, EventEnd::Returned);
    }
    let probe = kong_rust_pluginserver_e2e::kong::Kong::new(scratch.socket("e2e-probe"));
    let panicking = probe
        .start_instance("e2e-probe", json!({"mode": "panic"}))
        .unwrap();
    probe.run_event(panicking, "access", |_| None);

    let response = http_get(port, "/metrics");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    for line in [
        "kong_rust_pluginserver_events_total{phase=\"access\",plugin=\"rust-hello\"} 3",
        "kong_rust_pluginserver_pdk_calls_total{phase=\"access\",plugin=\"rust-hello\"} 9",
        "kong_rust_pluginserver_event_panics_total{phase=\"access\",plugin=\"e2e-probe\"} 1",
        "kong_rust_pluginserver_event_failures_total{action=\"ended_request\",phase=\"access\",plugin=\"e2e-probe\",reason=\"panic\"} 1",
        "kong_rust_pluginserver_event_duration_seconds_count{phase=\"access\",plugin=\"rust-hello\"} 3",
        "kong_rust_pluginserver_instances{plugin=\"rust-hello\"} 1",
        "kong_rust_pluginserver_events_in_flight 0",
        "kong_rust_pluginserver_build_info{version=\"0.1.0\"} 1",
    ] {
        assert!(response.contains(line), "missing {line:?} in\n{response}");
    }
    assert!(
        response.contains("kong_rust_pluginserver_plugin_info{file="),
        "{response}"
    );
    assert!(
        !response.contains("phase=\"log\",plugin=\"rust-hello\""),
        "only implemented phases"
    );
    assert!(http_get(port, "/").starts_with("HTTP/1.1 404"));
}

#[test]
fn status_prints_a_table_or_json() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = scratch.start(&["rust-hello"]);
    daemon
        .kong()
        .start_instance("rust-hello", json!({}))
        .unwrap();
    let out = scratch.command().arg("status").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains(&format!("daemon pid {}", daemon.pid())),
        "{table}"
    );
    // Abandoned (freed after the event timeout) and evicted (freed when the budget was
    // full) are told apart.
    assert!(
        table.contains("ABANDONED") && table.contains("EVICTED"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("rust-hello"))
        .expect("a row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..4],
        ["rust-hello", "0.1.0", "fail-closed", "1"],
        "{table}"
    );

    let out = scratch
        .command()
        .args(["status", "--json"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["Pid"], daemon.pid());
    assert_eq!(status["Plugins"]["rust-hello"]["OnFailure"], "fail-closed");
    assert_eq!(
        status["Plugins"]["rust-hello"]["Instances"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn try_plays_kong_for_one_event_in_the_daemon_or_in_process() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = scratch.start(&["rust-hello"]);
    let try_args = [
        "try",
        "rust-hello",
        "--config-json",
        r#"{"message": "Kong!"}"#,
        "-H",
        "host: example.com",
        "--path",
        "/things?id=1",
    ];
    let out = scratch.command().args(try_args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let transcript = String::from_utf8(out.stdout).unwrap();
    for line in [
        "-> kong.request.get_header(\"host\")",
        "<- \"example.com\"",
        "-> kong.response.set_header(\"x-hello-from-rust\", \"Rust says Kong! to example.com\")",
        "== access handler returned",
        "  x-hello-from-rust: Rust says Kong! to example.com",
        &format!("  x-rust-pid: {}", daemon.pid()),
        "upstream request: GET /things?id=1",
    ] {
        assert!(
            transcript.contains(line),
            "missing {line:?} in\n{transcript}"
        );
    }
    // The trial leaves no instance behind.
    let status = scratch
        .command()
        .args(["status", "--json"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["Plugins"]["rust-hello"]["Instances"], json!([]));

    drop(daemon);
    let file = scratch.plugins_dir().join("librust_hello.so");
    let out = scratch
        .command()
        .args(try_args)
        .arg("--file")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let transcript = String::from_utf8(out.stdout).unwrap();
    assert!(
        transcript.contains("Rust says Kong! to example.com"),
        "{transcript}"
    );
}

#[test]
fn try_shows_an_exit_and_its_response() {
    let scratch = Scratch::with_plugins(&["e2e-probe"]);
    let file = scratch.plugins_dir().join("libe2e_probe.so");
    let out = scratch
        .command()
        .args([
            "try",
            "e2e-probe",
            "--config-json",
            r#"{"mode": "exit"}"#,
            "--file",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let transcript = String::from_utf8(out.stdout).unwrap();
    assert!(
        transcript.contains("-> kong.response.exit(403, \"denied\")"),
        "{transcript}"
    );
    assert!(
        transcript.contains("response (from the plugin): 403"),
        "{transcript}"
    );
}

#[test]
fn plugin_logs_reach_the_daemon_log_with_the_plugin_name() {
    let scratch = Scratch::with_plugins(&["e2e-probe"]);
    let daemon = scratch.start(&["e2e-probe"]);
    let kong = daemon.kong();
    let id = kong
        .start_instance("e2e-probe", json!({"mode": "echo"}))
        .unwrap();
    let run = kong.run_event(id, "access", |_| Some(Value::from("marker-42")));
    assert_eq!(run.end, EventEnd::Returned);
    daemon.wait_for_log("echoing Some(\"marker-42\")", Duration::from_secs(10));
    let stderr = daemon.stderr();
    let constructed = stderr
        .lines()
        .find(|l| l.contains("probe constructed"))
        .unwrap_or_else(|| panic!("no constructor log line:\n{stderr}"));
    assert!(
        constructed.contains("INFO") && constructed.contains("e2e-probe"),
        "{constructed}"
    );
    assert!(constructed.contains("mode=Echo"), "{constructed}");
    let echoed = stderr.lines().find(|l| l.contains("echoing")).unwrap();
    assert!(
        echoed.contains("WARN") && echoed.contains("e2e-probe"),
        "{echoed}"
    );
}

/// `try`'s exit status and the line that says why.
fn try_outcome(scratch: &Scratch, args: &[&str]) -> (Option<i32>, String, String) {
    let out = scratch.command().arg("try").args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn try_exit_statuses_tell_failures_refusals_and_missing_handlers_apart() {
    let scratch = Scratch::with_plugins(&["e2e-probe"]);
    let file = scratch.plugins_dir().join("libe2e_probe.so");
    let file = file.to_str().unwrap();
    let cases: [(&str, &[&str], i32, &str); 8] = [
        ("an exit", &[r#"{"mode": "exit"}"#], 0, "ended the request"),
        (
            "an error",
            &[r#"{"mode": "fail"}"#],
            5,
            "access handler failed",
        ),
        (
            "a panic",
            &[r#"{"mode": "panic"}"#],
            6,
            "access handler panicked",
        ),
        (
            "a value outside one_of",
            &[r#"{"mode": "loud"}"#],
            3,
            "mode: expected one of: echo, exit, panic, fail",
        ),
        (
            "a missing field",
            &["{}"],
            3,
            "mode: required field missing",
        ),
        (
            "an unknown field and a wrong type",
            &[r#"{"mode": "echo", "delay_ms": "soon", "colour": 1}"#],
            3,
            "colour: unknown field; delay_ms: expected an integer",
        ),
        (
            "a constructor that panics",
            &[r#"{"mode": "echo", "panic_in_new": true}"#],
            3,
            "panic",
        ),
        (
            "a phase without a handler",
            &[r#"{"mode": "echo"}"#, "--phase", "log"],
            4,
            "has no log handler",
        ),
    ];
    for (what, args, code, says) in cases {
        let mut all = vec!["e2e-probe", "--file", file, "--config-json"];
        all.extend_from_slice(args);
        let (status, stdout, stderr) = try_outcome(&scratch, &all);
        assert_eq!(status, Some(code), "{what}:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains(says) || stderr.contains(says),
            "{what}: no {says:?} in\n{stdout}\n{stderr}"
        );
    }
    // The configuration the plugin got is Kong's: defaults filled in.
    let (_, stdout, _) = try_outcome(
        &scratch,
        &[
            "e2e-probe",
            "--file",
            file,
            "--config-json",
            r#"{"mode": "echo"}"#,
        ],
    );
    assert!(
        stdout.contains(
            r#"config (with Kong's defaults): {"delay_ms":0,"mode":"echo","panic_in_new":false}"#
        ) || stdout.contains(
            r#"config (with Kong's defaults): {"mode":"echo","panic_in_new":false,"delay_ms":0}"#
        ),
        "{stdout}"
    );
    let (status, _, stderr) = try_outcome(
        &scratch,
        &["rust-hello", "--file", file, "--config-json", "{}"],
    );
    assert_eq!(status, Some(1), "{stderr}");
    assert!(
        stderr.contains("holds plugin e2e-probe, not rust-hello"),
        "{stderr}"
    );
}

#[test]
fn try_against_a_daemon_names_the_plugins_it_serves_and_reports_failures() {
    let scratch = Scratch::with_plugins(&["e2e-probe", "rust-hello"]);
    let _daemon = scratch.start(&["e2e-probe", "rust-hello"]);
    let (status, _, stderr) = try_outcome(&scratch, &["rust-hell"]);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(stderr.contains("no plugin rust-hell is served"), "{stderr}");
    assert!(stderr.contains("e2e-probe, rust-hello"), "{stderr}");

    let (status, stdout, stderr) = try_outcome(
        &scratch,
        &["e2e-probe", "--config-json", r#"{"mode": "fail"}"#],
    );
    assert_eq!(status, Some(5), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("ended the request in its place"),
        "{stdout}"
    );
    let (status, stdout, stderr) = try_outcome(
        &scratch,
        &[
            "e2e-probe",
            "--config-json",
            r#"{"mode": "echo"}"#,
            "-H",
            "x-probe: 1",
        ],
    );
    assert_eq!(status, Some(0), "{stdout}\n{stderr}");
}

#[test]
fn try_plays_the_response_phase_with_an_upstream_response() {
    let scratch = Scratch::with_plugins(&["rust-response-redactor"]);
    let file = scratch.plugins_dir().join("librust_response_redactor.so");
    let (status, stdout, stderr) = try_outcome(
        &scratch,
        &[
            "rust-response-redactor",
            "--file",
            file.to_str().unwrap(),
            "--config-json",
            r#"{"fields": ["ssn"]}"#,
            "--phase",
            "response",
            "--upstream-status",
            "201",
            "--upstream-header",
            "content-type: application/json",
            "--upstream-body",
            r#"{"name": "a", "ssn": "123"}"#,
        ],
    );
    assert_eq!(status, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("response (from the plugin): 201"),
        "{stdout}"
    );
    assert!(stdout.contains(r#"\"ssn\":\"***\""#), "{stdout}");
}
