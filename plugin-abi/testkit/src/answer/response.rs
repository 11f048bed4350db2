//! Kong's answers for `kong.response`: the client response, and exits.

use super::{Answer, arg, arg_str, mmap, nil, s, unknown, val};
use super::{cjson_text, edit_headers, headers_arg, lua_text, status_arg};
use crate::record::Exit;
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
    if let Some(op) = method.strip_prefix("kong.response.")
        && let Some(answer) = edit_headers(&mut rec.response.headers, op, method, args)
    {
        return answer;
    }
    match method {
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
        "kong.response.exit" | "kong.response.error" => {
            let status = status_arg(method, args)?;
            let body = arg(args, 1).cloned();
            let headers = headers_arg(arg(args, 2))?;
            rec.response.status = status;
            rec.response.body = match &body {
                // A table body: Kong encodes it with cjson.
                Some(table @ (Value::Map(_) | Value::Array(_))) => cjson_text(table).into_bytes(),
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

        _ => unknown(rec, method),
    }
}
