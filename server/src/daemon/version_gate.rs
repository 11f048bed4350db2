//! The daemon set up for the Kong release it serves (`--kong-version`), from the table in
//! [`kong_rust_pdk::kong_versions`].
//!
//! - A PDK function the release lacks fails at the call, in the plugin
//!   (`PdkError::Unavailable` with the reason), through a [`CallGate`]: sent to Kong it
//!   would raise a Lua error there, which abandons the event.
//! - Kong 3.0, which hangs on a `StartInstance` error, gets an instance for a refused
//!   configuration, whose events fail instead ([`Daemon::accepting_refused_configs`]).
//!
//! Without `--kong-version` the daemon behaves for Kong's development branch and gates
//! nothing: every call goes to Kong.

use kong_rust_pdk::kong_versions::{
    KongVersion, PDK_FUNCTIONS, StartInstanceError, missing_function,
};
use rustc_hash::FxHashSet;

use super::{CallGate, Daemon};

/// Refuses the PDK functions a Kong release lacks.
pub struct VersionGate {
    version: KongVersion,
    /// The functions it lacks: one hash lookup per PDK call, nothing else on the hot path.
    missing: FxHashSet<&'static str>,
}

impl VersionGate {
    /// The gate for Kong `version`.
    pub fn new(version: KongVersion) -> VersionGate {
        VersionGate {
            version,
            missing: PDK_FUNCTIONS
                .iter()
                .filter(|f| !f.available_in(version))
                .map(|f| f.name)
                .collect(),
        }
    }
}

impl CallGate for VersionGate {
    fn refuse(&self, method: &str) -> Option<String> {
        if !self.missing.contains(method) {
            return None;
        }
        missing_function(method, self.version)
    }
}

impl Daemon {
    /// The same daemon, set up for Kong `version` (`None`: Kong's development branch,
    /// nothing to do).
    pub fn for_kong_version(self, version: Option<KongVersion>) -> Daemon {
        let Some(version) = version else {
            return self;
        };
        let daemon = self.with_call_gate(VersionGate::new(version));
        match version.behaviour().start_instance_error {
            StartInstanceError::StoredAsInstance => daemon.accepting_refused_configs(),
            StartInstanceError::Raises => daemon,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_refuses_exactly_what_the_release_lacks() {
        let gate = VersionGate::new(KongVersion::V3_4);
        assert!(gate.refuse("kong.request.get_header").is_none());
        assert!(gate.refuse("kong.vault.update").is_none(), "3.4 has it");
        let reason = gate.refuse("kong.service.set_retries").unwrap();
        assert!(reason.contains("Kong 3.8"), "{reason}");
        assert!(gate.refuse("kong.vault.warmup").is_some());
        assert!(gate.refuse("kong.not.in.the.table").is_none());
        let head = VersionGate::new(KongVersion::HEAD);
        assert!(head.missing.is_empty());
        let oldest = VersionGate::new(KongVersion::V3_0);
        assert!(oldest.refuse("kong.plugin.get_id").is_some());
        assert!(oldest.refuse("kong.request.get_uri_captures").is_some());
    }
}
