//! Kong-side load generator for MsgPack:1 pluginservers: the wire codec a Kong worker uses
//! and the `/proc` readings of the server process. The `loadgen` binary drives them.

pub mod procfs;
pub mod wire;
