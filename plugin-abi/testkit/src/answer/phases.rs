//! Which phases Kong allows a call in.

use kong_rust_pdk::Phase;

/// Kong refuses some calls outside their phases, raising a Lua error that aborts the
/// handler. `None` when `method` is allowed in `phase`.
pub(super) fn phase_error(method: &str, phase: Phase) -> Option<String> {
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
