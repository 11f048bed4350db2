//! Every Kong PDK function an external plugin can reach through Kong's bridge: the Kong
//! release that added it, the phases Kong allows it in (its `check_phase`), and the Rust
//! method that calls it.
//!
//! The test kit refuses calls outside these phases, the daemon refuses functions the
//! configured Kong lacks, and `docs/pdk.md`'s tables are generated from this table (a test
//! keeps them equal), so the three cannot drift apart. Read from `kong/pdk/*.lua` and the
//! bridge's overrides (`kong/runloop/plugin_servers`) at every release tag.

use kong_rust_plugin_abi::Phase::{self, *};

use super::KongVersion;

/// One Kong PDK function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PdkFunction {
    /// Kong's full name, e.g. `kong.request.get_header`.
    pub name: &'static str,
    /// The first Kong release that has it.
    pub since: KongVersion,
    /// The phases Kong allows it in, from [`since`](Self::since) on, unless
    /// [`phases_before`](Self::phases_before) says otherwise for older releases.
    pub phases: &'static [Phase],
    /// Releases before this version allowed only these phases.
    pub phases_before: Option<(KongVersion, &'static [Phase])>,
    /// Kong's parameters (`?` marks optional ones).
    pub params: &'static str,
    /// The Rust method(s) calling it; `None` when its arguments or results cannot cross
    /// the protocol.
    pub rust: Option<&'static str>,
    /// What the Rust method returns, or why there is no method.
    pub result: &'static str,
}

impl PdkFunction {
    /// Whether Kong `version` has this function.
    pub fn available_in(&self, version: KongVersion) -> bool {
        version >= self.since
    }

    /// The phases Kong `version` allows this function in.
    pub fn phases_in(&self, version: KongVersion) -> &'static [Phase] {
        match self.phases_before {
            Some((until, older)) if version < until => older,
            _ => self.phases,
        }
    }

    /// Kong's own error for a call in `phase`, or `None` if `version` allows it there
    /// (`phase_checker`'s wording: Kong raises it as a Lua error).
    pub fn phase_error(&self, version: KongVersion, phase: Phase) -> Option<String> {
        let allowed = self.phases_in(version);
        if allowed.contains(&phase) {
            return None;
        }
        let names: Vec<&str> = allowed.iter().map(|p| p.name()).collect();
        Some(format!(
            "{}: function cannot be called in {phase} phase (only in: {})",
            self.name,
            names.join(", ")
        ))
    }

    /// The Kong group, e.g. `kong.service.request` (`kong.log` for `kong.log` itself).
    pub fn group(&self) -> &'static str {
        match self.name {
            "kong.log" => "kong.log",
            name => {
                let group = &name[..name.rfind('.').unwrap_or(0)];
                // `kong.log.inspect.on` belongs to `kong.log`.
                group.strip_suffix(".inspect").unwrap_or(group)
            }
        }
    }
}

/// The function named `name`, if Kong has one.
pub fn pdk_function(name: &str) -> Option<&'static PdkFunction> {
    PDK_FUNCTIONS.iter().find(|f| f.name == name)
}

/// Every phase an external plugin runs in.
const ALL: &[Phase] = &Phase::ALL;
/// `PHASES.request` without the phases external plugins have no handler for.
const REQUEST: &[Phase] = &[Rewrite, Access, Response, Log];
/// `before_content` (request.lua).
const BEFORE_CONTENT: &[Phase] = &[Rewrite, Access, Response];
/// `header_body_log` (response.lua, service/response.lua).
const HEADER_BODY_LOG: &[Phase] = &[Response, Log];
/// `rewrite_access_header` (response.lua).
const REWRITE_ACCESS_HEADER: &[Phase] = &[Rewrite, Access, Response];
/// `AUTH_AND_LATER` (client.lua), `ROUTER_PHASES` (router.lua).
const AUTH_AND_LATER: &[Phase] = &[Access, Response, Log];
/// `REWRITE_AND_LATER` (client/tls.lua); `phases_with_ctx` (log.lua).
const REWRITE_AND_LATER: &[Phase] = &[Rewrite, Access, Response, Log];
/// `access_and_rewrite` (service/request.lua).
const REWRITE_ACCESS: &[Phase] = &[Rewrite, Access];
/// `access_and_rewrite_and_balancer_preread` (service.lua).
const REWRITE_ACCESS_PREREAD: &[Phase] = &[Rewrite, Access, Preread];
/// `kong.response.exit`: `rewrite_access_header`, and in the stream subsystem no check.
const EXIT: &[Phase] = &[Rewrite, Access, Response, Preread];
const ACCESS: &[Phase] = &[Access];
const CERTIFICATE: &[Phase] = &[Certificate];
const PREREAD: &[Phase] = &[Preread];
const LOG: &[Phase] = &[Log];
/// `body_filter` only: no external plugin phase.
const BODY_FILTER: &[Phase] = &[];

const V3_0: KongVersion = KongVersion::V3_0;

/// One row: name, first version, phases, Kong params, Rust method, result.
macro_rules! f {
    ($name:literal, $since:expr, $phases:expr, $params:literal, $rust:literal, $result:literal) => {
        f!(@ $name, $since, $phases, None, $params, Some($rust), $result)
    };
    ($name:literal, $since:expr, $phases:expr, before $until:expr => $old:expr,
     $params:literal, $rust:literal, $result:literal) => {
        f!(@ $name, $since, $phases, Some(($until, $old)), $params, Some($rust), $result)
    };
    ($name:literal, $since:expr, $phases:expr, $params:literal, none: $why:literal) => {
        f!(@ $name, $since, $phases, None, $params, None, $why)
    };
    ($name:literal, $since:expr, $phases:expr, before $until:expr => $old:expr,
     $params:literal, none: $why:literal) => {
        f!(@ $name, $since, $phases, Some(($until, $old)), $params, None, $why)
    };
    (@ $name:literal, $since:expr, $phases:expr, $before:expr, $params:literal, $rust:expr, $result:literal) => {
        PdkFunction {
            name: $name,
            since: $since,
            phases: $phases,
            phases_before: $before,
            params: $params,
            rust: $rust,
            result: $result,
        }
    };
}

/// Every function, grouped as `docs/pdk.md` lists them.
pub const PDK_FUNCTIONS: &[PdkFunction] = &[
    // kong.client
    f!(
        "kong.client.get_ip",
        V3_0,
        ALL,
        "",
        "`get_ip()`",
        "`String`"
    ),
    f!(
        "kong.client.get_forwarded_ip",
        V3_0,
        ALL,
        "",
        "`get_forwarded_ip()`",
        "`String`"
    ),
    f!(
        "kong.client.get_port",
        V3_0,
        ALL,
        "",
        "`get_port()`",
        "`u16`"
    ),
    f!(
        "kong.client.get_forwarded_port",
        V3_0,
        ALL,
        "",
        "`get_forwarded_port()`",
        "`u16`"
    ),
    f!(
        "kong.client.get_credential",
        V3_0,
        AUTH_AND_LATER,
        "",
        "`get_credential()`",
        "`Option<Credential>`"
    ),
    f!(
        "kong.client.load_consumer",
        V3_0,
        AUTH_AND_LATER,
        "consumer_id, search_by_username?",
        "`load_consumer(id, by_username)`",
        "`Option<Consumer>`"
    ),
    f!(
        "kong.client.get_consumer",
        V3_0,
        AUTH_AND_LATER,
        "",
        "`get_consumer()`",
        "`Option<Consumer>`"
    ),
    f!(
        "kong.client.authenticate",
        V3_0,
        ACCESS,
        "consumer, credential",
        "`authenticate(Option<&Consumer>, Option<&Credential>)`",
        "`()`"
    ),
    f!(
        "kong.client.get_protocol",
        V3_0,
        AUTH_AND_LATER,
        "allow_terminated?",
        "`get_protocol(Option<bool>)`",
        "`Option<String>`"
    ),
    // kong.client.tls
    f!(
        "kong.client.tls.request_client_certificate",
        V3_0,
        CERTIFICATE,
        "ca_certs?",
        "`request_client_certificate()` (without the CA list: it is cdata)",
        "`bool`"
    ),
    f!(
        "kong.client.tls.disable_session_reuse",
        V3_0,
        CERTIFICATE,
        "",
        "`disable_session_reuse()`",
        "`bool`"
    ),
    f!(
        "kong.client.tls.get_full_client_certificate_chain",
        V3_0,
        REWRITE_AND_LATER,
        "",
        "`get_full_client_certificate_chain()`",
        "`Option<String>` (PEM)"
    ),
    f!(
        "kong.client.tls.set_client_verify",
        V3_0,
        REWRITE_ACCESS_HEADER,
        "v",
        "`set_client_verify(v)`",
        "`()`"
    ),
    // kong.ctx.shared
    f!(
        "kong.ctx.shared.get",
        V3_0,
        ALL,
        "key",
        "`get(key)` / `get_as::<T>(key)`",
        "`Option<Value>` / `Option<T>`"
    ),
    f!(
        "kong.ctx.shared.set",
        V3_0,
        ALL,
        "key, value",
        "`set(key, impl Into<Value>)`",
        "`()`"
    ),
    // kong.ip
    f!(
        "kong.ip.is_trusted",
        V3_0,
        ALL,
        "address",
        "`is_trusted(address)`",
        "`bool`"
    ),
    // kong.log
    f!(
        "kong.log",
        V3_0,
        ALL,
        "...",
        "`call(message)` (`kong.log(...)`: notice level)",
        "`()`"
    ),
    f!(
        "kong.log.alert",
        V3_0,
        ALL,
        "...",
        "`alert(message)`",
        "`()`"
    ),
    f!("kong.log.crit", V3_0, ALL, "...", "`crit(message)`", "`()`"),
    f!("kong.log.err", V3_0, ALL, "...", "`err(message)`", "`()`"),
    f!("kong.log.warn", V3_0, ALL, "...", "`warn(message)`", "`()`"),
    f!(
        "kong.log.notice",
        V3_0,
        ALL,
        "...",
        "`notice(message)`",
        "`()`"
    ),
    f!("kong.log.info", V3_0, ALL, "...", "`info(message)`", "`()`"),
    f!(
        "kong.log.debug",
        V3_0,
        ALL,
        "...",
        "`debug(message)`",
        "`()`"
    ),
    f!(
        "kong.log.emerg",
        V3_0,
        ALL,
        "...",
        "`emerg(message)`",
        "`()`"
    ),
    f!(
        "kong.log.deprecation",
        V3_0,
        ALL,
        "..., opts?",
        "`deprecation(message)`",
        "`()`"
    ),
    f!(
        "kong.log.inspect",
        V3_0,
        ALL,
        "...",
        "`inspect(impl Into<Value>)`",
        "`()`"
    ),
    f!(
        "kong.log.inspect.on",
        V3_0,
        ALL,
        "",
        "`inspect_on()`",
        "`()`"
    ),
    f!(
        "kong.log.inspect.off",
        V3_0,
        ALL,
        "",
        "`inspect_off()`",
        "`()`"
    ),
    f!(
        "kong.log.trace",
        KongVersion::HEAD,
        ALL,
        "...",
        "`trace(message)` (logs only when Kong runs with `KONG_IS_TESTING=1`)",
        "`()`"
    ),
    f!(
        "kong.log.set_format",
        V3_0,
        ALL,
        "format?",
        "`set_format(Option<&str>)`",
        "`()`"
    ),
    f!(
        "kong.log.set_serialize_value",
        V3_0,
        REWRITE_AND_LATER,
        "key, value, options?",
        "`set_serialize_value(key, impl Into<Value>, Option<SerializeMode>)`",
        "`()`"
    ),
    f!(
        "kong.log.serialize",
        V3_0,
        LOG,
        "",
        "`serialize()` / `serialize_as::<T>()`",
        "`serde_json::Value` / `T`"
    ),
    // kong.nginx
    f!(
        "kong.nginx.get_var",
        V3_0,
        ALL,
        "name",
        "`get_var(name)`",
        "`Option<String>`"
    ),
    f!(
        "kong.nginx.get_tls1_version_str",
        V3_0,
        ALL,
        "",
        "`get_tls1_version_str()`",
        "`Option<String>`"
    ),
    f!(
        "kong.nginx.get_ctx",
        V3_0,
        ALL,
        "key",
        "`get_ctx(key)` / `get_ctx_as::<T>(key)`",
        "`Option<Value>` / `Option<T>`"
    ),
    f!(
        "kong.nginx.set_ctx",
        V3_0,
        ALL,
        "key, value",
        "`set_ctx(key, impl Into<Value>)`",
        "`()`"
    ),
    f!(
        "kong.nginx.req_start_time",
        V3_0,
        ALL,
        "",
        "`req_start_time()`",
        "`f64` (s)"
    ),
    f!(
        "kong.nginx.get_subsystem",
        V3_0,
        ALL,
        "",
        "`get_subsystem()`",
        "`String`"
    ),
    f!(
        "kong.nginx.get_statistics",
        V3_0,
        ALL,
        "",
        "`get_statistics()`",
        "`NginxStatistics`"
    ),
    // kong.node, kong.cluster, kong.plugin
    f!("kong.node.get_id", V3_0, ALL, "", "`get_id()`", "`String`"),
    f!(
        "kong.node.get_memory_stats",
        V3_0,
        ALL,
        "unit?, scale?",
        "`get_memory_stats()` / `get_memory_stats_in(unit, scale)`",
        "`MemoryStats` (sizes `Size::Number` / `Size::Text`)"
    ),
    f!(
        "kong.node.get_hostname",
        V3_0,
        ALL,
        "",
        "`get_hostname()`",
        "`String`"
    ),
    f!(
        "kong.cluster.get_id",
        V3_0,
        ALL,
        "",
        "`get_id()`",
        "`Option<String>`"
    ),
    f!(
        "kong.plugin.get_id",
        KongVersion::V3_3,
        ALL,
        "",
        "`get_id()`",
        "`String`"
    ),
    // kong.request
    f!(
        "kong.request.get_scheme",
        V3_0,
        REQUEST,
        "",
        "`get_scheme()`",
        "`String`"
    ),
    f!(
        "kong.request.get_host",
        V3_0,
        REQUEST,
        "",
        "`get_host()`",
        "`String`"
    ),
    f!(
        "kong.request.get_port",
        V3_0,
        ALL,
        "",
        "`get_port()`",
        "`u16`"
    ),
    f!(
        "kong.request.get_forwarded_scheme",
        V3_0,
        REQUEST,
        "",
        "`get_forwarded_scheme()`",
        "`String`"
    ),
    f!(
        "kong.request.get_forwarded_host",
        V3_0,
        REQUEST,
        "",
        "`get_forwarded_host()`",
        "`String`"
    ),
    f!(
        "kong.request.get_forwarded_port",
        V3_0,
        REQUEST,
        "",
        "`get_forwarded_port()`",
        "`u16`"
    ),
    f!(
        "kong.request.get_forwarded_path",
        V3_0,
        REQUEST,
        "",
        "`get_forwarded_path()`",
        "`String`"
    ),
    f!(
        "kong.request.get_forwarded_prefix",
        V3_0,
        REQUEST,
        "",
        "`get_forwarded_prefix()`",
        "`Option<String>`"
    ),
    f!(
        "kong.request.get_http_version",
        V3_0,
        REQUEST,
        "",
        "`get_http_version()`",
        "`f64`"
    ),
    f!(
        "kong.request.get_method",
        V3_0,
        REQUEST,
        "",
        "`get_method()`",
        "`String`"
    ),
    f!(
        "kong.request.get_path",
        V3_0,
        REQUEST,
        "",
        "`get_path()`",
        "`String`"
    ),
    f!(
        "kong.request.get_raw_path",
        V3_0,
        REQUEST,
        "",
        "`get_raw_path()`",
        "`String`"
    ),
    f!(
        "kong.request.get_path_with_query",
        V3_0,
        REQUEST,
        "",
        "`get_path_with_query()`",
        "`String`"
    ),
    f!(
        "kong.request.get_raw_query",
        V3_0,
        REQUEST,
        "",
        "`get_raw_query()`",
        "`String`"
    ),
    f!(
        "kong.request.get_query_arg",
        V3_0,
        REQUEST,
        "name",
        "`get_query_arg(name)`",
        "`Option<QueryArg>` (`Value(String)` or `Flag`)"
    ),
    f!(
        "kong.request.get_query",
        V3_0,
        REQUEST,
        "max_args?",
        "`get_query(Option<u16>)`",
        "`Multimap`"
    ),
    f!(
        "kong.request.get_header",
        V3_0,
        REQUEST,
        "name",
        "`get_header(name)` / `get_header_bytes(name)`",
        "`Option<String>` / `Option<Bytes>`"
    ),
    f!(
        "kong.request.get_headers",
        V3_0,
        REQUEST,
        "max_headers?",
        "`get_headers(Option<u16>)`",
        "`Multimap`"
    ),
    f!(
        "kong.request.get_raw_body",
        V3_0,
        BEFORE_CONTENT,
        "max_allowed_file_size? (3.8+)",
        "`get_raw_body(Option<u64>)`",
        "`Bytes` (bin)"
    ),
    f!(
        "kong.request.get_body",
        V3_0,
        BEFORE_CONTENT,
        "mimetype?, max_args?, max_allowed_file_size? (3.8+)",
        "`get_body(Option<&str>, Option<u16>, Option<u64>)`",
        "`Option<Value>`"
    ),
    f!(
        "kong.request.get_start_time",
        V3_0,
        REQUEST,
        "",
        "`get_start_time()`",
        "`f64` (ms)"
    ),
    f!(
        "kong.request.get_uri_captures",
        KongVersion::V3_1,
        REQUEST,
        "",
        "`get_uri_captures()`",
        "`UriCaptures`"
    ),
    // kong.response
    f!(
        "kong.response.get_status",
        V3_0,
        HEADER_BODY_LOG,
        "",
        "`get_status()`",
        "`u16`"
    ),
    f!(
        "kong.response.get_header",
        V3_0,
        HEADER_BODY_LOG,
        "name",
        "`get_header(name)` / `get_header_bytes(name)`",
        "`Option<String>` / `Option<Bytes>`"
    ),
    f!(
        "kong.response.get_headers",
        V3_0,
        HEADER_BODY_LOG,
        "max_headers?",
        "`get_headers(Option<u16>)`",
        "`Multimap`"
    ),
    f!(
        "kong.response.get_source",
        V3_0,
        HEADER_BODY_LOG,
        "",
        "`get_source()`",
        "`String` (`service`, `exit`, `error`)"
    ),
    f!(
        "kong.response.set_status",
        V3_0,
        REWRITE_ACCESS_HEADER,
        "status",
        "`set_status(u16)`",
        "`()`"
    ),
    f!(
        "kong.response.set_header",
        V3_0,
        REWRITE_ACCESS_HEADER,
        "name, value",
        "`set_header(name, value)`",
        "`()`"
    ),
    f!(
        "kong.response.add_header",
        V3_0,
        REWRITE_ACCESS_HEADER,
        "name, value",
        "`add_header(name, value)`",
        "`()`"
    ),
    f!(
        "kong.response.clear_header",
        V3_0,
        REWRITE_ACCESS_HEADER,
        "name",
        "`clear_header(name)`",
        "`()`"
    ),
    f!(
        "kong.response.set_headers",
        V3_0,
        REWRITE_ACCESS_HEADER,
        "headers",
        "`set_headers(&Multimap)`",
        "`()`"
    ),
    f!("kong.response.get_raw_body", V3_0, BODY_FILTER, "",
       none: "body_filter only, a phase external plugins do not have"),
    f!("kong.response.set_raw_body", V3_0, BODY_FILTER, "body",
       none: "body_filter only, a phase external plugins do not have"),
    f!(
        "kong.response.exit",
        V3_0,
        EXIT,
        "status, body?, headers?",
        "`exit(status, impl Into<Body>)` / `exit_with_headers(status, body, &Multimap)`",
        "never returns"
    ),
    f!(
        "kong.response.error",
        V3_0,
        REWRITE_ACCESS_HEADER,
        "status, message?, headers?",
        "`error(status, Option<&str>)` / `error_with_headers(status, message, &Multimap)`",
        "never returns"
    ),
    // kong.router
    f!(
        "kong.router.get_route",
        V3_0,
        AUTH_AND_LATER,
        "",
        "`get_route()`",
        "`Option<Route>`"
    ),
    f!(
        "kong.router.get_service",
        V3_0,
        AUTH_AND_LATER,
        "",
        "`get_service()`",
        "`Option<Service>`"
    ),
    // kong.service
    f!(
        "kong.service.set_upstream",
        V3_0,
        ACCESS,
        "host",
        "`set_upstream(host)`",
        "`bool` (`NoValue` if no such upstream)"
    ),
    f!("kong.service.set_target", V3_0, REWRITE_ACCESS_PREREAD, before KongVersion::V3_8 => ACCESS,
       "host, port", "`set_target(host, u16)`", "`()`"),
    f!(
        "kong.service.set_retries",
        KongVersion::V3_8,
        ACCESS,
        "retries",
        "`set_retries(u32)`",
        "`()`"
    ),
    f!(
        "kong.service.set_timeouts",
        KongVersion::V3_8,
        ACCESS,
        "connect_timeout, write_timeout, read_timeout",
        "`set_timeouts(u32, u32, u32)` (ms)",
        "`()`"
    ),
    f!("kong.service.set_tls_verify", V3_0, REWRITE_ACCESS_PREREAD,
       before KongVersion::V3_2 => REWRITE_ACCESS, "on", "`set_tls_verify(bool)`", "`bool`"),
    f!("kong.service.set_tls_verify_depth", V3_0, REWRITE_ACCESS_PREREAD,
       before KongVersion::V3_2 => REWRITE_ACCESS, "depth", "`set_tls_verify_depth(u32)`", "`bool`"),
    f!("kong.service.set_tls_cert_key", V3_0, REWRITE_ACCESS_PREREAD,
       before KongVersion::V3_2 => REWRITE_ACCESS, "chain, key",
       none: "its arguments are cdata, which cannot cross the protocol"),
    f!("kong.service.set_tls_verify_store", V3_0, REWRITE_ACCESS_PREREAD,
       before KongVersion::V3_2 => REWRITE_ACCESS, "store",
       none: "its argument is a resty.openssl object, which cannot cross the protocol"),
    // kong.service.request
    f!("kong.service.request.set_scheme", V3_0, REWRITE_ACCESS, before KongVersion::V3_8 => ACCESS,
       "scheme", "`set_scheme(scheme)`", "`()`"),
    f!("kong.service.request.set_path", V3_0, REWRITE_ACCESS, before KongVersion::V3_8 => ACCESS,
       "path", "`set_path(path)`", "`()`"),
    f!(
        "kong.service.request.set_raw_query",
        V3_0,
        REWRITE_ACCESS,
        "query",
        "`set_raw_query(query)`",
        "`()`"
    ),
    f!(
        "kong.service.request.set_method",
        V3_0,
        REWRITE_ACCESS,
        "method",
        "`set_method(method)`",
        "`()`"
    ),
    f!(
        "kong.service.request.set_query",
        V3_0,
        REWRITE_ACCESS,
        "args",
        "`set_query(&Multimap)`",
        "`()`"
    ),
    f!(
        "kong.service.request.clear_query_arg",
        KongVersion::V3_9,
        REWRITE_ACCESS,
        "name",
        "`clear_query_arg(name)`",
        "`()`"
    ),
    f!(
        "kong.service.request.set_header",
        V3_0,
        REWRITE_ACCESS,
        "header, value",
        "`set_header(name, value)`",
        "`()`"
    ),
    f!(
        "kong.service.request.add_header",
        V3_0,
        REWRITE_ACCESS,
        "header, value",
        "`add_header(name, value)`",
        "`()`"
    ),
    f!(
        "kong.service.request.clear_header",
        V3_0,
        REWRITE_ACCESS,
        "header",
        "`clear_header(name)`",
        "`()`"
    ),
    f!(
        "kong.service.request.set_headers",
        V3_0,
        REWRITE_ACCESS,
        "headers",
        "`set_headers(&Multimap)`",
        "`()`"
    ),
    f!(
        "kong.service.request.set_raw_body",
        V3_0,
        REWRITE_ACCESS,
        "body",
        "`set_raw_body(&[u8])` (sent as bin)",
        "`()`"
    ),
    f!(
        "kong.service.request.enable_buffering",
        V3_0,
        REWRITE_ACCESS,
        "",
        "`enable_buffering()`",
        "`()`"
    ),
    f!(
        "kong.service.request.set_body",
        V3_0,
        REWRITE_ACCESS,
        "args, mimetype?",
        "`set_body(&impl Serialize, Option<&str>)`",
        "`Option<bool>`"
    ),
    f!(
        "kong.service.request.disable_tls",
        V3_0,
        PREREAD,
        "",
        "`disable_tls()`",
        "`bool`"
    ),
    // kong.service.response
    f!(
        "kong.service.response.get_status",
        V3_0,
        HEADER_BODY_LOG,
        "",
        "`get_status()`",
        "`Option<u16>`"
    ),
    f!(
        "kong.service.response.get_header",
        V3_0,
        HEADER_BODY_LOG,
        "name",
        "`get_header(name)` / `get_header_bytes(name)`",
        "`Option<String>` / `Option<Bytes>`"
    ),
    f!(
        "kong.service.response.get_headers",
        V3_0,
        HEADER_BODY_LOG,
        "max_headers?",
        "`get_headers(Option<u16>)`",
        "`Multimap` (empty in `response`: use `get_header`)"
    ),
    f!(
        "kong.service.response.get_raw_body",
        V3_0,
        HEADER_BODY_LOG,
        "",
        "`get_raw_body()`",
        "`Bytes` (bin)"
    ),
    f!(
        "kong.service.response.get_body",
        V3_0,
        HEADER_BODY_LOG,
        "mimetype?, max_args?",
        "`get_body(Option<&str>, Option<u16>)`",
        "`Option<Value>`"
    ),
    // kong.telemetry
    f!(
        "kong.telemetry.log",
        KongVersion::V3_8,
        ALL,
        "plugin_name, plugin_config, message_type, message?, attributes?",
        "`log(plugin_name, message_type, Option<&str>, Option<&Value>)`",
        "`bool` (false: OpenTelemetry logs are off)"
    ),
    // kong.vault
    f!(
        "kong.vault.get",
        V3_0,
        ALL,
        "reference",
        "`get(reference)`",
        "`Option<String>`"
    ),
    f!(
        "kong.vault.is_reference",
        V3_0,
        ALL,
        "reference",
        "`is_reference(s)`",
        "`bool`"
    ),
    f!(
        "kong.vault.parse_reference",
        V3_0,
        ALL,
        "reference",
        "`parse_reference(s)`",
        "`Option<VaultReference>`"
    ),
    f!(
        "kong.vault.flush",
        KongVersion::V3_3,
        ALL,
        "",
        "`flush()`",
        "`()`"
    ),
    f!(
        "kong.vault.update",
        KongVersion::V3_4,
        ALL,
        "options",
        "`update(&Value)`",
        "`Value`"
    ),
    f!(
        "kong.vault.warmup",
        KongVersion::V3_5,
        ALL,
        "input",
        "`warmup(&Value)`",
        "`()`"
    ),
    f!("kong.vault.try", V3_0, ALL, "callback, options",
       none: "its first argument is a Lua function, which cannot cross the protocol"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_versions_known() {
        let mut names: Vec<&str> = PDK_FUNCTIONS.iter().map(|f| f.name).collect();
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count, "a function is listed twice");
        for f in PDK_FUNCTIONS {
            assert!(f.since >= KongVersion::OLDEST && f.since <= KongVersion::HEAD);
            if let Some((until, _)) = f.phases_before {
                assert!(until > f.since, "{}", f.name);
            }
        }
    }

    #[test]
    fn versions_and_phases_follow_kongs_releases() {
        let set_target = pdk_function("kong.service.set_target").unwrap();
        assert_eq!(set_target.phases_in(KongVersion::V3_7), [Access]);
        assert!(set_target.phase_error(KongVersion::V3_8, Preread).is_none());
        let retries = pdk_function("kong.service.set_retries").unwrap();
        assert!(!retries.available_in(KongVersion::V3_7));
        assert!(retries.available_in(KongVersion::V3_8));
        assert_eq!(
            pdk_function("kong.log.set_serialize_value")
                .unwrap()
                .phase_error(KongVersion::HEAD, Certificate)
                .unwrap(),
            "kong.log.set_serialize_value: function cannot be called in certificate phase \
             (only in: rewrite, access, response, log)"
        );
        let error = pdk_function("kong.response.error").unwrap();
        assert!(error.phase_error(KongVersion::HEAD, Preread).is_some());
        assert_eq!(
            pdk_function("kong.log.inspect.on").unwrap().group(),
            "kong.log"
        );
        assert_eq!(pdk_function("kong.log").unwrap().group(), "kong.log");
        assert_eq!(
            pdk_function("kong.service.request.set_body")
                .unwrap()
                .group(),
            "kong.service.request"
        );
    }
}
