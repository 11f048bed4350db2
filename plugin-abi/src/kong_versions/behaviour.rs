//! What each Kong release accepts and does, as read from its source at each release tag
//! (`kong/db/schema/metaschema.lua`, `kong/runloop/plugin_servers/*`).
//!
//! One row per band of releases that behave alike towards an external MsgPack:1
//! pluginserver. The daemon, `kong-conf` and the docs take every version-dependent decision
//! from here.

use super::KongVersion;

/// What a band of Kong releases does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KongBehaviour {
    /// The first release of the band.
    pub first: KongVersion,
    /// Which plugin-schema field attributes its `MetaSubSchema` accepts.
    pub schema: SchemaRules,
    /// What it does when `plugin.StartInstance` answers an error.
    pub start_instance_error: StartInstanceError,
    /// Whether it waits for the socket before using a pluginserver.
    pub readiness: Readiness,
    /// What it does when the server answers `no plugin instance` for a cached id.
    pub lost_instance: LostInstance,
    /// When it starts a new instance for a changed plugin configuration.
    pub instance_reuse: InstanceReuse,
    /// Where the socket of a pluginserver entry is when kong.conf gives none.
    pub default_socket: DefaultSocket,
    /// How it reads the query command's output.
    pub query: QueryOutput,
}

/// Field attributes of a plugin schema, beyond those every Kong 3.x accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaRules {
    /// `description` (a string of 10 to 500 bytes), 3.4+.
    pub description: bool,
    /// `between` bounds that are not integers, 3.4+.
    pub fractional_between: bool,
    /// Type `json` with `json_schema`, 3.5+.
    pub json: bool,
    /// `examples`, 3.6+.
    pub examples: bool,
    /// `deprecation`, 3.7+.
    pub deprecation: bool,
    /// `transient`, 3.8+.
    pub transient: bool,
}

/// What Kong does with an error answer to `plugin.StartInstance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartInstanceError {
    /// 3.0: it stores the error text as if it were the instance (with no id), logs nothing,
    /// sends that request's event without an instance id, and every later request for the
    /// configuration in that worker spins forever waiting for the id.
    StoredAsInstance,
    /// 3.1+: it logs `starting instance: <err>` and raises a Lua error: 500 for the
    /// request (closed connection in preread, failed handshake in certificate).
    Raises,
}

/// Whether Kong waits for a pluginserver's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Kong uses the socket whenever a plugin runs.
    None,
    /// 3.1–3.4: every worker probes the socket every 0.1 s for 20 s after start, only for
    /// entries with a start command and only in the HTTP subsystem. Until it answers,
    /// requests skip the plugin (`plugin server is not ready`); if it has not answered
    /// after 20 s the plugin is disabled until Kong restarts. Entries without a start
    /// command, and every stream route, never run the plugin.
    SocketProbe20s {
        /// 3.1–3.2: a request that found the server not ready leaves Kong's instance
        /// claim in place, so later requests for that configuration spin forever.
        claim_stuck: bool,
    },
}

/// What Kong does when the server answers `no plugin instance` for an id it cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostInstance {
    /// It forgets the id, starts the instance again and retries the event.
    Restart,
    /// 3.5 and 3.6: the retry reuses the same cached id (the reset happens, if ever, in
    /// worker 0 only), so the request loops on `HandleEvent` forever. Only a changed
    /// `serverPid` (a restarted server) ends it. A server must never expire instances
    /// Kong may still cache.
    Storm,
}

/// When Kong starts a new instance after a plugin's configuration changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceReuse {
    /// When the configuration's `__seq__` changed: a new instance, then `CloseInstance`
    /// of the old one.
    OnSeqChange,
    /// 3.6: never; the first instance is reused whatever its `__seq__`, so configuration
    /// changes never reach the server until Kong restarts.
    Never,
}

/// Where an entry's socket is when kong.conf has no `pluginserver_<name>_socket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultSocket {
    /// 3.0–3.8: `/usr/local/kong/<name>.socket`, whatever Kong's prefix.
    UsrLocalKong,
    /// 3.9+: `<prefix>/<name>.socket`.
    Prefix,
}

/// How Kong reads a pluginserver entry's query command output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryOutput {
    /// 3.0–3.8: every plugin of the output is registered to the entry; a plugin listed by
    /// two entries is logged (`Duplicate plugin name`) and the first entry keeps it. The
    /// default query command is `/usr/local/bin/query_<name>`.
    EveryPlugin,
    /// 3.9+: only the first plugin of the output; the default query command is
    /// `/usr/local/bin/<name> -dump`.
    FirstPluginOnly,
}

const fn schema(version: u16) -> SchemaRules {
    SchemaRules {
        description: version >= 4,
        fractional_between: version >= 4,
        json: version >= 5,
        examples: version >= 6,
        deprecation: version >= 7,
        transient: version >= 8,
    }
}

const fn band(minor: u16) -> KongBehaviour {
    KongBehaviour {
        first: KongVersion::new(3, minor),
        schema: schema(minor),
        start_instance_error: if minor == 0 {
            StartInstanceError::StoredAsInstance
        } else {
            StartInstanceError::Raises
        },
        readiness: if minor >= 1 && minor <= 4 {
            Readiness::SocketProbe20s {
                claim_stuck: minor <= 2,
            }
        } else {
            Readiness::None
        },
        lost_instance: if minor == 5 || minor == 6 {
            LostInstance::Storm
        } else {
            LostInstance::Restart
        },
        instance_reuse: if minor == 6 {
            InstanceReuse::Never
        } else {
            InstanceReuse::OnSeqChange
        },
        default_socket: if minor <= 8 {
            DefaultSocket::UsrLocalKong
        } else {
            DefaultSocket::Prefix
        },
        query: if minor <= 8 {
            QueryOutput::EveryPlugin
        } else {
            QueryOutput::FirstPluginOnly
        },
    }
}

/// Every band, oldest first; the last one holds for HEAD and anything newer.
pub const BEHAVIOURS: [KongBehaviour; 11] = [
    band(0),
    band(1),
    band(2),
    band(3),
    band(4),
    band(5),
    band(6),
    band(7),
    band(8),
    band(9),
    band(10),
];

impl KongVersion {
    /// What this version accepts and does.
    pub fn behaviour(self) -> &'static KongBehaviour {
        BEHAVIOURS
            .iter()
            .rev()
            .find(|b| b.first <= self)
            .unwrap_or(&BEHAVIOURS[0])
    }
}

/// Field attributes every Kong 3.x accepts in a plugin schema (`field_schema` and the
/// validators of `kong/db/schema/metaschema.lua` at 3.0.0), nested ones included.
const BASE_ATTRIBUTES: [&str; 41] = [
    "type",
    "required",
    "reference",
    "auto",
    "unique",
    "unique_across_ws",
    "on_delete",
    "default",
    "abstract",
    "generate_admin_api",
    "immutable",
    "err",
    "encrypted",
    "referenceable",
    "between",
    "eq",
    "ne",
    "gt",
    "len_eq",
    "len_min",
    "len_max",
    "match",
    "not_match",
    "match_all",
    "match_none",
    "match_any",
    "starts_with",
    "one_of",
    "not_one_of",
    "contains",
    "is_regex",
    "timestamp",
    "uuid",
    "custom_validator",
    "mutually_exclusive_subsets",
    "elements",
    "keys",
    "values",
    "fields",
    "entity_checks",
    "shorthand_fields",
];

impl SchemaRules {
    /// Whether a field may carry `attribute`.
    pub fn allows_attribute(&self, attribute: &str) -> bool {
        match attribute {
            "description" => self.description,
            "json_schema" => self.json,
            "examples" => self.examples,
            "deprecation" => self.deprecation,
            "transient" => self.transient,
            other => BASE_ATTRIBUTES.contains(&other),
        }
    }

    /// Whether `ty` is a field type.
    pub fn allows_type(&self, ty: &str) -> bool {
        match ty {
            "json" => self.json,
            "string" | "number" | "integer" | "boolean" | "array" | "set" | "map" | "record"
            | "foreign" | "function" => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_version_gets_its_band() {
        let v = KongVersion::new;
        assert_eq!(
            v(3, 0).behaviour().start_instance_error,
            StartInstanceError::StoredAsInstance
        );
        assert_eq!(
            v(3, 1).behaviour().readiness,
            Readiness::SocketProbe20s { claim_stuck: true }
        );
        assert_eq!(
            v(3, 4).behaviour().readiness,
            Readiness::SocketProbe20s { claim_stuck: false }
        );
        assert_eq!(v(3, 5).behaviour().readiness, Readiness::None);
        assert!(!v(3, 3).behaviour().schema.description);
        assert!(v(3, 4).behaviour().schema.description);
        assert_eq!(v(3, 5).behaviour().lost_instance, LostInstance::Storm);
        assert_eq!(v(3, 6).behaviour().lost_instance, LostInstance::Storm);
        assert_eq!(v(3, 7).behaviour().lost_instance, LostInstance::Restart);
        assert_eq!(v(3, 6).behaviour().instance_reuse, InstanceReuse::Never);
        assert_eq!(
            v(3, 8).behaviour().default_socket,
            DefaultSocket::UsrLocalKong
        );
        assert_eq!(v(3, 9).behaviour().query, QueryOutput::FirstPluginOnly);
        assert_eq!(v(3, 42).behaviour(), KongVersion::HEAD.behaviour());
        for (i, b) in BEHAVIOURS.iter().enumerate() {
            assert_eq!(b.first, v(3, i as u16));
        }
    }

    #[test]
    fn attributes_follow_the_metaschema() {
        let old = KongVersion::V3_0.behaviour().schema;
        let head = KongVersion::HEAD.behaviour().schema;
        assert!(!old.allows_attribute("description") && head.allows_attribute("description"));
        assert!(!old.allows_type("json") && head.allows_type("json"));
        assert!(old.allows_attribute("one_of") && old.allows_attribute("elements"));
        assert!(!head.allows_attribute("descripton"));
        assert!(!head.allows_attribute("nullable") && !head.allows_attribute("nilable"));
    }
}
