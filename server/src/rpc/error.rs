//! What Kong reads when a request fails.

use kong_rust_pluginserver_protocol::encode;

use crate::daemon::{NotAPhase, StartError, UnknownInstance};

/// Why a request failed; the text is what Kong logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// Kong reacts to exactly this wording ("no plugin instance") by starting the instance
    /// again and retrying, so it is used only for ids that really are unknown.
    #[error(transparent)]
    NoInstance(#[from] UnknownInstance),
    /// StartInstance failed.
    #[error(transparent)]
    Start(#[from] StartError),
    /// HandleEvent with an event name that is no phase.
    #[error(transparent)]
    NotAPhase(#[from] NotAPhase),
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
    /// A request whose envelope is wrong (it has a msgid to answer).
    #[error("malformed request: {0}")]
    Malformed(String),
}

impl RpcError {
    pub(crate) fn bad_argument(method: &'static str, reason: impl std::fmt::Display) -> Self {
        RpcError::BadArgument {
            method,
            reason: reason.to_string(),
        }
    }

    /// Writes the error response, logging what an operator should see.
    pub fn write(&self, msgid: u64, out: &mut Vec<u8>) {
        match self {
            RpcError::Start(StartError::Refused { .. } | StartError::OverLimit(_)) => {
                crate::warn_throttled!(crate::log_throttle::REQUESTS, "{self}")
            }
            RpcError::Malformed(_) => {
                crate::warn_throttled!(crate::log_throttle::REQUESTS, "request {msgid}: {self}")
            }
            _ => tracing::debug!("request failed: {self}"),
        }
        let message = match self {
            RpcError::NoInstance(_) => self.to_string(),
            // Kong restarts the instance and retries the phase, without limit, on any error
            // containing this phrase; other errors may quote client or plugin text.
            _ => defuse_instance_phrase(&self.to_string()),
        };
        encode::error(out, msgid, &message);
    }
}

/// Rewrites every "no plugin instance", in any case, so Kong does not take the error for
/// a lost instance.
pub fn defuse_instance_phrase(message: &str) -> String {
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
