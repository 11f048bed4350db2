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

#[test]
fn a_bad_environment_value_is_reported_as_the_variable() {
    let out = daemon()
        .env("KONG_RUST_PLUGINSERVER_MAX_CONNECTIONS", "lots")
        .arg("--dump-all-plugins")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "invalid value 'lots' in environment variable KONG_RUST_PLUGINSERVER_MAX_CONNECTIONS"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("invalid digit"), "{stderr}");

    // Given as a flag, it is the flag that is named.
    let out = daemon()
        .env("KONG_RUST_PLUGINSERVER_MAX_CONNECTIONS", "10")
        .args(["--max-connections", "lots", "--dump-all-plugins"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("for '--max-connections <N>'") && !stderr.contains("environment"),
        "{stderr}"
    );

    // A global setting from the environment, with a subcommand.
    let out = daemon()
        .env("KONG_RUST_PLUGINSERVER_LOG_LEVEL", "loud")
        .arg("status")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("environment variable KONG_RUST_PLUGINSERVER_LOG_LEVEL"),
        "{stderr}"
    );
}

fn help_of(args: &[&str]) -> String {
    let out = daemon().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn subcommand_help_lists_only_what_the_subcommand_uses() {
    let new = help_of(&["new", "--help"]);
    for flag in [
        "--plugins-directory",
        "--kong-prefix",
        "--protocol",
        "--kong-version",
        "--max-connections",
        "--config",
    ] {
        assert!(!new.contains(flag), "`new --help` lists {flag}:\n{new}");
    }
    assert!(new.contains("--pdk-registry"), "{new}");
    let status = help_of(&["status", "--help"]);
    assert!(status.contains("--kong-prefix"), "{status}");
    assert!(!status.contains("--plugins-directory"), "{status}");
    let try_help = help_of(&["try", "--help"]);
    assert!(try_help.contains("--kong-prefix"), "{try_help}");
    assert!(try_help.contains("Exit status: 0"), "{try_help}");
    assert!(!try_help.contains("--protocol"), "{try_help}");
    let kong_conf = help_of(&["kong-conf", "--help"]);
    for flag in [
        "--plugins-directory",
        "--kong-prefix",
        "--protocol",
        "--kong-version",
    ] {
        assert!(kong_conf.contains(flag), "`kong-conf --help` lacks {flag}");
    }
    // Hidden, not refused: a daemon's settings still parse anywhere.
    let out = daemon()
        .args(["status", "--plugins-directory", "/nonexistent", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn a_global_flag_after_a_subcommand_is_honoured() {
    // `--config` is hidden from `new --help`, yet given after `new` it is read.
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("zz");
    let out = daemon()
        .args([
            "new",
            "zz",
            "--config",
            "/nonexistent/settings.toml",
            "--path",
        ])
        .arg(&crate_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read the config file /nonexistent/settings.toml"),
        "{stderr}"
    );
    assert!(!crate_dir.exists());

    // A shown one too: `status` looks for sockets in the prefix given after it.
    let prefix = tempfile::tempdir().unwrap();
    let out = daemon()
        .args(["status", "--log-format", "json", "--kong-prefix"])
        .arg(prefix.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("no *.socket in {}", prefix.path().display())),
        "{stderr}"
    );
    assert!(stderr.starts_with('{'), "JSON log lines: {stderr}");
}

#[test]
fn help_about_help_works() {
    for args in [&["help", "--help"][..], &["help", "-h"][..]] {
        let help = help_of(args);
        assert!(help.contains("help"), "{args:?}: {help}");
        assert!(help.contains("Usage"), "{args:?}: {help}");
        assert!(!help.contains("error"), "{args:?}: {help}");
    }
    let help = help_of(&["help", "try"]);
    assert!(help.contains("--config-json"), "{help}");
}
