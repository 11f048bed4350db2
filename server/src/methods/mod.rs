//! The RPC methods Kong calls, one module per family, and the dispatcher.
//!
//! Every request gets exactly one response: a method either writes a complete successful
//! response or returns a [`MethodError`], which the dispatcher turns into an error response.

mod event;
mod info;
mod instance;

use kong_rust_pdk::Phase;

use crate::{
    protocol::{Request, decode::DecodeError, encode},
    state::Daemon,
};

/// Why a request failed; the text is what Kong logs.
#[derive(Debug, thiserror::Error)]
pub enum MethodError {
    /// Kong reacts to exactly this wording ("no plugin instance") by starting the instance
    /// again and retrying, so it is used only for ids that really are unknown.
    #[error("no plugin instance {0}")]
    NoInstance(u64),
    /// A Step for an event that finished, failed, was abandoned or never existed. Must not
    /// contain "no plugin instance", or Kong would restart the instance and retry forever.
    #[error("no running event {0} (it finished, failed or was never started)")]
    NoEvent(u64),
    /// StartInstance or GetPluginInfo for a plugin this daemon does not serve.
    #[error("unknown plugin {name:?}; this daemon serves: {served}")]
    UnknownPlugin {
        /// The name asked for.
        name: String,
        /// The names it serves.
        served: String,
    },
    /// A method outside the protocol.
    #[error("unknown method {0:?}")]
    UnknownMethod(String),
    /// The argument does not have the shape the method needs.
    #[error("{method}: bad argument: {reason}")]
    BadArgument {
        /// The method.
        method: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The plugin refused its configuration.
    #[error("plugin {plugin}: {reason}")]
    Config {
        /// The plugin.
        plugin: String,
        /// The plugin's reason, naming the field.
        reason: String,
    },
    /// HandleEvent for a phase the plugin does not implement (or not a phase at all).
    #[error("plugin {plugin} has no handler for event {event:?}")]
    NoHandler {
        /// The plugin.
        plugin: String,
        /// The event name Kong sent.
        event: String,
    },
    /// SIGTERM arrived: events already running finish, new ones are refused.
    #[error("plugin {plugin}: the pluginserver is shutting down; not starting new events")]
    Draining {
        /// The plugin.
        plugin: String,
    },
    /// The instance already has the configured maximum of events in flight.
    #[error("plugin {plugin} instance {instance} already has {limit} events in flight (limit)")]
    TooManyEvents {
        /// The plugin.
        plugin: String,
        /// The instance id.
        instance: u64,
        /// The limit in force.
        limit: usize,
    },
    /// The plugin's handler returned an error or panicked.
    #[error("plugin {plugin} {phase} handler failed: {reason}")]
    HandlerFailed {
        /// The plugin.
        plugin: String,
        /// The phase.
        phase: Phase,
        /// The handler's error.
        reason: String,
    },
}

impl MethodError {
    fn bad_argument(method: &'static str, reason: impl std::fmt::Display) -> MethodError {
        MethodError::BadArgument {
            method,
            reason: reason.to_string(),
        }
    }
}

/// Runs one request and writes its response into `out`.
pub async fn dispatch(daemon: &Daemon, request: &Request<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    let msgid = request.msgid;
    let arg = request.arg.unwrap_or(&[0xc0]);
    let result = match request.method {
        b"plugin.HandleEvent" => event::handle_event(daemon, msgid, arg, out).await,
        m if m.starts_with(b"plugin.Step") => event::step(daemon, msgid, arg, out).await,
        b"plugin.StartInstance" => instance::start(daemon, msgid, arg, out),
        b"plugin.CloseInstance" => instance::close(daemon, msgid, arg, out),
        b"plugin.InstanceStatus" => instance::status(daemon, msgid, arg, out),
        b"plugin.GetPluginInfo" => info::plugin_info(daemon, msgid, arg, out),
        b"plugin.GetStatus" => info::status(daemon, msgid, out),
        other => Err(MethodError::UnknownMethod(
            String::from_utf8_lossy(other).into_owned(),
        )),
    };
    if let Err(err) = result {
        out.truncate(start);
        match &err {
            MethodError::HandlerFailed { .. }
            | MethodError::Config { .. }
            | MethodError::TooManyEvents { .. } => {
                tracing::warn!("{err}")
            }
            _ => tracing::debug!("request failed: {err}"),
        }
        let message = match &err {
            MethodError::NoInstance(_) => err.to_string(),
            // Kong restarts the instance and retries the phase, without limit, on any error
            // containing this phrase; other errors may quote client or plugin text.
            _ => defuse_instance_phrase(&err.to_string()),
        };
        encode::error(out, msgid, &message);
    }
}

/// Rewrites every "no plugin instance", in any case, so Kong does not take the error for
/// a lost instance.
fn defuse_instance_phrase(message: &str) -> String {
    const PHRASE: &str = "no plugin instance";
    let lower = message.to_ascii_lowercase();
    if !lower.contains(PHRASE) {
        return message.to_owned();
    }
    let mut out = String::with_capacity(message.len());
    let mut rest = 0;
    for (at, _) in lower.match_indices(PHRASE) {
        if at < rest {
            continue;
        }
        out.push_str(&message[rest..at]);
        out.push_str("no plugin-instance");
        rest = at + PHRASE.len();
    }
    out.push_str(&message[rest..]);
    out
}

/// Reads an integer id argument (CloseInstance, InstanceStatus).
fn id_argument(method: &'static str, arg: &[u8]) -> Result<u64, MethodError> {
    crate::protocol::decode::Reader::new(arg)
        .u64()
        .map_err(|e| MethodError::bad_argument(method, format!("expected an instance id: {e}")))
}

fn decode_error(method: &'static str) -> impl Fn(DecodeError) -> MethodError {
    move |e| MethodError::bad_argument(method, e)
}

#[cfg(test)]
mod tests {
    use super::defuse_instance_phrase;

    #[test]
    fn only_real_unknown_instances_carry_kongs_restart_phrase() {
        assert_eq!(
            defuse_instance_phrase("plugin p has no handler for event \"No Plugin Instance\""),
            "plugin p has no handler for event \"no plugin-instance\""
        );
        assert_eq!(defuse_instance_phrase("all fine"), "all fine");
        assert!(
            !defuse_instance_phrase("x NO PLUGIN INSTANCE y no plugin instance")
                .to_lowercase()
                .contains("no plugin instance")
        );
    }
}
