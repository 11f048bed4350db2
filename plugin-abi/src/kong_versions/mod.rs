//! What each Kong release accepts and does, in one place.
//!
//! Kong's Lua, not our reading of the protocol, decides what works, and it changed between
//! releases: which schema attributes a plugin may use, which PDK functions exist and in
//! which phases, how Kong reacts to a lost or refused instance. This module is the table of
//! those facts, read from Kong's source at every release tag from 3.0.0 to HEAD (3.10-dev):
//!
//! - [`KongVersion`]: a release, `--kong-version` of the daemon;
//! - [`KongBehaviour`] (from [`KongVersion::behaviour`]): schema rules, readiness,
//!   instance reuse and the other per-release quirks;
//! - [`PDK_FUNCTIONS`]: every PDK function with its first release and its phases.
//!
//! The daemon, its `kong-conf` command, the test kit and `docs/pdk.md` all read it.

mod behaviour;
mod functions;
mod version;

pub use behaviour::{
    BEHAVIOURS, DefaultSocket, InstanceReuse, KongBehaviour, LostInstance, QueryOutput, Readiness,
    SchemaRules, StartInstanceError,
};
pub use functions::{PDK_FUNCTIONS, PdkFunction, pdk_function};
pub use version::{KongVersion, KongVersionError};

/// Why Kong `version` cannot run PDK function `method`, or `None` if it can (or if the
/// function is not in the table: an unknown name goes to Kong, which answers as it does).
pub fn missing_function(method: &str, version: KongVersion) -> Option<String> {
    let function = pdk_function(method)?;
    (!function.available_in(version)).then(|| {
        let since = if function.since == KongVersion::HEAD {
            format!("Kong's development branch ({}.x)", KongVersion::HEAD)
        } else {
            format!("Kong {}", function.since)
        };
        format!(
            "{method} exists from {since} on; the configured Kong is {version} (--kong-version)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_functions_name_the_release_that_has_them() {
        assert_eq!(
            missing_function("kong.service.set_retries", KongVersion::V3_4).unwrap(),
            "kong.service.set_retries exists from Kong 3.8 on; the configured Kong is 3.4 \
             (--kong-version)"
        );
        assert!(missing_function("kong.service.set_retries", KongVersion::V3_8).is_none());
        assert!(missing_function("kong.custom.thing", KongVersion::V3_0).is_none());
        assert!(
            missing_function("kong.log.trace", KongVersion::V3_9)
                .unwrap()
                .contains("development branch (3.10.x)")
        );
    }
}
