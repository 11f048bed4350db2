//! What the Kong release the daemon serves (`--kong-version`) accepts of a plugin, from the
//! table in [`kong_rust_pdk::kong_versions`]: its dump's schema, checked when the plugin is
//! loaded. The daemon's own set-up for a release (the PDK functions it lacks, Kong 3.0's
//! refused configurations) is [`Daemon::for_kong_version`](crate::daemon::Daemon::for_kong_version).

use kong_rust_pdk::kong_versions::KongVersion;
use kong_rust_plugin_abi::Manifest;

use crate::dump::PluginDump;

/// Refuses a plugin whose dump Kong `version` would refuse to start with: its schema, as
/// the dump for that release carries it, against that release's meta-schema.
pub fn check_dump(manifest: &Manifest, version: KongVersion) -> Result<(), String> {
    let dump = PluginDump::for_kong(manifest, version);
    kong_rust_pdk::schema::validate_plugin_schema_for(dump.schema(), version).map_err(|violation| {
        format!(
            "plugin {}: Kong {version} would refuse its {violation} (--kong-version {version})",
            manifest.name
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumps_are_checked_as_the_release_gets_them() {
        let schema = serde_json::json!({"type": "record", "fields": [
            {"greeting": {"type": "string", "description": "What to say to the client."}},
        ]});
        let manifest = Manifest::new("p", "1.0.0", 1, vec![], schema);
        check_dump(&manifest, KongVersion::V3_0).unwrap();
        check_dump(&manifest, KongVersion::HEAD).unwrap();
        let json = serde_json::json!({"type": "record", "fields": [
            {"j": {"type": "json", "json_schema": {"inline": {}}}},
        ]});
        let manifest = Manifest::new("p", "1.0.0", 1, vec![], json);
        let err = check_dump(&manifest, KongVersion::V3_4).unwrap_err();
        assert!(err.contains("Kong 3.4 would refuse"), "{err}");
        check_dump(&manifest, KongVersion::V3_5).unwrap();
    }
}
