//! rust-response-redactor end to end: the real daemon on the plugin's .so, driven as Kong
//! drives the `response` phase, with every PDK call it makes checked.

use kong_rust_pluginserver_e2e::{
    daemon::Scratch,
    kong::{EventEnd, EventRun, Kong, PdkCall},
    msgpack::map,
};
use rmpv::Value;
use serde_json::json;

const PLUGIN: &str = "rust-response-redactor";

fn s(v: &str) -> Value {
    Value::from(v)
}

/// The configuration as Kong sends it: every field present, defaults filled.
fn kong_config() -> serde_json::Value {
    json!({
        "fields": ["password"],
        "pointers": ["/items/*/card"],
        "mask": "***",
        "route_id": "0e3d5c39-0000-4000-8000-000000000005",
    })
}

/// Runs `response` for an upstream answer with `content_type` and `body`, status 201.
fn response(kong: &Kong, instance: u64, content_type: &str, body: &str) -> EventRun {
    kong.run_event(instance, "response", |c| {
        match (c.method.as_str(), c.args.first().and_then(Value::as_str)) {
            ("kong.service.response.get_header", Some("content-type")) => Some(s(content_type)),
            ("kong.service.response.get_header", Some("content-encoding")) => None,
            // Kong sends raw bodies as MessagePack bin.
            ("kong.service.response.get_raw_body", None) => {
                Some(Value::Binary(body.as_bytes().to_vec()))
            }
            ("kong.response.get_status", None) => Some(Value::from(201)),
            _ => panic!("{PLUGIN} called {c:?}"),
        }
    })
}

#[test]
fn replaces_a_json_body_through_exit_keeping_the_status() {
    let scratch = Scratch::with_plugins(&[PLUGIN]);
    let daemon = scratch.start(&[PLUGIN]);
    let kong = daemon.kong();
    let instance = kong.start_instance(PLUGIN, kong_config()).unwrap();

    let body =
        r#"{"user":"ann","password":"hunter2","items":[{"card":"4111","sku":"a"},{"sku":"b"}]}"#;
    let run = response(&kong, instance, "application/json", body);
    assert_eq!(run.end.status(), Some(201), "{run:?}");
    let redacted =
        r#"{"user":"ann","password":"***","items":[{"card":"***","sku":"a"},{"sku":"b"}]}"#;
    assert_eq!(
        run.calls,
        [
            PdkCall::new("kong.service.response.get_header", vec![s("content-type")]),
            PdkCall::new(
                "kong.service.response.get_header",
                vec![s("content-encoding")]
            ),
            PdkCall::new("kong.service.response.get_raw_body", vec![]),
            PdkCall::new("kong.response.get_status", vec![]),
            PdkCall::new(
                "kong.response.exit",
                vec![
                    Value::from(201),
                    Value::Binary(redacted.as_bytes().to_vec()),
                    map([("content-length", s(&redacted.len().to_string()))]),
                ]
            ),
        ]
    );
}

#[test]
fn leaves_other_responses_to_kong() {
    let scratch = Scratch::with_plugins(&[PLUGIN]);
    let daemon = scratch.start(&[PLUGIN]);
    let kong = daemon.kong();
    let instance = kong.start_instance(PLUGIN, kong_config()).unwrap();

    let html = response(&kong, instance, "text/html", "<p>password</p>");
    assert_eq!(html.end, EventEnd::Returned, "{html:?}");
    assert_eq!(html.calls.len(), 1, "{html:?}");

    let clean = response(&kong, instance, "application/json", r#"{"items":[]}"#);
    assert_eq!(clean.end, EventEnd::Returned, "{clean:?}");
    assert_eq!(
        clean.calls.last().unwrap(),
        &PdkCall::new("kong.service.response.get_raw_body", vec![])
    );
}

#[test]
fn a_config_with_nothing_to_redact_is_refused_at_start_instance() {
    let scratch = Scratch::with_plugins(&[PLUGIN]);
    let daemon = scratch.start(&[PLUGIN]);
    let kong = daemon.kong();
    let err = kong
        .start_instance(PLUGIN, json!({"fields": [], "pointers": [], "mask": "***"}))
        .unwrap_err();
    assert!(err.to_string().contains("nothing to redact"), "{err}");
}
