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

/// The query multimap as Kong sends it (`ngx.req.get_uri_args` through the bridge's
/// `fix_mmap`): a lone flag is an empty list, a lone value a one-item list, and a repeated
/// argument the list of its occurrences, a flag occurrence being `true`.
fn query_mmap(query: &[(String, Option<String>)]) -> Answer {
    let mut names: Vec<&str> = Vec::new();
    for (name, _) in query {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    let entries = names.into_iter().map(|name| {
        let occurrences: Vec<&Option<String>> = query
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .collect();
        let list = match occurrences[..] {
            [None] => Vec::new(),
            _ => occurrences
                .iter()
                .map(|v| v.as_deref().map_or(Value::Bool(true), Value::from))
                .collect(),
        };
        (name, Value::Array(list))
    });
    Ok(Some(Value::map(entries)))
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

/// What Kong keeps about one request besides its effects.
#[derive(Debug, Default)]
pub(crate) struct KongState {
    /// `kong.log.inspect.off()` was called (Kong starts with inspection on).
    inspect_off: bool,
}

/// Kong's answer to `method(args)` in `phase` for request `req`, with its effects on `rec`
/// and `kong`: `Ok(None)` is nil, `Err` a Lua error.
pub(crate) fn answer(
    req: &TestRequest,
    rec: &mut Recorded,
    kong: &mut KongState,
    phase: Phase,
    method: &str,
    args: &[Value],
) -> Answer {
    if let Some(err) = phases::phase_error(method, phase, req.kong_version) {
        return Err(err);
    }
    let level = match method {
        // `kong.log(...)`, Kong's call form: notice.
        "kong.log" => Some("notice"),
        "kong.log.inspect" => {
            if kong.inspect_off {
                return nil();
            }
            rec.logs.push(LogLine {
                level: "notice".into(),
                message: args
                    .iter()
                    .map(|v| log::to_json(v).to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
            });
            return nil();
        }
        "kong.log.inspect.on" | "kong.log.inspect.off" => {
            kong.inspect_off = method.ends_with("off");
            return nil();
        }
        // Kong logs these only when it runs its own test suite (`KONG_IS_TESTING=1`).
        "kong.log.trace" => return nil(),
        _ => method
            .strip_prefix("kong.log.")
            .filter(|l| LOG_LEVELS.contains(l)),
    };
    if let Some(level) = level {
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
    } else if method.starts_with("kong.log.") || method.starts_with("kong.telemetry.") {
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

/// A table body as Kong's cjson encodes it: an empty table (map or array) is `{}`, a nil
/// member vanishes, `/` is escaped.
fn cjson_text(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Array(items) if items.is_empty() => out.push_str("{}"),
            Value::Map(entries) if entries.is_empty() => out.push_str("{}"),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            Value::Map(entries) => {
                out.push('{');
                let mut first = true;
                for (key, item) in entries.iter().filter(|(_, item)| !item.is_nil()) {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    write(&Value::from(lua_text(key)), out);
                    out.push(':');
                    write(item, out);
                }
                out.push('}');
            }
            other => {
                let json = log::to_json(other).to_string();
                out.push_str(&json.replace('/', "\\/"));
            }
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
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
            include_str!("../../../src/pdk/telemetry.rs"),
            include_str!("../../../src/pdk/vault.rs"),
        ];
        let mut methods: Vec<String> = sources
            .iter()
            .flat_map(|src| src.split('"').skip(1).step_by(2))
            .filter(|lit| {
                (lit.starts_with("kong.") || *lit == "kong")
                    && !lit.contains(' ')
                    && !lit.contains('(')
            })
            .map(str::to_owned)
            .collect();
        methods.sort();
        methods.dedup();
        methods
    }

    #[test]
    fn table_bodies_are_encoded_as_cjson_does() {
        let body = Value::map([
            ("items", Value::Array(vec![])),
            ("gone", Value::Nil),
            ("url", Value::from("a/b")),
            ("list", Value::Array(vec![1.into(), 2.into()])),
        ]);
        assert_eq!(
            cjson_text(&body),
            r#"{"items":{},"url":"a\/b","list":[1,2]}"#
        );
    }

    #[test]
    fn query_flags_mixed_with_values_arrive_as_kong_sends_them() {
        let req = TestRequest::get("/?a&a=1&b&c=2");
        let Ok(Some(m)) = query_mmap(&req.query) else {
            panic!("no map")
        };
        assert_eq!(
            m.get("a"),
            Some(&Value::Array(vec![Value::Bool(true), "1".into()]))
        );
        assert_eq!(m.get("b"), Some(&Value::Array(vec![])));
        let decoded: Multimap = m.decode().unwrap();
        assert_eq!(decoded.get_all("a"), ["1"]);
        assert!(decoded.contains("b"));
    }

    #[test]
    fn the_kit_answers_every_function_the_pdk_wraps() {
        use kong_rust_pdk::kong_versions::{PDK_FUNCTIONS, pdk_function};
        let wrapped = pdk_methods();
        assert!(wrapped.len() > 100, "found only {wrapped:?}");
        for method in &wrapped {
            let function = pdk_function(method);
            assert!(
                function.is_some_and(|f| f.rust.is_some()),
                "{method} is wrapped but not in the kong_versions table as callable"
            );
        }
        let args = [
            Value::from("x"),
            Value::map([("k", Value::from("v"))]),
            Value::from("y"),
            Value::from(3),
        ];
        for function in PDK_FUNCTIONS.iter().filter(|f| f.rust.is_some()) {
            assert!(
                wrapped.iter().any(|m| m == function.name),
                "{} is in the table but no wrapper calls it",
                function.name
            );
            let mut sim = Simulation::new(TestRequest::get("/"));
            for phase in Phase::ALL {
                let _ = answer(
                    &sim.request,
                    &mut sim.recorded,
                    &mut sim.kong,
                    phase,
                    function.name,
                    &args,
                );
            }
            assert!(
                sim.unknown_calls.is_empty(),
                "the kit does not answer {}",
                function.name
            );
        }
        let mut sim = Simulation::new(TestRequest::get("/"));
        let _ = answer(
            &sim.request,
            &mut sim.recorded,
            &mut sim.kong,
            Phase::Access,
            "kong.nope.nothing",
            &[],
        );
        assert_eq!(sim.unknown_calls, ["kong.nope.nothing"]);
    }
}
