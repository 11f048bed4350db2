//! Kong's side of every PDK call the crate wraps, answered from the described request.
//!
//! Answers have the shapes Kong sends (multimaps, entity maps, `bin` bodies, nil for
//! absent values); calls a phase does not allow fail as Kong fails them. A method the kit
//! does not know is answered nil, like Kong's "could not find pdk method".

use super::{
    Simulation, TestRequest,
    record::{Exit, LogLine, Recorded},
};
use crate::{ffi::Phase, types::Multimap, value::Value};

/// Fixed identities, so tests can assert on them.
pub const NODE_ID: &str = "4b1d3c3e-0000-4000-8000-00000000000a";
/// The plugin entity id `kong.plugin.get_id` answers.
pub const PLUGIN_ID: &str = "4b1d3c3e-0000-4000-8000-00000000000b";
/// The host name `kong.node.get_hostname` answers.
pub const HOSTNAME: &str = "kong-testkit";
/// `kong.nginx.req_start_time` (seconds); `kong.request.get_start_time` is it in ms.
pub const START_TIME: f64 = 1_700_000_000.25;

type Answer = Result<Option<Value>, String>;

/// Sets up the recorded state a request starts with.
pub(crate) fn initialize(req: &TestRequest, rec: &mut Recorded) {
    let up = &mut rec.upstream_request;
    up.method = req.method.clone();
    up.scheme = req
        .service
        .as_ref()
        .and_then(|s| s.protocol.clone())
        .unwrap_or_else(|| "http".into());
    up.path = req.path.clone();
    up.raw_query = raw_query(req);
    up.headers = req.headers.clone();
    up.body = req.body.clone();
    rec.ctx_shared = req.ctx_shared.clone();
    rec.nginx_ctx = req.nginx_ctx.clone();
    match &req.upstream {
        Some(u) => {
            rec.response.status = u.status;
            rec.response.headers = u.headers.clone();
            rec.response.body = u.body.clone();
        }
        None => rec.response.status = 200,
    }
}

fn raw_query(req: &TestRequest) -> String {
    req.query
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k.clone(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn s(v: impl Into<String>) -> Answer {
    Ok(Some(Value::Str(v.into())))
}

fn val(v: impl Into<Value>) -> Answer {
    Ok(Some(v.into()))
}

fn nil() -> Answer {
    Ok(None)
}

fn entity<T: serde::Serialize>(v: Option<&T>) -> Answer {
    v.map(|v| Value::encode(v)).transpose()
}

fn mmap(m: &Multimap) -> Answer {
    // Kong always sends the multimap form: every value a list.
    Ok(Some(Value::map(m.iter().map(|(k, vs)| {
        (
            k,
            Value::Array(vs.iter().map(|v| Value::from(v.as_str())).collect()),
        )
    }))))
}

fn arg(args: &[Value], i: usize) -> Option<&Value> {
    args.get(i).filter(|v| !v.is_nil())
}

fn arg_str<'a>(method: &str, args: &'a [Value], i: usize) -> Result<&'a str, String> {
    arg(args, i)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{method}: argument #{} must be a string", i + 1))
}

fn arg_int(method: &str, args: &[Value], i: usize) -> Result<i64, String> {
    arg(args, i)
        .and_then(Value::as_i64)
        .ok_or_else(|| format!("{method}: argument #{} must be a number", i + 1))
}

/// Lua's `tostring` of a log argument.
fn lua_text(v: &Value) -> String {
    match v {
        Value::Nil => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Str(s) => s.clone(),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Array(_) | Value::Map(_) => "table".into(),
    }
}

/// The headers of a header-map argument (`set_headers`, exit headers).
fn headers_arg(v: Option<&Value>) -> Result<Multimap, String> {
    match v {
        None => Ok(Multimap::new()),
        Some(v) => v.decode::<Multimap>(),
    }
}

/// Kong refuses some calls outside their phases, raising a Lua error that aborts the
/// handler. `None` when `method` is allowed in `phase`.
fn phase_error(method: &str, phase: Phase) -> Option<String> {
    use Phase::*;
    let allowed: &[Phase] = match method {
        "kong.response.exit" | "kong.response.error" => &[Rewrite, Access, Response, Preread],
        "kong.response.set_status"
        | "kong.response.set_header"
        | "kong.response.add_header"
        | "kong.response.clear_header"
        | "kong.response.set_headers" => &[Rewrite, Access, Response],
        "kong.response.get_status"
        | "kong.response.get_header"
        | "kong.response.get_headers"
        | "kong.response.get_source" => &[Response, Log],
        "kong.service.request.disable_tls" => &[Preread],
        m if m.starts_with("kong.service.request.") => &[Rewrite, Access],
        "kong.service.set_upstream"
        | "kong.service.set_target"
        | "kong.service.set_retries"
        | "kong.service.set_timeouts" => &[Access],
        m if m.starts_with("kong.service.response.") => &[Response, Log],
        m if m.starts_with("kong.request.") => &[Rewrite, Access, Response, Log],
        "kong.client.authenticate" => &[Access],
        "kong.client.tls.request_client_certificate" | "kong.client.tls.disable_session_reuse" => {
            &[Certificate]
        }
        "kong.client.tls.set_client_verify" => &[Rewrite, Access],
        "kong.log.serialize" => &[Log],
        _ => return None,
    };
    (!allowed.contains(&phase))
        .then(|| format!("{method}: function cannot be called in {phase} phase"))
}

/// Kong's answer to `method(args)` in `phase`: `Ok(None)` is nil, `Err` a Lua error.
pub(crate) fn answer(sim: &mut Simulation, phase: Phase, method: &str, args: &[Value]) -> Answer {
    if let Some(err) = phase_error(method, phase) {
        return Err(err);
    }
    let req = &sim.request;
    let rec = &mut sim.recorded;
    if let Some(level) = method.strip_prefix("kong.log.").filter(|l| {
        matches!(
            *l,
            "alert"
                | "crit"
                | "err"
                | "warn"
                | "notice"
                | "info"
                | "debug"
                | "emerg"
                | "deprecation"
        )
    }) {
        rec.logs.push(LogLine {
            level: level.to_owned(),
            message: args.iter().map(lua_text).collect(),
        });
        return nil();
    }
    let host = || {
        req.host
            .clone()
            .or_else(|| {
                req.headers
                    .get("host")
                    .map(|h| h.split(':').next().unwrap_or(h).to_owned())
            })
            .unwrap_or_else(|| "localhost".into())
    };
    let query = || {
        let mut m = Multimap::new();
        for (k, v) in &req.query {
            let list = m.0.entry(k.clone()).or_default();
            if let Some(v) = v {
                list.push(v.clone());
            }
        }
        m
    };
    match method {
        // kong.client
        "kong.client.get_ip" => s(&req.client_ip),
        "kong.client.get_forwarded_ip" => s(req.forwarded_ip.as_ref().unwrap_or(&req.client_ip)),
        "kong.client.get_port" | "kong.client.get_forwarded_port" => {
            val(u32::from(req.client_port))
        }
        "kong.client.get_credential" => match &rec.authenticated {
            Some((_, credential)) => Ok(credential.clone()),
            None => entity(req.credential.as_ref()),
        },
        "kong.client.get_consumer" => match &rec.authenticated {
            Some((consumer, _)) => Ok(consumer.clone()),
            None => entity(req.consumer.as_ref()),
        },
        "kong.client.load_consumer" => {
            let key = arg_str(method, args, 0)?;
            let by_username = arg(args, 1).and_then(Value::as_bool).unwrap_or(false);
            entity(
                req.consumer
                    .as_ref()
                    .filter(|c| c.id == key || (by_username && c.username.as_deref() == Some(key))),
            )
        }
        "kong.client.authenticate" => {
            let (consumer, credential) = (arg(args, 0).cloned(), arg(args, 1).cloned());
            if consumer.is_none() && credential.is_none() {
                return Err(
                    "kong.client.authenticate: either credential or consumer must be provided"
                        .into(),
                );
            }
            rec.authenticated = Some((consumer, credential));
            nil()
        }
        "kong.client.get_protocol" => s(if req.scheme == "https" {
            "https"
        } else {
            "http"
        }),
        "kong.client.tls.request_client_certificate" | "kong.client.tls.disable_session_reuse" => {
            rec.tls_actions
                .push(method.trim_start_matches("kong.client.tls.").to_owned());
            val(true)
        }
        "kong.client.tls.get_full_client_certificate_chain" => nil(),
        "kong.client.tls.set_client_verify" => {
            let v = arg_str(method, args, 0)?;
            rec.tls_actions.push(format!("set_client_verify:{v}"));
            nil()
        }

        // kong.ctx.shared, kong.nginx
        "kong.ctx.shared.get" => Ok(rec.ctx_shared.get(arg_str(method, args, 0)?).cloned()),
        "kong.ctx.shared.set" => {
            let key = arg_str(method, args, 0)?.to_owned();
            match arg(args, 1) {
                Some(v) => rec.ctx_shared.insert(key, v.clone()),
                None => rec.ctx_shared.remove(&key),
            };
            nil()
        }
        "kong.nginx.get_ctx" => Ok(rec.nginx_ctx.get(arg_str(method, args, 0)?).cloned()),
        "kong.nginx.set_ctx" => {
            let key = arg_str(method, args, 0)?.to_owned();
            match arg(args, 1) {
                Some(v) => rec.nginx_ctx.insert(key, v.clone()),
                None => rec.nginx_ctx.remove(&key),
            };
            nil()
        }
        "kong.nginx.get_var" => Ok(req
            .nginx_vars
            .get(arg_str(method, args, 0)?)
            .map(|v| Value::from(v.as_str()))),
        "kong.nginx.get_tls1_version_str" => Ok((req.scheme == "https").then(|| "TLSv1.3".into())),
        "kong.nginx.req_start_time" => val(START_TIME),
        "kong.nginx.get_subsystem" => s(if phase == Phase::Preread {
            "stream"
        } else {
            "http"
        }),
        "kong.nginx.get_statistics" => val(Value::map([
            ("connections_active", Value::Int(1)),
            ("connections_reading", Value::Int(0)),
            ("connections_writing", Value::Int(1)),
            ("connections_waiting", Value::Int(0)),
            ("connections_accepted", Value::Int(1)),
            ("connections_handled", Value::Int(1)),
            ("total_requests", Value::Int(1)),
        ])),

        // kong.ip, kong.node, kong.cluster, kong.plugin, kong.vault
        "kong.ip.is_trusted" => val(req
            .trusted_ips
            .iter()
            .any(|ip| ip == arg_str(method, args, 0).unwrap_or(""))),
        "kong.node.get_id" => s(NODE_ID),
        "kong.node.get_hostname" => s(HOSTNAME),
        "kong.node.get_memory_stats" => {
            let size = |bytes: i64| match arg(args, 0).and_then(Value::as_str) {
                Some(unit) if unit != "b" => Value::from(
                    format!("{:.1} KiB", bytes as f64 / 1024.0)
                        .replace("KiB", &format!("{}iB", unit.to_uppercase())),
                ),
                _ => Value::Int(bytes),
            };
            val(Value::map([
                (
                    "lua_shared_dicts",
                    Value::map([(
                        "kong",
                        Value::map([
                            ("capacity", size(5_242_880)),
                            ("allocated_slabs", size(12_288)),
                        ]),
                    )]),
                ),
                (
                    "workers_lua_vms",
                    Value::Array(vec![Value::map([
                        ("pid", Value::Int(i64::from(std::process::id()))),
                        ("http_allocated_gc", size(1_048_576)),
                    ])]),
                ),
            ]))
        }
        "kong.cluster.get_id" => nil(),
        "kong.plugin.get_id" => s(PLUGIN_ID),
        "kong.vault.get" => Ok(req
            .vault
            .get(arg_str(method, args, 0)?)
            .map(|v| Value::from(v.as_str()))),
        "kong.vault.is_reference" => val(arg_str(method, args, 0)?.starts_with("{vault://")),
        "kong.vault.parse_reference" => Ok(parse_reference(arg_str(method, args, 0)?)),

        // kong.request
        "kong.request.get_scheme" | "kong.request.get_forwarded_scheme" => s(&req.scheme),
        "kong.request.get_host" | "kong.request.get_forwarded_host" => s(host()),
        "kong.request.get_port" | "kong.request.get_forwarded_port" => val(u32::from(req.port)),
        "kong.request.get_forwarded_path"
        | "kong.request.get_path"
        | "kong.request.get_raw_path" => s(&req.path),
        "kong.request.get_forwarded_prefix" => nil(),
        "kong.request.get_http_version" => val(req.http_version),
        "kong.request.get_method" => s(&req.method),
        "kong.request.get_path_with_query" => {
            let q = raw_query(req);
            s(if q.is_empty() {
                req.path.clone()
            } else {
                format!("{}?{q}", req.path)
            })
        }
        "kong.request.get_raw_query" => s(raw_query(req)),
        "kong.request.get_query_arg" => {
            let name = arg_str(method, args, 0)?;
            Ok(req
                .query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| match v {
                    Some(v) => Value::from(v.as_str()),
                    None => Value::Bool(true),
                }))
        }
        "kong.request.get_query" => mmap(&query()),
        "kong.request.get_header" => {
            let name = arg_str(method, args, 0)?
                .to_ascii_lowercase()
                .replace('_', "-");
            Ok(req.headers.get(&name).map(Value::from))
        }
        "kong.request.get_headers" => mmap(&req.headers),
        "kong.request.get_raw_body" => val(req.body.clone()),
        "kong.request.get_body" => Ok(parse_json_body(&req.body)),
        "kong.request.get_start_time" => val(START_TIME * 1000.0),
        "kong.request.get_uri_captures" => val(Value::map([
            ("unnamed", Value::Array(vec![])),
            ("named", Value::Array(vec![])),
        ])),

        // kong.response
        "kong.response.get_status" => val(u32::from(rec.response.status)),
        "kong.response.get_header" => Ok(rec
            .response
            .headers
            .get(&arg_str(method, args, 0)?.to_ascii_lowercase())
            .map(Value::from)),
        "kong.response.get_headers" => mmap(&rec.response.headers),
        "kong.response.get_source" => s(match (&rec.exit, &req.upstream) {
            (Some(_), _) => "exit",
            (None, Some(_)) => "service",
            (None, None) => "error",
        }),
        "kong.response.set_status" => {
            rec.response.status = status_arg(method, args)?;
            nil()
        }
        "kong.response.set_header" => {
            let (name, value) = name_value(method, args)?;
            rec.response.headers.set(name, value);
            nil()
        }
        "kong.response.add_header" => {
            let (name, value) = name_value(method, args)?;
            rec.response.headers.add(name, value);
            nil()
        }
        "kong.response.clear_header" => {
            rec.response
                .headers
                .0
                .remove(&arg_str(method, args, 0)?.to_ascii_lowercase());
            nil()
        }
        "kong.response.set_headers" => {
            for (name, values) in headers_arg(arg(args, 0))?.0 {
                rec.response
                    .headers
                    .0
                    .insert(name.to_ascii_lowercase(), values);
            }
            nil()
        }
        "kong.response.exit" | "kong.response.error" => {
            let status = status_arg(method, args)?;
            let body = arg(args, 1).cloned();
            let headers = headers_arg(arg(args, 2))?;
            rec.response.status = status;
            rec.response.body = match &body {
                Some(Value::Map(_)) => {
                    serde_json::to_vec(&to_json(body.as_ref().unwrap())).unwrap_or_default()
                }
                Some(v) if method == "kong.response.error" => {
                    format!("{{\"message\":{}}}", serde_json::Value::from(lua_text(v))).into_bytes()
                }
                Some(v) => v.as_bytes().map(<[u8]>::to_vec).unwrap_or_default(),
                None => Vec::new(),
            };
            for (name, values) in &headers.0 {
                rec.response
                    .headers
                    .0
                    .insert(name.to_ascii_lowercase(), values.clone());
            }
            rec.exit = Some(Exit {
                method: method.to_owned(),
                status,
                body,
                headers,
            });
            nil()
        }

        // kong.router
        "kong.router.get_route" => entity(req.route.as_ref()),
        "kong.router.get_service" => entity(req.service.as_ref()),

        // kong.service
        "kong.service.set_upstream" => {
            rec.upstream_request.upstream = Some(arg_str(method, args, 0)?.to_owned());
            val(true)
        }
        "kong.service.set_target" => {
            let host = arg_str(method, args, 0)?.to_owned();
            let port = arg_int(method, args, 1)?;
            rec.upstream_request.target = Some((host, port as u16));
            nil()
        }
        "kong.service.set_retries" => {
            rec.upstream_request.retries = Some(arg_int(method, args, 0)?);
            nil()
        }
        "kong.service.set_timeouts" => {
            rec.upstream_request.timeouts = Some((
                arg_int(method, args, 0)?,
                arg_int(method, args, 1)?,
                arg_int(method, args, 2)?,
            ));
            nil()
        }
        "kong.service.set_tls_verify" => {
            rec.upstream_request.tls_verify = arg(args, 0).and_then(Value::as_bool);
            val(true)
        }
        "kong.service.set_tls_verify_depth" => {
            rec.upstream_request.tls_verify_depth = Some(arg_int(method, args, 0)?);
            val(true)
        }

        // kong.service.request
        "kong.service.request.set_scheme" => {
            set_field(&mut rec.upstream_request.scheme, method, args)
        }
        "kong.service.request.set_path" => set_field(&mut rec.upstream_request.path, method, args),
        "kong.service.request.set_raw_query" => {
            set_field(&mut rec.upstream_request.raw_query, method, args)
        }
        "kong.service.request.set_method" => {
            set_field(&mut rec.upstream_request.method, method, args)
        }
        "kong.service.request.set_query" => {
            let q = headers_arg(arg(args, 0))?;
            rec.upstream_request.raw_query = q
                .iter()
                .flat_map(|(k, vs)| vs.iter().map(move |v| format!("{k}={v}")))
                .collect::<Vec<_>>()
                .join("&");
            nil()
        }
        "kong.service.request.clear_query_arg" => {
            let name = arg_str(method, args, 0)?;
            let up = &mut rec.upstream_request;
            up.raw_query = up
                .raw_query
                .split('&')
                .filter(|p| !p.is_empty() && p.split('=').next() != Some(name))
                .collect::<Vec<_>>()
                .join("&");
            nil()
        }
        "kong.service.request.set_header" => {
            let (name, value) = name_value(method, args)?;
            rec.upstream_request.headers.set(name, value);
            nil()
        }
        "kong.service.request.add_header" => {
            let (name, value) = name_value(method, args)?;
            rec.upstream_request.headers.add(name, value);
            nil()
        }
        "kong.service.request.clear_header" => {
            rec.upstream_request
                .headers
                .0
                .remove(&arg_str(method, args, 0)?.to_ascii_lowercase());
            nil()
        }
        "kong.service.request.set_headers" => {
            for (name, values) in headers_arg(arg(args, 0))?.0 {
                rec.upstream_request
                    .headers
                    .0
                    .insert(name.to_ascii_lowercase(), values);
            }
            nil()
        }
        "kong.service.request.set_raw_body" => {
            rec.upstream_request.body = arg(args, 0)
                .and_then(Value::as_bytes)
                .ok_or_else(|| format!("{method}: argument #1 must be a string"))?
                .to_vec();
            nil()
        }
        "kong.service.request.enable_buffering" => {
            rec.upstream_request.buffering = true;
            nil()
        }
        "kong.service.request.set_body" => {
            let body = arg(args, 0).cloned().unwrap_or_default();
            let mime = arg(args, 1).and_then(Value::as_str).map(str::to_owned);
            rec.upstream_request.body = serde_json::to_vec(&to_json(&body)).unwrap_or_default();
            rec.upstream_request.body_args = Some((body, mime));
            val(true)
        }
        "kong.service.request.disable_tls" => {
            rec.upstream_request.tls_disabled = true;
            val(true)
        }

        // kong.service.response
        "kong.service.response.get_status" => Ok(req
            .upstream
            .as_ref()
            .map(|u| Value::from(u32::from(u.status)))),
        "kong.service.response.get_header" => {
            let name = arg_str(method, args, 0)?.to_ascii_lowercase();
            Ok(req
                .upstream
                .as_ref()
                .and_then(|u| u.headers.get(&name))
                .map(Value::from))
        }
        "kong.service.response.get_headers" => mmap(
            &req.upstream
                .as_ref()
                .map(|u| u.headers.clone())
                .unwrap_or_default(),
        ),
        "kong.service.response.get_raw_body" => val(req
            .upstream
            .as_ref()
            .map(|u| u.body.clone())
            .unwrap_or_default()),
        "kong.service.response.get_body" => {
            Ok(req.upstream.as_ref().and_then(|u| parse_json_body(&u.body)))
        }

        // kong.log
        "kong.log.set_serialize_value" => {
            let key = arg_str(method, args, 0)?.to_owned();
            let value = arg(args, 1).cloned().unwrap_or_default();
            let mode = arg(args, 2)
                .and_then(|o| o.get("mode"))
                .and_then(Value::as_str)
                .unwrap_or("set");
            let present = rec.serialize_values.contains_key(&key);
            if mode == "set" || (mode == "add" && !present) || (mode == "replace" && present) {
                rec.serialize_values.insert(key, value);
            }
            nil()
        }
        "kong.log.serialize" => s(serialize(req, rec).to_string()),

        _ => {
            rec.unknown_calls.push(method.to_owned());
            nil()
        }
    }
}

fn status_arg(method: &str, args: &[Value]) -> Result<u16, String> {
    u16::try_from(arg_int(method, args, 0)?).map_err(|_| format!("{method}: invalid status"))
}

fn name_value(method: &str, args: &[Value]) -> Result<(String, String), String> {
    let name = arg_str(method, args, 0)?.to_ascii_lowercase();
    let value = arg(args, 1)
        .map(lua_text)
        .ok_or_else(|| format!("{method}: argument #2 must be a string"))?;
    Ok((name, value))
}

fn set_field(field: &mut String, method: &str, args: &[Value]) -> Answer {
    *field = arg_str(method, args, 0)?.to_owned();
    nil()
}

fn parse_json_body(body: &[u8]) -> Option<Value> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    Value::encode(&json).ok()
}

fn parse_reference(reference: &str) -> Option<Value> {
    let inner = reference.strip_prefix("{vault://")?.strip_suffix('}')?;
    let (name, rest) = inner.split_once('/')?;
    let (path, version) = match rest.split_once('#') {
        Some((p, v)) => (p, v.parse::<i64>().ok()),
        None => (rest, None),
    };
    let (resource, key) = match path.split_once('/') {
        Some((r, k)) => (r, Some(k)),
        None => (path, None),
    };
    let mut entries = vec![
        ("name", Value::from(name)),
        ("resource", Value::from(resource)),
    ];
    if let Some(key) = key {
        entries.push(("key", Value::from(key)));
    }
    if let Some(version) = version {
        entries.push(("version", Value::Int(version)));
    }
    Some(Value::map(entries))
}

/// A [`Value`] as JSON (maps with non-string keys use their text).
fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Float(f) => J::from(*f),
        Value::Str(s) => J::from(s.as_str()),
        Value::Bytes(b) => J::from(String::from_utf8_lossy(b).into_owned()),
        Value::Array(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| (lua_text(k), to_json(v)))
                .collect(),
        ),
    }
}

/// The summary `kong.log.serialize` reports, built from the request and what the
/// plugin did, including `set_serialize_value` keys (dotted keys nest).
fn serialize(req: &TestRequest, rec: &Recorded) -> serde_json::Value {
    let headers = |m: &Multimap| {
        serde_json::Value::Object(
            m.iter()
                .map(|(k, vs)| {
                    let v = match vs {
                        [one] => serde_json::Value::from(one.as_str()),
                        many => serde_json::Value::from(many.to_vec()),
                    };
                    (k.to_owned(), v)
                })
                .collect(),
        )
    };
    let mut querystring = serde_json::Map::new();
    for (k, v) in &req.query {
        querystring.insert(
            k.clone(),
            v.as_ref()
                .map_or(serde_json::Value::Bool(true), |v| v.as_str().into()),
        );
    }
    let url = format!(
        "{}://{}:{}{}",
        req.scheme,
        req.host.clone().unwrap_or_else(|| req
            .headers
            .get("host")
            .unwrap_or("localhost")
            .to_owned()),
        req.port,
        req.path
    );
    let mut out = serde_json::json!({
        "request": {
            "method": req.method,
            "uri": req.path,
            "url": url,
            "headers": headers(&req.headers),
            "querystring": querystring,
            "size": req.body.len(),
        },
        "response": {
            "status": rec.response.status,
            "headers": headers(&rec.response.headers),
            "size": rec.response.body.len(),
        },
        "client_ip": req.forwarded_ip.clone().unwrap_or_else(|| req.client_ip.clone()),
        "started_at": (START_TIME * 1000.0) as i64,
    });
    let add = |out: &mut serde_json::Value, key: &str, v: serde_json::Value| {
        out.as_object_mut().unwrap().insert(key.to_owned(), v);
    };
    if let Some(route) = &req.route {
        add(
            &mut out,
            "route",
            serde_json::to_value(route).unwrap_or_default(),
        );
    }
    if let Some(service) = &req.service {
        add(
            &mut out,
            "service",
            serde_json::to_value(service).unwrap_or_default(),
        );
    }
    if let Some(consumer) = &req.consumer {
        add(
            &mut out,
            "consumer",
            serde_json::to_value(consumer).unwrap_or_default(),
        );
    }
    for (key, value) in &rec.serialize_values {
        let mut node = &mut out;
        let parts: Vec<&str> = key.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            let obj = node.as_object_mut().unwrap();
            node = obj
                .entry(part.to_string())
                .or_insert_with(|| serde_json::json!({}));
            if !node.is_object() {
                *node = serde_json::json!({});
            }
        }
        node.as_object_mut()
            .unwrap()
            .insert(parts[parts.len() - 1].to_owned(), to_json(value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `"kong.…"` function name the PDK wrappers use.
    fn pdk_methods() -> Vec<String> {
        let sources = [
            include_str!("../pdk/client.rs"),
            include_str!("../pdk/ctx.rs"),
            include_str!("../pdk/ip.rs"),
            include_str!("../pdk/log.rs"),
            include_str!("../pdk/nginx.rs"),
            include_str!("../pdk/node.rs"),
            include_str!("../pdk/request.rs"),
            include_str!("../pdk/response.rs"),
            include_str!("../pdk/router.rs"),
            include_str!("../pdk/service.rs"),
            include_str!("../pdk/vault.rs"),
        ];
        let mut methods: Vec<String> = sources
            .iter()
            .flat_map(|src| src.split('"').skip(1).step_by(2))
            .filter(|lit| lit.starts_with("kong.") && !lit.contains(' ') && !lit.contains('('))
            .map(str::to_owned)
            .collect();
        methods.sort();
        methods.dedup();
        methods
    }

    #[test]
    fn the_kit_answers_every_function_the_pdk_wraps() {
        let methods = pdk_methods();
        assert!(methods.len() > 90, "found only {methods:?}");
        let args = [
            Value::from("x"),
            Value::from(1),
            Value::from(2),
            Value::from(3),
        ];
        for method in &methods {
            let mut sim = Simulation::new(TestRequest::get("/"));
            for phase in Phase::ALL {
                let _ = answer(&mut sim, phase, method, &args);
            }
            assert!(
                sim.unknown_calls.is_empty(),
                "the kit does not answer {method}"
            );
        }
        let mut sim = Simulation::new(TestRequest::get("/"));
        let _ = answer(&mut sim, Phase::Access, "kong.nope.nothing", &[]);
        assert_eq!(sim.unknown_calls, ["kong.nope.nothing"]);
    }
}
