//! One Kong worker's MsgPack:1 client, as `kong/runloop/plugin_servers` (`mp_rpc.lua`,
//! `plugin.lua`) behaves: the bytes and the rules come from the protocol crate's Kong side;
//! this module keeps only what is Kong's *state* and *reactions*.
//!
//! - Every call takes a pooled connection ([`Pool`]), so the Steps of one event travel on
//!   whatever connection is idle.
//! - The instance id is cached per worker. A `serverPid` that changes forgets it; an error
//!   reply containing "no plugin instance" forgets it and runs the event again; while one
//!   event starts the instance, others wait for it in 100 ms sleeps (`get_instance_id`).
//!   A failed StartInstance raises (Kong's 500).
//! - `kong.response.exit`/`error` end the event; an error reply, a refused connect or a
//!   connection closed under a call are logged by Kong, which then proxies the request
//!   past the plugin.

use std::{cell::Cell, time::Duration};

use anyhow::bail;
use kong_rust_pluginserver_protocol::{
    decode::Reader,
    kong::{self as kong_side, Incoming, StepData},
};

use crate::{
    outcome::{EndMethod, Outcome},
    pool::{CallFailure, Pool, PoolCounts},
};

/// The value Kong answers for `kong.request.get_header("host")`.
const HOST: &[u8] = b"example.com";
/// `get_instance_id`'s wait for an instance another event is starting: 100 steps of
/// 100 ms.
const CLAIM_SLEEP: Duration = Duration::from_millis(100);
const CLAIM_STEPS: u32 = 100;
/// Kong retries "no plugin instance" without limit; a broken server must not hang a run.
const MAX_INSTANCE_RETRIES: u32 = 16;

/// What the worker knows of its instance (`running_instances[key]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InstanceState {
    Unknown,
    /// Another event is starting it.
    Starting,
    Known(u64),
}

/// Counters of a worker's client, besides event outcomes.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClientCounts {
    /// `serverPid` notifications read.
    pub notifications: u64,
    /// Instances started (the first one included).
    pub instance_starts: u64,
    /// Events run again after "no plugin instance".
    pub instance_retries: u64,
}

/// One event's result: its outcome and round trips.
pub struct EventResult {
    /// What Kong does with the request.
    pub outcome: Outcome,
    /// Requests sent for it (HandleEvent and Steps, StartInstance included).
    pub round_trips: u64,
}

/// How the bridge loop ended.
enum Bridge {
    Done(Outcome),
    NoInstance(String),
}

/// A Kong worker's client for one plugin configuration on one socket.
pub struct Client {
    pool: Pool,
    msgid: Cell<u64>,
    plugin: String,
    config: String,
    phase: String,
    instance: Cell<InstanceState>,
    server_pid: Cell<Option<u64>>,
    counts: Cell<ClientCounts>,
    /// Kong's answer to `get_header("host")`, encoded once.
    host_answer: Vec<u8>,
}

impl Client {
    /// A client for instances of `plugin` with `config` (Kong's JSON), running `phase`.
    pub fn new(pool: Pool, plugin: &str, config: String, phase: &str) -> Client {
        let mut host_answer = Vec::new();
        kong_side::write_str(&mut host_answer, HOST);
        Client {
            pool,
            msgid: Cell::new(0),
            plugin: plugin.to_owned(),
            config,
            phase: phase.to_owned(),
            instance: Cell::new(InstanceState::Unknown),
            server_pid: Cell::new(None),
            counts: Cell::new(ClientCounts::default()),
            host_answer,
        }
    }

    /// The pool's counters.
    pub fn pool_counts(&self) -> PoolCounts {
        self.pool.counts()
    }

    /// The client's counters.
    pub fn counts(&self) -> ClientCounts {
        self.counts.get()
    }

    fn count(&self, f: impl FnOnce(&mut ClientCounts)) {
        let mut counts = self.counts.get();
        f(&mut counts);
        self.counts.set(counts);
    }

    fn next_msgid(&self) -> u64 {
        let id = self.msgid.get() + 1;
        self.msgid.set(id);
        id
    }

    /// `rpc_notifications:serverPid`: a new pid means a new server, whose instances are
    /// not the ones Kong knows.
    fn notified(&self, method: &[u8], value: Option<u64>) {
        self.count(|c| c.notifications += 1);
        if method == b"serverPid" {
            if self.server_pid.get().is_some_and(|old| Some(old) != value) {
                self.instance.set(InstanceState::Unknown);
            }
            self.server_pid.set(value);
        }
    }

    /// One call: `encode` writes the request for the msgid given.
    async fn call<T>(
        &self,
        encode: impl FnOnce(&mut Vec<u8>, u64),
        read: impl FnOnce(Incoming<'_>) -> T,
    ) -> Result<T, CallFailure> {
        let msgid = self.next_msgid();
        self.pool
            .call(
                msgid,
                |out| encode(out, msgid),
                |method, value| self.notified(method, value),
                read,
            )
            .await
    }

    /// `plugin.StartInstance`: the new instance's id, or Kong's error text.
    pub async fn start_instance(&self, config: &str) -> Result<Result<u64, String>, CallFailure> {
        self.count(|c| c.instance_starts += 1);
        self.call(
            |out, msgid| kong_side::start_instance(out, msgid, &self.plugin, config),
            |incoming| match incoming {
                Incoming::Ok(status) => status_id(status).map_err(|e| e.to_string()),
                Incoming::Err(e) => Err(String::from_utf8_lossy(e).into_owned()),
                Incoming::Notification { .. } => Err("a notification as a response".into()),
            },
        )
        .await
    }

    /// Starts the worker's instance before the run, so a plugin that cannot start fails
    /// the run instead of showing as a stream of Kong 500s.
    pub async fn start_first_instance(&self) -> anyhow::Result<u64> {
        let mut round_trips = 0;
        match self.instance_id(&mut round_trips).await {
            Ok(id) => Ok(id),
            Err(Outcome::StartFailed(text) | Outcome::Refused(text)) => {
                bail!("StartInstance {}: {text}", self.plugin)
            }
            Err(other) => bail!("StartInstance {}: {other:?}", self.plugin),
        }
    }

    /// `get_instance_id`: the cached id, or a new instance (one event starts it, the
    /// others wait). `Err` is the event's outcome when there is none.
    async fn instance_id(&self, round_trips: &mut u64) -> Result<u64, Outcome> {
        let mut waited = 0;
        loop {
            match self.instance.get() {
                InstanceState::Known(id) => return Ok(id),
                InstanceState::Starting => {
                    waited += 1;
                    if waited > CLAIM_STEPS {
                        self.instance.set(InstanceState::Unknown);
                        return Err(Outcome::Refused(format!(
                            "Could not claim instance_id for {}",
                            self.plugin
                        )));
                    }
                    tokio::time::sleep(CLAIM_SLEEP).await;
                }
                InstanceState::Unknown => {
                    self.instance.set(InstanceState::Starting);
                    *round_trips += 1;
                    let started = self.start_instance(&self.config).await;
                    let error = match started {
                        Ok(Ok(id)) => {
                            self.instance.set(InstanceState::Known(id));
                            return Ok(id);
                        }
                        Ok(Err(text)) => text,
                        Err(CallFailure::Refused(text) | CallFailure::Lost(text)) => text,
                        Err(CallFailure::Protocol(text)) => format!("protocol: {text}"),
                    };
                    // Kong removes its claim and raises: the request gets Kong's 500.
                    self.instance.set(InstanceState::Unknown);
                    return Err(Outcome::StartFailed(error));
                }
            }
        }
    }

    /// `handle_event`: one event, from the instance id to its end, as Kong runs it.
    /// `abandon`: raise at the first PDK call after the first Step. `Err` only for a
    /// server that breaks the protocol.
    pub async fn run_event(&self, abandon: bool) -> anyhow::Result<EventResult> {
        let mut round_trips = 0;
        let mut retries = 0;
        loop {
            let instance = match self.instance_id(&mut round_trips).await {
                Ok(id) => id,
                Err(outcome) => {
                    return Ok(EventResult {
                        outcome,
                        round_trips,
                    });
                }
            };
            let outcome = match self.bridge_loop(instance, abandon, &mut round_trips).await {
                Ok(Bridge::Done(outcome)) => outcome,
                Ok(Bridge::NoInstance(text)) => {
                    // reset_instance, then handle_event again.
                    if self.instance.get() == InstanceState::Known(instance) {
                        self.instance.set(InstanceState::Unknown);
                    }
                    retries += 1;
                    self.count(|c| c.instance_retries += 1);
                    if retries > MAX_INSTANCE_RETRIES {
                        Outcome::ErrorReply(text)
                    } else {
                        continue;
                    }
                }
                Err(CallFailure::Refused(text)) => Outcome::Refused(text),
                Err(CallFailure::Lost(text)) => Outcome::ConnectionLost(text),
                Err(CallFailure::Protocol(text)) => bail!("the server broke the protocol: {text}"),
            };
            return Ok(EventResult {
                outcome,
                round_trips,
            });
        }
    }

    /// `bridge_loop`: HandleEvent, then a Step per PDK call until the handler returns or
    /// the event ends.
    async fn bridge_loop(
        &self,
        instance: u64,
        abandon: bool,
        round_trips: &mut u64,
    ) -> Result<Bridge, CallFailure> {
        *round_trips += 1;
        let mut next = self
            .call(
                |out, msgid| kong_side::handle_event(out, msgid, instance, &self.phase),
                |incoming| self.decide(incoming),
            )
            .await??;
        let mut event = None;
        let mut steps = 0;
        loop {
            let (event_id, step) = match next {
                Next::Bridge(bridge) => return Ok(bridge),
                Next::Step {
                    event_id,
                    method,
                    host,
                } => (event_id, (method, host)),
            };
            // Kong keeps the EventId HandleEvent gave.
            let event_id = *event.get_or_insert(event_id);
            if abandon && steps >= 1 {
                return Ok(Bridge::Done(Outcome::Abandoned));
            }
            let (method, host) = step;
            let data = host.then_some(self.host_answer.as_slice());
            *round_trips += 1;
            steps += 1;
            next = self
                .call(
                    |out, msgid| kong_side::step(out, msgid, method, event_id, data),
                    |incoming| self.decide(incoming),
                )
                .await??;
        }
    }

    /// Kong's reaction to a HandleEvent or Step response.
    fn decide(&self, incoming: Incoming<'_>) -> Result<Next, CallFailure> {
        let result = match incoming {
            Incoming::Ok(result) => result,
            Incoming::Err(err) => {
                let text = String::from_utf8_lossy(err).into_owned();
                return Ok(Next::Bridge(
                    if text.to_lowercase().contains("no plugin instance") {
                        Bridge::NoInstance(text)
                    } else {
                        Bridge::Done(Outcome::ErrorReply(text))
                    },
                ));
            }
            Incoming::Notification { .. } => {
                return Err(CallFailure::Protocol("a notification as a response".into()));
            }
        };
        Ok(match kong_side::step_data(result)? {
            StepData::Ret { .. } => Next::Bridge(Bridge::Done(Outcome::Returned)),
            StepData::Call {
                event_id,
                method,
                args,
            } => match EndMethod::of(method) {
                // Kong never answers these: the event ends when they are handed out.
                Some(end) => Next::Bridge(Bridge::Done(Outcome::Ended {
                    method: end,
                    status: kong_side::first_uint_arg(args)
                        .and_then(|s| u16::try_from(s).ok())
                        .unwrap_or(0),
                })),
                None => Next::Step {
                    event_id,
                    method: kong_side::step_method_for(method),
                    host: method == b"kong.request.get_header"
                        && kong_side::first_str_arg(args)
                            .is_some_and(|name| name.eq_ignore_ascii_case(b"host")),
                },
            },
        })
    }
}

/// What to do after a response.
enum Next {
    Bridge(Bridge),
    /// Answer a PDK call: `host` is Kong's answer to `get_header("host")`, else nil.
    Step {
        event_id: u64,
        method: &'static str,
        host: bool,
    },
}

/// The `Id` of an InstanceStatus map.
fn status_id(status: &[u8]) -> anyhow::Result<u64> {
    let mut r = Reader::new(status);
    for _ in 0..r.map_len()? {
        if r.bytes()? == b"Id" {
            return Ok(r.u64()?);
        }
        r.raw()?;
    }
    bail!("StartInstance answered without an Id")
}

#[cfg(test)]
mod tests {
    use kong_rust_pluginserver_protocol::kong::ends_event;

    use super::*;

    #[test]
    fn the_ending_calls_are_the_protocol_crates() {
        for method in [
            &b"kong.response.exit"[..],
            b"kong.response.error",
            b"kong.response.set_header",
        ] {
            assert_eq!(EndMethod::of(method).is_some(), ends_event(method));
        }
    }

    #[test]
    fn the_instance_id_is_read_from_the_status() {
        // {"Id": 7, "Config": "{}"}
        let status = [
            0x82, 0xa2, b'I', b'd', 0x07, 0xa6, b'C', b'o', b'n', b'f', b'i', b'g', 0xa2, b'{',
            b'}',
        ];
        assert_eq!(status_id(&status).unwrap(), 7);
        assert!(status_id(&[0x80]).is_err());
    }
}
