//! The plugin description Kong reads from the query command, and `plugin.GetPluginInfo`.

use kong_rust_pdk::kong_versions::KongVersion;
use serde::Serialize;

use kong_rust_plugin_abi::Manifest;

/// The protocol the dump announces unless told otherwise.
pub const PROTOCOL: &str = "MsgPack:1";

/// `{"Protocol": "MsgPack:1", "Plugins": [...]}`: the object form Kong accepts (the only
/// one that can name a protocol: Kong picks `pb_rpc` for exactly `"ProtoBuf:1"`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Dump<'a> {
    /// [`PROTOCOL`], or `ProtoBuf:1`.
    pub protocol: &'static str,
    /// One entry per plugin. Kong 3.9+ reads only the first.
    pub plugins: Vec<PluginDump<'a>>,
}

/// One plugin, with Kong's capitalised keys.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PluginDump<'a> {
    name: &'a str,
    version: &'a str,
    priority: i64,
    phases: Vec<&'static str>,
    schema: serde_json::Value,
}

impl<'a> PluginDump<'a> {
    /// The entry for one plugin, for Kong's development branch; the schema wraps the config
    /// record as Kong expects.
    pub fn of(manifest: &'a Manifest) -> PluginDump<'a> {
        PluginDump::for_kong(manifest, KongVersion::HEAD)
    }

    /// The entry for one plugin as Kong `version` must get it: before 3.4 the schema has
    /// no field descriptions (Kong 3.0–3.3 refuse the attribute).
    pub fn for_kong(manifest: &'a Manifest, version: KongVersion) -> PluginDump<'a> {
        let schema = serde_json::json!({
            "name": manifest.name,
            "fields": [{"config": manifest.config_schema}],
        });
        PluginDump {
            name: &manifest.name,
            version: &manifest.version,
            priority: manifest.priority,
            phases: manifest.phases.iter().map(|p| p.name()).collect(),
            schema: kong_rust_pdk::schema::for_kong(&schema, version),
        }
    }

    /// The plugin schema as dumped.
    pub fn schema(&self) -> &serde_json::Value {
        &self.schema
    }
}

impl<'a> Dump<'a> {
    /// A dump of `plugins`, in the order given, for Kong's development branch.
    pub fn of(plugins: impl IntoIterator<Item = &'a Manifest>) -> Dump<'a> {
        Dump::for_kong(plugins, KongVersion::HEAD)
    }

    /// A dump of `plugins`, in the order given, for Kong `version`.
    pub fn for_kong(
        plugins: impl IntoIterator<Item = &'a Manifest>,
        version: KongVersion,
    ) -> Dump<'a> {
        Dump {
            protocol: PROTOCOL,
            plugins: plugins
                .into_iter()
                .map(|m| PluginDump::for_kong(m, version))
                .collect(),
        }
    }

    /// The same dump announcing `protocol` (as [`Protocol::dump_name`] gives it).
    ///
    /// [`Protocol::dump_name`]: crate::settings::Protocol::dump_name
    pub fn speaking(mut self, protocol: &'static str) -> Dump<'a> {
        self.protocol = protocol;
        self
    }
}
