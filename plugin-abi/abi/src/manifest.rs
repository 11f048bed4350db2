//! What a plugin library says about its plugin, as JSON across the boundary.

use serde::{Deserialize, Serialize};

use crate::Phase;

/// A plugin's description. It crosses the boundary as JSON text so that adding a field
/// never changes the ABI: new fields get a serde default (what a plugin built before them
/// means), and fields a daemon does not know are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Manifest {
    /// The plugin name Kong knows it by (`plugins = bundled,<name>`).
    pub name: String,
    /// The plugin version, `x.y.z`.
    pub version: String,
    /// Handler priority: Kong runs plugins of a phase from the highest priority down.
    pub priority: i64,
    /// The phases the plugin implements, in Kong's order.
    pub phases: Vec<Phase>,
    /// The Kong schema record of the plugin's `config` field.
    pub config_schema: serde_json::Value,
    /// What happens to a request when one of the plugin's handlers fails.
    #[serde(default)]
    pub on_failure: OnFailure,
}

impl Manifest {
    /// A manifest; the failure policy is the default, [`OnFailure::FailClosed`].
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        priority: i64,
        phases: Vec<Phase>,
        config_schema: serde_json::Value,
    ) -> Manifest {
        Manifest {
            name: name.into(),
            version: version.into(),
            priority,
            phases,
            config_schema,
            on_failure: OnFailure::default(),
        }
    }

    /// The same manifest with another failure policy.
    pub fn with_on_failure(mut self, on_failure: OnFailure) -> Manifest {
        self.on_failure = on_failure;
        self
    }
}

/// What happens to the request when a plugin's handler fails (returns an error, panics,
/// gets an answer from Kong it cannot decode) or cannot run (the daemon is overloaded).
///
/// Kong's own client does not stop a request when a pluginserver reports an error: it logs
/// the error and goes on as if the plugin had not run. For a plugin that guards anything
/// (authentication, authorization, rate limits, validation) that is a bypass, so the daemon
/// ends the request itself unless the plugin says otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// End the request: `500` (`503` when the daemon is overloaded or restarting). The
    /// default, and the only safe choice for a plugin that decides whether a request may
    /// pass.
    #[default]
    FailClosed,
    /// Let the request continue without the plugin's work (the failure is still logged and
    /// counted). For plugins whose work is optional to the request: a log shipper, a header
    /// decoration, metrics.
    FailOpen,
}

impl OnFailure {
    /// `fail-closed` or `fail-open`, as the daemon's status shows it.
    pub const fn label(self) -> &'static str {
        match self {
            OnFailure::FailClosed => "fail-closed",
            OnFailure::FailOpen => "fail-open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_ignored_and_missing_ones_defaulted() {
        let manifest: Manifest = serde_json::from_str(
            r#"{"name":"p","version":"1.0.0","priority":5,"phases":["access","log"],
                "config_schema":{"type":"record","fields":[]},"from_the_future":1}"#,
        )
        .unwrap();
        assert_eq!(manifest.phases, [Phase::Access, Phase::Log]);
        assert_eq!(manifest.on_failure, OnFailure::FailClosed);
        let open = manifest.with_on_failure(OnFailure::FailOpen);
        let text = serde_json::to_string(&open).unwrap();
        assert!(text.contains(r#""on_failure":"fail_open""#), "{text}");
    }
}
