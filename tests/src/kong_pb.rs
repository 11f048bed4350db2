//! A simulated Kong worker speaking ProtoBuf:1, behaving as Kong's `pb_rpc.lua` does.
//!
//! Every top-level call takes a connection from the worker's keepalive pool (or opens one),
//! sends one `RpcCall` and, for an event, serves the whole PDK loop on that connection
//! before reading the `RpcReturn`; only then does the connection go back to the pool. An
//! event that ends the request (`kong.response.exit`), raises, or sees the connection
//! close leaves the connection unused, as Kong abandons it. Sequence numbers start at 2
//! and every `RpcReturn` must echo its call's (Kong asserts it).
//!
//! PDK calls are answered in MsgPack:1 terms (the same [`PdkCall`] and [`Answer`] as the
//! MsgPack:1 worker): the protocol crate turns the argument message into Kong's positional
//! Lua arguments and the answer into Kong's result message.

use std::{
    collections::VecDeque,
    io::Write,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use kong_rust_pluginserver_protocol::{
    kong::PdkAnswer,
    protobuf::{
        kong::{self as pb_kong, Ending},
        messages::rpc_return::Return,
    },
};
use rmpv::Value;

use crate::{
    kong::{Answer, EventEnd, EventRun, PdkCall, RpcError},
    msgpack,
};

const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// One nginx worker's ProtoBuf:1 client of one pluginserver socket.
pub struct KongPb {
    socket: PathBuf,
    pool: Mutex<VecDeque<UnixStream>>,
    /// `Rpc.msg_id`: the sequence of the last call.
    sequence: AtomicI64,
    connections: AtomicU64,
}

impl KongPb {
    /// A worker talking to `socket`.
    pub fn new(socket: impl AsRef<Path>) -> KongPb {
        KongPb {
            socket: socket.as_ref().to_owned(),
            pool: Mutex::new(VecDeque::new()),
            sequence: AtomicI64::new(0),
            connections: AtomicU64::new(0),
        }
    }

    /// How many connections this worker opened.
    pub fn connections_opened(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    fn checkout(&self) -> Result<UnixStream, RpcError> {
        if let Some(conn) = self.pool.lock().unwrap().pop_front() {
            return Ok(conn);
        }
        let stream = UnixStream::connect(&self.socket)
            .map_err(|e| RpcError::Io(format!("connect {}: {e}", self.socket.display())))?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        self.connections.fetch_add(1, Ordering::Relaxed);
        Ok(stream)
    }

    /// `msg_id = msg_id + 1; … sequence = msg_id + 1`: Kong's first call sends 2.
    fn next_sequence(&self) -> i64 {
        self.sequence.fetch_add(1, Ordering::Relaxed) + 2
    }

    /// One call without a PDK loop: the RpcReturn's oneof, or `Io` when the daemon closed
    /// the connection (Kong's `"closed"`).
    fn call(&self, encode: impl FnOnce(&mut Vec<u8>, i64)) -> Result<Option<Return>, RpcError> {
        let mut conn = self.checkout()?;
        let sequence = self.next_sequence();
        let mut out = Vec::new();
        encode(&mut out, sequence);
        conn.write_all(&out)
            .map_err(|e| RpcError::Io(format!("write: {e}")))?;
        let frame = pb_kong::read_frame(&mut conn)
            .map_err(|e| RpcError::Io(format!("read: {e}")))?
            .ok_or_else(|| RpcError::Io("closed".into()))?;
        let ret = pb_kong::read_return(&frame, sequence)
            .unwrap_or_else(|e| panic!("the daemon broke Kong's protocol: {e}"));
        self.pool.lock().unwrap().push_back(conn);
        Ok(ret.r#return)
    }

    /// `cmd_start_instance` with `config` as Kong sends it (JSON text with Kong's
    /// bookkeeping keys); returns the instance id.
    pub fn start_instance(&self, plugin: &str, config: serde_json::Value) -> Result<i32, RpcError> {
        let mut config = config;
        if let Some(obj) = config.as_object_mut() {
            obj.entry("__key__")
                .or_insert_with(|| format!("plugins:{plugin}:::::ws").into());
            obj.entry("__seq__").or_insert_with(|| 7.into());
            obj.entry("__plugin_id")
                .or_insert_with(|| "5b1e2b4e-0000-4000-8000-000000000001".into());
        }
        let text = config.to_string();
        match self.call(|out, seq| pb_kong::start_instance(out, seq, plugin, &text))? {
            // Kong reads only `instance_status.instance_id`.
            Some(Return::InstanceStatus(status)) => Ok(status.instance_id),
            other => panic!("StartInstance answered {other:?}"),
        }
    }

    /// `cmd_close_instance`.
    pub fn close_instance(&self, instance_id: i32) -> Result<Option<Return>, RpcError> {
        self.call(|out, seq| pb_kong::close_instance(out, seq, instance_id))
    }

    /// Plays Kong's `handle_event` for one event, answering each PDK call with `answer`.
    pub fn run_event(
        &self,
        instance_id: i32,
        phase: &str,
        mut answer: impl FnMut(&PdkCall) -> Option<Value>,
    ) -> EventRun {
        self.run_event_answering(instance_id, phase, |call| Answer::Value(answer(call)))
    }

    /// [`run_event`](Self::run_event) with answers that may raise.
    pub fn run_event_answering(
        &self,
        instance_id: i32,
        phase: &str,
        mut answer: impl FnMut(&PdkCall) -> Answer,
    ) -> EventRun {
        let mut conn = self.checkout().expect("connect");
        let sequence = self.next_sequence();
        let run = pb_kong::run_event(&mut conn, sequence, instance_id, phase, |method, args| {
            let call = PdkCall {
                method: method.to_owned(),
                args: decode_args(args),
            };
            match answer(&call) {
                Answer::Value(value) => PdkAnswer::Value(value.as_ref().map(msgpack::encode)),
                Answer::Raise(error) => PdkAnswer::Raise(error),
            }
        })
        .unwrap_or_else(|err| panic!("the daemon broke Kong's protocol: {err}"));
        let end = match run.end {
            Ending::Returned => {
                self.pool.lock().unwrap().push_back(conn);
                EventEnd::Returned
            }
            Ending::Ended { method, args } => EventEnd::Ended {
                status: decode_args(&args)[0]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{method} without a status")),
                method,
            },
            Ending::Raised(error) => EventEnd::Raised(error),
            Ending::Closed => EventEnd::Closed,
        };
        EventRun {
            event_id: None,
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

fn decode_args(args: &[u8]) -> Vec<Value> {
    match msgpack::decode(args) {
        Value::Array(items) => items,
        other => panic!("Lua arguments are not an array: {other}"),
    }
}
