//! The command line, without plugins: help, and refusal of a missing plugins directory.
//! (Having an integration test here also makes `cargo test` build the daemon binary that
//! the workspace's end-to-end tests in `tests/` start.)

use std::process::Command;

fn daemon() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kong-rust-pluginserver"))
}

#[test]
fn help_explains_every_flag() {
    let out = daemon().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--plugins-directory",
        "--kong-prefix",
        "--dump-plugin",
        "--dump-all-plugins",
        "--max-message-size",
        "--version",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
}

#[test]
fn a_missing_plugins_directory_is_a_clear_error() {
    let prefix = tempfile::tempdir().unwrap();
    for extra in [&[][..], &["--dump-all-plugins"][..]] {
        let out = daemon()
            .args(["--plugins-directory", "/nonexistent/kong-rust-plugins"])
            .arg("--kong-prefix")
            .arg(prefix.path())
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(out.stdout.is_empty(), "stdout must stay clean");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("cannot read plugins directory /nonexistent/kong-rust-plugins"),
            "{stderr}"
        );
    }
}

#[test]
fn an_os_error_is_reported_once_and_no_plugin_is_a_failure() {
    let out = daemon()
        .args([
            "--plugins-directory",
            "/nonexistent/plugins",
            "--dump-all-plugins",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("(os error 2)").count(), 1, "{stderr}");

    let empty = tempfile::tempdir().unwrap();
    let out = daemon()
        .arg("--plugins-directory")
        .arg(empty.path())
        .arg("--dump-all-plugins")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an empty dump would start Kong without plugins"
    );
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no usable plugin"));
}
