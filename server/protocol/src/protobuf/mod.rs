//! Kong's `ProtoBuf:1` pluginserver protocol (`kong/runloop/plugin_servers/rpc/pb_rpc.lua`,
//! `kong/include/kong/pluginsocket.proto`; what go-pdk speaks), from both ends.
//!
//! The wire: length-prefixed frames ([`frame`]). Kong sends one `RpcCall` per connection
//! use and reads one `RpcReturn`; for `cmd_handle_event` the pluginserver first runs the
//! whole event on that connection, asking for each PDK call with two frames (the method
//! name, the argument message) and reading Kong's result frame, and ends the loop with an
//! empty frame. No event ids, no notifications, no error replies: closing the connection
//! is the only error signal, and Kong takes it as "restart the instance".
//!
//! - [`messages`]: the proto's messages, for `prost`;
//! - [`METHODS`]: the 74 PDK functions of the protocol, with their messages;
//! - [`transcode`]: a plugin's MessagePack call to Kong's frames, and Kong's result back
//!   to the MessagePack value MsgPack:1 would have carried (the pluginserver's side);
//! - [`kong`]: Kong's side (its `unwrap`/`wrap` and bridge loop), for tests and the load
//!   generator.

pub mod frame;
pub mod kong;
pub mod messages;
mod methods;
pub mod msgpack;
pub mod transcode;

pub use methods::{Input, METHODS, Method, Output, Zero, find, lua_name};
/// The `prost` the messages are built with, for encoding and decoding them.
pub use prost::{self, Message};

/// The protocol's name in the dump (`"Protocol"`).
pub const PROTOCOL: &str = "ProtoBuf:1";

#[cfg(test)]
mod tests;
