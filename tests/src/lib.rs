//! Helpers for the end-to-end tests: start the real daemon binary on real plugin libraries,
//! and talk to it exactly as Kong does.
//!
//! - [`artifacts`]: where `cargo test` put the daemon binary and the plugin `.so` files;
//! - [`daemon`]: a daemon process in a scratch prefix, killed when dropped;
//! - [`kong`]: a simulated Kong worker: Kong's MessagePack encoding, a connection pool, a new
//!   pooled connection per call, and Kong's event loop;
//! - [`kong_pb`]: the same worker speaking ProtoBuf:1 (`pb_rpc.lua`): a whole event on one
//!   pooled connection.

pub mod artifacts;
pub mod daemon;
pub mod kong;
pub mod kong_pb;
pub mod msgpack;
