//! Bundles the sources of kong-rust-pdk (and the crates it needs) into the binary, for
//! `kong-rust-pluginserver new`.
//!
//! A plugin must be built against the PDK whose ABI the daemon speaks, and kong-rust-pdk is
//! not on crates.io. So `new` writes these exact sources into the new crate and depends on
//! them by path: a crate that builds with no checkout of this repository. The manifests are
//! made standalone here (workspace-inherited keys replaced by the workspace's values,
//! dev-dependencies dropped), and the workspace's Cargo.lock is carried along so the plugin
//! resolves the dependency versions the daemon was built and tested with.
//!
//! Built outside this workspace (e.g. from a packaged crate), the tree is absent: the
//! generated code then says so, and `new` asks for `--pdk-path` or `--pdk-registry`.

use std::{
    collections::BTreeSet,
    env,
    fmt::Write as _,
    fs,
    path::{Component, Path, PathBuf},
};

use toml::{Table, Value};

/// The bundled crates, by directory relative to the workspace root. The first is the root
/// of the bundle (`kong-rust-pdk`); the others must sit inside it, so relative paths
/// between them hold wherever the bundle is written.
const CRATES: [&str; 4] = [
    "plugin-abi",
    "plugin-abi/abi",
    "plugin-abi/macros",
    "plugin-abi/testkit",
];

/// What of each crate directory is bundled: what cargo needs to build the library.
const BUNDLED: [&str; 3] = ["Cargo.toml", "build.rs", "src"];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap().to_owned();
    let generated = out_dir.join("bundled_pdk.rs");
    let root_manifest = workspace.join("Cargo.toml");
    println!("cargo::rerun-if-changed={}", root_manifest.display());
    println!(
        "cargo::rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );
    println!(
        "cargo::rerun-if-changed={}",
        workspace.join(CRATES[0]).display()
    );

    let code = match read_workspace(&root_manifest) {
        Some(root) if workspace.join(CRATES[0]).join("Cargo.toml").is_file() => {
            bundle(&workspace, &root, &out_dir)
        }
        _ => "/// Not built from the workspace: no sources bundled.\n\
              pub static BUNDLED_PDK: Option<Bundle> = None;\n"
            .to_owned(),
    };
    fs::write(&generated, code).unwrap();
}

/// The workspace's manifest, if it is one.
fn read_workspace(path: &Path) -> Option<Table> {
    let text = fs::read_to_string(path).ok()?;
    let table: Table = text.parse().ok()?;
    table.contains_key("workspace").then_some(table)
}

/// The code of `BUNDLED_PDK`: every file of the bundle, each `include_bytes!`d.
fn bundle(workspace: &Path, root: &Table, out_dir: &Path) -> String {
    let ws = root["workspace"].as_table().unwrap();
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let mut version = String::new();
    for (index, krate) in CRATES.iter().enumerate() {
        let dir = workspace.join(krate);
        let inside = relative(CRATES[0], krate);
        let manifest = standalone_manifest(&dir.join("Cargo.toml"), krate, ws);
        if index == 0 {
            version = manifest["package"]["version"].as_str().unwrap().to_owned();
        }
        let written = out_dir.join(format!("bundled-{}.toml", krate.replace('/', "-")));
        fs::write(&written, toml::to_string(&manifest).unwrap()).unwrap();
        files.push((join(&inside, "Cargo.toml"), written));
        for entry in BUNDLED.iter().skip(1) {
            let path = dir.join(entry);
            if path.exists() {
                collect(&path, &join(&inside, entry), &mut files);
            }
        }
    }
    files.sort();
    let lock = workspace.join("Cargo.lock");
    let mut code = String::new();
    writeln!(
        code,
        "/// kong-rust-pdk {version} and the crates it needs, as this binary was built with.\n\
         pub static BUNDLED_PDK: Option<Bundle> = Some(Bundle {{\n    version: {version:?},\n    \
         lock: {lock},\n    files: &[",
        lock = if lock.is_file() {
            format!("Some(include_str!({:?}))", lock.display().to_string())
        } else {
            "None".to_owned()
        },
    )
    .unwrap();
    for (path, source) in &files {
        writeln!(
            code,
            "        ({path:?}, include_bytes!({:?})),",
            source.display().to_string()
        )
        .unwrap();
    }
    code.push_str("    ],\n});\n");
    code
}

/// Every file under `path` (a file or a directory), as `(path in the bundle, source)`.
fn collect(path: &Path, name: &str, files: &mut Vec<(String, PathBuf)>) {
    if path.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        entries.sort();
        for entry in entries {
            let entry = entry.to_str().expect("UTF-8 file names in the PDK");
            collect(&path.join(entry), &join(name, entry), files);
        }
    } else {
        files.push((name.to_owned(), path.canonicalize().unwrap()));
    }
}

/// `krate`'s manifest without anything that needs this workspace.
fn standalone_manifest(path: &Path, krate: &str, ws: &Table) -> Table {
    let mut manifest: Table = fs::read_to_string(path).unwrap().parse().unwrap();
    let package = manifest["package"].as_table_mut().unwrap();
    let inherited = ws["package"].as_table().unwrap();
    for (key, value) in package.iter_mut() {
        if is_inherited(value) {
            *value = inherited
                .get(key)
                .unwrap_or_else(|| panic!("{krate}: workspace.package.{key} is not set"))
                .clone();
        }
    }
    // Cargo never builds a dependency's dev-dependencies, and they name crates that are not
    // bundled.
    manifest.remove("dev-dependencies");
    let deps = ws["dependencies"].as_table().unwrap();
    let bundled: BTreeSet<&str> = CRATES.iter().copied().collect();
    for section in ["dependencies", "build-dependencies"] {
        let Some(Value::Table(table)) = manifest.get_mut(section) else {
            continue;
        };
        for (name, spec) in table.iter_mut() {
            let inherited = is_inherited(spec);
            let own = match &*spec {
                Value::Table(t) => t.clone(),
                other => {
                    let mut t = Table::new();
                    t.insert("version".into(), other.clone());
                    t
                }
            };
            let mut resolved = if inherited {
                let mut base = match deps.get(name) {
                    Some(Value::Table(t)) => t.clone(),
                    Some(version) => {
                        let mut t = Table::new();
                        t.insert("version".into(), version.clone());
                        t
                    }
                    None => panic!("{krate}: workspace.dependencies.{name} is not set"),
                };
                for (key, value) in own {
                    match (key.as_str(), base.get_mut("features"), &value) {
                        ("workspace", ..) => {}
                        ("features", Some(Value::Array(have)), Value::Array(more)) => {
                            have.extend(more.iter().cloned())
                        }
                        _ => {
                            base.insert(key, value);
                        }
                    }
                }
                base
            } else {
                own
            };
            if let Some(Value::String(dep_path)) = resolved.get("path").cloned() {
                // Paths of workspace dependencies are relative to the workspace root; the
                // crate's own are relative to the crate.
                let from_root = if inherited {
                    dep_path
                } else {
                    normalize(&join(krate, &dep_path))
                };
                assert!(
                    bundled.contains(from_root.as_str()),
                    "{krate} depends on {from_root}, which is not bundled: add it to CRATES"
                );
                resolved.insert("path".into(), Value::String(relative(krate, &from_root)));
            }
            *spec = Value::Table(resolved);
        }
    }
    if manifest.get("lints").is_some_and(is_inherited) {
        manifest.insert("lints".into(), ws["lints"].clone());
    }
    manifest
}

fn is_inherited(value: &Value) -> bool {
    value
        .as_table()
        .is_some_and(|t| t.get("workspace").and_then(Value::as_bool) == Some(true))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() || dir == "." {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// `a/b/../c` as `a/c`.
fn normalize(path: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::ParentDir => {
                parts.pop();
            }
            Component::Normal(part) => parts.push(part.to_str().unwrap().to_owned()),
            _ => {}
        }
    }
    parts.join("/")
}

/// The path from directory `from` to `to`, both relative to the same root.
fn relative(from: &str, to: &str) -> String {
    let from: Vec<&str> = from.split('/').filter(|p| !p.is_empty()).collect();
    let to: Vec<&str> = to.split('/').filter(|p| !p.is_empty()).collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<&str> = vec![".."; from.len() - common];
    parts.extend(&to[common..]);
    if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    }
}
