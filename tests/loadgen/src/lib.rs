//! Kong-side load generator for pluginservers: Kong's ProtoBuf:1 exchanges ([`pb`]) and the
//! `/proc` readings of the server process. The `loadgen` binary plays Kong's MsgPack:1
//! client with the protocol crate's Kong side (`kong_rust_pluginserver_protocol::kong`).

pub mod pb;
pub mod procfs;
