//! The stable binary interface between the daemon and a plugin `.so`.
//!
//! Everything here is `#[repr(C)]` and derives [`StableAbi`], so `abi_stable` can compare the
//! layout a plugin was built with against the daemon's before a single call is made. The
//! root module is a *prefix type*: later minor versions may append fields after the last
//! prefix field without breaking plugins that were built earlier.
//!
//! A PDK call crosses the boundary generically (method name plus MessagePack arguments out,
//! MessagePack result in), so adding PDK functions never changes this interface.
//!
//! Plugin authors never touch this module: [`plugin`](crate::plugin) and the export macro
//! produce it. It is public for the daemon.

mod export;
mod waker;

pub use export::module_for;
pub use waker::FfiWaker;

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, RResult, RSlice, RStr, RString},
};

/// The root module every plugin library exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// Static description of the plugin: name, version, priority, phases, schema.
    pub info: extern "C" fn() -> RResult<PluginInfoFfi, PluginErrorFfi>,
    /// Builds the plugin for one configuration (JSON text, Kong's bookkeeping keys removed).
    /// The daemon calls it once per distinct configuration and shares the result.
    #[sabi(last_prefix_field)]
    pub new_instance:
        extern "C" fn(config_json: RStr<'_>) -> RResult<ConfiguredBox, PluginErrorFfi>,
    /// Routes the plugin's `tracing` and `log` output to the daemon's log. A field after
    /// the last prefix field: a daemon can load a plugin built before it existed (the
    /// accessor then returns `None`).
    #[sabi(missing_field(option))]
    pub set_host_logger: extern "C" fn(logger: HostLogger),
}

/// The daemon's log, as a plugin sees it.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct HostLogger {
    /// The most verbose level the daemon records: 1 error, 2 warn, 3 info, 4 debug,
    /// 5 trace (0: nothing).
    pub max_level: u8,
    /// Records one line: level (as above), plugin name, target (module path), message.
    pub log: extern "C" fn(level: u8, plugin: RStr<'_>, target: RStr<'_>, message: RStr<'_>),
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "kong_rust_plugin";
    const NAME: &'static str = "kong_rust_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
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

/// Static description of a plugin, as the daemon reads it at load time.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct PluginInfoFfi {
    /// The plugin name Kong knows it by (`plugins = bundled,<name>`).
    pub name: RString,
    /// The plugin version, `x.y.z`.
    pub version: RString,
    /// Handler priority: Kong runs plugins of a phase from the highest priority down.
    pub priority: i64,
    /// Bit set of implemented phases; bit `n` is the phase with [`Phase::code`] `n`.
    pub phases: u32,
    /// JSON text of the Kong schema record of the plugin's `config` field.
    pub config_schema: RString,
}

/// Kong request phases a plugin can implement.
///
/// Encoded across the boundary as a small integer ([`Phase::code`]) rather than an enum so a
/// future phase does not change the ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

    /// The set of `phases` as the bit set carried by [`PluginInfoFfi::phases`].
    pub fn bits(phases: &[Phase]) -> u32 {
        phases.iter().fold(0, |acc, p| acc | 1 << p.code())
    }

    /// The phases contained in a bit set, in Kong's request order.
    pub fn from_bits(bits: u32) -> impl Iterator<Item = Phase> {
        Phase::ALL
            .into_iter()
            .filter(move |p| bits & (1 << p.code()) != 0)
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
    /// Binds it to one Kong instance: `instance_json` is the
    /// [`InstanceInfo`](crate::InstanceInfo) (id and Kong's bookkeeping keys) as JSON.
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
    fn poll<'a>(&'a mut self, input: StepInput<'_>, waker: &FfiWaker) -> EventPoll<'a>;
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
