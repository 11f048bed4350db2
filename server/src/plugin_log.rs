//! The daemon's end of plugin logging: records from plugin libraries become `tracing`
//! events of the daemon, tagged with the plugin's name (see kong-rust-pdk's host_log).

use abi_stable::std_types::RStr;
use kong_rust_plugin_abi::{HostLogger, LogLevel};
use tracing::level_filters::LevelFilter;

/// The logger handed to every plugin library, at the daemon's current level.
pub fn host_logger() -> HostLogger {
    let max_level = match LevelFilter::current() {
        LevelFilter::OFF => LogLevel::Off,
        LevelFilter::ERROR => LogLevel::Error,
        LevelFilter::WARN => LogLevel::Warn,
        LevelFilter::INFO => LogLevel::Info,
        LevelFilter::DEBUG => LogLevel::Debug,
        _ => LogLevel::Trace,
    };
    HostLogger {
        max_level,
        log: log_from_plugin,
    }
}

extern "C" fn log_from_plugin(
    level: LogLevel,
    plugin: RStr<'_>,
    target: RStr<'_>,
    message: RStr<'_>,
) {
    let (plugin, target, message) = (plugin.as_str(), target.as_str(), message.as_str());
    match level {
        LogLevel::Off => {}
        LogLevel::Error => tracing::error!(target: "plugin", plugin, module = target, "{message}"),
        LogLevel::Warn => tracing::warn!(target: "plugin", plugin, module = target, "{message}"),
        LogLevel::Info => tracing::info!(target: "plugin", plugin, module = target, "{message}"),
        LogLevel::Debug => tracing::debug!(target: "plugin", plugin, module = target, "{message}"),
        LogLevel::Trace => tracing::trace!(target: "plugin", plugin, module = target, "{message}"),
    }
}
