//! Kong's side of ProtoBuf:1, as `pb_rpc.lua` behaves: the `RpcCall` frames it sends,
//! how it turns an argument message into the positional arguments of the PDK function
//! (`unwrap`, with lua-protobuf's filled-in defaults), how it turns the function's result
//! into the result message (`wrap` + `pb.encode`), and its bridge loop for one event, on
//! one connection. Values on the Lua side are written as MessagePack, the way Kong's
//! MsgPack:1 client would carry them, so tests and the load generator answer PDK calls the
//! same way in both protocols.

use std::io::{Read, Write};

use prost::Message;

use super::{
    Input, Output, find, frame,
    messages::{
        AuthenticateArgs, AuthenticatedCredential, Bool, CmdCloseInstance, CmdHandleEvent,
        CmdStartInstance, Consumer, ConsumerSpec, DictStats, ExitArgs, FieldsEntry, Int, Key, Kv,
        ListValue, LuaSharedDicts, MemoryStats, NamedEntry, Number, RawBodyResult, Route, RpcCall,
        RpcReturn, Service, Str, Struct, Target, UriCapturesResult, Value, WorkerLuaVm,
        raw_body_result, rpc_call::Call, value::Kind,
    },
    msgpack::{self, Mp},
};
use crate::kong::PdkAnswer;

/// Writes the frame of `RpcCall{sequence, call}`.
pub fn write_call(out: &mut Vec<u8>, sequence: i64, call: Call) {
    frame::write_message(
        out,
        &RpcCall {
            sequence,
            call: Some(call),
        },
    );
}

/// `cmd_start_instance{name, config}` (config: Kong's JSON text of the plugin config).
pub fn start_instance(out: &mut Vec<u8>, sequence: i64, plugin: &str, config_json: &str) {
    write_call(
        out,
        sequence,
        Call::CmdStartInstance(CmdStartInstance {
            name: plugin.as_bytes().to_vec(),
            config: config_json.as_bytes().to_vec(),
        }),
    );
}

/// `cmd_close_instance{instance_id}`.
pub fn close_instance(out: &mut Vec<u8>, sequence: i64, instance_id: i32) {
    write_call(
        out,
        sequence,
        Call::CmdCloseInstance(CmdCloseInstance { instance_id }),
    );
}

/// `cmd_handle_event{instance_id, event_name}`.
pub fn handle_event(out: &mut Vec<u8>, sequence: i64, instance_id: i32, phase: &str) {
    write_call(
        out,
        sequence,
        Call::CmdHandleEvent(CmdHandleEvent {
            instance_id,
            event_name: phase.as_bytes().to_vec(),
        }),
    );
}

/// Reads an `RpcReturn`, checking that it echoes `sequence` (Kong asserts it).
pub fn read_return(payload: &[u8], sequence: i64) -> Result<RpcReturn, String> {
    let ret = RpcReturn::decode(payload).map_err(|e| format!("RpcReturn does not decode: {e}"))?;
    if ret.sequence != sequence {
        return Err(format!(
            "RpcReturn sequence {} does not echo {sequence}",
            ret.sequence
        ));
    }
    Ok(ret)
}

// ------------------------------------------------------------------ unwrap

/// The arguments the PDK function `method` is called with for argument message `input`
/// (`pb_rpc.lua`'s `unwrap` after `pb.decode`, absent scalars filled in), as one
/// MessagePack array; trailing nils are left out, as Lua's varargs would.
pub fn lua_args(method: &str, input: &[u8]) -> Result<Vec<u8>, String> {
    let m = find(method.as_bytes()).ok_or_else(|| format!("method {method:?} not found"))?;
    let bad = |e: prost::DecodeError| format!("{method}: the argument does not decode: {e}");
    let mut args: Vec<Vec<u8>> = Vec::new();
    let one = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = Vec::new();
        f(&mut v);
        v
    };
    match m.input {
        Input::Empty => {}
        Input::Bool => {
            let v = Bool::decode(input).map_err(bad)?.v;
            args.push(one(&|o| msgpack::write_bool(o, v)));
        }
        Input::Int | Input::MaxArgs => {
            let v = Int::decode(input).map_err(bad)?.v;
            args.push(one(&|o| msgpack::write_int(o, i64::from(v))));
        }
        Input::Str => {
            let v = Str::decode(input).map_err(bad)?.v;
            args.push(one(&|o| msgpack::write_str(o, &v)));
        }
        Input::ByteString => {
            let v = Str::decode(input).map_err(bad)?.v;
            args.push(one(&|o| msgpack::write_bin(o, &v)));
        }
        Input::Kv => {
            let kv = Kv::decode(input).map_err(bad)?;
            args.push(one(&|o| msgpack::write_str(o, &kv.k)));
            args.push(one(&|o| lua_value(o, kv.v.as_ref())));
        }
        Input::ListValue => {
            for v in ListValue::decode(input).map_err(bad)?.values {
                args.push(one(&|o| lua_value(o, Some(&v))));
            }
        }
        Input::Struct => {
            let s = Struct::decode(input).map_err(bad)?;
            args.push(one(&|o| lua_struct(o, &s)));
        }
        Input::Target => {
            let t = Target::decode(input).map_err(bad)?;
            args.push(one(&|o| msgpack::write_str(o, &t.host)));
            args.push(one(&|o| msgpack::write_int(o, i64::from(t.port))));
        }
        Input::ExitArgs => {
            let e = ExitArgs::decode(input).map_err(bad)?;
            args.push(one(&|o| msgpack::write_int(o, i64::from(e.status))));
            args.push(one(&|o| msgpack::write_str(o, &e.body)));
            args.push(one(&|o| match &e.headers {
                Some(h) => lua_struct(o, h),
                None => msgpack::write_nil(o),
            }));
        }
        Input::ConsumerSpec => {
            let c = ConsumerSpec::decode(input).map_err(bad)?;
            args.push(one(&|o| msgpack::write_str(o, &c.id)));
            args.push(one(&|o| msgpack::write_bool(o, c.by_username)));
        }
        Input::AuthenticateArgs => {
            let a = AuthenticateArgs::decode(input).map_err(bad)?;
            args.push(one(&|o| match &a.consumer {
                Some(c) => lua_consumer(o, c),
                None => msgpack::write_nil(o),
            }));
            args.push(one(&|o| match &a.credential {
                Some(c) => {
                    msgpack::write_map_len(o, 2);
                    msgpack::write_str(o, b"id");
                    msgpack::write_str(o, &c.id);
                    msgpack::write_str(o, b"consumer_id");
                    msgpack::write_str(o, &c.consumer_id);
                }
                None => msgpack::write_nil(o),
            }));
        }
    }
    while args.last().is_some_and(|a| a == &[0xc0]) {
        args.pop();
    }
    let mut out = Vec::new();
    msgpack::write_array_len(&mut out, args.len());
    for a in args {
        out.extend_from_slice(&a);
    }
    Ok(out)
}

/// `structpb_value` of `unwrap`: `bool_value or string_value or number_value or
/// null_value`, so false is nil and a null is the string `"NULL_VALUE"`.
fn lua_value(out: &mut Vec<u8>, v: Option<&Value>) {
    match v.and_then(|v| v.kind.as_ref()) {
        None | Some(Kind::BoolValue(false)) => msgpack::write_nil(out),
        Some(Kind::NullValue(_)) => msgpack::write_str(out, b"NULL_VALUE"),
        Some(Kind::BoolValue(true)) => msgpack::write_bool(out, true),
        Some(Kind::NumberValue(n)) => msgpack::write_number(out, *n),
        Some(Kind::StringValue(s)) => msgpack::write_str(out, s),
        Some(Kind::StructValue(s)) => lua_struct(out, s),
        Some(Kind::ListValue(l)) => {
            msgpack::write_array_len(out, l.values.len());
            for v in &l.values {
                lua_value(out, Some(v));
            }
        }
    }
}

fn lua_struct(out: &mut Vec<u8>, s: &Struct) {
    msgpack::write_map_len(out, s.fields.len());
    for e in &s.fields {
        msgpack::write_str(out, &e.key);
        lua_value(out, e.value.as_ref());
    }
}

fn lua_consumer(out: &mut Vec<u8>, c: &Consumer) {
    msgpack::write_map_len(out, 5);
    msgpack::write_str(out, b"id");
    msgpack::write_str(out, &c.id);
    msgpack::write_str(out, b"created_at");
    msgpack::write_int(out, c.created_at);
    msgpack::write_str(out, b"username");
    msgpack::write_str(out, &c.username);
    msgpack::write_str(out, b"custom_id");
    msgpack::write_str(out, &c.custom_id);
    msgpack::write_str(out, b"tags");
    msgpack::write_array_len(out, c.tags.len());
    for t in &c.tags {
        msgpack::write_str(out, t);
    }
}

// ------------------------------------------------------------------ wrap

/// The result frame Kong sends for PDK function `method` returning `result` (one
/// MessagePack value, `None`: nil): `wrap` then `pb.encode`. `Err` when Kong's encoder
/// would raise (a Lua error that aborts the event).
pub fn wrap_result(method: &str, result: Option<&[u8]>) -> Result<Vec<u8>, String> {
    let m = find(method.as_bytes()).ok_or_else(|| format!("method {method:?} not found"))?;
    let parsed = match result {
        None => Mp::Nil,
        Some(bytes) => Mp::parse(bytes).map_err(|e| e.to_string())?,
    };
    let r = &parsed;
    let raise = |what: &str| Err(format!("{method}: bad argument #2 to 'encode' ({what})"));
    let mut out = Vec::new();
    match m.output {
        Output::Empty => match r {
            Mp::Nil | Mp::Map(_) | Mp::Array(_) => {}
            _ => return raise("table expected"),
        },
        Output::Str | Output::ByteString => match r {
            Mp::Nil => {}
            Mp::Str(b) | Mp::Bin(b) => Str { v: b.to_vec() }.encode(&mut out).expect("Vec"),
            _ => return raise("string expected"),
        },
        Output::Int => match r {
            Mp::Nil => {}
            n => {
                let v = n
                    .number()
                    .ok_or_else(|| format!("{method}: number expected"))?;
                Int { v: v as i32 }.encode(&mut out).expect("Vec");
            }
        },
        Output::Number => match r {
            Mp::Nil => {}
            n => {
                let v = n
                    .number()
                    .ok_or_else(|| format!("{method}: number expected"))?;
                Number { v }.encode(&mut out).expect("Vec");
            }
        },
        // lua-protobuf writes `v = false` even in proto3.
        Output::Bool => match r {
            Mp::Nil => {}
            Mp::Bool(b) => out.extend_from_slice(&[0x08, u8::from(*b)]),
            _ => return raise("boolean expected"),
        },
        Output::Value => wrap_value(r).encode(&mut out).expect("Vec"),
        Output::Multimap => match r {
            Mp::Map(_) | Mp::Array(_) => wrap_struct(r).encode(&mut out).expect("Vec"),
            _ => return raise("table expected"),
        },
        Output::Credential => match r {
            Mp::Nil => {}
            c @ Mp::Map(_) => AuthenticatedCredential {
                id: text(c, "id")?,
                consumer_id: text(c, "consumer_id")?,
            }
            .encode(&mut out)
            .expect("Vec"),
            _ => return raise("table expected"),
        },
        Output::Consumer => match r {
            Mp::Nil => {}
            c @ Mp::Map(_) => Consumer {
                id: text(c, "id")?,
                created_at: int(c, "created_at")?,
                username: text(c, "username")?,
                custom_id: text(c, "custom_id")?,
                tags: texts(c, "tags")?,
            }
            .encode(&mut out)
            .expect("Vec"),
            _ => return raise("table expected"),
        },
        Output::Route => match r {
            Mp::Nil => {}
            c @ Mp::Map(_) => Route {
                id: text(c, "id")?,
                created_at: int(c, "created_at")?,
                updated_at: int(c, "updated_at")?,
                name: text(c, "name")?,
                protocols: texts(c, "protocols")?,
                methods: texts(c, "methods")?,
                hosts: texts(c, "hosts")?,
                paths: texts(c, "paths")?,
                // A map in Lua: lua-protobuf finds no array part in it.
                headers: Vec::new(),
                https_redirect_status_code: int(c, "https_redirect_status_code")? as i32,
                regex_priority: int(c, "regex_priority")? as i32,
                strip_path: matches!(c.get("strip_path"), Some(Mp::Bool(true))),
                preserve_host: matches!(c.get("preserve_host"), Some(Mp::Bool(true))),
                snis: texts(c, "snis")?,
                sources: texts(c, "sources")?,
                destinations: texts(c, "destinations")?,
                tags: texts(c, "tags")?,
                service: key(c, "service")?,
            }
            .encode(&mut out)
            .expect("Vec"),
            _ => return raise("table expected"),
        },
        Output::Service => match r {
            Mp::Nil => {}
            c @ Mp::Map(_) => Service {
                id: text(c, "id")?,
                created_at: int(c, "created_at")?,
                updated_at: int(c, "updated_at")?,
                name: text(c, "name")?,
                retries: int(c, "retries")? as i32,
                protocol: text(c, "protocol")?,
                host: text(c, "host")?,
                port: int(c, "port")? as i32,
                path: text(c, "path")?,
                connect_timeout: int(c, "connect_timeout")? as i32,
                write_timeout: int(c, "write_timeout")? as i32,
                read_timeout: int(c, "read_timeout")? as i32,
                tags: texts(c, "tags")?,
                client_certificate: key(c, "client_certificate")?,
            }
            .encode(&mut out)
            .expect("Vec"),
            _ => return raise("table expected"),
        },
        Output::MemoryStats => match r {
            Mp::Nil => {}
            c @ Mp::Map(_) => {
                let dict = |name: &str| {
                    c.get("lua_shared_dicts")
                        .and_then(|d| d.get(name))
                        .map(|d| -> Result<DictStats, String> {
                            Ok(DictStats {
                                allocated_slabs: int(d, "allocated_slabs")?,
                                capacity: int(d, "capacity")?,
                            })
                        })
                        .transpose()
                };
                let workers = match c.get("workers_lua_vms") {
                    Some(Mp::Array(ws)) => ws
                        .iter()
                        .map(|w| {
                            Ok(WorkerLuaVm {
                                http_allocated_gc: int(w, "http_allocated_gc")?,
                                pid: int(w, "pid")?,
                            })
                        })
                        .collect::<Result<_, String>>()?,
                    _ => Vec::new(),
                };
                MemoryStats {
                    lua_shared_dicts: Some(LuaSharedDicts {
                        kong: dict("kong")?,
                        kong_db_cache: dict("kong_db_cache")?,
                    }),
                    workers_lua_vms: workers,
                }
                .encode(&mut out)
                .expect("Vec");
            }
            _ => return raise("table expected"),
        },
        Output::RawBody => {
            let kind = match r {
                Mp::Str(b) | Mp::Bin(b) => raw_body_result::Kind::Content(b.to_vec()),
                _ => raw_body_result::Kind::Error(b"Can't read request body".to_vec()),
            };
            RawBodyResult { kind: Some(kind) }
                .encode(&mut out)
                .expect("Vec");
        }
        Output::UriCaptures => match r {
            Mp::Nil => {}
            c @ Mp::Map(_) => {
                // `repeated bytes` takes the array part 1..n: index 0 (the whole match) is
                // lost, and a `false` (an optional group that did not match) raises.
                let unnamed = match c.get("unnamed") {
                    Some(Mp::Array(items)) => items.clone(),
                    Some(Mp::Map(entries)) => {
                        let mut indexed: Vec<_> = entries
                            .iter()
                            .filter_map(|(k, v)| Some((k.int().filter(|&i| i >= 1)?, v.clone())))
                            .collect();
                        indexed.sort_by_key(|(i, _)| *i);
                        indexed.into_iter().map(|(_, v)| v).collect()
                    }
                    _ => Vec::new(),
                };
                let unnamed = unnamed
                    .iter()
                    .map(|v| {
                        v.bytes()
                            .map(<[u8]>::to_vec)
                            .ok_or_else(|| format!("{method}: a capture is not a string"))
                    })
                    .collect::<Result<_, _>>()?;
                let named = match c.get("named") {
                    Some(Mp::Map(entries)) => entries
                        .iter()
                        .map(|(k, v)| {
                            Ok(NamedEntry {
                                key: k.bytes().unwrap_or_default().to_vec(),
                                value: v
                                    .bytes()
                                    .ok_or_else(|| format!("{method}: a capture is not a string"))?
                                    .to_vec(),
                            })
                        })
                        .collect::<Result<_, String>>()?,
                    _ => Vec::new(),
                };
                UriCapturesResult { unnamed, named }
                    .encode(&mut out)
                    .expect("Vec");
            }
            _ => return raise("table expected"),
        },
    }
    Ok(out)
}

/// `structpb_value` of `wrap`: nil is `null_value = 1`, a table with `[1]` a list, any
/// other table (an empty one too) a struct.
fn wrap_value(v: &Mp<'_>) -> Value {
    let kind = match v {
        Mp::Nil | Mp::Ext => Kind::NullValue(1),
        Mp::Bool(b) => Kind::BoolValue(*b),
        Mp::Int(_) | Mp::UInt(_) | Mp::Float(_) => Kind::NumberValue(v.number().unwrap_or(0.0)),
        Mp::Str(s) | Mp::Bin(s) => Kind::StringValue(s.to_vec()),
        Mp::Array(items) if !items.is_empty() => Kind::ListValue(ListValue {
            values: items.iter().map(wrap_value).collect(),
        }),
        Mp::Array(_) | Mp::Map(_) => Kind::StructValue(wrap_struct(v)),
    };
    Value { kind: Some(kind) }
}

fn wrap_struct(v: &Mp<'_>) -> Struct {
    let fields = match v {
        Mp::Map(entries) => entries
            .iter()
            .map(|(k, v)| FieldsEntry {
                key: k.bytes().map(<[u8]>::to_vec).unwrap_or_else(|| match k {
                    Mp::Int(i) => i.to_string().into_bytes(),
                    _ => Vec::new(),
                }),
                value: Some(wrap_value(v)),
            })
            .collect(),
        _ => Vec::new(),
    };
    Struct { fields }
}

fn text(map: &Mp<'_>, key: &str) -> Result<Vec<u8>, String> {
    match map.get(key) {
        None | Some(Mp::Nil) => Ok(Vec::new()),
        Some(v) => v
            .bytes()
            .map(<[u8]>::to_vec)
            .ok_or_else(|| format!("field {key}: string expected")),
    }
}

fn int(map: &Mp<'_>, key: &str) -> Result<i64, String> {
    match map.get(key) {
        None | Some(Mp::Nil) => Ok(0),
        Some(v) => v
            .number()
            .map(|n| n as i64)
            .ok_or_else(|| format!("field {key}: number expected")),
    }
}

fn texts(map: &Mp<'_>, key: &str) -> Result<Vec<Vec<u8>>, String> {
    match map.get(key) {
        Some(Mp::Array(items)) => items
            .iter()
            .map(|v| {
                v.bytes()
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| format!("field {key}: string expected"))
            })
            .collect(),
        _ => Ok(Vec::new()),
    }
}

fn key(map: &Mp<'_>, field: &str) -> Result<Option<Key>, String> {
    Ok(match map.get(field) {
        Some(k @ Mp::Map(_)) => Some(Key { id: text(k, "id")? }),
        _ => None,
    })
}

// ------------------------------------------------------------------ the bridge loop

/// How an event ended, as Kong sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The loop ended (empty method frame) and the `RpcReturn` echoed the sequence: the
    /// request goes on.
    Returned,
    /// The handler called `kong.response.exit` (raw Lua arguments): the request ends.
    Ended {
        /// Always `kong.response.exit`.
        method: String,
        /// Kong's positional arguments, one MessagePack array.
        args: Vec<u8>,
    },
    /// A Lua error inside a PDK call, or a method Kong does not have: the event is
    /// abandoned (Kong 3.8+ answers 500; the socket is never reused).
    Raised(String),
    /// The pluginserver closed the connection: Kong resets the instance and retries.
    Closed,
}

/// The record of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Every PDK call: method and the Lua arguments (one MessagePack array).
    pub calls: Vec<(String, Vec<u8>)>,
    /// How it ended.
    pub end: Ending,
}

/// Reads one frame; `None` at the end of the stream.
pub fn read_frame(stream: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; frame::HEADER];
    match stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut payload = vec![0; u32::from_le_bytes(len) as usize];
    match stream.read_exact(&mut payload) {
        Ok(()) => Ok(Some(payload)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Kong's `Rpc:call("cmd_handle_event", …, true)` on `stream`: sends the call, serves
/// every PDK call the pluginserver asks for with `answer` (method, Lua arguments), and
/// reads the `RpcReturn`.
pub fn run_event<S: Read + Write>(
    stream: &mut S,
    sequence: i64,
    instance_id: i32,
    phase: &str,
    mut answer: impl FnMut(&str, &[u8]) -> PdkAnswer,
) -> std::io::Result<Run> {
    let mut out = Vec::with_capacity(64);
    handle_event(&mut out, sequence, instance_id, phase);
    stream.write_all(&out)?;
    let mut run = Run {
        calls: Vec::new(),
        end: Ending::Returned,
    };
    loop {
        let Some(method) = read_frame(stream)? else {
            run.end = Ending::Closed;
            return Ok(run);
        };
        if method.is_empty() {
            break;
        }
        let Some(input) = read_frame(stream)? else {
            run.end = Ending::Closed;
            return Ok(run);
        };
        let method = String::from_utf8_lossy(&method).into_owned();
        let args = match lua_args(&method, &input) {
            Ok(args) => args,
            Err(e) => {
                run.end = Ending::Raised(e);
                return Ok(run);
            }
        };
        run.calls.push((method.clone(), args.clone()));
        if method == "kong.response.exit" {
            run.end = Ending::Ended { method, args };
            return Ok(run);
        }
        let result = match answer(&method, &args) {
            PdkAnswer::Value(v) => v,
            PdkAnswer::Raise(e) => {
                run.end = Ending::Raised(e);
                return Ok(run);
            }
        };
        let reply = match wrap_result(&method, result.as_deref()) {
            Ok(reply) => reply,
            Err(e) => {
                run.end = Ending::Raised(e);
                return Ok(run);
            }
        };
        out.clear();
        frame::write(&mut out, &reply);
        stream.write_all(&out)?;
    }
    let Some(ret) = read_frame(stream)? else {
        run.end = Ending::Closed;
        return Ok(run);
    };
    read_return(&ret, sequence).map_err(std::io::Error::other)?;
    Ok(run)
}
