//! A simulated Kong worker.
//!
//! Like Kong, it takes a connection from its keepalive pool (or opens one) for *every* RPC
//! call and puts it back afterwards, so the steps of one event travel on whatever
//! connection is idle. It reads the `serverPid` notification the daemon sends first on each
//! connection, checks that each response echoes its msgid, and plays Kong's event loop.

use std::{
    collections::VecDeque,
    io::{BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rmpv::Value;

use crate::msgpack::{self, get, map};

/// How long a test waits for one response before failing.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// An RPC failure as Kong would see it.
#[derive(Debug, Clone, PartialEq)]
pub enum RpcError {
    /// The daemon answered with an error string.
    Remote(String),
    /// The connection failed or closed without an answer.
    Io(String),
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RpcError::Remote(e) => write!(f, "remote error: {e}"),
            RpcError::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

/// One nginx worker's view of one pluginserver socket.
pub struct Kong {
    socket: PathBuf,
    pool: Mutex<VecDeque<Connection>>,
    msgid: AtomicU64,
    server_pids: Mutex<Vec<u64>>,
    connections: AtomicU64,
}

/// A PDK call a handler made.
#[derive(Debug, Clone, PartialEq)]
pub struct PdkCall {
    /// e.g. `kong.request.get_header`.
    pub method: String,
    /// The positional arguments.
    pub args: Vec<Value>,
}

impl PdkCall {
    /// A call, for comparing with the ones a plugin made.
    pub fn new(method: &str, args: Vec<Value>) -> PdkCall {
        PdkCall {
            method: method.to_owned(),
            args,
        }
    }
}

/// How an event ended.
#[derive(Debug, Clone, PartialEq)]
pub enum EventEnd {
    /// The handler returned (`Data: "ret"`).
    Ret,
    /// The handler called `kong.response.exit` or `kong.response.error`.
    Exit,
    /// The daemon answered with an error.
    Error(String),
}

/// The record of one event.
#[derive(Debug, Clone)]
pub struct EventRun {
    /// Its id, once the daemon gave one.
    pub event_id: Option<u64>,
    /// Every PDK call, in order.
    pub calls: Vec<PdkCall>,
    /// How it ended.
    pub end: EventEnd,
}

impl Kong {
    /// A worker talking to `socket`.
    pub fn new(socket: impl AsRef<Path>) -> Kong {
        Kong {
            socket: socket.as_ref().to_owned(),
            pool: Mutex::new(VecDeque::new()),
            msgid: AtomicU64::new(0),
            server_pids: Mutex::new(Vec::new()),
            connections: AtomicU64::new(0),
        }
    }

    /// The `serverPid` values seen, one per connection opened.
    pub fn server_pids(&self) -> Vec<u64> {
        self.server_pids.lock().unwrap().clone()
    }

    /// How many connections this worker opened.
    pub fn connections_opened(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    fn connect(&self) -> Result<Connection, RpcError> {
        let stream = UnixStream::connect(&self.socket)
            .map_err(|e| RpcError::Io(format!("connect {}: {e}", self.socket.display())))?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        self.connections.fetch_add(1, Ordering::Relaxed);
        Ok(BufReader::new(stream))
    }

    /// One RPC call on a pooled (or new) connection: `[0, msgid, method, [arg]]`.
    pub fn call(&self, method: &str, arg: Value) -> Result<Value, RpcError> {
        let pooled = self.pool.lock().unwrap().pop_front();
        match pooled {
            Some(conn) => self.call_on(conn, false, method, arg),
            None => self.call_on(self.connect()?, true, method, arg),
        }
    }

    /// One RPC call on a brand-new connection (which then joins the pool).
    pub fn call_fresh(&self, method: &str, arg: Value) -> Result<Value, RpcError> {
        self.call_on(self.connect()?, true, method, arg)
    }

    fn call_on(
        &self,
        mut conn: Connection,
        fresh: bool,
        method: &str,
        arg: Value,
    ) -> Result<Value, RpcError> {
        let msgid = self.msgid.fetch_add(1, Ordering::Relaxed) + 1;
        let request = Value::Array(vec![
            Value::from(0),
            Value::from(msgid),
            Value::from(method),
            Value::Array(vec![arg]),
        ]);
        conn.get_mut()
            .write_all(&msgpack::encode(&request))
            .map_err(|e| RpcError::Io(format!("write: {e}")))?;
        let mut expect_notification = fresh;
        loop {
            let message = read_value(&mut conn)?;
            let items = message
                .as_array()
                .ok_or_else(|| RpcError::Io(format!("not an array: {message}")))?;
            match items.first().and_then(Value::as_u64) {
                Some(2) if expect_notification => {
                    assert_eq!(items.len(), 3, "notification shape: {message}");
                    assert_eq!(items[1].as_str(), Some("serverPid"), "{message}");
                    let pid = items[2].as_u64().expect("serverPid carries a pid");
                    self.server_pids.lock().unwrap().push(pid);
                    expect_notification = false;
                }
                Some(1) => {
                    assert_eq!(items.len(), 4, "response shape: {message}");
                    assert_eq!(items[1].as_u64(), Some(msgid), "msgid echo: {message}");
                    self.pool.lock().unwrap().push_back(conn);
                    return match &items[2] {
                        Value::Nil => Ok(items[3].clone()),
                        Value::String(err) => Err(RpcError::Remote(
                            err.as_str().expect("UTF-8 error text").to_owned(),
                        )),
                        other => panic!("error must be a string or nil, got {other}"),
                    };
                }
                _ => panic!("unexpected message from the daemon: {message}"),
            }
        }
    }

    /// `plugin.StartInstance` with `config` as Kong sends it (JSON text, with Kong's own
    /// bookkeeping keys added); returns the instance id.
    pub fn start_instance(&self, plugin: &str, config: serde_json::Value) -> Result<u64, RpcError> {
        let mut config = config;
        if let Some(obj) = config.as_object_mut() {
            obj.entry("__key__")
                .or_insert_with(|| format!("plugins:{plugin}:::::ws").into());
            obj.entry("__seq__").or_insert_with(|| 7.into());
            obj.entry("__plugin_id")
                .or_insert_with(|| "5b1e2b4e-0000-4000-8000-000000000001".into());
            obj.entry("__ws_id")
                .or_insert_with(|| "0dc6f45b-0000-4000-8000-000000000002".into());
        }
        let status = self.call(
            "plugin.StartInstance",
            map([
                ("Name", Value::from(plugin)),
                ("Config", Value::from(config.to_string())),
            ]),
        )?;
        Ok(get(&status, "Id")
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("StartInstance result without Id: {status}")))
    }

    /// `plugin.HandleEvent` alone: starts `phase` of `instance_id` and returns its first
    /// StepData, leaving the Steps to the caller.
    pub fn handle_event(&self, instance_id: u64, phase: &str) -> Result<Value, RpcError> {
        self.call(
            "plugin.HandleEvent",
            map([
                ("InstanceId", Value::from(instance_id)),
                ("EventName", Value::from(phase)),
            ]),
        )
    }

    /// Plays Kong's event loop: HandleEvent, then one Step per PDK call, each on whatever
    /// pooled connection comes first. `answer` gives Kong's result for a call (`None`: the
    /// Step carries no `Data`, as when a PDK function returns nil).
    pub fn run_event(
        &self,
        instance_id: u64,
        phase: &str,
        mut answer: impl FnMut(&PdkCall) -> Option<Value>,
    ) -> EventRun {
        let mut run = EventRun {
            event_id: None,
            calls: Vec::new(),
            end: EventEnd::Ret,
        };
        let mut reply = self.handle_event(instance_id, phase);
        loop {
            let step = match reply {
                Ok(step) => step,
                Err(RpcError::Remote(err)) => {
                    run.end = EventEnd::Error(err);
                    return run;
                }
                Err(err) => panic!("event transport failed: {err}"),
            };
            let event_id = get(&step, "EventId")
                .and_then(Value::as_u64)
                .unwrap_or_else(|| panic!("StepData without EventId: {step}"));
            assert!(
                run.event_id.is_none_or(|id| id == event_id),
                "EventId changed within an event"
            );
            run.event_id = Some(event_id);
            let data =
                get(&step, "Data").unwrap_or_else(|| panic!("StepData without Data: {step}"));
            if data.as_str() == Some("ret") {
                run.end = EventEnd::Ret;
                return run;
            }
            let call = PdkCall {
                method: get(data, "Method")
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| panic!("call without Method: {data}"))
                    .to_owned(),
                args: get(data, "Args")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_else(|| panic!("call without an Args array: {data}")),
            };
            let ends = matches!(
                call.method.as_str(),
                "kong.response.exit" | "kong.response.error"
            );
            let result = if ends { None } else { answer(&call) };
            let step_method = step_method_for(&call.method);
            run.calls.push(call);
            if ends {
                run.end = EventEnd::Exit;
                return run;
            }
            let mut entries = vec![("EventId", Value::from(event_id))];
            if let Some(value) = result {
                entries.push(("Data", value));
            }
            reply = self.call(step_method, map(entries));
        }
    }
}

/// The `plugin.Step*` name Kong uses for the result of `method`.
pub fn step_method_for(method: &str) -> &'static str {
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

/// A pooled connection; buffered, since Kong reads a whole response per call.
type Connection = BufReader<UnixStream>;

/// Reads exactly one MessagePack value.
pub fn read_value(stream: &mut impl std::io::Read) -> Result<Value, RpcError> {
    rmpv::decode::read_value(stream).map_err(|e| RpcError::Io(format!("read: {e}")))
}

impl Kong {
    /// `plugin.GetStatus`, with the daemon-wide and per-plugin figures flattened:
    /// `LiveEvents`, `Draining`, and `<plugin>.<Counter>` (Events, Failures, Panics,
    /// Abandoned, Configurations, Instances = the number of instances).
    pub fn status(&self) -> std::collections::HashMap<String, u64> {
        let status = self
            .call("plugin.GetStatus", Value::Nil)
            .expect("GetStatus");
        let mut figures = std::collections::HashMap::new();
        for key in ["LiveEvents", "Pid"] {
            if let Some(v) = get(&status, key).and_then(Value::as_u64) {
                figures.insert(key.to_owned(), v);
            }
        }
        if let Some(draining) = get(&status, "Draining").and_then(Value::as_bool) {
            figures.insert("Draining".to_owned(), u64::from(draining));
        }
        for (name, plugin) in get(&status, "Plugins")
            .and_then(Value::as_map)
            .into_iter()
            .flatten()
        {
            let name = name.as_str().unwrap_or_default();
            for (key, value) in plugin.as_map().into_iter().flatten() {
                let key = key.as_str().unwrap_or_default();
                let figure = match value {
                    Value::Array(items) => Some(items.len() as u64),
                    other => other.as_u64(),
                };
                if let Some(figure) = figure {
                    figures.insert(format!("{name}.{key}"), figure);
                }
            }
        }
        figures
    }
}
