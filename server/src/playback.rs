//! `kong-rust-pluginserver try`: plays Kong for one event, so a plugin author sees a plugin
//! work without installing Kong.
//!
//! Kong's side is the test kit's simulation (`kong-rust-pdk-testkit`): it answers every
//! PDK call from a described request and records what the plugin did. The event loop is
//! Kong's ([`kong::run_event`]); the plugin runs either in a running daemon (over its
//! socket, exactly as Kong drives it) or in a [`Daemon`] made in this process from a plugin
//! file, answering the same RPCs through the same operations as a connection would.

use std::path::Path;

use kong_rust_pdk::{
    Phase, Value,
    schema::{self, ConfigViolations},
};
use kong_rust_pdk_testkit::{Simulation, TestRequest};
use kong_rust_pluginserver_protocol::{
    RequestError,
    kong::{self, CallResult, Client, ClientError, EventEnd, KongSideError, PdkAnswer, Transport},
    parse_request,
};

use crate::{
    daemon::{Daemon, Scope},
    loader::{self, LoadError, LoadOptions},
    rpc,
    settings::Limits,
    wait::block_on,
};

/// Why an event could not be played.
#[derive(Debug, thiserror::Error)]
pub enum TryError {
    /// Talking to the daemon failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The daemon's answers are not what Kong accepts.
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(#[from] KongSideError),
    /// The plugin file could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The file holds another plugin than the one asked for.
    #[error("{path} holds plugin {found}, not {wanted}")]
    OtherPlugin {
        /// The file.
        path: String,
        /// Its plugin.
        found: String,
        /// The plugin asked for.
        wanted: String,
    },
    /// StartInstance failed: the plugin refused the configuration.
    #[error("{0}")]
    Plugin(String),
    /// The daemon does not serve the plugin (its message lists the plugins it serves).
    #[error("{0}")]
    UnknownPlugin(String),
    /// Kong would refuse the configuration: it breaks the plugin's schema.
    #[error(transparent)]
    Config(#[from] ConfigViolations),
    /// The plugin has no handler for the phase, so Kong never runs it there.
    #[error(
        "plugin {plugin} has no {phase} handler (Kong never calls it in that phase); it handles: {}",
        handled.join(", ")
    )]
    NoHandler {
        /// The plugin.
        plugin: String,
        /// The phase asked for.
        phase: Phase,
        /// The phases it has handlers for.
        handled: Vec<String>,
    },
}

impl TryError {
    /// Whether the plugin or its configuration is at fault (rather than the trial's setup).
    pub fn refuses_config(&self) -> bool {
        matches!(self, TryError::Config(_) | TryError::Plugin(_))
    }
}

/// One PDK call of the transcript.
#[derive(Debug, Clone)]
pub struct PlayedCall {
    /// Kong PDK function.
    pub method: String,
    /// Its arguments.
    pub args: Vec<Value>,
    /// Kong's answer: `Ok(None)` nil, `Err` a Lua error that aborts the handler.
    pub answer: Result<Option<Value>, String>,
}

/// How the event ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The handler returned.
    Returned,
    /// The handler ended the request (`kong.response.exit` or `.error`).
    Exited,
    /// Kong raised an error for a PDK call, aborting the handler.
    KongError(String),
    /// The daemon answered with an error (Kong would log it and proxy the request).
    Failed(String),
}

/// A failure of the plugin during the event, as the daemon counted it. The daemon fails
/// closed: it ended the request in the plugin's place (`kong.response.error(500)`), or let
/// it go on where the phase cannot end it or the plugin fails open; its log says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The handler returned an error.
    Error,
    /// The handler panicked.
    Panic,
}

/// What happened.
pub struct Played {
    /// Every PDK call, in order.
    pub calls: Vec<PlayedCall>,
    /// How it ended.
    pub ending: Ending,
    /// Whether the handler failed, and how.
    pub failure: Option<Failure>,
    /// The configuration the plugin got: the one given, with Kong's defaults.
    pub config: serde_json::Value,
    /// Kong's side: the response, the upstream request, logs.
    pub simulation: Simulation,
}

/// Where the plugin runs.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A running daemon, through this socket.
    Daemon(&'a Path),
    /// A plugin library, loaded into this process.
    File(&'a Path),
}

/// Plays one `phase` event of `plugin` configured with `config` for `request`.
pub fn play(
    target: Target<'_>,
    plugin: &str,
    config: &serde_json::Value,
    phase: Phase,
    request: TestRequest,
) -> Result<Played, TryError> {
    let mut played = Played {
        calls: Vec::new(),
        ending: Ending::Returned,
        failure: None,
        config: config.clone(),
        simulation: Simulation::new(request),
    };
    match target {
        Target::Daemon(socket) => {
            let mut client = Client::connect(socket)?;
            play_on(&mut client, plugin, config, phase, &mut played)?;
        }
        Target::File(path) => {
            let loaded = loader::load(path, &LoadOptions::default())?;
            if loaded.manifest.name != plugin {
                return Err(TryError::OtherPlugin {
                    path: path.display().to_string(),
                    found: loaded.manifest.name,
                    wanted: plugin.to_owned(),
                });
            }
            let mut daemon = InProcess {
                daemon: Daemon::new([loaded], Limits::default()),
            };
            play_on(&mut daemon, plugin, config, phase, &mut played)?;
        }
    }
    Ok(played)
}

/// What Kong checks first, from the plugin's dump: that it handles `phase`, and that
/// `config` passes its schema (which fills in the defaults). Returns the configuration Kong
/// would send.
fn check_as_kong(
    transport: &mut impl Transport,
    msgid: u64,
    plugin: &str,
    config: &serde_json::Value,
    phase: Phase,
) -> Result<serde_json::Value, TryError> {
    let mut arg = Vec::new();
    rmp::encode::write_str(&mut arg, plugin).expect("writing to a Vec");
    let mut request = Vec::new();
    kong::request(&mut request, msgid, "plugin.GetPluginInfo", &arg);
    let info = match transport.call(msgid, &request)? {
        CallResult::Ok(raw) => raw,
        CallResult::Err(error) => return Err(TryError::UnknownPlugin(error)),
    };
    let info: serde_json::Value =
        rmp_serde::from_slice(&info).map_err(|_| KongSideError::Shape("a plugin description"))?;
    let handled: Vec<String> = info["Phases"]
        .as_array()
        .ok_or(KongSideError::Shape("a plugin description with Phases"))?
        .iter()
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect();
    if !handled.iter().any(|p| p == phase.name()) {
        return Err(TryError::NoHandler {
            plugin: plugin.to_owned(),
            phase,
            handled,
        });
    }
    let record = schema::config_record_of(&info["Schema"])
        .ok_or(KongSideError::Shape("a plugin schema with a config record"))?;
    Ok(schema::check_config(record, config)?)
}

/// The daemon's failure counters of `plugin`: (errors, panics).
fn failure_counts(
    transport: &mut impl Transport,
    msgid: u64,
    plugin: &str,
) -> Result<(u64, u64), TryError> {
    let mut request = Vec::new();
    kong::request(&mut request, msgid, "plugin.GetStatus", &[0x90]);
    let status = match transport.call(msgid, &request)? {
        CallResult::Ok(raw) => raw,
        CallResult::Err(error) => return Err(TryError::Plugin(error)),
    };
    let status: serde_json::Value =
        rmp_serde::from_slice(&status).map_err(|_| KongSideError::Shape("a daemon status"))?;
    let counters = &status["Plugins"][plugin];
    let count = |key: &str| counters[key].as_u64().unwrap_or(0);
    Ok((count("Failures"), count("Panics")))
}

/// StartInstance, one event as Kong plays it, CloseInstance.
fn play_on(
    transport: &mut impl Transport,
    plugin: &str,
    config: &serde_json::Value,
    phase: Phase,
    played: &mut Played,
) -> Result<(), TryError> {
    let mut msgid = 1;
    let config = check_as_kong(transport, msgid, plugin, config, phase)?;
    msgid += 1;
    let before = failure_counts(transport, msgid, plugin)?;
    msgid += 1;
    let mut request = Vec::new();
    kong::start_instance(&mut request, msgid, plugin, &config.to_string());
    played.config = config;
    let status = match transport.call(msgid, &request)? {
        CallResult::Ok(raw) => raw,
        CallResult::Err(error) => return Err(TryError::Plugin(error)),
    };
    let status: serde_json::Value = rmp_serde::from_slice(&status)
        .map_err(|_| KongSideError::Shape("an instance status map"))?;
    let id = status["Id"]
        .as_u64()
        .ok_or(KongSideError::Shape("an instance status with Id"))?;
    let simulation = &mut played.simulation;
    let calls = &mut played.calls;
    let run = kong::run_event(transport, &mut msgid, id, phase.name(), |method, args| {
        let args: Vec<Value> = rmp_serde::from_slice(args).unwrap_or_default();
        let answer = simulation.answer_call(phase, method, &args);
        calls.push(PlayedCall {
            method: method.to_owned(),
            args,
            answer: answer.clone(),
        });
        match answer {
            Ok(value) => PdkAnswer::Value(value.map(|v| encode_value(&v))),
            Err(lua_error) => PdkAnswer::Raise(lua_error),
        }
    })?;
    played.ending = match run.end {
        EventEnd::Returned => Ending::Returned,
        EventEnd::Ended { method, args } => {
            // The simulation records the response the exit makes.
            let args: Vec<Value> = rmp_serde::from_slice(&args).unwrap_or_default();
            let answer = played.simulation.answer_call(phase, &method, &args);
            played.calls.push(PlayedCall {
                method,
                args,
                answer,
            });
            Ending::Exited
        }
        EventEnd::Raised(error) => Ending::KongError(error),
        EventEnd::ErrorReply(error) => Ending::Failed(error),
    };
    // The daemon counts the failures it handled in the plugin's place. (A daemon serving
    // real traffic at the same time may count some of those too.)
    let after = failure_counts(transport, msgid + 1, plugin)?;
    msgid += 1;
    played.failure = if after.1 > before.1 {
        Some(Failure::Panic)
    } else if after.0 > before.0 {
        Some(Failure::Error)
    } else {
        None
    };
    // Kong would keep the instance; a trial leaves nothing behind.
    request.clear();
    msgid += 1;
    kong::close_instance(&mut request, msgid, id);
    let _ = transport.call(msgid, &request);
    Ok(())
}

fn encode_value(value: &Value) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("a Value always encodes")
}

/// A daemon in this process, answering requests as a connection would.
struct InProcess {
    daemon: Daemon,
}

impl Transport for InProcess {
    fn call(&mut self, msgid: u64, request: &[u8]) -> Result<CallResult, KongSideError> {
        let mut out = Vec::new();
        match parse_request(request) {
            Ok(request) => block_on(rpc::respond(&self.daemon, &Scope::All, &request, &mut out)),
            Err(RequestError::Malformed { reason, .. }) => {
                return Err(KongSideError::Io(format!("malformed request: {reason}")));
            }
            Err(err) => return Err(KongSideError::Io(err.to_string())),
        }
        match kong::incoming(&out, msgid)? {
            kong::Incoming::Ok(raw) => Ok(CallResult::Ok(raw.to_vec())),
            kong::Incoming::Err(text) => {
                Ok(CallResult::Err(String::from_utf8_lossy(text).into_owned()))
            }
            kong::Incoming::Notification { .. } => Err(KongSideError::Shape("a response")),
        }
    }
}
