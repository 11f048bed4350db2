//! `kong-rust-pluginserver try`: plays Kong for one event, so a plugin author sees a plugin
//! work without installing Kong.
//!
//! Kong's side is the test kit's simulation (`kong_rust_pdk::testkit`): it answers every
//! PDK call from a described request and records what the plugin did. The plugin runs
//! either in a running daemon (over its socket, exactly as Kong drives it) or straight from
//! a plugin file loaded into this process.

use std::{
    path::Path,
    sync::Arc,
    task::{Wake, Waker},
    thread::Thread,
};

use abi_stable::std_types::RStr;
use kong_rust_pdk::{
    Phase, Value,
    ffi::{EventPoll, FfiWaker, StepInput},
    testkit::{Simulation, TestRequest},
};
use serde::Deserialize;

use crate::{
    client::{Client, ClientError},
    kong_config,
    loader::{self, LoadError, LoadOptions},
};

/// Why an event could not be played.
#[derive(Debug, thiserror::Error)]
pub enum TryError {
    /// Talking to the daemon failed.
    #[error(transparent)]
    Client(#[from] ClientError),
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
    /// The configuration is not a JSON object.
    #[error("bad --config: {0}")]
    Config(String),
    /// The plugin refused the configuration or the event.
    #[error("{0}")]
    Plugin(String),
    /// The daemon answered something that is not StepData.
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
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
    /// The handler failed or panicked.
    Failed(String),
}

/// What happened.
pub struct Played {
    /// Every PDK call, in order.
    pub calls: Vec<PlayedCall>,
    /// How it ended.
    pub ending: Ending,
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
        simulation: Simulation::new(request),
    };
    match target {
        Target::Daemon(socket) => over_socket(socket, plugin, config, phase, &mut played)?,
        Target::File(path) => in_process(path, plugin, config, phase, &mut played)?,
    }
    Ok(played)
}

/// Answers one call like Kong; `None` means the event is over.
fn answer(
    played: &mut Played,
    phase: Phase,
    method: String,
    args: Vec<Value>,
) -> Option<Option<Value>> {
    let answer = played.simulation.answer_call(phase, &method, &args);
    let ends = matches!(
        method.as_str(),
        "kong.response.exit" | "kong.response.error"
    );
    played.calls.push(PlayedCall {
        method,
        args,
        answer: answer.clone(),
    });
    match answer {
        Err(lua_error) => {
            played.ending = Ending::KongError(lua_error);
            None
        }
        Ok(_) if ends => {
            played.ending = Ending::Exited;
            None
        }
        Ok(value) => Some(value),
    }
}

#[derive(Deserialize)]
struct StepData {
    #[serde(rename = "EventId")]
    event_id: u64,
    #[serde(rename = "Data")]
    data: StepPayload,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StepPayload {
    Call {
        #[serde(rename = "Method")]
        method: String,
        #[serde(rename = "Args", default)]
        args: Vec<Value>,
    },
    Ret(String),
}

/// The `plugin.Step*` name Kong uses for the result of `method`.
fn step_method(method: &str) -> &'static str {
    match method {
        "kong.client.get_credential" | "kong.client.authenticate" => "plugin.StepCredential",
        "kong.client.load_consumer" | "kong.client.get_consumer" => "plugin.StepConsumer",
        "kong.router.get_route" => "plugin.StepRoute",
        "kong.router.get_service" => "plugin.StepService",
        "kong.node.get_memory_stats" => "plugin.StepMemoryStats",
        "kong.request.get_query"
        | "kong.request.get_headers"
        | "kong.response.get_headers"
        | "kong.service.response.get_headers" => "plugin.StepMultiMap",
        _ => "plugin.Step",
    }
}

fn over_socket(
    socket: &Path,
    plugin: &str,
    config: &serde_json::Value,
    phase: Phase,
    played: &mut Played,
) -> Result<(), TryError> {
    let mut client = Client::connect(socket)?;
    let start = serde_json::json!({"Name": plugin, "Config": config.to_string()});
    let status = client.call("plugin.StartInstance", &start)?;
    let id = status["Id"]
        .as_u64()
        .ok_or_else(|| TryError::Protocol(format!("StartInstance without Id: {status}")))?;
    let event = serde_json::json!({"InstanceId": id, "EventName": phase.name()});
    let mut reply = client.call_raw("plugin.HandleEvent", &to_msgpack(&event));
    loop {
        let step: StepData = match reply {
            Ok(raw) => {
                rmp_serde::from_slice(&raw).map_err(|e| TryError::Protocol(e.to_string()))?
            }
            Err(ClientError::Remote(error)) => {
                played.ending = Ending::Failed(error);
                break;
            }
            Err(other) => return Err(other.into()),
        };
        let (method, args) = match step.data {
            StepPayload::Ret(ret) if ret == "ret" => break,
            StepPayload::Ret(other) => {
                return Err(TryError::Protocol(format!(
                    "Data {other:?} is neither a call nor \"ret\""
                )));
            }
            StepPayload::Call { method, args } => (method, args),
        };
        let step_name = step_method(&method);
        let Some(result) = answer(played, phase, method, args) else {
            break;
        };
        let mut entries = vec![(Value::from("EventId"), Value::Int(step.event_id as i64))];
        entries.extend(result.map(|v| (Value::from("Data"), v)));
        reply = client.call_raw(step_name, &to_msgpack(&Value::Map(entries)));
    }
    // Kong would keep the instance; a trial leaves nothing behind.
    let _ = client.call_raw("plugin.CloseInstance", &to_msgpack(&id));
    Ok(())
}

fn to_msgpack<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    value
        .serialize(&mut rmp_serde::Serializer::new(&mut out).with_struct_map())
        .expect("encoding into a Vec cannot fail");
    out
}

fn in_process(
    path: &Path,
    plugin: &str,
    config: &serde_json::Value,
    phase: Phase,
    played: &mut Played,
) -> Result<(), TryError> {
    let loaded = loader::load(path, &LoadOptions::default())?;
    if loaded.info.name != plugin {
        return Err(TryError::OtherPlugin {
            path: path.display().to_string(),
            found: loaded.info.name,
            wanted: plugin.to_owned(),
        });
    }
    let split = kong_config::split(config).map_err(TryError::Config)?;
    let plugin_error =
        |e: kong_rust_pdk::ffi::PluginErrorFfi| TryError::Plugin(e.message.into_string());
    let configured = (loaded.module.new_instance())(RStr::from(split.canonical.as_str()))
        .into_result()
        .map_err(plugin_error)?;
    let mut meta = split.meta;
    meta.id = 1;
    let meta = serde_json::to_string(&meta).expect("plain data");
    let instance = configured
        .bind(RStr::from(meta.as_str()))
        .into_result()
        .map_err(plugin_error)?;
    let mut event = instance
        .start_event(phase.code())
        .into_result()
        .map_err(plugin_error)?;
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let ffi_waker = FfiWaker::borrowed(&waker);
    let mut reply: Option<Option<Vec<u8>>> = None;
    loop {
        let input = match &reply {
            None => StepInput::Resume,
            Some(None) => StepInput::Nil,
            Some(Some(bytes)) => StepInput::Value(bytes.as_slice().into()),
        };
        let (method, args) = match event.poll(input, &ffi_waker) {
            EventPoll::Pending => {
                reply = None;
                std::thread::park();
                continue;
            }
            EventPoll::Done => return Ok(()),
            EventPoll::Failed(reason) | EventPoll::Panicked(reason) => {
                played.ending = Ending::Failed(reason.into_string());
                return Ok(());
            }
            EventPoll::Call { method, args } => (
                method.as_str().to_owned(),
                rmp_serde::from_slice::<Vec<Value>>(args.as_slice())
                    .map_err(|e| TryError::Protocol(format!("arguments of {method}: {e}")))?,
            ),
        };
        match answer(played, phase, method, args) {
            None => return Ok(()),
            Some(result) => reply = Some(result.map(|v| to_msgpack(&v))),
        }
    }
}

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}
