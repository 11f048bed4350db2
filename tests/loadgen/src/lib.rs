//! Kong-side load generator for pluginservers: the MsgPack:1 wire codec a Kong worker uses,
//! its ProtoBuf:1 exchanges ([`pb`]), and the `/proc` readings of the server process. The
//! `loadgen` binary drives them.

pub mod pb;
pub mod procfs;
pub mod wire;
