//! rust-request-transformer end to end: the real daemon on the plugin's .so, driven as
//! Kong drives it, with every PDK call it makes checked.

use kong_rust_pluginserver_e2e::{
    daemon::Scratch,
    kong::{EventEnd, PdkCall},
    msgpack::map,
};
use rmpv::Value;
use serde_json::json;

const PLUGIN: &str = "rust-request-transformer";

fn s(v: &str) -> Value {
    Value::from(v)
}

/// The configuration as Kong sends it: every field present, defaults filled.
fn kong_config() -> serde_json::Value {
    json!({
        "remove": {"headers": ["x-debug"], "querystring": ["token"]},
        "rename": {"headers": {"x-user": "x-upstream-user"}, "querystring": {"q": "query"}},
        "add": {"headers": {"x-via": "kong"}, "querystring": {"version": "2"}},
        "path_prefix": {"from": "/api/v1", "to": "/v1"},
        "route_id": "0e3d5c39-0000-4000-8000-000000000003",
    })
}

/// Kong's answers for `GET /api/v1/search?q=rust&token=t&debug` with the given headers.
fn answer(headers: &Value, call: &PdkCall) -> Option<Value> {
    match call.method.as_str() {
        "kong.request.get_headers" => Some(headers.clone()),
        "kong.request.get_raw_query" => Some(s("q=rust&token=t&debug")),
        "kong.request.get_path" => Some(s("/api/v1/search")),
        m if m.starts_with("kong.service.request.") => None,
        other => panic!("{PLUGIN} called {other}"),
    }
}

#[test]
fn transforms_headers_query_and_path_with_the_exact_calls() {
    let scratch = Scratch::with_plugins(&[PLUGIN]);
    let daemon = scratch.start(&[PLUGIN]);
    let kong = daemon.kong();
    let instance = kong.start_instance(PLUGIN, kong_config()).unwrap();

    // Kong's multimap: every value a list, names lowercase.
    let headers = map([
        ("host", Value::Array(vec![s("api.test")])),
        ("x-debug", Value::Array(vec![s("1")])),
        ("x-user", Value::Array(vec![s("alice"), s("bob")])),
    ]);
    let run = kong.run_event(instance, "access", |c| answer(&headers, c));
    assert_eq!(run.end, EventEnd::Returned, "{run:?}");
    assert_eq!(
        run.calls,
        [
            PdkCall::new("kong.request.get_headers", vec![]),
            PdkCall::new("kong.service.request.clear_header", vec![s("x-debug")]),
            PdkCall::new("kong.service.request.clear_header", vec![s("x-user")]),
            PdkCall::new(
                "kong.service.request.set_header",
                vec![s("x-upstream-user"), s("alice")]
            ),
            PdkCall::new(
                "kong.service.request.add_header",
                vec![s("x-upstream-user"), s("bob")]
            ),
            PdkCall::new(
                "kong.service.request.set_header",
                vec![s("x-via"), s("kong")]
            ),
            PdkCall::new("kong.request.get_raw_query", vec![]),
            PdkCall::new(
                "kong.service.request.set_raw_query",
                vec![s("query=rust&debug&version=2")]
            ),
            PdkCall::new("kong.request.get_path", vec![]),
            PdkCall::new("kong.service.request.set_path", vec![s("/v1/search")]),
        ]
    );
}

#[test]
fn a_request_the_rules_do_not_match_is_only_read() {
    let scratch = Scratch::with_plugins(&[PLUGIN]);
    let daemon = scratch.start(&[PLUGIN]);
    let kong = daemon.kong();
    let instance = kong.start_instance(PLUGIN, kong_config()).unwrap();

    // Kong sends an empty multimap as an empty map; the client already sent x-via.
    let run = kong.run_event(instance, "access", |c| match c.method.as_str() {
        "kong.request.get_headers" => Some(map([("x-via", Value::Array(vec![s("cdn")]))])),
        "kong.request.get_raw_query" => Some(s("version=1")),
        "kong.request.get_path" => Some(s("/health")),
        other => panic!("{PLUGIN} changed the request: {other}"),
    });
    assert_eq!(run.end, EventEnd::Returned, "{run:?}");
    assert_eq!(
        run.calls,
        [
            PdkCall::new("kong.request.get_headers", vec![]),
            PdkCall::new("kong.request.get_raw_query", vec![]),
            PdkCall::new("kong.request.get_path", vec![]),
        ]
    );
}

#[test]
fn an_invalid_config_is_refused_at_start_instance() {
    let scratch = Scratch::with_plugins(&[PLUGIN]);
    let daemon = scratch.start(&[PLUGIN]);
    let kong = daemon.kong();
    let err = kong
        .start_instance(PLUGIN, json!({"path_prefix": {"from": "api", "to": "/v1"}}))
        .unwrap_err();
    assert!(err.to_string().contains("must start with `/`"), "{err}");
}
