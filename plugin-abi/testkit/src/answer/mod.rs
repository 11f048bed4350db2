//! Kong's side of every PDK call the crate wraps, answered from the described request.
//!
//! Answers have the shapes Kong sends (multimaps, entity maps, `bin` bodies, nil for
//! absent values); calls a phase does not allow fail as Kong fails them. A method the kit
//! does not know is answered nil, like Kong's "could not find pdk method".

mod context;
mod log;
mod phases;
mod request;
mod response;
mod upstream;

use super::{
    TestRequest,
    record::{LogLine, Recorded},
};
use kong_rust_pdk::{Phase, Value, types::Multimap};

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

/// Kong's answer to `method(args)` in `phase` for request `req`, with its effects on
/// `rec`: `Ok(None)` is nil, `Err` a Lua error.
pub(crate) fn answer(
    req: &TestRequest,
    rec: &mut Recorded,
    phase: Phase,
    method: &str,
    args: &[Value],
) -> Answer {
    if let Some(err) = phases::phase_error(method, phase) {
        return Err(err);
    }
    if let Some(level) = method
        .strip_prefix("kong.log.")
        .filter(|l| LOG_LEVELS.contains(l))
    {
        rec.logs.push(LogLine {
            level: level.to_owned(),
            message: args.iter().map(lua_text).collect(),
        });
        return nil();
    }
    let group = if method.starts_with("kong.request.") {
        request::answer
    } else if method.starts_with("kong.response.") {
        response::answer
    } else if method.starts_with("kong.service.") || method.starts_with("kong.router.") {
        upstream::answer
    } else if method.starts_with("kong.log.") {
        log::answer
    } else {
        context::answer
    };
    group(req, rec, phase, method, args)
}

/// `kong.log.<level>` functions.
const LOG_LEVELS: [&str; 9] = [
    "alert",
    "crit",
    "err",
    "warn",
    "notice",
    "info",
    "debug",
    "emerg",
    "deprecation",
];

/// Records a function the kit does not model and answers nil, as Kong does.
fn unknown(rec: &mut Recorded, method: &str) -> Answer {
    rec.unknown_calls.push(method.to_owned());
    nil()
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

/// The header edits `kong.response.*` and `kong.service.request.*` share (`op` is the
/// function name without its group); `None` when `op` is not one of them.
fn edit_headers(headers: &mut Multimap, op: &str, method: &str, args: &[Value]) -> Option<Answer> {
    let result = match op {
        "set_header" => name_value(method, args).map(|(name, value)| {
            headers.set(name, value);
        }),
        "add_header" => name_value(method, args).map(|(name, value)| {
            headers.add(name, value);
        }),
        "clear_header" => arg_str(method, args, 0).map(|name| {
            headers.0.remove(&name.to_ascii_lowercase());
        }),
        "set_headers" => headers_arg(arg(args, 0)).map(|new| {
            for (name, values) in new.0 {
                headers.0.insert(name.to_ascii_lowercase(), values);
            }
        }),
        _ => return None,
    };
    Some(result.and_then(|()| nil()))
}

fn set_field(field: &mut String, method: &str, args: &[Value]) -> Answer {
    *field = arg_str(method, args, 0)?.to_owned();
    nil()
}

fn parse_json_body(body: &[u8]) -> Option<Value> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    Value::encode(&json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Simulation;

    /// Every `"kong.…"` function name the PDK wrappers use.
    fn pdk_methods() -> Vec<String> {
        let sources = [
            include_str!("../../../src/pdk/client.rs"),
            include_str!("../../../src/pdk/ctx.rs"),
            include_str!("../../../src/pdk/ip.rs"),
            include_str!("../../../src/pdk/log.rs"),
            include_str!("../../../src/pdk/nginx.rs"),
            include_str!("../../../src/pdk/node.rs"),
            include_str!("../../../src/pdk/request.rs"),
            include_str!("../../../src/pdk/response.rs"),
            include_str!("../../../src/pdk/router.rs"),
            include_str!("../../../src/pdk/service.rs"),
            include_str!("../../../src/pdk/vault.rs"),
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
                let _ = answer(&sim.request, &mut sim.recorded, phase, method, &args);
            }
            assert!(
                sim.unknown_calls.is_empty(),
                "the kit does not answer {method}"
            );
        }
        let mut sim = Simulation::new(TestRequest::get("/"));
        let _ = answer(
            &sim.request,
            &mut sim.recorded,
            Phase::Access,
            "kong.nope.nothing",
            &[],
        );
        assert_eq!(sim.unknown_calls, ["kong.nope.nothing"]);
    }
}
