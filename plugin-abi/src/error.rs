//! Errors a plugin sees.

use std::borrow::Cow;

/// The result of a PDK call or a phase handler.
pub type PdkResult<T> = Result<T, PdkError>;

/// The result of a call that cannot return: Rust's `!`, named on stable Rust.
///
/// [`Response::exit`](crate::pdk::Response::exit) and
/// [`Response::error`](crate::pdk::Response::error) resolve to `PdkResult<Never>`: Kong never
/// answers them, so on success their future never completes (the event ends and the
/// handler is dropped). `?` on the result has type `!`: it ends a handler as its last
/// expression (`kong.response().exit(401, "no").await?`) or as a statement, and the
/// compiler flags any code after it as unreachable.
///
/// ```
/// # #![deny(unreachable_code)]
/// use kong_rust_pdk::{Kong, PdkResult};
///
/// async fn deny(kong: &Kong) -> PdkResult<()> {
///     kong.response().exit(403, "forbidden").await?
/// }
/// ```
///
/// ```compile_fail
/// # #![deny(unreachable_code)]
/// use kong_rust_pdk::{Kong, PdkResult};
///
/// async fn deny(kong: &Kong) -> PdkResult<()> {
///     kong.response().exit(403, "forbidden").await?;
///     kong.response().set_header("x-after", "exit").await // error: unreachable
/// }
/// ```
pub type Never = <fn() -> ! as fn_output::FnOutput>::Output;

/// Public but unnameable outside this module: [`Never`] needs a trait to project through.
mod fn_output {
    /// Names a function pointer's return type, which is how [`Never`](super::Never) names
    /// `!` on stable Rust.
    pub trait FnOutput {
        /// The return type.
        type Output;
    }

    impl<T> FnOutput for fn() -> T {
        type Output = T;
    }
}

/// Why a PDK call or a phase handler failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PdkError {
    /// Kong answered a call that must return a value with nothing. Kong does this when the
    /// function failed on its side (it logs the error in its error.log), when the function
    /// does not exist in this Kong version, or when it is not available in this phase.
    #[error(
        "{method} returned no value (it failed on Kong's side or is unavailable here; see Kong's error.log)"
    )]
    NoValue {
        /// The PDK function called.
        method: Cow<'static, str>,
    },
    /// Kong's answer did not have the type the Rust method expects.
    #[error("{method} returned an unexpected value: {reason}")]
    Decode {
        /// The PDK function called.
        method: Cow<'static, str>,
        /// What did not match.
        reason: String,
    },
    /// The daemon did not pass the call to Kong: the Kong version it serves lacks the
    /// function, or the protocol in use cannot carry it.
    #[error("{method} is not available: {reason}")]
    Unavailable {
        /// The PDK function called.
        method: Cow<'static, str>,
        /// Why, as the daemon says it.
        reason: String,
    },
    /// The arguments could not be encoded as MessagePack.
    #[error("{method}: cannot encode the arguments: {reason}")]
    Encode {
        /// The PDK function called.
        method: Cow<'static, str>,
        /// What went wrong.
        reason: String,
    },
    /// Two PDK calls were awaited at the same time (for example with `join!`); Kong serves
    /// one call per event at a time.
    #[error(
        "{method} was called while {pending} was still waiting for Kong; await PDK calls one at a time"
    )]
    ConcurrentCall {
        /// The rejected call.
        method: Cow<'static, str>,
        /// The call still in flight.
        pending: Cow<'static, str>,
    },
    /// A PDK call was made after `kong.response.exit` or `kong.response.error`, which end
    /// the request: Kong never answers them and the event is already finished.
    #[error("{method} was called after {ending}, which ends the request; nothing can follow it")]
    AfterExit {
        /// The rejected call.
        method: Cow<'static, str>,
        /// The call that ended the request.
        ending: Cow<'static, str>,
    },
    /// A failure reported by plugin code.
    #[error("{0}")]
    Plugin(String),
}

impl PdkError {
    /// A plugin-defined error with a message, for handlers that want to fail an event.
    pub fn plugin(message: impl std::fmt::Display) -> PdkError {
        PdkError::Plugin(message.to_string())
    }
}

/// Why a plugin instance could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration JSON does not match the plugin's config type.
    #[error("invalid config{}: {reason}", at_path(path))]
    Invalid {
        /// Path of the offending field, e.g. `limits.minute` (`.` for the whole config).
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// The plugin's constructor refused the configuration.
    #[error("{0}")]
    Rejected(String),
}

/// ` at `path``, or nothing for the whole configuration (a missing top-level field).
fn at_path(path: &str) -> String {
    if path == "." || path.is_empty() {
        String::new()
    } else {
        format!(" at `{path}`")
    }
}

impl ConfigError {
    /// A constructor's refusal, with a message for the operator.
    pub fn rejected(message: impl std::fmt::Display) -> ConfigError {
        ConfigError::Rejected(message.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_config_names_a_field_path_but_not_the_whole_config() {
        let missing = ConfigError::Invalid {
            path: ".".into(),
            reason: "missing field `mode`".into(),
        };
        assert_eq!(missing.to_string(), "invalid config: missing field `mode`");
        let nested = ConfigError::Invalid {
            path: "limits.minute".into(),
            reason: "expected u32".into(),
        };
        assert_eq!(
            nested.to_string(),
            "invalid config at `limits.minute`: expected u32"
        );
    }
}
