//! The kong-rust-pluginserver daemon as a library: plugin loading, the daemon's state and
//! the RPCs Kong applies to it, connections and sockets, and the daemon's lifecycle. The
//! binary (`main.rs` and `cli/`) wires them to the command line.
//!
//! - [`loader`]: plugin libraries, checked and loaded through the stable ABI;
//! - [`daemon`]: plugins, instances and in-flight events, and the typed operations on them;
//! - [`rpc`]: Kong's requests parsed into [`rpc::Rpc`], applied, encoded;
//! - [`connection`], [`serving`], [`sockets`]: Kong's connections, on the plugin sockets,
//!   on each plugin's event loop (or a thread each), with their limits;
//! - [`lifecycle`]: serve lock, standby and takeover, hand-over, signals, reload, drain,
//!   housekeeping;
//! - [`protobuf`]: serving a connection in Kong's ProtoBuf:1 protocol instead;
//! - [`metrics`] (the families, a leaf) and [`admin`] (their HTTP endpoint);
//! - [`settings`]: flags, environment and config file; [`log_throttle`]: repeated warnings
//!   held to a rate;
//! - [`kong_compat`]: what the Kong release served (`--kong-version`) accepts of a plugin;
//! - [`dump`], [`conf_lines`], [`plugin_links`], [`template`], [`playback`]: what the
//!   subcommands produce.

pub mod admin;
pub mod conf_lines;
pub mod connection;
pub mod daemon;
pub mod dump;
pub mod heartbeat;
pub mod kong_compat;
pub mod lifecycle;
pub mod loader;
pub mod log_throttle;
pub mod metrics;
pub mod playback;
pub mod plugin_links;
pub mod plugin_log;
pub mod protobuf;
pub mod rpc;
pub mod serving;
pub mod settings;
pub mod sockets;
pub mod template;
pub mod wait;
pub mod waitable;
