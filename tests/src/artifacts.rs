//! Locating build outputs.
//!
//! `cargo test --workspace` builds the daemon binary (the server package has integration
//! tests, so cargo builds its binary) and the plugin libraries (dev-dependencies of this
//! package, so cargo builds their cdylib) before running any test. The tests run from
//! `target/<profile>/deps/`, so both are found next to the test executable.

use std::path::PathBuf;

/// `target/<profile>/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("test executable directory");
    deps.parent().expect("target profile directory").to_owned()
}

/// The daemon binary; `E2E_DAEMON_BIN` overrides (to test an installed one).
pub fn daemon_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("E2E_DAEMON_BIN") {
        return PathBuf::from(bin);
    }
    let bin = profile_dir().join("kong-rust-pluginserver");
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// The `.so` of the workspace crate `crate_name` (e.g. `rust-hello`): the newest of
/// `target/<profile>/lib<name>.so` and `target/<profile>/deps/lib<name>.so`.
pub fn plugin_library(crate_name: &str) -> PathBuf {
    let file = format!("lib{}.so", crate_name.replace('-', "_"));
    let dir = profile_dir();
    [dir.join(&file), dir.join("deps").join(&file)]
        .into_iter()
        .filter_map(|path| {
            let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
            Some((modified, path))
        })
        .max()
        .map(|(_, path)| path)
        .unwrap_or_else(|| {
            panic!("{file} was not built: run the tests with `cargo test --workspace`")
        })
}
