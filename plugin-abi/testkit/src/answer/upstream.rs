//! Kong's answers for `kong.router`, `kong.service`, `kong.service.request` and `kong.service.response`.

use super::{Answer, arg, arg_int, arg_str, entity, mmap, nil, unknown, val};
use super::{edit_headers, headers_arg, log::to_json, parse_json_body, set_field};
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

        _ => unknown(rec, method),
    }
}
