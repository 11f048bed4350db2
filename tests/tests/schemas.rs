//! The schemas in the dumps of the example plugins follow Kong's rules.

use kong_rust_pdk::{
    kong_versions::KongVersion,
    schema::{validate_plugin_schema, validate_plugin_schema_for},
};
use kong_rust_pluginserver_e2e::daemon::Scratch;

/// Package names of the example plugins in `plugins/`.
fn example_plugins() -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    std::fs::read_dir(root)
        .unwrap()
        .filter_map(|e| {
            let manifest = std::fs::read_to_string(e.ok()?.path().join("Cargo.toml")).ok()?;
            let line = manifest.lines().find(|l| l.starts_with("name = "))?;
            Some(
                line.trim_start_matches("name = ")
                    .trim_matches('"')
                    .to_owned(),
            )
        })
        .collect()
}

#[test]
fn every_example_plugin_dumps_a_schema_kong_accepts() {
    let plugins = example_plugins();
    assert!(plugins.contains(&"rust-hello".to_owned()), "{plugins:?}");
    let names: Vec<&str> = plugins.iter().map(String::as_str).collect();
    let scratch = Scratch::with_plugins(&names);
    let out = scratch
        .command()
        .arg("--dump-all-plugins")
        .output()
        .unwrap();
    assert!(out.status.success());
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dumped = dump["Plugins"].as_array().unwrap();
    assert_eq!(dumped.len(), plugins.len(), "every example plugin loads");
    for plugin in dumped {
        validate_plugin_schema(&plugin["Schema"])
            .unwrap_or_else(|v| panic!("{}: {v}", plugin["Name"]));
        assert!(plugin["Phases"].as_array().is_some_and(|p| !p.is_empty()));
    }
}

/// Kong 3.0-3.3 have no `description` attribute, 3.4 limits it to 10-500 bytes, 3.5 adds
/// `json`...: with `--kong-version`, each example plugin's dump must pass that release's
/// meta-schema (as `bin/kong-schema-check` confirmed with each release's own Lua).
#[test]
fn every_example_plugin_dumps_what_each_kong_version_accepts() {
    let plugins = example_plugins();
    let names: Vec<&str> = plugins.iter().map(String::as_str).collect();
    let scratch = Scratch::with_plugins(&names);
    for version in ["3.0", "3.3", "3.4", "3.6", "3.8", "3.9", "3.10"] {
        let kong = KongVersion::parse(version).unwrap();
        for name in &names {
            let out = scratch
                .command()
                .args(["--kong-version", version, "--dump-plugin", name])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name} on Kong {version}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let dump: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let schema = &dump["Plugins"][0]["Schema"];
            validate_plugin_schema_for(schema, kong)
                .unwrap_or_else(|v| panic!("{name} on Kong {version}: {v}"));
            let documented = schema.to_string().contains("\"description\"");
            assert_eq!(
                documented,
                kong >= KongVersion::V3_4,
                "{name} on Kong {version}: descriptions only from 3.4"
            );
        }
    }
}
