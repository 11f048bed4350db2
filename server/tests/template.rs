//! `kong-rust-pluginserver new`: the crate it creates builds, passes its own tests as
//! created, and its library loads in the daemon.
//!
//! The crate is built with cargo in `<target dir>/template-check`, so later runs reuse the
//! dependencies. Its `kong-rust-pdk` is this repository's `plugin-abi`; the workspace's
//! Cargo.lock is copied next to it first, so it builds with the very dependency versions
//! the daemon was built with (reproducible, and nothing to download the workspace did not).

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use kong_rust_pdk::Phase;
use kong_rust_pluginserver::{
    loader::{self, LoadOptions},
    template::{self, PdkSource},
};

const NAME: &str = "my-first-plugin";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

/// `<target dir>/template-check`, next to this test's own `<target dir>/<profile>/deps/`.
fn check_target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test runs from <target>/<profile>/deps");
    target.join("template-check")
}

fn cargo(dir: &Path, target_dir: &Path, args: &[&str]) -> Output {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo {} failed in {}:\n{}\n{}",
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_created_crate_builds_passes_its_tests_and_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(NAME);
    let created =
        template::create(&dir, NAME, PdkSource::Path(workspace().join("plugin-abi"))).unwrap();
    assert_eq!(created.library, "libmy_first_plugin.so");
    std::fs::copy(workspace().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let target_dir = check_target_dir();

    // Formatted as rustfmt wants it, so `cargo fmt` on a new crate changes nothing.
    let rustfmt = Command::new("rustfmt")
        .args(["--check", "--edition", "2024"])
        .arg(dir.join("src/lib.rs"))
        .output()
        .unwrap();
    assert!(
        rustfmt.status.success(),
        "{}",
        String::from_utf8_lossy(&rustfmt.stdout)
    );

    let test = cargo(&dir, &target_dir, &["test"]);
    let stdout = String::from_utf8_lossy(&test.stdout);
    for name in [
        "refuses_a_request_without_the_header",
        "tags_an_accepted_request",
        "a_config_of_the_wrong_type_is_refused_with_the_field",
        "kong_accepts_the_schema_and_is_told_about_access_only",
    ] {
        assert!(
            stdout.contains(&format!("tests::{name} ... ok")),
            "{name} did not pass:\n{stdout}"
        );
    }
    // #[kong_rust_pdk::plugin] adds a test that checks the schema as the daemon will.
    assert!(
        stdout.contains("test kong_rust_pdk_config_schema_is_valid ... ok"),
        "{stdout}"
    );
    assert!(stdout.contains("test result: ok. 5 passed"), "{stdout}");

    let library = target_dir.join("debug").join(&created.library);
    let _ = std::fs::remove_file(&library);
    cargo(&dir, &target_dir, &["build"]);
    assert!(
        library.is_file(),
        "cargo build made no {}",
        library.display()
    );

    // Load it as the daemon does (its own copy, readable by anyone, writable by us only).
    let plugins = tempfile::tempdir().unwrap();
    let installed = plugins.path().join(&created.library);
    std::fs::copy(&library, &installed).unwrap();
    std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o644)).unwrap();
    let plugin = loader::load(&installed, &LoadOptions::default()).unwrap();
    assert_eq!(plugin.manifest.name, NAME);
    assert_eq!(plugin.manifest.version, "0.1.0");
    assert_eq!(plugin.manifest.priority, 1000);
    assert_eq!(plugin.manifest.phases, [Phase::Access]);
    let fields = plugin.manifest.config_schema["fields"].as_array().unwrap();
    let header = fields
        .iter()
        .find_map(|field| field.get("header"))
        .expect("a header field");
    assert_eq!(header["type"], "string");
    assert_eq!(header["default"], "x-api-key");
    assert!(fields.iter().any(|field| field.get("tag").is_some()));
}
