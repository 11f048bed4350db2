//! A simulated Kong worker, behaving as Kong's Lua client (`mp_rpc.lua`) does.
//!
//! Like Kong, it takes a connection from its keepalive pool (or opens one) for *every* RPC
//! call and puts it back afterwards, so the steps of one event travel on whatever
//! connection is idle. The event loop is Kong's, from the protocol crate
//! ([`kong::run_event`](kong_rust_pluginserver_protocol::kong::run_event)), and what Kong
//! does with the request is what each [`EventEnd`] says:
//!
//! - the handler returned: the request goes on with the plugin's effects;
//! - `kong.response.exit`/`error` (from the plugin, or from the daemon ending the request
//!   in a failed plugin's place): the request ends with that status, no Step follows;
//! - Kong raised inside a PDK call (an answer may say so): Kong's 500, no Step follows;
//! - an error reply: Kong logs it and **proxies the request without the plugin**. Tests
//!   that say "never proxied" assert `!end.proxied()`.

use std::{
    collections::VecDeque,
    io::Write,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use kong_rust_pluginserver_protocol::{
    frame,
    kong::{
        self as kong_side, CallResult, Incoming, KongSideError, PdkAnswer, Transport, incoming,
    },
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

/// What Kong does with one PDK call.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The function returned this (`None`: nil, a Step without `Data`).
    Value(Option<Value>),
    /// The function raised a Lua error (out of phase, bad arguments): the handler is
    /// aborted, no Step is sent, and the request ends with Kong's 500.
    Raise(String),
}

/// How an event ended, and so what Kong does with the request.
#[derive(Debug, Clone, PartialEq)]
pub enum EventEnd {
    /// The handler returned (`Data: "ret"`).
    Returned,
    /// `kong.response.exit` or `kong.response.error` ended the request with `status`.
    Ended {
        /// The PDK function.
        method: String,
        /// The status it was called with.
        status: u64,
    },
    /// Kong raised inside a PDK call.
    Raised(String),
    /// The daemon answered with an error: Kong logs it and proxies the request as if the
    /// plugin had not run.
    ErrorReply(String),
    /// ProtoBuf:1: the daemon closed the connection, its only error signal. Kong resets the
    /// instance and runs the event again.
    Closed,
}

impl EventEnd {
    /// Whether Kong proxies the request after this end.
    pub fn proxied(&self) -> bool {
        matches!(self, EventEnd::Returned | EventEnd::ErrorReply(_))
    }

    /// The status the request was ended with, if it was.
    pub fn status(&self) -> Option<u64> {
        match self {
            EventEnd::Ended { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The record of one event.
#[derive(Debug, Clone)]
pub struct EventRun {
    /// Its id, once the daemon gave one.
    pub event_id: Option<u64>,
    /// Every PDK call, in order (the one that ended the event included).
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
        Ok(Connection {
            stream,
            buffer: Vec::new(),
        })
    }

    fn next_msgid(&self) -> u64 {
        self.msgid.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// One RPC call on a pooled (or new) connection: `[0, msgid, method, [arg]]`.
    pub fn call(&self, method: &str, arg: Value) -> Result<Value, RpcError> {
        let msgid = self.next_msgid();
        let mut request = Vec::new();
        kong_side::request(&mut request, msgid, method, &msgpack::encode(&arg));
        self.exchange(None, msgid, &request)
    }

    /// One RPC call on a brand-new connection (which then joins the pool).
    pub fn call_fresh(&self, method: &str, arg: Value) -> Result<Value, RpcError> {
        let msgid = self.next_msgid();
        let mut request = Vec::new();
        kong_side::request(&mut request, msgid, method, &msgpack::encode(&arg));
        self.exchange(Some(self.connect()?), msgid, &request)
    }

    fn exchange(
        &self,
        conn: Option<Connection>,
        msgid: u64,
        request: &[u8],
    ) -> Result<Value, RpcError> {
        match self.raw_exchange(conn, msgid, request)? {
            CallResult::Ok(raw) => Ok(msgpack::decode(&raw)),
            CallResult::Err(text) => Err(RpcError::Remote(text)),
        }
    }

    /// Sends `request` on a pooled (or the given) connection and reads its response,
    /// handling notifications before it; the connection goes back to the pool.
    fn raw_exchange(
        &self,
        conn: Option<Connection>,
        msgid: u64,
        request: &[u8],
    ) -> Result<CallResult, RpcError> {
        let pooled = self.pool.lock().unwrap().pop_front();
        let mut conn = match conn.or(pooled) {
            Some(conn) => conn,
            None => self.connect()?,
        };
        assert!(
            conn.buffer.is_empty(),
            "the daemon sent bytes after a response: {:02x?}",
            conn.buffer
        );
        conn.stream
            .write_all(request)
            .map_err(|e| RpcError::Io(format!("write: {e}")))?;
        loop {
            let message = read_message(&mut conn)?;
            match incoming(&message, msgid).map_err(|e| RpcError::Io(e.to_string()))? {
                Incoming::Notification { method, value } => {
                    // First on a new connection; again when a successor daemon took the
                    // connection over (Kong reads notifications before any response).
                    assert_eq!(method, b"serverPid", "the only notification Kong knows");
                    let pid = value.expect("serverPid carries a pid");
                    self.server_pids.lock().unwrap().push(pid);
                }
                Incoming::Ok(raw) => {
                    let raw = raw.to_vec();
                    self.pool.lock().unwrap().push_back(conn);
                    return Ok(CallResult::Ok(raw));
                }
                Incoming::Err(text) => {
                    let text = std::str::from_utf8(text)
                        .expect("UTF-8 error text")
                        .to_owned();
                    self.pool.lock().unwrap().push_back(conn);
                    return Ok(CallResult::Err(text));
                }
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
        self.run_event_answering(instance_id, phase, |call| Answer::Value(answer(call)))
    }

    /// [`run_event`](Self::run_event) with answers that may raise, as Kong's Lua does for a
    /// call out of its phase or with bad arguments.
    pub fn run_event_answering(
        &self,
        instance_id: u64,
        phase: &str,
        mut answer: impl FnMut(&PdkCall) -> Answer,
    ) -> EventRun {
        let mut transport = Pooled(self);
        // Msgids only need to be unique per connection; take a block of them.
        let mut msgid = self.msgid.fetch_add(1 << 20, Ordering::Relaxed);
        let run = kong_side::run_event(&mut transport, &mut msgid, instance_id, phase, |m, a| {
            let call = PdkCall {
                method: m.to_owned(),
                args: decode_args(a),
            };
            match answer(&call) {
                Answer::Value(value) => PdkAnswer::Value(value.as_ref().map(msgpack::encode)),
                Answer::Raise(error) => PdkAnswer::Raise(error),
            }
        })
        .unwrap_or_else(|err| panic!("the daemon broke Kong's protocol: {err}"));
        let end = match run.end {
            kong_side::EventEnd::Returned => EventEnd::Returned,
            kong_side::EventEnd::Ended { method, args } => EventEnd::Ended {
                status: kong_side::first_uint_arg(&args)
                    .unwrap_or_else(|| panic!("{method} without a status")),
                method,
            },
            kong_side::EventEnd::Raised(error) => EventEnd::Raised(error),
            kong_side::EventEnd::ErrorReply(error) => EventEnd::ErrorReply(error),
        };
        EventRun {
            event_id: run.event_id,
            calls: run
                .calls
                .into_iter()
                .map(|(method, args)| PdkCall {
                    method,
                    args: decode_args(&args),
                })
                .collect(),
            end,
        }
    }
}

/// The pool as the protocol crate's transport.
struct Pooled<'a>(&'a Kong);

impl Transport for Pooled<'_> {
    fn call(&mut self, msgid: u64, request: &[u8]) -> Result<CallResult, KongSideError> {
        self.0
            .raw_exchange(None, msgid, request)
            .map_err(|e| match e {
                RpcError::Io(e) | RpcError::Remote(e) => KongSideError::Io(e),
            })
    }
}

fn decode_args(args: &[u8]) -> Vec<Value> {
    match msgpack::decode(args) {
        Value::Array(items) => items,
        other => panic!("Args is not an array: {other}"),
    }
}

/// The `plugin.Step*` name Kong uses for the result of `method`.
pub fn step_method_for(method: &str) -> &'static str {
    kong_side::step_method_for(method.as_bytes())
}

/// A pooled connection.
struct Connection {
    stream: UnixStream,
    /// Bytes read past the last message (a daemon must never send any).
    buffer: Vec<u8>,
}

/// Reads exactly one MessagePack message.
fn read_message(conn: &mut Connection) -> Result<Vec<u8>, RpcError> {
    use std::io::Read;
    let mut chunk = [0u8; 8192];
    loop {
        if let Ok(Some(len)) = frame::value_len(&conn.buffer, 1 << 30) {
            let message = conn.buffer[..len].to_vec();
            conn.buffer.drain(..len);
            return Ok(message);
        }
        let n = conn
            .stream
            .read(&mut chunk)
            .map_err(|e| RpcError::Io(format!("read: {e}")))?;
        if n == 0 {
            return Err(RpcError::Io("read: the connection closed".into()));
        }
        conn.buffer.extend_from_slice(&chunk[..n]);
    }
}

/// Reads exactly one MessagePack value.
pub fn read_value(stream: &mut impl std::io::Read) -> Result<Value, RpcError> {
    rmpv::decode::read_value(stream).map_err(|e| RpcError::Io(format!("read: {e}")))
}

impl Kong {
    /// `plugin.GetStatus`, with the daemon-wide and per-plugin figures flattened:
    /// `LiveEvents`, `Draining`, and `<plugin>.<Counter>` (Events, Failures, Panics,
    /// Abandoned, Evicted, Configurations, Instances = the number of instances).
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
