//! Kong's answers for `kong.request`, from the described request.

use super::{Answer, arg_str, mmap, nil, query_mmap, s, unknown, val};
use super::{START_TIME, parse_json_body, raw_query};
use kong_rust_pdk::{Phase, Value};

use crate::{TestRequest, record::Recorded};

/// Kong's answer to `method(args)`; a function of the group the kit does not model is
/// recorded as unknown and answered nil.
pub(super) fn answer(
    req: &TestRequest,
    rec: &mut Recorded,
    _phase: Phase,
    method: &str,
    args: &[Value],
) -> Answer {
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
    match method {
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
        // The first occurrence: its value, or `true` for a flag.
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
        "kong.request.get_query" => query_mmap(&req.query),
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

        _ => unknown(rec, method),
    }
}
