//! Kong-side load generator for MsgPack:1 pluginservers: the `/proc` readings of the
//! server process. The `loadgen` binary plays Kong with the protocol crate's Kong side
//! (`kong_rust_pluginserver_protocol::kong`).

pub mod procfs;
