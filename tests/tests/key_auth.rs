//! rust-key-auth end to end: the real daemon on the plugin's .so, driven as Kong drives
//! it, with every PDK call it makes checked.

use kong_rust_pluginserver_e2e::{
    daemon::Scratch,
    kong::{EventEnd, EventRun, Kong, PdkCall},
    msgpack::map,
};
use rmpv::Value;
use serde_json::json;

const PLUGIN: &str = "rust-key-auth";
const ALICE: &str = "8f0b5b8e-0000-4000-8000-0000000000a1";
const BOB: &str = "8f0b5b8e-0000-4000-8000-0000000000b2";

fn s(v: &str) -> Value {
    Value::from(v)
}

/// The configuration as Kong sends it: every field present, defaults filled, unset
/// optional fields as null.
fn kong_config(hide_credentials: bool) -> serde_json::Value {
    json!({
        "key_names": ["apikey", "x-api-key"],
        "key_in_header": true,
        "key_in_query": true,
        "hide_credentials": hide_credentials,
        "realm": "kong",
        "credentials": [
            {"key": "alice-key", "consumer": {"id": ALICE, "username": "alice"}, "id": "cred-a"},
            {"key": "bob-key", "consumer": {"id": BOB, "username": null}, "id": null},
        ],
        "service_id": "0e3d5c39-0000-4000-8000-000000000004",
    })
}

/// Runs `access` for a request carrying `headers` and `query` (name → value).
fn access(
    kong: &Kong,
    instance: u64,
    headers: &[(&str, &str)],
    query: &[(&str, &str)],
) -> EventRun {
    let lookup = |pairs: &[(&str, &str)], name: &Value| {
        let name = name.as_str().unwrap();
        pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| s(v))
    };
    kong.run_event(instance, "access", |c| match c.method.as_str() {
        "kong.request.get_header" => lookup(headers, &c.args[0]),
        "kong.request.get_query_arg" => lookup(query, &c.args[0]),
        "kong.client.authenticate" => None,
        m if m.starts_with("kong.service.request.") => None,
        other => panic!("{PLUGIN} called {other}"),
    })
}

/// A JSON body goes to Kong as JSON text, with Kong's own JSON content type.
fn rejection(message: &str) -> PdkCall {
    PdkCall::new(
        "kong.response.exit",
        vec![
            Value::from(401),
            s(&serde_json::json!({ "message": message }).to_string()),
            map([
                ("Content-Type", s("application/json; charset=utf-8")),
                ("WWW-Authenticate", s("Key realm=\"kong\"")),
            ]),
        ],
    )
}

#[test]
fn a_good_key_authenticates_and_is_hidden_from_the_upstream() {
    let scratch = Scratch::with_plugins(&[PLUGIN]);
    let daemon = scratch.start(&[PLUGIN]);
    let kong = daemon.kong();
    let instance = kong.start_instance(PLUGIN, kong_config(true)).unwrap();

    let run = access(&kong, instance, &[("x-api-key", "alice-key")], &[]);
    assert_eq!(run.end, EventEnd::Returned, "{run:?}");
    assert_eq!(
        run.calls,
        [
            PdkCall::new("kong.request.get_header", vec![s("apikey")]),
            PdkCall::new("kong.request.get_query_arg", vec![s("apikey")]),
            PdkCall::new("kong.request.get_header", vec![s("x-api-key")]),
            PdkCall::new("kong.service.request.clear_header", vec![s("x-api-key")]),
            PdkCall::new(
                "kong.client.authenticate",
                vec![
                    map([("id", s(ALICE)), ("username", s("alice"))]),
                    map([("id", s("cred-a")), ("consumer", map([("id", s(ALICE))]))]),
                ]
            ),
            PdkCall::new(
                "kong.service.request.set_header",
                vec![s("x-consumer-id"), s(ALICE)]
            ),
            PdkCall::new(
                "kong.service.request.set_header",
                vec![s("x-consumer-username"), s("alice")]
            ),
            PdkCall::new(
                "kong.service.request.set_header",
                vec![s("x-credential-identifier"), s("cred-a")]
            ),
        ]
    );
}

#[test]
fn a_key_from_the_query_authenticates_a_consumer_without_username() {
    let scratch = Scratch::with_plugins(&[PLUGIN]);
    let daemon = scratch.start(&[PLUGIN]);
    let kong = daemon.kong();
    let instance = kong.start_instance(PLUGIN, kong_config(true)).unwrap();

    let run = access(&kong, instance, &[], &[("apikey", "bob-key")]);
    assert_eq!(run.end, EventEnd::Returned, "{run:?}");
    assert_eq!(
        run.calls[1..],
        [
            PdkCall::new("kong.request.get_query_arg", vec![s("apikey")]),
            PdkCall::new("kong.service.request.clear_query_arg", vec![s("apikey")]),
            PdkCall::new(
                "kong.client.authenticate",
                vec![
                    map([("id", s(BOB))]),
                    map([("id", s(BOB)), ("consumer", map([("id", s(BOB))]))]),
                ]
            ),
            PdkCall::new(
                "kong.service.request.set_header",
                vec![s("x-consumer-id"), s(BOB)]
            ),
            PdkCall::new(
                "kong.service.request.clear_header",
                vec![s("x-consumer-username")]
            ),
            PdkCall::new(
                "kong.service.request.set_header",
                vec![s("x-credential-identifier"), s(BOB)]
            ),
        ]
    );
}

#[test]
fn missing_and_wrong_keys_end_the_request_with_401() {
    let scratch = Scratch::with_plugins(&[PLUGIN]);
    let daemon = scratch.start(&[PLUGIN]);
    let kong = daemon.kong();
    let instance = kong.start_instance(PLUGIN, kong_config(false)).unwrap();

    let missing = access(&kong, instance, &[("host", "api.test")], &[]);
    assert_eq!(missing.end.status(), Some(401), "{missing:?}");
    assert_eq!(missing.calls.len(), 5, "{missing:?}");
    assert_eq!(missing.calls[4], rejection("No API key found in request"));

    let wrong = access(&kong, instance, &[("apikey", "alice-kez")], &[]);
    assert_eq!(wrong.end.status(), Some(401), "{wrong:?}");
    assert_eq!(
        wrong.calls,
        [
            PdkCall::new("kong.request.get_header", vec![s("apikey")]),
            rejection("Invalid authentication credentials"),
        ]
    );
}
