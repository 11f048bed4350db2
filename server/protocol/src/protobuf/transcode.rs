//! The pluginserver's side of the transcoding: a plugin's PDK call (method name and one
//! MessagePack array of positional arguments, as over MsgPack:1) becomes the method frame
//! and the argument message Kong's `pb_rpc.lua` reads; Kong's result message becomes the
//! MessagePack value Kong's MsgPack:1 client would have sent for the same call, so the
//! same plugin library works over both protocols.
//!
//! What `pb_rpc.lua` does with each message, and so what is built here:
//! - a `google.protobuf.Value` whose `bool_value` is false reaches Lua as nil
//!   (`v.bool_value or v.string_value or …`), and a `null_value` as the string
//!   `"NULL_VALUE"`: nil is sent as an absent value (or an empty `Value{}` in a list),
//!   never as `null_value`;
//! - Kong's decoder fills absent scalars with their zero values, so an `Int` that Kong
//!   must not see as 0 is always sent explicitly (`max_args`/`max_headers` default 100);
//! - results keep only the first return value, and `nil` or a zero value arrive as an
//!   empty frame: per function, the empty result is nil or the zero value
//!   ([`super::Zero`]).
//!
//! Calls the protocol cannot carry are refused ([`Refusal`]) and never sent: Kong would
//! abort the whole event on them.

use prost::Message;

use super::{
    Input, Method, Output, Zero, frame,
    messages::{
        AuthenticateArgs, AuthenticatedCredential, Bool, Consumer, ConsumerSpec, ExitArgs,
        FieldsEntry, Int, Key, Kv, ListValue, MemoryStats, Number, RawBodyResult, Route, Service,
        Str, Struct, Target, UriCapturesResult, Value, raw_body_result, value::Kind,
    },
    msgpack::{self, Mp},
};

/// Why a PDK call cannot go to Kong over ProtoBuf:1; the plugin gets the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// Kong's answer does not decode as the function's result message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Kong's ProtoBuf:1 answer to {method} does not decode: {reason}")]
pub struct BadAnswer {
    /// The PDK function.
    pub method: &'static str,
    /// The decoder's complaint.
    pub reason: String,
}

/// A call written to the output, as [`encode_call`] leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Kong answers with one frame: decode it with this.
    Awaiting(Pending),
    /// `kong.response.exit`: Kong never answers, the event is over.
    Ending,
}

/// What is needed to read Kong's answer to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    method: &'static Method,
    how: Reading,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Reading {
    /// As the method's output says.
    Plain,
    /// `kong.request.get_query_arg(name)`, asked as `get_query(100)`: pick `name`.
    QueryArg(Vec<u8>),
    /// `kong.request.get_raw_body(max)`: a body Kong left in a file is read with `max`.
    RawBody(Option<u64>),
}

/// Kong's answer as MessagePack, or the one case the caller finishes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The MessagePack value was written to the output.
    Value,
    /// `kong.request.get_raw_body`: nginx buffered the body to this file. Kong's own
    /// `get_raw_body(max)` reads it when the plugin allowed a size (`max`); the
    /// pluginserver does the same (see [`read_body_file`]).
    BodyFile {
        /// The file nginx wrote.
        path: Vec<u8>,
        /// The plugin's `max_allowed_file_size`.
        max: Option<u64>,
    },
}

/// Kong HEAD's `get_raw_body(max)` for a body nginx wrote to `path`: no size allowed, or
/// a file larger than `max` (when `max` > 0), is nil; else the contents.
pub fn read_body_file(path: &[u8], max: Option<u64>) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let max = max?;
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path));
    let size = std::fs::metadata(path).ok()?.len();
    if max > 0 && size > max {
        return None;
    }
    std::fs::read(path).ok()
}

impl Pending {
    /// The PDK function called.
    pub fn method(&self) -> &'static str {
        self.method.name
    }

    /// Turns Kong's answer frame into the MessagePack value the plugin expects, written to
    /// `out`.
    pub fn decode(&self, reply: &[u8], out: &mut Vec<u8>) -> Result<Answer, BadAnswer> {
        let bad = |e: prost::DecodeError| BadAnswer {
            method: self.method.name,
            reason: e.to_string(),
        };
        match &self.how {
            Reading::Plain => {}
            Reading::QueryArg(name) => {
                let query = Struct::decode(reply).map_err(bad)?;
                match query.fields.iter().rev().find(|e| &e.key == name) {
                    Some(FieldsEntry { value: Some(v), .. }) => match &v.kind {
                        Some(Kind::ListValue(list)) => match list.values.first() {
                            Some(first) => write_value(out, first),
                            None => msgpack::write_nil(out),
                        },
                        _ => write_value(out, v),
                    },
                    _ => msgpack::write_nil(out),
                }
                return Ok(Answer::Value);
            }
            Reading::RawBody(max) => {
                match RawBodyResult::decode(reply).map_err(bad)?.kind {
                    Some(raw_body_result::Kind::Content(body)) => msgpack::write_bin(out, &body),
                    Some(raw_body_result::Kind::BodyFilepath(path)) => {
                        return Ok(Answer::BodyFile { path, max: *max });
                    }
                    Some(raw_body_result::Kind::Error(_)) | None => msgpack::write_nil(out),
                }
                return Ok(Answer::Value);
            }
        }
        let zero_is_nil = self.method.zero == Zero::Nil;
        match self.method.output {
            Output::Empty => msgpack::write_nil(out),
            Output::Str => {
                let s = Str::decode(reply).map_err(bad)?;
                if s.v.is_empty() && zero_is_nil {
                    msgpack::write_nil(out);
                } else {
                    msgpack::write_str(out, &s.v);
                }
            }
            Output::ByteString => msgpack::write_bin(out, &Str::decode(reply).map_err(bad)?.v),
            Output::Int => {
                let i = Int::decode(reply).map_err(bad)?.v;
                if i == 0 && zero_is_nil {
                    msgpack::write_nil(out);
                } else {
                    msgpack::write_int(out, i64::from(i));
                }
            }
            Output::Number => msgpack::write_number(out, Number::decode(reply).map_err(bad)?.v),
            Output::Bool => {
                // `Bool{v = false}` is `08 00`: only an empty frame is nil.
                if reply.is_empty() && zero_is_nil {
                    msgpack::write_nil(out);
                } else {
                    msgpack::write_bool(out, Bool::decode(reply).map_err(bad)?.v);
                }
            }
            Output::Value => write_value(out, &Value::decode(reply).map_err(bad)?),
            Output::Multimap => write_multimap(out, &Struct::decode(reply).map_err(bad)?),
            Output::Credential => {
                let c = AuthenticatedCredential::decode(reply).map_err(bad)?;
                if c.id.is_empty() {
                    msgpack::write_nil(out);
                } else {
                    let mut map = MapWriter::new(out);
                    map.str("id", &c.id);
                    map.str_if("consumer_id", &c.consumer_id);
                    map.finish();
                }
            }
            Output::Consumer => {
                let c = Consumer::decode(reply).map_err(bad)?;
                write_consumer(out, &c);
            }
            Output::Route => write_route(out, &Route::decode(reply).map_err(bad)?),
            Output::Service => write_service(out, &Service::decode(reply).map_err(bad)?),
            Output::MemoryStats => {
                if reply.is_empty() {
                    msgpack::write_nil(out);
                } else {
                    write_memory_stats(out, &MemoryStats::decode(reply).map_err(bad)?);
                }
            }
            Output::RawBody => unreachable!("read as Reading::RawBody"),
            Output::UriCaptures => {
                let caps = UriCapturesResult::decode(reply).map_err(bad)?;
                let mut map = MapWriter::new(out);
                map.key("unnamed");
                msgpack::write_array_len(map.out, caps.unnamed.len());
                for capture in &caps.unnamed {
                    msgpack::write_str(map.out, capture);
                }
                map.key("named");
                if caps.named.is_empty() {
                    msgpack::write_array_len(map.out, 0);
                } else {
                    msgpack::write_map_len(map.out, caps.named.len());
                    for entry in &caps.named {
                        msgpack::write_str(map.out, &entry.key);
                        msgpack::write_str(map.out, &entry.value);
                    }
                }
                map.finish();
            }
        }
        Ok(Answer::Value)
    }
}

/// Writes the method and argument frames of PDK call `method(args…)` to `out` (`args`:
/// one MessagePack array). Nothing is written when the call is refused.
pub fn encode_call(method: &str, args: &[u8], out: &mut Vec<u8>) -> Result<Sent, Refusal> {
    let Some(found) = super::find(method.as_bytes()) else {
        return Err(not_in_protocol());
    };
    let args = match Mp::parse(args) {
        Ok(Mp::Array(items)) => items,
        _ => {
            return Err(Refusal(
                "the arguments are not one MessagePack array".into(),
            ));
        }
    };
    let start = out.len();
    let result = encode_known(found, &args, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// The reason every function outside the protocol is refused with.
pub fn not_in_protocol() -> Refusal {
    Refusal(
        "Kong's ProtoBuf:1 protocol has no such function (the daemon serves with \
         --protocol protobuf; MsgPack:1 carries it)"
            .into(),
    )
}

/// Whether a call of `method` can be carried at all (the checks of its arguments come at
/// [`encode_call`]).
pub fn is_carried(method: &str) -> bool {
    super::find(method.as_bytes()).is_some()
}

fn encode_known(
    method: &'static Method,
    args: &[Mp<'_>],
    out: &mut Vec<u8>,
) -> Result<Sent, Refusal> {
    let arity = match method.input {
        Input::Empty if method.name == "kong.request.get_raw_body" => 1,
        Input::Empty => 0,
        Input::Bool | Input::Int | Input::MaxArgs | Input::Str | Input::ByteString => 1,
        Input::Struct => 1,
        Input::Kv | Input::Target | Input::ConsumerSpec | Input::AuthenticateArgs => 2,
        Input::ExitArgs => 3,
        Input::ListValue => usize::MAX,
    };
    if args.len() > arity {
        return Err(Refusal(match method.name {
            "kong.log.set_serialize_value" => {
                "ProtoBuf:1 cannot pass its options ({mode = …}): only the default mode".into()
            }
            "kong.node.get_memory_stats" => {
                "ProtoBuf:1 cannot pass unit and scale: call it without them".into()
            }
            _ => format!(
                "ProtoBuf:1 passes {arity} argument(s) to this function, not {}",
                args.len()
            ),
        }));
    }
    let arg = |i: usize| args.get(i).unwrap_or(&Mp::Nil);
    let mut how = Reading::Plain;
    let mut wire_name = method.name;
    if method.name == "kong.request.get_query_arg" {
        // Kong's own get_query_arg is `get_query()[name]` (first value of a list); its rpc
        // raises on a flag argument (`?debug` is `true`, not a String).
        wire_name = "kong.request.get_query";
        how = Reading::QueryArg(string_arg(method, 0, arg(0))?.to_vec());
        frame::write(out, wire_name.as_bytes());
        frame::write_message(out, &Int { v: 100 });
        return Ok(Sent::Awaiting(Pending { method, how }));
    }
    frame::write(out, wire_name.as_bytes());
    match method.input {
        Input::Empty => {
            if method.name == "kong.request.get_raw_body" {
                let max = match arg(0) {
                    Mp::Nil => None,
                    n => Some(
                        n.int()
                            .and_then(|n| u64::try_from(n).ok())
                            .ok_or_else(|| wrong_type(method, 0, "a non-negative integer"))?,
                    ),
                };
                how = Reading::RawBody(max);
            }
            frame::write(out, b"");
        }
        Input::Bool => {
            let v = match arg(0) {
                Mp::Nil => false,
                Mp::Bool(b) => *b,
                _ => return Err(wrong_type(method, 0, "a boolean")),
            };
            frame::write_message(out, &Bool { v });
        }
        Input::Int | Input::MaxArgs => {
            let v = match (arg(0), method.input) {
                (Mp::Nil, Input::MaxArgs) => 100,
                (n, _) => n
                    .int()
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or_else(|| wrong_type(method, 0, "an integer"))?,
            };
            frame::write_message(out, &Int { v });
        }
        Input::Str | Input::ByteString => {
            let v = string_arg(method, 0, arg(0))?.to_vec();
            frame::write_message(out, &Str { v });
        }
        Input::Kv => {
            let k = string_arg(method, 0, arg(0))?.to_vec();
            let v = (!arg(1).is_nil()).then(|| to_value(arg(1)));
            frame::write_message(out, &Kv { k, v });
        }
        Input::ListValue => {
            let values = args.iter().map(to_value).collect();
            frame::write_message(out, &ListValue { values });
        }
        Input::Struct => {
            let Mp::Map(entries) = arg(0) else {
                return Err(wrong_type(method, 0, "a map"));
            };
            frame::write_message(out, &to_struct(entries));
        }
        Input::Target => {
            let host = string_arg(method, 0, arg(0))?.to_vec();
            let port = arg(1)
                .int()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| wrong_type(method, 1, "an integer"))?;
            frame::write_message(out, &Target { host, port });
        }
        Input::ConsumerSpec => {
            let id = string_arg(method, 0, arg(0))?.to_vec();
            let by_username = matches!(arg(1), Mp::Bool(true));
            frame::write_message(out, &ConsumerSpec { id, by_username });
        }
        Input::AuthenticateArgs => {
            let consumer = match arg(0) {
                Mp::Nil => None,
                c @ Mp::Map(_) => Some(consumer_of(c)),
                _ => return Err(wrong_type(method, 0, "a consumer (map)")),
            };
            let credential = match arg(1) {
                Mp::Nil => None,
                c @ Mp::Map(_) => Some(AuthenticatedCredential {
                    id: text_field(c, "id"),
                    consumer_id: c
                        .get("consumer_id")
                        .and_then(Mp::bytes)
                        .or_else(|| {
                            c.get("consumer")
                                .and_then(|k| k.get("id"))
                                .and_then(Mp::bytes)
                        })
                        .or_else(|| consumer.as_ref().map(|c| c.id.as_slice()))
                        .unwrap_or_default()
                        .to_vec(),
                }),
                _ => return Err(wrong_type(method, 1, "a credential (map)")),
            };
            frame::write_message(
                out,
                &AuthenticateArgs {
                    consumer,
                    credential,
                },
            );
        }
        Input::ExitArgs => {
            let exit = exit_args(method, arg(0), arg(1), arg(2))?;
            frame::write_message(out, &exit);
            return Ok(Sent::Ending);
        }
    }
    Ok(Sent::Awaiting(Pending { method, how }))
}

/// The frames of the call that ends a request in a failed plugin's place. Over MsgPack:1
/// that is `kong.response.error(status)`, which ProtoBuf:1 lacks; this is
/// `kong.response.exit(status, body, headers)` with the body and content type Kong's
/// `error` sends a JSON client (without its `request_id`). For a stream (`preread`, where
/// MsgPack:1 also uses `exit(status)`), `http` is false and only the status goes: a body
/// would be written into the client's TCP stream.
pub fn write_end_request(status: u16, http: bool, out: &mut Vec<u8>) {
    frame::write(out, b"kong.response.exit");
    if !http {
        frame::write_message(
            out,
            &ExitArgs {
                status: i32::from(status),
                ..ExitArgs::default()
            },
        );
        return;
    }
    let message = match status {
        503 => "The upstream server is currently unavailable",
        _ => "An unexpected error occurred",
    };
    let body =
        serde_json::to_vec(&serde_json::json!({ "message": message })).expect("plain JSON encodes");
    let exit = ExitArgs {
        status: i32::from(status),
        body,
        headers: Some(Struct {
            fields: vec![entry(b"Content-Type", string_value(JSON_TYPE))],
        }),
    };
    frame::write_message(out, &exit);
}

/// What Kong's `exit` sets for a table body.
const JSON_TYPE: &[u8] = b"application/json; charset=utf-8";

fn exit_args(
    method: &Method,
    status: &Mp<'_>,
    body: &Mp<'_>,
    headers: &Mp<'_>,
) -> Result<ExitArgs, Refusal> {
    let status = status
        .int()
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| wrong_type(method, 0, "a status code"))?;
    let mut headers = match headers {
        Mp::Nil => None,
        Mp::Map(entries) => Some(to_struct(entries)),
        _ => return Err(wrong_type(method, 2, "a map of headers")),
    };
    let body = match body {
        Mp::Nil => Vec::new(),
        Mp::Str(b) | Mp::Bin(b) => b.to_vec(),
        // A table body: Kong JSON-encodes it and sets the content type unless given.
        table => {
            let json = serde_json::to_vec(&to_json(table))
                .map_err(|e| Refusal(format!("the body cannot be encoded as JSON: {e}")))?;
            let fields = &mut headers
                .get_or_insert_with(|| Struct { fields: Vec::new() })
                .fields;
            if !fields
                .iter()
                .any(|e| e.key.eq_ignore_ascii_case(b"content-type"))
            {
                fields.push(entry(b"Content-Type", string_value(JSON_TYPE)));
            }
            json
        }
    };
    Ok(ExitArgs {
        status,
        body,
        headers,
    })
}

fn wrong_type(method: &Method, index: usize, expected: &str) -> Refusal {
    Refusal(format!(
        "argument {} must be {expected} to go over ProtoBuf:1 ({})",
        index + 1,
        method.rpc
    ))
}

fn string_arg<'a>(method: &Method, index: usize, arg: &Mp<'a>) -> Result<&'a [u8], Refusal> {
    match arg {
        Mp::Nil => Ok(b""),
        other => other
            .bytes()
            .ok_or_else(|| wrong_type(method, index, "a string")),
    }
}

fn text_field(map: &Mp<'_>, key: &str) -> Vec<u8> {
    map.get(key)
        .and_then(Mp::bytes)
        .unwrap_or_default()
        .to_vec()
}

fn consumer_of(c: &Mp<'_>) -> Consumer {
    Consumer {
        id: text_field(c, "id"),
        created_at: c.get("created_at").and_then(Mp::number).unwrap_or(0.0) as i64,
        username: text_field(c, "username"),
        custom_id: text_field(c, "custom_id"),
        tags: match c.get("tags") {
            Some(Mp::Array(tags)) => tags
                .iter()
                .filter_map(Mp::bytes)
                .map(<[u8]>::to_vec)
                .collect(),
            _ => Vec::new(),
        },
    }
}

fn entry(key: &[u8], value: Value) -> FieldsEntry {
    FieldsEntry {
        key: key.to_vec(),
        value: Some(value),
    }
}

fn string_value(s: &[u8]) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_vec())),
    }
}

/// A map key as Kong's Struct holds it: text (numbers in decimal).
fn key_text(key: &Mp<'_>) -> Option<Vec<u8>> {
    match key {
        Mp::Str(b) | Mp::Bin(b) => Some(b.to_vec()),
        Mp::Int(i) => Some(i.to_string().into_bytes()),
        Mp::UInt(u) => Some(u.to_string().into_bytes()),
        Mp::Float(f) => Some(f.to_string().into_bytes()),
        Mp::Bool(b) => Some(b.to_string().into_bytes()),
        Mp::Nil | Mp::Array(_) | Mp::Map(_) | Mp::Ext => None,
    }
}

fn to_struct(entries: &[(Mp<'_>, Mp<'_>)]) -> Struct {
    Struct {
        fields: entries
            .iter()
            .filter(|(_, v)| !v.is_nil())
            .filter_map(|(k, v)| Some(entry(&key_text(k)?, to_value(v))))
            .collect(),
    }
}

/// A MessagePack value as a `google.protobuf.Value` Kong's `structpb_value` turns back
/// into the same Lua value (nil: no kind at all, which reads as nil, never `null_value`).
pub fn to_value(v: &Mp<'_>) -> Value {
    let kind = match v {
        Mp::Nil | Mp::Ext => None,
        Mp::Bool(b) => Some(Kind::BoolValue(*b)),
        Mp::Int(_) | Mp::UInt(_) | Mp::Float(_) => v.number().map(Kind::NumberValue),
        Mp::Str(b) | Mp::Bin(b) => Some(Kind::StringValue(b.to_vec())),
        Mp::Array(items) => Some(Kind::ListValue(ListValue {
            values: items.iter().map(to_value).collect(),
        })),
        Mp::Map(entries) => Some(Kind::StructValue(to_struct(entries))),
    };
    Value { kind }
}

fn to_json(v: &Mp<'_>) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Mp::Nil | Mp::Ext => J::Null,
        Mp::Bool(b) => J::Bool(*b),
        Mp::Int(i) => J::from(*i),
        Mp::UInt(u) => J::from(*u),
        Mp::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Mp::Str(b) | Mp::Bin(b) => J::String(String::from_utf8_lossy(b).into_owned()),
        Mp::Array(items) => J::Array(items.iter().map(to_json).collect()),
        Mp::Map(entries) => J::Object(
            entries
                .iter()
                .filter_map(|(k, v)| {
                    let key = String::from_utf8(key_text(k)?).ok()?;
                    Some((key, to_json(v)))
                })
                .collect(),
        ),
    }
}

/// A `google.protobuf.Value` as the MessagePack value MsgPack:1 would carry for the Lua
/// value Kong's `structpb_value` makes of it: `null_value` or no kind is nil, an empty
/// struct is an empty array (lua-MessagePack's empty table).
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => msgpack::write_nil(out),
        Some(Kind::NumberValue(n)) => msgpack::write_number(out, *n),
        Some(Kind::StringValue(s)) => msgpack::write_str(out, s),
        Some(Kind::BoolValue(b)) => msgpack::write_bool(out, *b),
        Some(Kind::StructValue(s)) if s.fields.is_empty() => msgpack::write_array_len(out, 0),
        Some(Kind::StructValue(s)) => {
            msgpack::write_map_len(out, s.fields.len());
            for e in &s.fields {
                msgpack::write_str(out, &e.key);
                match &e.value {
                    Some(v) => write_value(out, v),
                    None => msgpack::write_nil(out),
                }
            }
        }
        Some(Kind::ListValue(l)) => {
            msgpack::write_array_len(out, l.values.len());
            for v in &l.values {
                write_value(out, v);
            }
        }
    }
}

/// A header or query `Struct` as Kong's MsgPack:1 `fix_mmap` shapes the table: a string
/// is a one-value list, `true` (a query flag) an empty list, an empty map a map.
fn write_multimap(out: &mut Vec<u8>, s: &Struct) {
    msgpack::write_map_len(out, s.fields.len());
    for e in &s.fields {
        msgpack::write_str(out, &e.key);
        match e.value.as_ref().and_then(|v| v.kind.as_ref()) {
            Some(Kind::StringValue(s)) => {
                msgpack::write_array_len(out, 1);
                msgpack::write_str(out, s);
            }
            Some(Kind::BoolValue(true)) => msgpack::write_array_len(out, 0),
            _ => match &e.value {
                Some(v) => write_value(out, v),
                None => msgpack::write_nil(out),
            },
        }
    }
}

/// Writes a map whose entry count is known only at the end.
struct MapWriter<'o> {
    out: &'o mut Vec<u8>,
    header: usize,
    count: usize,
}

impl<'o> MapWriter<'o> {
    fn new(out: &'o mut Vec<u8>) -> MapWriter<'o> {
        let header = out.len();
        // map16, patched at the end.
        out.extend_from_slice(&[0xde, 0, 0]);
        MapWriter {
            out,
            header,
            count: 0,
        }
    }

    fn key(&mut self, key: &str) {
        self.count += 1;
        msgpack::write_str(self.out, key.as_bytes());
    }

    fn str(&mut self, key: &str, value: &[u8]) {
        self.key(key);
        msgpack::write_str(self.out, value);
    }

    fn str_if(&mut self, key: &str, value: &[u8]) {
        if !value.is_empty() {
            self.str(key, value);
        }
    }

    fn int(&mut self, key: &str, value: i64) {
        self.key(key);
        msgpack::write_int(self.out, value);
    }

    fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        msgpack::write_bool(self.out, value);
    }

    fn strings_if(&mut self, key: &str, values: &[Vec<u8>]) {
        if !values.is_empty() {
            self.key(key);
            msgpack::write_array_len(self.out, values.len());
            for v in values {
                msgpack::write_str(self.out, v);
            }
        }
    }

    fn key_if(&mut self, key: &str, value: Option<&Key>) {
        if let Some(k) = value.filter(|k| !k.id.is_empty()) {
            self.key(key);
            msgpack::write_map_len(self.out, 1);
            msgpack::write_str(self.out, b"id");
            msgpack::write_str(self.out, &k.id);
        }
    }

    /// Patches the count in, using the smallest header (as lua-MessagePack would).
    fn finish(self) {
        let count = self.count;
        if count < 16 {
            self.out[self.header] = 0x80 | count as u8;
            self.out.drain(self.header + 1..self.header + 3);
        } else {
            self.out[self.header + 1..self.header + 3]
                .copy_from_slice(&(count as u16).to_be_bytes());
        }
    }
}

fn write_consumer(out: &mut Vec<u8>, c: &Consumer) {
    if c.id.is_empty() {
        return msgpack::write_nil(out);
    }
    let mut map = MapWriter::new(out);
    map.str("id", &c.id);
    if c.created_at != 0 {
        map.int("created_at", c.created_at);
    }
    map.str_if("username", &c.username);
    map.str_if("custom_id", &c.custom_id);
    map.strings_if("tags", &c.tags);
    map.finish();
}

fn write_route(out: &mut Vec<u8>, r: &Route) {
    if r.id.is_empty() {
        return msgpack::write_nil(out);
    }
    let mut map = MapWriter::new(out);
    map.str("id", &r.id);
    map.int("created_at", r.created_at);
    map.int("updated_at", r.updated_at);
    map.str_if("name", &r.name);
    map.strings_if("protocols", &r.protocols);
    map.strings_if("methods", &r.methods);
    map.strings_if("hosts", &r.hosts);
    map.strings_if("paths", &r.paths);
    map.int(
        "https_redirect_status_code",
        i64::from(r.https_redirect_status_code),
    );
    map.int("regex_priority", i64::from(r.regex_priority));
    map.bool("strip_path", r.strip_path);
    map.bool("preserve_host", r.preserve_host);
    map.strings_if("snis", &r.snis);
    map.strings_if("sources", &r.sources);
    map.strings_if("destinations", &r.destinations);
    map.strings_if("tags", &r.tags);
    map.key_if("service", r.service.as_ref());
    map.finish();
}

fn write_service(out: &mut Vec<u8>, s: &Service) {
    if s.id.is_empty() {
        return msgpack::write_nil(out);
    }
    let mut map = MapWriter::new(out);
    map.str("id", &s.id);
    map.int("created_at", s.created_at);
    map.int("updated_at", s.updated_at);
    map.str_if("name", &s.name);
    map.int("retries", i64::from(s.retries));
    map.str_if("protocol", &s.protocol);
    map.str_if("host", &s.host);
    map.int("port", i64::from(s.port));
    map.str_if("path", &s.path);
    map.int("connect_timeout", i64::from(s.connect_timeout));
    map.int("write_timeout", i64::from(s.write_timeout));
    map.int("read_timeout", i64::from(s.read_timeout));
    map.strings_if("tags", &s.tags);
    map.key_if("client_certificate", s.client_certificate.as_ref());
    map.finish();
}

fn write_memory_stats(out: &mut Vec<u8>, m: &MemoryStats) {
    let mut map = MapWriter::new(out);
    map.key("lua_shared_dicts");
    let dicts = m.lua_shared_dicts.clone().unwrap_or_default();
    let present: Vec<_> = [("kong", dicts.kong), ("kong_db_cache", dicts.kong_db_cache)]
        .into_iter()
        .filter_map(|(name, d)| Some((name, d?)))
        .collect();
    if present.is_empty() {
        msgpack::write_array_len(map.out, 0);
    } else {
        msgpack::write_map_len(map.out, present.len());
        for (name, d) in present {
            msgpack::write_str(map.out, name.as_bytes());
            msgpack::write_map_len(map.out, 2);
            msgpack::write_str(map.out, b"allocated_slabs");
            msgpack::write_int(map.out, d.allocated_slabs);
            msgpack::write_str(map.out, b"capacity");
            msgpack::write_int(map.out, d.capacity);
        }
    }
    map.key("workers_lua_vms");
    msgpack::write_array_len(map.out, m.workers_lua_vms.len());
    for w in &m.workers_lua_vms {
        msgpack::write_map_len(map.out, 2);
        msgpack::write_str(map.out, b"http_allocated_gc");
        msgpack::write_int(map.out, w.http_allocated_gc);
        msgpack::write_str(map.out, b"pid");
        msgpack::write_int(map.out, w.pid);
    }
    map.finish();
}
