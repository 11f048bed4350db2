//! The stable binary interface between the kong-rust-pluginserver daemon and plugin
//! libraries.
//!
//! A plugin library exports one [`PluginModule`]; the daemon loads it with `abi_stable`,
//! which compares the layout of every type here, as the plugin was built, against the
//! daemon's before a single call is made. This crate's version is the ABI version and
//! changes only when these types do: plugins built against ABI 1.x load in every daemon that
//! speaks 1.y (see the crate's Cargo.toml for the rule).
//!
//! What may grow crosses as data, so that growing it never changes the layout:
//!
//! - a PDK call is a method name plus its arguments as one MessagePack array, and its
//!   result one MessagePack value: a new PDK function needs no new type; the daemon may
//!   answer a call itself with a refusal ([`REFUSAL_EXT_TYPE`]);
//! - a plugin describes itself with a JSON [`Manifest`], and the daemon describes a Kong
//!   instance with a JSON [`InstanceInfo`]: new fields are added with serde defaults, and
//!   fields a side does not know are ignored;
//! - the root module is a prefix type: a later minor version may append entry points after
//!   the last prefix field (as [`PluginModule::set_host_logger`] was), and a daemon sees
//!   `None` for those an older plugin lacks.
//!
//! [`StepInput`] and [`EventPoll`] are closed on purpose: they are the coroutine protocol
//! itself (resume with Kong's answer; stop at a call, at the end, or to wait), and a new kind
//! of stop would change what both sides must do, which is a new major ABI version.
//!
//! Plugin authors never use this crate directly: `kong-rust-pdk`'s `#[plugin]` builds the
//! module.

#![deny(missing_docs)]
// abi_stable's #[sabi_trait] expands to impls inside a const block.
#![allow(non_local_definitions)]

mod instance;
mod manifest;
mod waker;

pub use instance::InstanceInfo;
pub use manifest::{Manifest, OnFailure};
pub use waker::FfiWaker;

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, RResult, RSlice, RStr, RString},
};

/// The ABI version this crate defines (its package version).
pub const ABI_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The MessagePack ext type of a *refusal*: the daemon's answer to a PDK call it will not
/// pass to Kong (the configured Kong version lacks the function, or the protocol in use
/// cannot carry it). The payload is the reason, UTF-8. Kong itself never sends ext values,
/// so the PDK tells a refusal from any answer of Kong's and fails the call with it; a
/// plugin built before refusals existed fails to decode the answer, which fails the call
/// too.
pub const REFUSAL_EXT_TYPE: i8 = 75;

/// Encodes a refusal (see [`REFUSAL_EXT_TYPE`]) as one MessagePack value.
pub fn encode_refusal(reason: &str) -> Vec<u8> {
    let payload = reason.as_bytes();
    let mut out = Vec::with_capacity(payload.len() + 6);
    // ext 8/16/32: marker, length, type, payload.
    if let Ok(len) = u8::try_from(payload.len()) {
        out.extend_from_slice(&[0xc7, len]);
    } else if let Ok(len) = u16::try_from(payload.len()) {
        out.push(0xc8);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0xc9);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    }
    out.push(REFUSAL_EXT_TYPE as u8);
    out.extend_from_slice(payload);
    out
}

/// The reason of a refusal, if `value` (one MessagePack value) is one.
pub fn decode_refusal(value: &[u8]) -> Option<&str> {
    let (len, rest) = match value.split_first()? {
        (0xc7, rest) => (usize::from(*rest.first()?), rest.get(1..)?),
        (0xc8, rest) => (
            usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?)),
            rest.get(2..)?,
        ),
        (0xc9, rest) => (
            u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize,
            rest.get(4..)?,
        ),
        _ => return None,
    };
    let (&ty, payload) = rest.split_first()?;
    if ty as i8 != REFUSAL_EXT_TYPE || payload.len() != len {
        return None;
    }
    std::str::from_utf8(payload).ok()
}

/// The root module every plugin library exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// The plugin's [`Manifest`] as JSON text: name, version, priority, phases, config
    /// schema, failure policy.
    pub manifest: extern "C" fn() -> RResult<RString, PluginErrorFfi>,
    /// Builds the plugin for one configuration (JSON text, Kong's bookkeeping keys removed).
    /// The daemon calls it once per distinct configuration and shares the result.
    #[sabi(last_prefix_field)]
    pub new_instance:
        extern "C" fn(config_json: RStr<'_>) -> RResult<ConfiguredBox, PluginErrorFfi>,
    /// Routes the plugin's `tracing` and `log` output to the daemon's log. After the last
    /// prefix field: a plugin built without it still loads (the accessor returns `None`).
    #[sabi(missing_field(option))]
    pub set_host_logger: extern "C" fn(logger: HostLogger),
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "kong_rust_plugin";
    const NAME: &'static str = "kong_rust_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// Log verbosity, as the daemon and plugin libraries exchange it. Complete: these are the
/// levels of `tracing` and `log`, which will not grow.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Nothing is recorded (only as a maximum level).
    Off = 0,
    /// Errors.
    Error = 1,
    /// Warnings.
    Warn = 2,
    /// Informational lines.
    Info = 3,
    /// Debugging detail.
    Debug = 4,
    /// Everything.
    Trace = 5,
}

/// The daemon's log, as a plugin sees it.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct HostLogger {
    /// The most verbose level the daemon records.
    pub max_level: LogLevel,
    /// Records one line: level, plugin name, target (module path), message.
    pub log: extern "C" fn(level: LogLevel, plugin: RStr<'_>, target: RStr<'_>, message: RStr<'_>),
}

/// An error from plugin code, telling a panic from a returned error so the daemon can
/// count panics.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct PluginErrorFfi {
    /// What went wrong.
    pub message: RString,
    /// Whether plugin code panicked.
    pub panicked: bool,
}

/// Kong request phases a plugin can implement.
///
/// Crosses the boundary as its [`code`](Phase::code) (a `u8`), so a future phase does not
/// change any layout; a side that gets a code it does not know refuses it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// TLS handshake (`ssl_certificate_by_lua`); global plugins only.
    Certificate,
    /// Before routing; global plugins only.
    Rewrite,
    /// The main request phase, before proxying.
    Access,
    /// After the whole upstream response was buffered; listing it makes Kong buffer responses.
    Response,
    /// Stream (TCP/TLS) subsystem, before proxying.
    Preread,
    /// After the response was sent, in a timer, from saved request data.
    Log,
}

impl Phase {
    /// Every phase, in Kong's request order.
    pub const ALL: [Phase; 6] = [
        Phase::Certificate,
        Phase::Rewrite,
        Phase::Access,
        Phase::Response,
        Phase::Preread,
        Phase::Log,
    ];

    /// The event name Kong uses for this phase (`EventName` of `plugin.HandleEvent`).
    pub const fn name(self) -> &'static str {
        match self {
            Phase::Certificate => "certificate",
            Phase::Rewrite => "rewrite",
            Phase::Access => "access",
            Phase::Response => "response",
            Phase::Preread => "preread",
            Phase::Log => "log",
        }
    }

    /// The stable numeric code of this phase.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The phase with the given [`code`](Phase::code).
    pub fn from_code(code: u8) -> Option<Phase> {
        Phase::ALL.get(usize::from(code)).copied()
    }

    /// Parses a Kong event name.
    pub fn from_name(name: &[u8]) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.name().as_bytes() == name)
    }

    /// Whether a handler of this phase can end the request it runs for (`certificate` runs
    /// before there is a request, `log` after the response was sent).
    pub const fn can_end_request(self) -> bool {
        matches!(
            self,
            Phase::Rewrite | Phase::Access | Phase::Response | Phase::Preread
        )
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A plugin constructed for one configuration, shared by every Kong instance that has it.
#[sabi_trait]
pub trait ConfiguredFfi: Send + Sync {
    /// Binds it to one Kong instance: `instance_json` describes the instance (its id and
    /// Kong's bookkeeping keys) as the PDK's `InstanceInfo` JSON.
    fn bind(&self, instance_json: RStr<'_>) -> RResult<InstanceBox, PluginErrorFfi>;
}

/// A boxed configured plugin, owned by the daemon.
pub type ConfiguredBox = ConfiguredFfi_TO<'static, RBox<()>>;

/// A Kong instance: a configured plugin plus what Kong told about the instance.
#[sabi_trait]
pub trait InstanceFfi: Send + Sync {
    /// Starts the handler of phase `phase_code` ([`Phase::code`]) for one request.
    /// Returns an error if the plugin does not implement that phase.
    fn start_event(&self, phase_code: u8) -> RResult<EventBox, PluginErrorFfi>;
}

/// A boxed instance, owned by the daemon.
pub type InstanceBox = InstanceFfi_TO<'static, RBox<()>>;

/// One running phase handler: a coroutine that stops at every PDK call.
#[sabi_trait]
pub trait EventFfi: Send {
    /// Runs the handler until its next PDK call, its end, or until it waits on its own I/O.
    ///
    /// `input` carries the result of the previous PDK call, `waker` is woken when a handler
    /// that returned [`EventPoll::Pending`] can make progress.
    fn poll<'a>(&'a mut self, input: StepInput<'_>, waker: &FfiWaker<'_>) -> EventPoll<'a>;
}

/// A boxed event, owned by the daemon.
pub type EventBox = EventFfi_TO<'static, RBox<()>>;

/// What the daemon hands to a handler when polling it.
#[repr(C, u8)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub enum StepInput<'a> {
    /// Nothing new: the first poll of an event, or a wake-up after [`EventPoll::Pending`].
    Resume,
    /// Kong answered the pending PDK call with no value (the Step had no `Data`).
    Nil,
    /// Kong answered the pending PDK call; the slice is one MessagePack value.
    Value(RSlice<'a, u8>),
}

/// What a handler did when polled.
#[repr(C, u8)]
#[derive(StableAbi, Debug)]
pub enum EventPoll<'a> {
    /// The handler wants Kong to run a PDK function. `args` is a MessagePack array.
    Call {
        /// Kong PDK function, e.g. `kong.request.get_header`.
        method: RStr<'a>,
        /// Positional arguments, one MessagePack array.
        args: RSlice<'a, u8>,
    },
    /// The handler returned successfully.
    Done,
    /// The handler returned an error.
    Failed(RString),
    /// The handler panicked (the panic was caught in the plugin library).
    Panicked(RString),
    /// The handler waits on its own I/O; the waker will be woken.
    Pending,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_round_trip_and_nothing_else_is_one() {
        for reason in [
            "",
            "kong.service.set_retries needs Kong 3.8",
            &"x".repeat(300),
        ] {
            let bytes = encode_refusal(reason);
            assert_eq!(decode_refusal(&bytes), Some(reason));
        }
        assert_eq!(decode_refusal(&[0xa2, b'o', b'k']), None);
        assert_eq!(
            decode_refusal(&[0xc7, 0x01, 0x05, b'x']),
            None,
            "another ext type"
        );
        assert_eq!(decode_refusal(&[0xc7, 0x05, 75, b'x']), None, "truncated");
    }
}
