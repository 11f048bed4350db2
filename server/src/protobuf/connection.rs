//! One ProtoBuf:1 connection from Kong: `RpcCall` frames, each answered by one `RpcReturn`
//! frame; an event runs its whole PDK loop on the connection before its `RpcReturn`.
//! Generic over [`Transport`], like the MsgPack:1 loop, so it runs on a thread of its own
//! or on an event loop.

use std::ops::Range;

use kong_rust_plugin_abi::{Phase, encode_refusal};
use kong_rust_pluginserver_protocol::protobuf::{
    Message, frame,
    messages::{
        CmdCloseInstance, CmdGetInstanceStatus, CmdGetPluginInfo, CmdHandleEvent, CmdStartInstance,
        InstanceStatus, PluginInfo, PluginNames, RpcCall, RpcReturn, rpc_call::Call,
        rpc_return::Return,
    },
    msgpack,
    transcode::{self, Answer, Pending, Sent},
};

use crate::{
    connection::{Context, INPUT_BUFFER, Read, Served, Stop as ReadStop, Transport},
    daemon::{self, Daemon, EventReply, Scope, StartEventError},
};

/// Serves one ProtoBuf:1 connection until Kong closes it, sends something unusable, or it
/// is to be handed to a successor (between two calls; an event runs to its end here).
/// `pending` holds bytes already read from it (a predecessor's hand-over).
pub async fn serve<T: Transport>(stream: &mut T, cx: &Context<'_>, pending: Vec<u8>) -> Served {
    let (daemon, scope) = (cx.daemon, cx.scope);
    let filled = pending.len();
    let mut input = pending;
    input.resize(filled.max(INPUT_BUFFER), 0);
    let mut conn = Connection {
        stream,
        input,
        filled,
        consumed: 0,
        max: daemon.limits().max_message,
        out: Vec::with_capacity(512),
        answer: Vec::with_capacity(256),
        handed_over: false,
    };
    loop {
        // With process isolation: the slot says Reading before a call's first byte leaves
        // the socket, so a worker dying in between makes the supervisor close the
        // connection (Kong fails the request) instead of passing on a connection whose
        // call is gone.
        if cx.peek_requests
            && conn.filled == conn.consumed
            && let Some(slot) = cx.slot
        {
            match conn.stream.peek(&mut [0u8; 1]).await {
                Read::Data(_) => slot.reading(),
                Read::Eof => return Served::Closed,
                Read::Stop(ReadStop::HandOver) => {
                    return Served::HandOver {
                        pending: Vec::new(),
                    };
                }
                Read::Stop(stop) => {
                    tracing::debug!("closing a ProtoBuf:1 connection: {stop:?}");
                    return Served::Closed;
                }
                Read::Failed(err) => {
                    tracing::debug!("closing a ProtoBuf:1 connection: read failed: {err}");
                    return Served::Closed;
                }
            }
        }
        let call = match conn.read_frame().await {
            Ok(Some(range)) => {
                if daemon.is_handing_over() {
                    // A new call: the successor answers it, with this connection.
                    conn.input.truncate(conn.filled);
                    return Served::HandOver {
                        pending: conn.input,
                    };
                }
                match RpcCall::decode(&conn.input[range]) {
                    Ok(call) => call,
                    Err(err) => {
                        tracing::warn!("closing a ProtoBuf:1 connection: not an RpcCall: {err}");
                        return Served::Closed;
                    }
                }
            }
            Ok(None) if conn.handed_over => {
                conn.input.truncate(conn.filled);
                return Served::HandOver {
                    pending: conn.input,
                };
            }
            Ok(None) => return Served::Closed,
            Err(reason) => {
                tracing::warn!("closing a ProtoBuf:1 connection: {reason}");
                return Served::Closed;
            }
        };
        // With process isolation: a connection in the middle of a call cannot go on in
        // another worker; if this one dies, the supervisor closes it (Kong then fails the
        // request: ProtoBuf:1 has no error reply).
        if let Some(slot) = cx.slot {
            slot.reading();
        }
        let sequence = call.sequence;
        let flow = match call.call {
            Some(Call::CmdHandleEvent(cmd)) => {
                run_event(&mut conn, daemon, scope, sequence, cmd).await
            }
            Some(Call::CmdStartInstance(cmd)) => {
                start_instance(daemon, scope, sequence, &cmd, &mut conn.out).await
            }
            Some(Call::CmdCloseInstance(cmd)) => {
                close_instance(daemon, scope, sequence, cmd, &mut conn.out)
            }
            Some(Call::CmdGetInstanceStatus(cmd)) => {
                instance_status(daemon, scope, sequence, cmd, &mut conn.out)
            }
            Some(Call::CmdGetPluginNames(_)) => {
                plugin_names(daemon, scope, sequence, &mut conn.out)
            }
            Some(Call::CmdGetPluginInfo(cmd)) => {
                plugin_info(daemon, scope, sequence, &cmd, &mut conn.out)
            }
            None => Flow::Close("an RpcCall without a call".into()),
        };
        match flow {
            Flow::Reply => {
                let written = conn.stream.write_all(&conn.out).await;
                conn.out.clear();
                if written.is_err() {
                    return Served::Closed;
                }
                if let Some(slot) = cx.slot {
                    slot.idle();
                }
            }
            Flow::Close(reason) => {
                tracing::debug!("closing a ProtoBuf:1 connection: {reason}");
                return Served::Closed;
            }
            Flow::Finished => {
                // Kong never answers `kong.response.exit` and never reuses the connection:
                // nginx closes it when the request ends.
                conn.drain().await;
                return Served::Closed;
            }
            Flow::Gone => return Served::Closed,
        }
    }
}

/// What the connection does after an `RpcCall`.
enum Flow {
    /// Send what is in the output buffer and read the next call.
    Reply,
    /// Close: the only error Kong understands (it restarts the instance and retries).
    Close(String),
    /// The event ended the request: wait for Kong to drop the connection.
    Finished,
    /// Kong is gone (the connection closed or failed mid-event).
    Gone,
}

struct Connection<'s, T> {
    stream: &'s mut T,
    input: Vec<u8>,
    filled: usize,
    /// Bytes of `input` taken by the frame last returned.
    consumed: usize,
    max: usize,
    out: Vec<u8>,
    /// Kong's last answer, transcoded to MessagePack.
    answer: Vec<u8>,
    /// The last read stopped for a hand-over.
    handed_over: bool,
}

impl<T: Transport> Connection<'_, T> {
    /// The next frame's payload, in `input` until the next read; `None` at the end of the
    /// stream.
    async fn read_frame(&mut self) -> Result<Option<Range<usize>>, String> {
        if self.consumed > 0 {
            self.input.copy_within(self.consumed..self.filled, 0);
            self.filled -= self.consumed;
            self.consumed = 0;
            // Do not keep a buffer that one large frame grew.
            if self.input.len() > 1 << 20 && self.filled <= INPUT_BUFFER {
                self.input.truncate(INPUT_BUFFER);
                self.input.shrink_to_fit();
            }
        }
        loop {
            match frame::first(&self.input[..self.filled], self.max) {
                Ok(Some(payload)) => {
                    self.consumed = payload.end;
                    return Ok(Some(payload));
                }
                Ok(None) => {
                    if self.filled == self.input.len() {
                        self.input.resize(self.input.len() * 2, 0);
                    }
                    let mid_message = self.filled > 0;
                    match self
                        .stream
                        .read(&mut self.input[self.filled..], mid_message)
                        .await
                    {
                        Read::Eof => {
                            if self.filled > 0 {
                                tracing::debug!(
                                    bytes = self.filled,
                                    "a ProtoBuf:1 connection closed in the middle of a frame"
                                );
                            }
                            return Ok(None);
                        }
                        Read::Data(n) => self.filled += n,
                        Read::Stop(ReadStop::HandOver) => {
                            self.handed_over = true;
                            return Ok(None);
                        }
                        Read::Stop(stop) => return Err(format!("{stop:?}")),
                        Read::Failed(err) => return Err(format!("read failed: {err}")),
                    }
                }
                Err(err) => return Err(err.to_string()),
            }
        }
    }

    /// Reads and drops everything until Kong closes the connection.
    async fn drain(&mut self) {
        let mut sink = [0u8; 512];
        while matches!(self.stream.read(&mut sink, false).await, Read::Data(_)) {}
    }
}

/// Where an event stands after the daemon ran it to its next stop.
enum Stop {
    /// A PDK call is in the output buffer; Kong answers it.
    Awaiting { event_id: u64, pending: Pending },
    /// A PDK call the protocol cannot carry: the plugin gets the reason.
    Refused { event_id: u64, reason: String },
    /// The end of the loop and the `RpcReturn` are in the output buffer.
    Done,
    /// `kong.response.exit` is in the output buffer: the request ends there.
    Ended,
}

/// Encodes the daemon's next stop of an event into `out`.
fn stop(event_id: u64, reply: EventReply<'_>, sequence: i64, out: &mut Vec<u8>) -> Stop {
    match reply {
        EventReply::Call { method, args } => match transcode::encode_call(method, args, out) {
            Ok(Sent::Awaiting(pending)) => Stop::Awaiting { event_id, pending },
            Ok(Sent::Ending) => Stop::Ended,
            Err(refusal) => Stop::Refused {
                event_id,
                reason: refusal.0,
            },
        },
        EventReply::Done => {
            end_of_event(sequence, out);
            Stop::Done
        }
        // Kong's MsgPack:1 answer would be `kong.response.error(status)`; ProtoBuf:1 has
        // only `exit`. (A server error would not do: Kong before 3.8 logs it and proxies.)
        EventReply::EndRequest { status, phase } => {
            transcode::write_end_request(status, phase != Phase::Preread, out);
            Stop::Ended
        }
    }
}

/// The empty frame that ends the PDK loop, then `RpcReturn{sequence}`.
fn end_of_event(sequence: i64, out: &mut Vec<u8>) {
    frame::write(out, b"");
    frame::write_message(
        out,
        &RpcReturn {
            sequence,
            r#return: None,
        },
    );
}

/// `cmd_handle_event`: runs the event to its end on this connection.
async fn run_event<T: Transport>(
    conn: &mut Connection<'_, T>,
    daemon: &Daemon,
    scope: &Scope,
    sequence: i64,
    cmd: CmdHandleEvent,
) -> Flow {
    let Ok(instance_id) = u64::try_from(cmd.instance_id) else {
        return Flow::Close(format!("no plugin instance {}", cmd.instance_id));
    };
    let out = &mut conn.out;
    let first = daemon
        .handle_event(scope, instance_id, &cmd.event_name, |event_id, reply| {
            stop(event_id, reply, sequence, out)
        })
        .await;
    let mut next = match first {
        Ok(next) => next,
        // The one error Kong acts on: it starts the instance again and retries.
        Err(StartEventError::UnknownInstance(err)) => return Flow::Close(err.to_string()),
        Err(StartEventError::NotAPhase(err)) => {
            // Kong never sends it; closing would make Kong retry it for ever.
            tracing::warn!("{err}; reporting the event finished");
            end_of_event(sequence, &mut conn.out);
            return Flow::Reply;
        }
    };
    loop {
        let (event_id, answer) = match next {
            Stop::Done => return Flow::Reply,
            Stop::Ended => {
                if conn.stream.write_all(&conn.out).await.is_err() {
                    return Flow::Gone;
                }
                conn.out.clear();
                return Flow::Finished;
            }
            Stop::Refused { event_id, reason } => (event_id, encode_refusal(&reason)),
            Stop::Awaiting { event_id, pending } => {
                let written = conn.stream.write_all(&conn.out).await;
                conn.out.clear();
                let reply = match written {
                    Ok(()) => conn.read_frame().await,
                    Err(err) => Err(err.to_string()),
                };
                let range = match reply {
                    Ok(Some(range)) => range,
                    // Kong raised inside the PDK call (or went away): it abandons the
                    // connection and never answers; free the event now.
                    Ok(None) | Err(_) => {
                        daemon.abandon_event(scope, event_id);
                        return Flow::Gone;
                    }
                };
                conn.answer.clear();
                let answer = match pending.decode(&conn.input[range], &mut conn.answer) {
                    Ok(Answer::Value) => std::mem::take(&mut conn.answer),
                    Ok(Answer::BodyFile { path, max }) => {
                        match transcode::read_body_file(&path, max) {
                            Some(body) => msgpack::write_bin(&mut conn.answer, &body),
                            None => msgpack::write_nil(&mut conn.answer),
                        }
                        std::mem::take(&mut conn.answer)
                    }
                    Err(bad) => encode_refusal(&bad.to_string()),
                };
                (event_id, answer)
            }
        };
        let out = &mut conn.out;
        next = daemon
            .step(scope, event_id, Some(&answer), |event_id, reply| {
                stop(event_id, reply, sequence, out)
            })
            .await;
        // Hand the buffer back for the next answer.
        conn.answer = answer;
    }
}

/// `RpcReturn{sequence, instance_status}`.
fn write_status(out: &mut Vec<u8>, sequence: i64, status: InstanceStatus) {
    frame::write_message(
        out,
        &RpcReturn {
            sequence,
            r#return: Some(Return::InstanceStatus(status)),
        },
    );
}

fn pb_status(status: &daemon::InstanceStatus) -> InstanceStatus {
    InstanceStatus {
        name: status.name.as_bytes().to_vec(),
        instance_id: status.id as i32,
        config: None,
        started_at: status.start_time as i64,
    }
}

async fn start_instance(
    daemon: &Daemon,
    scope: &Scope,
    sequence: i64,
    cmd: &CmdStartInstance,
    out: &mut Vec<u8>,
) -> Flow {
    match daemon.start_instance(scope, &cmd.name, &cmd.config).await {
        Ok(status) => {
            write_status(out, sequence, pb_status(&status));
            Flow::Reply
        }
        Err(err) => {
            // ProtoBuf:1 has no error reply: Kong sees the connection close and fails the
            // request; the reason is only in this log.
            tracing::warn!("StartInstance failed: {err}");
            Flow::Close(err.to_string())
        }
    }
}

fn close_instance(
    daemon: &Daemon,
    scope: &Scope,
    sequence: i64,
    cmd: CmdCloseInstance,
    out: &mut Vec<u8>,
) -> Flow {
    // Kong ignores the result; an unknown id is closed already.
    let status = u64::try_from(cmd.instance_id)
        .ok()
        .and_then(|id| daemon.close_instance(scope, id).ok())
        .map(|status| pb_status(&status))
        .unwrap_or(InstanceStatus {
            instance_id: cmd.instance_id,
            ..InstanceStatus::default()
        });
    write_status(out, sequence, status);
    Flow::Reply
}

fn instance_status(
    daemon: &Daemon,
    scope: &Scope,
    sequence: i64,
    cmd: CmdGetInstanceStatus,
    out: &mut Vec<u8>,
) -> Flow {
    let status = u64::try_from(cmd.instance_id)
        .ok()
        .and_then(|id| daemon.instance_status(scope, id).ok());
    match status {
        Some(status) => {
            write_status(out, sequence, pb_status(&status));
            Flow::Reply
        }
        None => Flow::Close(format!("no plugin instance {}", cmd.instance_id)),
    }
}

fn plugin_names(daemon: &Daemon, scope: &Scope, sequence: i64, out: &mut Vec<u8>) -> Flow {
    let names = daemon
        .plugins()
        .iter()
        .filter(|p| scope.allows(p.slot()))
        .map(|p| p.name().as_bytes().to_vec())
        .collect();
    frame::write_message(
        out,
        &RpcReturn {
            sequence,
            r#return: Some(Return::PluginNames(PluginNames { names })),
        },
    );
    Flow::Reply
}

fn plugin_info(
    daemon: &Daemon,
    scope: &Scope,
    sequence: i64,
    cmd: &CmdGetPluginInfo,
    out: &mut Vec<u8>,
) -> Flow {
    let name = String::from_utf8_lossy(&cmd.name);
    let Some(plugin) = daemon.plugin(&name).filter(|p| scope.allows(p.slot())) else {
        return Flow::Close(format!("no plugin {name:?} on this socket"));
    };
    let manifest = plugin.manifest();
    let dump = crate::dump::PluginDump::of(manifest);
    let schema = serde_json::to_value(&dump)
        .ok()
        .and_then(|d| d.get("Schema").map(|s| s.to_string()))
        .unwrap_or_default();
    let info = PluginInfo {
        name: manifest.name.as_bytes().to_vec(),
        updated_at: 0,
        loaded_at: 0,
        phases: manifest
            .phases
            .iter()
            .map(|p| p.name().as_bytes().to_vec())
            .collect(),
        version: manifest.version.as_bytes().to_vec(),
        priority: manifest.priority as i32,
        schema: schema.into_bytes(),
    };
    frame::write_message(
        out,
        &RpcReturn {
            sequence,
            r#return: Some(Return::PluginInfo(info)),
        },
    );
    Flow::Reply
}
