//! The daemon's end of plugin logging: records from plugin libraries become `tracing`
//! events of the daemon, tagged with the plugin's name (see kong-rust-pdk's host_log).

use abi_stable::std_types::RStr;
use kong_rust_pdk::ffi::HostLogger;
use tracing::level_filters::LevelFilter;

/// The logger handed to every plugin library, at the daemon's current level.
pub fn host_logger() -> HostLogger {
    let max_level = match LevelFilter::current() {
        LevelFilter::OFF => 0,
        LevelFilter::ERROR => 1,
        LevelFilter::WARN => 2,
        LevelFilter::INFO => 3,
        LevelFilter::DEBUG => 4,
        _ => 5,
    };
    HostLogger {
        max_level,
        log: log_from_plugin,
    }
}

extern "C" fn log_from_plugin(level: u8, plugin: RStr<'_>, target: RStr<'_>, message: RStr<'_>) {
    let (plugin, target, message) = (plugin.as_str(), target.as_str(), message.as_str());
    match level {
        1 => tracing::error!(target: "plugin", plugin, module = target, "{message}"),
        2 => tracing::warn!(target: "plugin", plugin, module = target, "{message}"),
        3 => tracing::info!(target: "plugin", plugin, module = target, "{message}"),
        4 => tracing::debug!(target: "plugin", plugin, module = target, "{message}"),
        _ => tracing::trace!(target: "plugin", plugin, module = target, "{message}"),
    }
}
