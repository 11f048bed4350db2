//! The ABI's versioning policy, end to end: the daemon loads plugins by the version of the
//! ABI crate (`kong-rust-plugin-abi`), not the PDK's. A plugin built against a PDK release
//! one minor ahead of the daemon's (same ABI) loads and serves; one built against the next
//! ABI major is refused with the loader's one-line explanation.
//!
//! Each case copies `plugin-abi/` (the PDK with its ABI crate, macros and test kit) into a
//! workspace of its own under `<target dir>/abi-compat/<case>/`, bumps a version there,
//! adds a tiny plugin crate, and builds it offline with the workspace's Cargo.lock into
//! `<target dir>/template-check` (shared with the template test, so the registry
//! dependencies are compiled once). Files are only rewritten when they change, so a rerun
//! rebuilds nothing.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use kong_rust_plugin_abi::ABI_VERSION;
use kong_rust_pluginserver::{
    daemon::{Daemon, EventReply, Scope},
    loader::{self, LoadError, LoadOptions},
    settings::Limits,
    wait::block_on,
};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

/// `<target dir>`, from this test's `<target dir>/<profile>/deps/`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .nth(3)
        .expect("the test runs from <target>/<profile>/deps")
        .to_owned()
}

/// Writes `contents` to `path` unless it already holds exactly that (keeping its mtime,
/// so cargo sees nothing new).
fn write_if_changed(path: &Path, contents: &[u8]) {
    if std::fs::read(path).is_ok_and(|old| old == contents) {
        return;
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

/// Copies the tree `from` to `to` (without `target` directories), file by file. Manifests
/// lose their `[dev-dependencies]`: cargo never builds a dependency's, and they may name
/// workspace crates that are not copied (cargo refuses a manifest that inherits one).
fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let (source, dest) = (entry.path(), to.join(&name));
        if entry.file_type().unwrap().is_dir() {
            if name != "target" {
                copy_tree(&source, &dest);
            }
        } else if name == "Cargo.toml" {
            let mut manifest: toml::Table =
                std::fs::read_to_string(&source).unwrap().parse().unwrap();
            manifest.remove("dev-dependencies");
            write_if_changed(&dest, toml::to_string(&manifest).unwrap().as_bytes());
        } else {
            write_if_changed(&dest, &std::fs::read(&source).unwrap());
        }
    }
}

/// A semver with its minor (or, with `major`, its major) raised by one.
fn bump(version: &str, major: bool) -> String {
    let parts: Vec<u64> = version.split('.').map(|p| p.parse().unwrap()).collect();
    if major {
        format!("{}.0.0", parts[0] + 1)
    } else {
        format!("{}.{}.0", parts[0], parts[1] + 1)
    }
}

/// Which version a case raises.
#[derive(Clone, Copy)]
enum Bump {
    /// `kong-rust-pdk`'s minor.
    PdkMinor,
    /// `kong-rust-plugin-abi`'s major.
    AbiMajor,
}

/// Builds `plugin` (a cdylib crate) against a copy of the PDK with `bump` applied; returns
/// the library, installed in a fresh plugins directory, and the versions built against.
fn build_plugin(case: &str, bump_what: Bump) -> (tempfile::TempDir, PathBuf, String, String) {
    let root = target_dir().join("abi-compat").join(case);
    copy_tree(&workspace().join("plugin-abi"), &root.join("plugin-abi"));

    // The workspace root: the real one's package defaults, lints and dependencies (those
    // whose path is not copied dropped), with this case's versions.
    let real: toml::Table = std::fs::read_to_string(workspace().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let real_ws = real["workspace"].as_table().unwrap();
    let mut deps = real_ws["dependencies"].as_table().unwrap().clone();
    deps.retain(|_, dep| {
        dep.get("path")
            .and_then(toml::Value::as_str)
            .is_none_or(|path| root.join(path).exists())
    });
    let pdk_version = real_ws["package"]["version"].as_str().unwrap().to_owned();
    let (pdk, abi) = match bump_what {
        Bump::PdkMinor => (bump(&pdk_version, false), ABI_VERSION.to_owned()),
        Bump::AbiMajor => (pdk_version.clone(), bump(ABI_VERSION, true)),
    };
    deps["kong-rust-pdk"]["version"] = pdk.clone().into();
    deps["kong-rust-plugin-abi"]["version"] = abi.clone().into();
    let mut ws = toml::Table::new();
    ws.insert("members".into(), toml::Value::Array(vec![case.into()]));
    ws.insert("resolver".into(), "3".into());
    ws.insert("package".into(), real_ws["package"].clone());
    ws.insert("dependencies".into(), deps.into());
    ws.insert("lints".into(), real_ws["lints"].clone());
    let mut manifest = toml::Table::new();
    manifest.insert("workspace".into(), ws.into());
    write_if_changed(
        &root.join("Cargo.toml"),
        toml::to_string(&manifest).unwrap().as_bytes(),
    );

    // The bumped crate declares its own version.
    let (crate_manifest, version) = match bump_what {
        Bump::PdkMinor => (root.join("plugin-abi/Cargo.toml"), &pdk),
        Bump::AbiMajor => (root.join("plugin-abi/abi/Cargo.toml"), &abi),
    };
    let text = std::fs::read_to_string(&crate_manifest).unwrap();
    let mut package: toml::Table = text.parse().unwrap();
    package["package"]["version"] = version.clone().into();
    write_if_changed(
        &crate_manifest,
        toml::to_string(&package).unwrap().as_bytes(),
    );

    let lib = case.replace('-', "_");
    write_if_changed(
        &root.join(case).join("Cargo.toml"),
        format!(
            r#"[package]
name = "{case}"
version = "1.0.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
kong-rust-pdk.workspace = true
schemars.workspace = true
serde.workspace = true
"#
        )
        .as_bytes(),
    );
    write_if_changed(
        &root.join(case).join("src/lib.rs"),
        br#"//! Built against a PDK other than the daemon's.

use kong_rust_pdk::prelude::*;

/// What to tag responses with.
#[derive(serde::Deserialize, schemars::JsonSchema)]
pub struct Config {
    /// The tag.
    pub tag: Option<String>,
}

/// Tags the response, then returns.
pub struct Probe {
    tag: String,
}

#[kong_rust_pdk::plugin]
impl Plugin for Probe {
    type Config = Config;
    const PRIORITY: i64 = 7;

    fn new(config: Config) -> Result<Self, ConfigError> {
        let tag = config.tag.unwrap_or_else(|| "another pdk".into());
        Ok(Probe { tag })
    }

    async fn access(&self, kong: &Kong) -> PdkResult<()> {
        kong.response().set_header("x-built-against", &self.tag).await
    }
}
"#,
    );
    // The daemon's dependency versions, nothing to download (cargo then records the
    // bumped version in it).
    let lock = std::fs::read(workspace().join("Cargo.lock")).unwrap();
    write_if_changed(&root.join("Cargo.lock"), &lock);

    let target = target_dir().join("template-check");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--offline", "-p", case])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo build in {} failed:\n{}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );

    let plugins = tempfile::tempdir().unwrap();
    let installed = plugins.path().join(format!("lib{lib}.so"));
    std::fs::copy(
        target.join("debug").join(format!("lib{lib}.so")),
        &installed,
    )
    .unwrap();
    std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o644)).unwrap();
    (plugins, installed, pdk, abi)
}

#[test]
fn a_plugin_built_against_a_pdk_one_minor_ahead_loads_and_serves() {
    let (_dir, library, pdk, abi) = build_plugin("pdk-minor-ahead", Bump::PdkMinor);
    // The daemon's PDK is the workspace's version, like this crate's.
    assert_ne!(pdk, env!("CARGO_PKG_VERSION"), "the PDK really is ahead");
    assert_eq!(abi, ABI_VERSION);
    let plugin = loader::load(&library, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("built against PDK {pdk}: {e}"));
    assert_eq!(plugin.manifest.name, "pdk-minor-ahead");

    // Served as Kong would use it: an instance, an event, its PDK call, its end.
    let daemon = Daemon::new([plugin], Limits::default());
    let status = block_on(daemon.start_instance(&Scope::All, b"pdk-minor-ahead", b"{}")).unwrap();
    let (event, call) = block_on(daemon.handle_event(
        &Scope::All,
        status.id,
        b"access",
        |event, reply| match reply {
            EventReply::Call { method, args } => (event, Some((method.to_owned(), args.to_vec()))),
            _ => (event, None),
        },
    ))
    .unwrap();
    let (method, args) = call.expect("the handler's PDK call");
    assert_eq!(method, "kong.response.set_header");
    // ["x-built-against", "another pdk"], as MessagePack.
    let mut expected = vec![0x92, 0xa0 | 15];
    expected.extend_from_slice(b"x-built-against");
    expected.push(0xa0 | 11);
    expected.extend_from_slice(b"another pdk");
    assert_eq!(args, expected);
    let done = block_on(daemon.step(&Scope::All, event, None, |_, reply| {
        reply == EventReply::Done
    }));
    assert!(done, "the handler returned");
}

#[test]
fn a_plugin_built_against_the_next_abi_major_is_refused_clearly() {
    let (_dir, library, _, abi) = build_plugin("abi-major-ahead", Bump::AbiMajor);
    let err = loader::load(&library, &LoadOptions::default())
        .map(|p| p.manifest.name)
        .unwrap_err();
    let LoadError::Library { reason, .. } = &err else {
        panic!("not refused by the ABI check: {err}");
    };
    let major = ABI_VERSION.split('.').next().unwrap();
    assert_eq!(
        *reason,
        format!(
            "it was built against plugin ABI {abi}, and this daemon speaks ABI {ABI_VERSION}; \
             rebuild it with a kong-rust-pdk release for ABI {major}.x"
        )
    );
}
