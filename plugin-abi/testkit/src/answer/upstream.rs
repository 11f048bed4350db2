//! Kong's answers for `kong.router`, `kong.service`, `kong.service.request` and `kong.service.response`.

use super::{Answer, arg, arg_int, arg_str, entity, mmap, nil, unknown, val};
use super::{cjson_text, edit_headers, headers_arg, lua_text, parse_json_body, set_field};
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
    if let Some(op) = method.strip_prefix("kong.service.request.")
        && let Some(answer) = edit_headers(&mut rec.upstream_request.headers, op, method, args)
    {
        return answer;
    }
    match method {
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
            let body = arg(args, 0)
                .filter(|b| b.as_map().is_some() || b.as_array().is_some())
                .cloned()
                .ok_or_else(|| format!("{method}: args must be a table"))?;
            let mime = arg(args, 1).and_then(Value::as_str).map(str::to_owned);
            let Some(content_type) = mime.clone().or_else(|| {
                rec.upstream_request
                    .header("content-type")
                    .map(str::to_owned)
            }) else {
                // Kong answers nil and "content type was neither explicitly given ...".
                return nil();
            };
            let bare = content_type.split(';').next().unwrap_or_default().trim();
            let encoded = match bare {
                "application/json" => cjson_text(&body),
                "application/x-www-form-urlencoded" => form_text(&body),
                "multipart/form-data" => form_text(&body),
                _ => return Err(format!("{method}: unsupported content type {content_type}")),
            };
            rec.upstream_request.body = encoded.into_bytes();
            rec.upstream_request
                .headers
                .set("content-type", content_type);
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

        _ => unknown(rec, method),
    }
}

/// A table as `ngx.encode_args` writes it (what Kong's `set_body` sends as a form): keys
/// sorted, a list repeats its key, `true` is a bare flag, `false` is left out. (The kit
/// writes multipart bodies the same way: it models the arguments, not the MIME framing.)
fn form_text(body: &Value) -> String {
    let mut pairs: Vec<(String, &Value)> = body
        .as_map()
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| (lua_text(k), v))
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    let mut push = |key: &str, value: &Value| match value {
        Value::Bool(true) => out.push(key.to_owned()),
        Value::Bool(false) | Value::Nil => {}
        other => out.push(format!("{key}={}", lua_text(other))),
    };
    for (key, value) in pairs {
        match value {
            Value::Array(items) => items.iter().for_each(|item| push(&key, item)),
            single => push(&key, single),
        }
    }
    out.join("&")
}
