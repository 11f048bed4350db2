//! The kong-rust-pluginserver daemon as a library: plugin loading, Kong's MsgPack:1 protocol,
//! and the socket server. The binary (`main.rs`) wires them to the command line.

pub mod client;
pub mod connection;
pub mod dump;
pub mod ids;
pub mod kong_conf;
pub mod kong_config;
pub mod loader;
pub mod methods;
pub mod metrics;
pub mod plugin_log;
pub mod protocol;
pub mod reload;
pub mod serve_lock;
pub mod server;
pub mod settings;
pub mod state;
pub mod template;
pub mod try_event;
