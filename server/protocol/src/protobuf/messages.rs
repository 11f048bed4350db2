//! The messages of Kong's `kong/include/kong/pluginsocket.proto` (package
//! `kong_plugin_protocol`) and the `google.protobuf` well-known types it uses, declared for
//! `prost` by hand (no `protoc`, no build script).
//!
//! Two deliberate differences from generated code, both wire-identical:
//! - every `string` field is `bytes`: Kong passes header values, query values and bodies
//!   as raw bytes (lua-protobuf never checks UTF-8), and prost would refuse to decode a
//!   `string` that is not UTF-8;
//! - protobuf maps (`Struct.fields`, `UriCapturesResult.named`) are the repeated entry
//!   messages they are on the wire, because prost cannot key a map by bytes. Entries keep
//!   Kong's order, and a key that repeats keeps every entry (the reader takes the last,
//!   as a map would).
//!
//! Field names and numbers are the proto's; see it for their meaning.
#![allow(missing_docs)]

/// `google.protobuf.Empty`: Kong sends and expects zero bytes.
#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct Empty {}

// ------------------------------------------------------------------ google.protobuf

/// `google.protobuf.Value`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Value {
    #[prost(oneof = "value::Kind", tags = "1, 2, 3, 4, 5, 6")]
    pub kind: Option<value::Kind>,
}

/// The oneof of [`Value`].
pub mod value {
    /// `google.protobuf.Value.kind`.
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Kind {
        /// `NullValue` (an enum with the one value `NULL_VALUE = 0`).
        #[prost(int32, tag = "1")]
        NullValue(i32),
        #[prost(double, tag = "2")]
        NumberValue(f64),
        #[prost(bytes = "vec", tag = "3")]
        StringValue(Vec<u8>),
        #[prost(bool, tag = "4")]
        BoolValue(bool),
        #[prost(message, tag = "5")]
        StructValue(super::Struct),
        #[prost(message, tag = "6")]
        ListValue(super::ListValue),
    }
}

/// `google.protobuf.Struct`: `map<string, Value> fields = 1`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Struct {
    #[prost(message, repeated, tag = "1")]
    pub fields: Vec<FieldsEntry>,
}

/// One entry of [`Struct::fields`].
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct FieldsEntry {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Value>,
}

/// `google.protobuf.ListValue`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ListValue {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<Value>,
}

// ------------------------------------------------------------------ RPC envelope

#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct CmdGetPluginNames {}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct CmdGetPluginInfo {
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct CmdStartInstance {
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub config: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct CmdGetInstanceStatus {
    #[prost(int32, tag = "1")]
    pub instance_id: i32,
}

#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct CmdCloseInstance {
    #[prost(int32, tag = "1")]
    pub instance_id: i32,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct CmdHandleEvent {
    #[prost(int32, tag = "1")]
    pub instance_id: i32,
    #[prost(bytes = "vec", tag = "2")]
    pub event_name: Vec<u8>,
}

/// What Kong sends to start an exchange.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct RpcCall {
    #[prost(int64, tag = "1")]
    pub sequence: i64,
    #[prost(oneof = "rpc_call::Call", tags = "31, 32, 33, 34, 35, 36")]
    pub call: Option<rpc_call::Call>,
}

/// The oneof of [`RpcCall`].
pub mod rpc_call {
    /// `RpcCall.call`.
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Call {
        #[prost(message, tag = "31")]
        CmdGetPluginNames(super::CmdGetPluginNames),
        #[prost(message, tag = "32")]
        CmdGetPluginInfo(super::CmdGetPluginInfo),
        #[prost(message, tag = "33")]
        CmdStartInstance(super::CmdStartInstance),
        #[prost(message, tag = "34")]
        CmdGetInstanceStatus(super::CmdGetInstanceStatus),
        #[prost(message, tag = "35")]
        CmdCloseInstance(super::CmdCloseInstance),
        #[prost(message, tag = "36")]
        CmdHandleEvent(super::CmdHandleEvent),
    }
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct PluginNames {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub names: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct PluginInfo {
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub updated_at: i64,
    #[prost(int64, tag = "3")]
    pub loaded_at: i64,
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub phases: Vec<Vec<u8>>,
    #[prost(bytes = "vec", tag = "5")]
    pub version: Vec<u8>,
    #[prost(int32, tag = "6")]
    pub priority: i32,
    #[prost(bytes = "vec", tag = "7")]
    pub schema: Vec<u8>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct InstanceStatus {
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    #[prost(int32, tag = "2")]
    pub instance_id: i32,
    #[prost(message, optional, tag = "3")]
    pub config: Option<Value>,
    #[prost(int64, tag = "4")]
    pub started_at: i64,
}

/// What the pluginserver answers to an [`RpcCall`] (after the bridge loop of an event).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct RpcReturn {
    #[prost(int64, tag = "1")]
    pub sequence: i64,
    #[prost(oneof = "rpc_return::Return", tags = "31, 32, 33")]
    pub r#return: Option<rpc_return::Return>,
}

/// The oneof of [`RpcReturn`].
pub mod rpc_return {
    /// `RpcReturn.return`.
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Return {
        #[prost(message, tag = "31")]
        PluginNames(super::PluginNames),
        #[prost(message, tag = "32")]
        PluginInfo(super::PluginInfo),
        #[prost(message, tag = "33")]
        InstanceStatus(super::InstanceStatus),
    }
}

// ------------------------------------------------------------------ PDK arguments, results

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Kv {
    #[prost(bytes = "vec", tag = "1")]
    pub k: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    pub v: Option<Value>,
}

#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct Bool {
    #[prost(bool, tag = "1")]
    pub v: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct Int {
    #[prost(int32, tag = "1")]
    pub v: i32,
}

#[derive(Clone, Copy, PartialEq, ::prost::Message)]
pub struct Number {
    #[prost(double, tag = "1")]
    pub v: f64,
}

/// `kong_plugin_protocol.String` (named so to keep clear of `std::string::String`); also
/// `ByteString`, which has the same wire form.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Str {
    #[prost(bytes = "vec", tag = "1")]
    pub v: Vec<u8>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ExitArgs {
    #[prost(int32, tag = "1")]
    pub status: i32,
    #[prost(bytes = "vec", tag = "2")]
    pub body: Vec<u8>,
    #[prost(message, optional, tag = "3")]
    pub headers: Option<Struct>,
}

/// `ServiceKey` and `CertificateKey`: `{ string id = 1; }`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Key {
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct RawBodyResult {
    #[prost(oneof = "raw_body_result::Kind", tags = "1, 2, 3")]
    pub kind: Option<raw_body_result::Kind>,
}

/// The oneof of [`RawBodyResult`].
pub mod raw_body_result {
    /// `RawBodyResult.kind`.
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Kind {
        #[prost(bytes = "vec", tag = "1")]
        Content(Vec<u8>),
        #[prost(bytes = "vec", tag = "2")]
        BodyFilepath(Vec<u8>),
        #[prost(bytes = "vec", tag = "3")]
        Error(Vec<u8>),
    }
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct UriCapturesResult {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub unnamed: Vec<Vec<u8>>,
    #[prost(message, repeated, tag = "2")]
    pub named: Vec<NamedEntry>,
}

/// One entry of [`UriCapturesResult::named`] (`map<string, bytes>`).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct NamedEntry {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Route {
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub created_at: i64,
    #[prost(int64, tag = "3")]
    pub updated_at: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub name: Vec<u8>,
    #[prost(bytes = "vec", repeated, tag = "5")]
    pub protocols: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub methods: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "7")]
    pub hosts: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub paths: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub headers: Vec<Vec<u8>>,
    #[prost(int32, tag = "10")]
    pub https_redirect_status_code: i32,
    #[prost(int32, tag = "11")]
    pub regex_priority: i32,
    #[prost(bool, tag = "12")]
    pub strip_path: bool,
    #[prost(bool, tag = "13")]
    pub preserve_host: bool,
    #[prost(bytes = "vec", repeated, tag = "14")]
    pub snis: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "15")]
    pub sources: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "16")]
    pub destinations: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "17")]
    pub tags: Vec<Vec<u8>>,
    #[prost(message, optional, tag = "18")]
    pub service: Option<Key>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Service {
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub created_at: i64,
    #[prost(int64, tag = "3")]
    pub updated_at: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub name: Vec<u8>,
    #[prost(int32, tag = "5")]
    pub retries: i32,
    #[prost(bytes = "vec", tag = "6")]
    pub protocol: Vec<u8>,
    #[prost(bytes = "vec", tag = "7")]
    pub host: Vec<u8>,
    #[prost(int32, tag = "8")]
    pub port: i32,
    #[prost(bytes = "vec", tag = "9")]
    pub path: Vec<u8>,
    #[prost(int32, tag = "10")]
    pub connect_timeout: i32,
    #[prost(int32, tag = "11")]
    pub write_timeout: i32,
    #[prost(int32, tag = "12")]
    pub read_timeout: i32,
    #[prost(bytes = "vec", repeated, tag = "13")]
    pub tags: Vec<Vec<u8>>,
    #[prost(message, optional, tag = "14")]
    pub client_certificate: Option<Key>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Target {
    #[prost(bytes = "vec", tag = "1")]
    pub host: Vec<u8>,
    #[prost(int32, tag = "2")]
    pub port: i32,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ConsumerSpec {
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    #[prost(bool, tag = "2")]
    pub by_username: bool,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Consumer {
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub created_at: i64,
    #[prost(bytes = "vec", tag = "3")]
    pub username: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub custom_id: Vec<u8>,
    #[prost(bytes = "vec", repeated, tag = "5")]
    pub tags: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct AuthenticatedCredential {
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub consumer_id: Vec<u8>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct AuthenticateArgs {
    #[prost(message, optional, tag = "1")]
    pub consumer: Option<Consumer>,
    #[prost(message, optional, tag = "2")]
    pub credential: Option<AuthenticatedCredential>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct MemoryStats {
    #[prost(message, optional, tag = "1")]
    pub lua_shared_dicts: Option<LuaSharedDicts>,
    #[prost(message, repeated, tag = "2")]
    pub workers_lua_vms: Vec<WorkerLuaVm>,
}

/// `MemoryStats.LuaSharedDicts`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct LuaSharedDicts {
    #[prost(message, optional, tag = "1")]
    pub kong: Option<DictStats>,
    #[prost(message, optional, tag = "2")]
    pub kong_db_cache: Option<DictStats>,
}

/// `MemoryStats.LuaSharedDicts.DictStats`.
#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct DictStats {
    #[prost(int64, tag = "1")]
    pub allocated_slabs: i64,
    #[prost(int64, tag = "2")]
    pub capacity: i64,
}

/// `MemoryStats.WorkerLuaVm`.
#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct WorkerLuaVm {
    #[prost(int64, tag = "1")]
    pub http_allocated_gc: i64,
    #[prost(int64, tag = "2")]
    pub pid: i64,
}
