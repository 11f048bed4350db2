//! What a simulated request recorded: the effects a plugin's PDK calls had.

use std::collections::BTreeMap;

use kong_rust_pdk::{Phase, Value, types::Multimap};

/// The response the client gets: the upstream's (if the test described one, else 200),
/// changed by `kong.response.*`, or replaced by an exit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientResponse {
    /// Status.
    pub status: u16,
    /// Headers, names lowercase.
    pub headers: Multimap,
    /// Body.
    pub body: Vec<u8>,
}

impl ClientResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase())
    }

    /// The body parsed as JSON, for assertions. Panics, saying what the body is, when it is
    /// not JSON.
    pub fn body_json(&self) -> serde_json::Value {
        parse_json(&self.body)
    }
}

fn parse_json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "the body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(bytes)
        )
    })
}

/// A `kong.response.exit` or `kong.response.error` call.
#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    /// `kong.response.exit` or `kong.response.error`.
    pub method: String,
    /// Status.
    pub status: u16,
    /// The body argument as sent: a string, bytes, a map (which Kong JSON-encodes), or
    /// the `error` message; `None` when absent.
    pub body: Option<Value>,
    /// Headers given with it.
    pub headers: Multimap,
}

impl Exit {
    /// The body as text, if it was a string.
    pub fn body_str(&self) -> Option<&str> {
        self.body.as_ref()?.as_str()
    }

    /// The body as the JSON the client gets, for assertions: a [`Body::json`] body (sent as
    /// JSON text), a JSON string, or a table (which Kong encodes as JSON). Panics, saying
    /// what the body is, when it is absent or not JSON.
    ///
    /// [`Body::json`]: kong_rust_pdk::types::Body::json
    pub fn body_json(&self) -> serde_json::Value {
        match &self.body {
            None => panic!("the {} call has no body", self.method),
            Some(Value::Str(text)) => parse_json(text.as_bytes()),
            Some(Value::Bytes(bytes)) => parse_json(bytes),
            Some(table) => serde_json::to_value(table)
                .unwrap_or_else(|e| panic!("the body {table:?} is not JSON: {e}")),
        }
    }
}

/// The request Kong sends upstream, as `kong.service.*` and `kong.service.request.*` left
/// it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpstreamRequest {
    /// Method.
    pub method: String,
    /// `http` or `https`.
    pub scheme: String,
    /// Path.
    pub path: String,
    /// Query string without `?`.
    pub raw_query: String,
    /// Headers, names lowercase.
    pub headers: Multimap,
    /// Body.
    pub body: Vec<u8>,
    /// `set_body`'s arguments and mimetype, if called.
    pub body_args: Option<(Value, Option<String>)>,
    /// `set_upstream`'s upstream.
    pub upstream: Option<String>,
    /// `set_target`'s host and port.
    pub target: Option<(String, u16)>,
    /// `set_retries`'s count.
    pub retries: Option<i64>,
    /// `set_timeouts`'s connect, write and read timeouts, ms.
    pub timeouts: Option<(i64, i64, i64)>,
    /// `set_tls_verify`'s flag.
    pub tls_verify: Option<bool>,
    /// `set_tls_verify_depth`'s depth.
    pub tls_verify_depth: Option<i64>,
    /// Whether `enable_buffering` was called.
    pub buffering: bool,
    /// Whether `disable_tls` was called.
    pub tls_disabled: bool,
}

impl UpstreamRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase())
    }
}

/// A `kong.log.<level>` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// `err`, `warn`, `notice`, `info`, `debug`...
    pub level: String,
    /// The arguments, stringified and concatenated as Kong does.
    pub message: String,
}

/// A `kong.telemetry.log` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryLog {
    /// The plugin name given.
    pub plugin_name: String,
    /// The message type.
    pub message_type: String,
    /// The message, if any.
    pub message: Option<String>,
    /// The attributes table, if any.
    pub attributes: Option<Value>,
}

/// One PDK call, with its decoded arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The phase it was made in.
    pub phase: Phase,
    /// The Kong function, e.g. `kong.request.get_header`.
    pub method: String,
    /// The positional arguments.
    pub args: Vec<Value>,
}

/// How one phase handler ended.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseOutcome {
    /// The phase.
    pub phase: Phase,
    /// `Ok` when the handler returned `Ok` or ended the request with an exit; `Err` with
    /// the handler's error, its panic, or the Lua error Kong raised for a call (e.g. a
    /// function not available in this phase). Kong never answers a call that raised: it
    /// abandons the event, and in `rewrite`, `access` and `response` the client gets 500
    /// (which the simulation records as the response).
    pub result: Result<(), String>,
    /// Whether it ended the request (`kong.response.exit`/`error`).
    pub exited: bool,
}

/// Everything the plugin did to the simulated request, across the phases run.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// The client's response.
    pub response: ClientResponse,
    /// The exit, if a handler ended the request.
    pub exit: Option<Exit>,
    /// The upstream request.
    pub upstream_request: UpstreamRequest,
    /// `kong.ctx.shared` at the end.
    pub ctx_shared: BTreeMap<String, Value>,
    /// `ngx.ctx` (`kong.nginx.set_ctx`) at the end.
    pub nginx_ctx: BTreeMap<String, Value>,
    /// `kong.log.set_serialize_value` values, by (dotted) key.
    pub serialize_values: BTreeMap<String, Value>,
    /// `kong.client.authenticate`'s consumer and credential.
    pub authenticated: Option<(Option<Value>, Option<Value>)>,
    /// `kong.client.tls` calls that changed the handshake, e.g.
    /// `request_client_certificate`, `set_client_verify:SUCCESS`.
    pub tls_actions: Vec<String>,
    /// Log lines, in order.
    pub logs: Vec<LogLine>,
    /// `kong.telemetry.log` entries, in order.
    pub telemetry_logs: Vec<TelemetryLog>,
    /// Calls the configured Kong version lacks ([`TestRequest::kong_version`](super::TestRequest::kong_version)):
    /// the function and the reason, answered with `PdkError::Unavailable` as the daemon
    /// answers them under `--kong-version`, without reaching Kong.
    pub refused_calls: Vec<(String, String)>,
    /// Every PDK call, in order.
    pub calls: Vec<Call>,
    /// Calls of functions the kit does not model (answered nil, as Kong answers a
    /// function it cannot find); answer them with [`TestRequest::answer`](super::TestRequest::answer).
    pub unknown_calls: Vec<String>,
}

impl Recorded {
    /// Whether some log line at `level` contains `text`.
    pub fn logged(&self, level: &str, text: &str) -> bool {
        self.logs
            .iter()
            .any(|l| l.level == level && l.message.contains(text))
    }

    /// The methods called, in order.
    pub fn methods(&self) -> Vec<&str> {
        self.calls.iter().map(|c| c.method.as_str()).collect()
    }
}
