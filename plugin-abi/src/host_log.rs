//! Plugin logs go to the daemon's log.
//!
//! A plugin library has its own copy of the `tracing` and `log` globals, so its log
//! statements would go nowhere. When the daemon loads a plugin it hands over a
//! [`HostLogger`]; this module installs, inside the plugin library, a `tracing` subscriber
//! and a `log` logger that forward every record to it, tagged with the plugin's name.
//! Plugin code just uses `tracing::info!(..)` or `log::info!(..)`.
//!
//! The library's panic hook (its own: a library has its own copy of `std`) reports through
//! the host too, as an error record, so a panic is one log line like any other (valid JSON
//! with the daemon's `--log-format json`) instead of text on stderr.

use std::{fmt::Write, sync::OnceLock};

use abi_stable::std_types::RStr;
use tracing::{
    Event, Level, Metadata, Subscriber,
    field::{Field, Visit},
    level_filters::LevelFilter,
    span,
};

use kong_rust_plugin_abi::{HostLogger, LogLevel};

static HOST: OnceLock<(HostLogger, &'static str)> = OnceLock::new();

/// Installs the forwarding; only the first call has an effect.
pub(crate) fn install(logger: HostLogger, plugin: &'static str) {
    if HOST.set((logger, plugin)).is_err() {
        return;
    }
    std::panic::set_hook(Box::new(report_panic));
    let _ = tracing::subscriber::set_global_default(Forward);
    if log::set_logger(&Forward).is_ok() {
        log::set_max_level(match logger.max_level {
            LogLevel::Off => log::LevelFilter::Off,
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        });
    }
}

/// What `std` panics with just before it aborts the process: a panic in a destructor while
/// another panic unwinds, or a panic where unwinding is impossible.
const ABORTING: [&str; 2] = [
    "panic in a destructor during cleanup",
    "panic in a function that cannot unwind",
];

/// The library's panic hook: one error record through the host. A panic `std` is about to
/// turn into an abort would take the whole daemon down; its thread is parked for good
/// instead (its request fails after Kong's timeout, and that one thread is lost).
fn report_panic(info: &std::panic::PanicHookInfo<'_>) {
    let message = crate::panics::panic_message(info.payload());
    let location = info
        .location()
        .map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column()))
        .unwrap_or_default();
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("unnamed");
    let aborting = ABORTING.contains(&message);
    emit(
        LogLevel::Error,
        "panic",
        &format!(
            "thread '{thread}' panicked{location}: {message}{}",
            if aborting {
                "; Rust cannot recover from this, so the thread is parked for good instead of aborting the daemon (fix the plugin: a destructor must not panic)"
            } else {
                ""
            }
        ),
    );
    if aborting {
        loop {
            std::thread::park();
        }
    }
}

fn code(level: &Level) -> LogLevel {
    match *level {
        Level::ERROR => LogLevel::Error,
        Level::WARN => LogLevel::Warn,
        Level::INFO => LogLevel::Info,
        Level::DEBUG => LogLevel::Debug,
        Level::TRACE => LogLevel::Trace,
    }
}

fn emit(level: LogLevel, target: &str, message: &str) {
    if let Some((logger, plugin)) = HOST.get()
        && level <= logger.max_level
    {
        (logger.log)(
            level,
            RStr::from(*plugin),
            RStr::from(target),
            RStr::from(message),
        );
    }
}

struct Forward;

impl Subscriber for Forward {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        HOST.get()
            .is_some_and(|(logger, _)| code(metadata.level()) <= logger.max_level)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(
            match HOST.get().map_or(LogLevel::Off, |(l, _)| l.max_level) {
                LogLevel::Off => LevelFilter::OFF,
                LogLevel::Error => LevelFilter::ERROR,
                LogLevel::Warn => LevelFilter::WARN,
                LogLevel::Info => LevelFilter::INFO,
                LogLevel::Debug => LevelFilter::DEBUG,
                LogLevel::Trace => LevelFilter::TRACE,
            },
        )
    }

    // Spans carry no output of their own here; events are forwarded one by one.
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut text = Text(String::new());
        event.record(&mut text);
        let metadata = event.metadata();
        emit(code(metadata.level()), metadata.target(), &text.0);
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

/// The event's message, then its other fields as `name=value`.
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            self.0.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }
}

impl log::Log for Forward {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if log::Log::enabled(self, record.metadata()) {
            let level = match record.level() {
                log::Level::Error => LogLevel::Error,
                log::Level::Warn => LogLevel::Warn,
                log::Level::Info => LogLevel::Info,
                log::Level::Debug => LogLevel::Debug,
                log::Level::Trace => LogLevel::Trace,
            };
            emit(level, record.target(), &record.args().to_string());
        }
    }

    fn flush(&self) {}
}
