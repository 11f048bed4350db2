//! The plugin description Kong reads from the query command, and `plugin.GetPluginInfo`.

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
    /// The entry for one plugin; the schema wraps the config record as Kong expects.
    pub fn of(manifest: &'a Manifest) -> PluginDump<'a> {
        PluginDump {
            name: &manifest.name,
            version: &manifest.version,
            priority: manifest.priority,
            phases: manifest.phases.iter().map(|p| p.name()).collect(),
            schema: serde_json::json!({
                "name": manifest.name,
                "fields": [{"config": manifest.config_schema}],
            }),
        }
    }
}

impl<'a> Dump<'a> {
    /// A dump of `plugins`, in the order given.
    pub fn of(plugins: impl IntoIterator<Item = &'a Manifest>) -> Dump<'a> {
        Dump {
            protocol: PROTOCOL,
            plugins: plugins.into_iter().map(PluginDump::of).collect(),
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
