//! What a handler knows about the Kong plugin instance it runs for.

use serde::{Deserialize, Serialize};

/// Kong's plugin instance behind the current event.
///
/// Kong adds bookkeeping keys to every plugin configuration (`__plugin_id`, `route_id`, ...).
/// They are taken out before the configuration is decoded (so `deny_unknown_fields` configs
/// work, and identical configurations share one constructed plugin) and are available here.
/// Fields Kong did not send are `None`: scoping ids exist only for scoped plugins, and
/// Kong before 3.3 sends no `__plugin_id`/`__ws_id`.
/// It crosses the plugin boundary as JSON: the daemon serializes it, the plugin decodes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InstanceInfo {
    /// The instance id the daemon gave Kong (unique, never reused).
    pub id: u64,
    /// The plugin entity's id (`__plugin_id`).
    pub plugin_id: Option<String>,
    /// The workspace id (`__ws_id`).
    pub workspace_id: Option<String>,
    /// The route the plugin is scoped to.
    pub route_id: Option<String>,
    /// The service the plugin is scoped to.
    pub service_id: Option<String>,
    /// The consumer the plugin is scoped to.
    pub consumer_id: Option<String>,
    /// The plugin entity's `instance_name`.
    pub instance_name: Option<String>,
    /// Kong's configuration sequence number (`__seq__`).
    pub seq: Option<u64>,
    /// Kong's cache key of the plugin entity (`__key__`).
    pub cache_key: Option<String>,
}

impl InstanceInfo {
    /// Decodes the JSON the daemon sends when it binds an instance.
    pub fn from_json(json: &str) -> Result<InstanceInfo, serde_json::Error> {
        serde_json::from_str(json)
    }
}
