//! The 74 PDK functions of Kong's ProtoBuf:1 protocol (`service Kong` in
//! `pluginsocket.proto`, Kong 3.1 to HEAD; 3.0 lacks `Request_GetUriCaptures`): each with
//! the method name Kong reads in the bridge loop (the rpc name turned into a Lua path the
//! way `pb_rpc.lua` does, or its `MethodName` option), and the input and output messages.
//! Nothing else can be called over ProtoBuf:1: Kong answers any other name with
//! `method "…" not found`, which aborts the event.

/// The argument message of a PDK function, and how it is built from the plugin's
/// MessagePack arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// `google.protobuf.Empty`: `f()`.
    Empty,
    /// `Bool{v}` from the first argument (absent: false): `f(v)`.
    Bool,
    /// `Int{v}` from the first argument: `f(v)`.
    Int,
    /// `Int{v}` from the first argument, 100 when absent: Kong decodes an absent `v` as 0,
    /// and `max_headers`/`max_args` of 0 raise, so Kong's own default is sent.
    MaxArgs,
    /// `String{v}` from the first argument: `f(v)`.
    Str,
    /// `ByteString{v}` from the first argument: `f(v)`.
    ByteString,
    /// `KV{k, v}` from `[k, v]`: `f(k, v)`.
    Kv,
    /// `ListValue` of every argument: `f(unpack(values))`.
    ListValue,
    /// `Struct` from the first argument (a map): `f(table)`.
    Struct,
    /// `Target{host, port}` from `[host, port]`: `f(host, port)`.
    Target,
    /// `ExitArgs{status, body, headers}` from `[status, body?, headers?]`.
    ExitArgs,
    /// `ConsumerSpec{id, by_username}` from `[id, by_username]`.
    ConsumerSpec,
    /// `AuthenticateArgs{consumer, credential}` from `[consumer?, credential?]`.
    AuthenticateArgs,
}

/// The result message of a PDK function, and the MessagePack value it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// `google.protobuf.Empty`: nil.
    Empty,
    /// `Bool{v}`.
    Bool,
    /// `Int{v}`.
    Int,
    /// `Number{v}`.
    Number,
    /// `String{v}`.
    Str,
    /// `ByteString{v}`: binary.
    ByteString,
    /// `google.protobuf.Value`: any value.
    Value,
    /// `google.protobuf.Struct` of a header or query map: a multimap as Kong's MsgPack:1
    /// `fix_mmap` shapes it.
    Multimap,
    /// `AuthenticatedCredential`.
    Credential,
    /// `Consumer`.
    Consumer,
    /// `Route`.
    Route,
    /// `Service`.
    Service,
    /// `MemoryStats`.
    MemoryStats,
    /// `RawBodyResult`.
    RawBody,
    /// `UriCapturesResult`.
    UriCaptures,
}

/// What a zero value (an empty frame) means for a scalar result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zero {
    /// The zero value itself (`""`, `0`, `false`): the function always returns a value.
    Keep,
    /// nil: the function returns nil for "absent" and never the zero value (an absent
    /// header, no TLS, no upstream status).
    Nil,
}

/// One PDK function of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method {
    /// The name Kong reads from the method frame, e.g. `kong.request.get_header`.
    pub name: &'static str,
    /// The rpc in `service Kong`, e.g. `Request_GetHeader`.
    pub rpc: &'static str,
    /// Its argument message.
    pub input: Input,
    /// Its result message.
    pub output: Output,
    /// What its zero result means (scalar results only).
    pub zero: Zero,
}

const fn m(
    name: &'static str,
    rpc: &'static str,
    input: Input,
    output: Output,
    zero: Zero,
) -> Method {
    Method {
        name,
        rpc,
        input,
        output,
        zero,
    }
}

use Input as I;
use Output as O;
use Zero::{Keep, Nil};

/// Every PDK function of `service Kong`, in the proto's order.
#[rustfmt::skip]
pub const METHODS: [Method; 74] = [
    m("kong.client.get_ip", "Client_GetIp", I::Empty, O::Str, Keep),
    m("kong.client.get_forwarded_ip", "Client_GetForwardedIp", I::Empty, O::Str, Keep),
    m("kong.client.get_port", "Client_GetPort", I::Empty, O::Int, Keep),
    m("kong.client.get_forwarded_port", "Client_GetForwardedPort", I::Empty, O::Int, Keep),
    m("kong.client.get_credential", "Client_GetCredential", I::Empty, O::Credential, Nil),
    m("kong.client.load_consumer", "Client_LoadConsumer", I::ConsumerSpec, O::Consumer, Nil),
    m("kong.client.get_consumer", "Client_GetConsumer", I::Empty, O::Consumer, Nil),
    m("kong.client.authenticate", "Client_Authenticate", I::AuthenticateArgs, O::Empty, Nil),
    m("kong.client.get_protocol", "Client_GetProtocol", I::Bool, O::Str, Nil),
    m("kong.ctx.shared.set", "Ctx_SetShared", I::Kv, O::Empty, Nil),
    m("kong.ctx.shared.get", "Ctx_GetShared", I::Str, O::Value, Nil),
    m("kong.ip.is_trusted", "Ip_IsTrusted", I::Str, O::Bool, Keep),
    m("kong.log.alert", "Log_Alert", I::ListValue, O::Empty, Nil),
    m("kong.log.crit", "Log_Crit", I::ListValue, O::Empty, Nil),
    m("kong.log.err", "Log_Err", I::ListValue, O::Empty, Nil),
    m("kong.log.warn", "Log_Warn", I::ListValue, O::Empty, Nil),
    m("kong.log.notice", "Log_Notice", I::ListValue, O::Empty, Nil),
    m("kong.log.info", "Log_Info", I::ListValue, O::Empty, Nil),
    m("kong.log.debug", "Log_Debug", I::ListValue, O::Empty, Nil),
    m("kong.log.set_serialize_value", "Log_SetSerializeValue", I::Kv, O::Empty, Nil),
    m("kong.log.serialize", "Log_Serialize", I::Empty, O::Str, Keep),
    m("kong.nginx.get_var", "Nginx_GetVar", I::Str, O::Str, Nil),
    m("kong.nginx.get_tls1_version_str", "Nginx_GetTls1VersionStr", I::Empty, O::Str, Nil),
    m("kong.nginx.set_ctx", "Nginx_SetCtx", I::Kv, O::Str, Nil),
    m("kong.nginx.get_ctx", "Nginx_GetCtx", I::Str, O::Value, Nil),
    m("kong.nginx.req_start_time", "Nginx_ReqStartTime", I::Empty, O::Number, Keep),
    m("kong.nginx.get_subsystem", "Nginx_GetSubsystem", I::Empty, O::Str, Keep),
    m("kong.node.get_id", "Node_GetId", I::Empty, O::Str, Keep),
    m("kong.node.get_memory_stats", "Node_GetMemoryStats", I::Empty, O::MemoryStats, Nil),
    m("kong.request.get_scheme", "Request_GetScheme", I::Empty, O::Str, Keep),
    m("kong.request.get_host", "Request_GetHost", I::Empty, O::Str, Keep),
    m("kong.request.get_port", "Request_GetPort", I::Empty, O::Int, Keep),
    m("kong.request.get_forwarded_scheme", "Request_GetForwardedScheme", I::Empty, O::Str, Keep),
    m("kong.request.get_forwarded_host", "Request_GetForwardedHost", I::Empty, O::Str, Keep),
    m("kong.request.get_forwarded_port", "Request_GetForwardedPort", I::Empty, O::Int, Keep),
    m("kong.request.get_http_version", "Request_GetHttpVersion", I::Empty, O::Number, Keep),
    m("kong.request.get_method", "Request_GetMethod", I::Empty, O::Str, Keep),
    m("kong.request.get_path", "Request_GetPath", I::Empty, O::Str, Keep),
    m("kong.request.get_path_with_query", "Request_GetPathWithQuery", I::Empty, O::Str, Keep),
    m("kong.request.get_raw_query", "Request_GetRawQuery", I::Empty, O::Str, Keep),
    m("kong.request.get_query_arg", "Request_GetQueryArg", I::Str, O::Str, Nil),
    m("kong.request.get_query", "Request_GetQuery", I::MaxArgs, O::Multimap, Nil),
    m("kong.request.get_header", "Request_GetHeader", I::Str, O::Str, Nil),
    m("kong.request.get_headers", "Request_GetHeaders", I::MaxArgs, O::Multimap, Nil),
    m("kong.request.get_raw_body", "Request_GetRawBody", I::Empty, O::RawBody, Nil),
    m("kong.request.get_uri_captures", "Request_GetUriCaptures", I::Empty, O::UriCaptures, Nil),
    m("kong.response.get_status", "Response_GetStatus", I::Empty, O::Int, Keep),
    m("kong.response.get_header", "Response_GetHeader", I::Str, O::Str, Nil),
    m("kong.response.get_headers", "Response_GetHeaders", I::MaxArgs, O::Multimap, Nil),
    m("kong.response.get_source", "Response_GetSource", I::Empty, O::Str, Keep),
    m("kong.response.set_status", "Response_SetStatus", I::Int, O::Empty, Nil),
    m("kong.response.set_header", "Response_SetHeader", I::Kv, O::Empty, Nil),
    m("kong.response.add_header", "Response_AddHeader", I::Kv, O::Empty, Nil),
    m("kong.response.clear_header", "Response_ClearHeader", I::Str, O::Empty, Nil),
    m("kong.response.set_headers", "Response_SetHeaders", I::Struct, O::Empty, Nil),
    m("kong.response.exit", "Response_Exit", I::ExitArgs, O::Empty, Nil),
    m("kong.router.get_route", "Router_GetRoute", I::Empty, O::Route, Nil),
    m("kong.router.get_service", "Router_GetService", I::Empty, O::Service, Nil),
    m("kong.service.set_upstream", "Service_SetUpstream", I::Str, O::Bool, Nil),
    m("kong.service.set_target", "Service_SetTarget", I::Target, O::Empty, Nil),
    m("kong.service.request.set_scheme", "Service_Request_SetScheme", I::Str, O::Empty, Nil),
    m("kong.service.request.set_path", "Service_Request_SetPath", I::Str, O::Empty, Nil),
    m("kong.service.request.set_raw_query", "Service_Request_SetRawQuery", I::Str, O::Empty, Nil),
    m("kong.service.request.set_method", "Service_Request_SetMethod", I::Str, O::Empty, Nil),
    m("kong.service.request.set_query", "Service_Request_SetQuery", I::Struct, O::Empty, Nil),
    m("kong.service.request.set_header", "Service_Request_SetHeader", I::Kv, O::Empty, Nil),
    m("kong.service.request.add_header", "Service_Request_AddHeader", I::Kv, O::Empty, Nil),
    m("kong.service.request.clear_header", "Service_Request_ClearHeader", I::Str, O::Empty, Nil),
    m("kong.service.request.set_headers", "Service_Request_SetHeaders", I::Struct, O::Empty, Nil),
    m("kong.service.request.set_raw_body", "Service_Request_SetRawBody", I::ByteString, O::Empty, Nil),
    m("kong.service.response.get_status", "Service_Response_GetStatus", I::Empty, O::Int, Nil),
    m("kong.service.response.get_header", "Service_Response_GetHeader", I::Str, O::Str, Nil),
    m("kong.service.response.get_headers", "Service_Response_GetHeaders", I::MaxArgs, O::Multimap, Nil),
    m("kong.service.response.get_raw_body", "Service_Response_GetRawBody", I::Empty, O::ByteString, Keep),
];

/// The function called `name`, if the protocol has it.
pub fn find(name: &[u8]) -> Option<&'static Method> {
    METHODS.iter().find(|m| m.name.as_bytes() == name)
}

/// The Lua name `pb_rpc.lua` derives from rpc `Group_Name` of `service Kong` when the rpc
/// has no `MethodName` option: `Kong.<rpc>`, `_` → `.`, `aB` → `a_b` (and `a1B` → `a1_b`),
/// lower-cased.
pub fn lua_name(rpc: &str) -> String {
    let dotted = format!("Kong.{rpc}").replace('_', ".");
    let chars: Vec<char> = dotted.chars().collect();
    let mut out = String::with_capacity(dotted.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            // `([a-z]%d*)([A-Z])`: a lower-case letter, then digits, then this capital.
            let mut j = i;
            while j > 0 && chars[j - 1].is_ascii_digit() {
                j -= 1;
            }
            if j > 0 && chars[j - 1].is_ascii_lowercase() {
                out.push('_');
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kongs_derivation_of_the_rpc_names() {
        for method in &METHODS {
            let derived = lua_name(method.rpc);
            match method.rpc {
                // `option (MethodName)` in the proto.
                "Ctx_SetShared" => assert_eq!(method.name, "kong.ctx.shared.set"),
                "Ctx_GetShared" => assert_eq!(method.name, "kong.ctx.shared.get"),
                _ => assert_eq!(method.name, derived, "{}", method.rpc),
            }
        }
        assert_eq!(
            lua_name("Nginx_GetTls1VersionStr"),
            "kong.nginx.get_tls1_version_str"
        );
    }

    #[test]
    fn every_name_is_unique_and_found() {
        let mut names: Vec<_> = METHODS.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 74);
        for method in &METHODS {
            assert_eq!(find(method.name.as_bytes()), Some(method));
        }
        assert_eq!(find(b"kong.response.error"), None);
        assert_eq!(find(b"kong.log.emerg"), None);
    }
}
