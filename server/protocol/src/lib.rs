//! Kong's pluginserver protocols from both ends: `MsgPack:1` (MessagePack-RPC over a unix
//! stream socket, the default) and `ProtoBuf:1` ([`protobuf`]).
//!
//! - [`frame`]: where one message ends, without decoding it;
//! - [`decode`]: a zero-copy reader of MessagePack values;
//! - [`request`]: requests as the pluginserver reads them;
//! - [`encode`]: responses and notifications the pluginserver writes;
//! - [`kong`]: Kong's side: requests as Kong's Lua writes them, its answers read back, the
//!   rules of its event loop (which `plugin.Step*` method, which calls end an event), and a
//!   blocking connection for tools and tests;
//! - [`protobuf`]: ProtoBuf:1: frames, messages, the PDK functions it carries, and the
//!   transcoding that lets a plugin's MessagePack PDK calls travel over it.
//!
//! Everything here follows Kong's Lua client (`kong/runloop/plugin_servers`); the daemon,
//! its tools, the end-to-end tests, the load generator and the fuzz targets all use it, so
//! there is one reading of the protocol.

pub mod decode;
pub mod encode;
pub mod frame;
pub mod kong;
pub mod protobuf;
pub mod request;
#[cfg(test)]
mod strategies;

pub use request::{Request, RequestError, for_each_entry, parse_request};
