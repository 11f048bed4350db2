//! rust-hello end to end, exactly as Kong drives it.

use std::{collections::HashMap, sync::Arc, thread};

use kong_rust_pluginserver_e2e::{
    daemon::Scratch,
    kong::{EventEnd, Kong, PdkCall},
};
use rmpv::Value;
use serde_json::json;

/// Answers rust-hello's calls like Kong for a request with `Host: <host>`; records the
/// response headers it sets.
fn answer_as_kong(
    host: &str,
    headers: &mut HashMap<String, String>,
    call: &PdkCall,
) -> Option<Value> {
    match call.method.as_str() {
        "kong.request.get_header" => {
            assert_eq!(call.args, [Value::from("host")]);
            Some(Value::from(host))
        }
        "kong.response.set_header" => {
            let [name, value] = &call.args[..] else {
                panic!("set_header takes two arguments: {call:?}")
            };
            headers.insert(
                name.as_str().unwrap().to_owned(),
                value.as_str().unwrap().to_owned(),
            );
            None
        }
        other => panic!("rust-hello called {other}"),
    }
}

fn hello_event(kong: &Kong, instance: u64, host: &str) -> HashMap<String, String> {
    let mut headers = HashMap::new();
    let run = kong.run_event(instance, "access", |call| {
        answer_as_kong(host, &mut headers, call)
    });
    assert_eq!(run.end, EventEnd::Returned, "{run:?}");
    assert_eq!(
        run.calls
            .iter()
            .map(|c| c.method.as_str())
            .collect::<Vec<_>>(),
        [
            "kong.request.get_header",
            "kong.response.set_header",
            "kong.response.set_header"
        ]
    );
    headers
}

#[test]
fn greets_the_host_with_the_configured_message_and_the_daemon_pid() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = scratch.start(&["rust-hello"]);
    let kong = daemon.kong();
    let instance = kong
        .start_instance("rust-hello", json!({"message": "Kong!"}))
        .unwrap();
    let headers = hello_event(&kong, instance, "example.com");
    assert_eq!(
        headers["x-hello-from-rust"],
        "Rust says Kong! to example.com"
    );
    assert_eq!(headers["x-rust-pid"], daemon.pid().to_string());
}

#[test]
fn says_hello_when_no_message_is_configured() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = scratch.start(&["rust-hello"]);
    let kong = daemon.kong();
    // Kong sends unset optional fields as JSON null.
    for config in [json!({"message": null}), json!({})] {
        let instance = kong.start_instance("rust-hello", config).unwrap();
        let headers = hello_event(&kong, instance, "kong.test");
        assert_eq!(headers["x-hello-from-rust"], "Rust says hello to kong.test");
    }
}

#[test]
fn every_step_on_a_new_connection_still_reaches_its_event() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = scratch.start(&["rust-hello"]);
    // Each worker opens its own connections; the instance started by one is used by others.
    let starter = daemon.kong();
    let instance = starter
        .start_instance("rust-hello", json!({"message": "fresh"}))
        .unwrap();
    let kong = daemon.kong();
    // HandleEvent on one connection, each Step on another, brand-new one.
    let step = |method: &str, arg: Value| kong.call_fresh(method, arg).unwrap();
    let first = step(
        "plugin.HandleEvent",
        kong_rust_pluginserver_e2e::msgpack::map([
            ("InstanceId", Value::from(instance)),
            ("EventName", Value::from("access")),
        ]),
    );
    let event_id = kong_rust_pluginserver_e2e::msgpack::get(&first, "EventId")
        .unwrap()
        .clone();
    let second = step(
        "plugin.Step",
        kong_rust_pluginserver_e2e::msgpack::map([
            ("EventId", event_id.clone()),
            ("Data", Value::from("h")),
        ]),
    );
    let third = step(
        "plugin.Step",
        kong_rust_pluginserver_e2e::msgpack::map([("EventId", event_id.clone())]),
    );
    let last = step(
        "plugin.Step",
        kong_rust_pluginserver_e2e::msgpack::map([("EventId", event_id)]),
    );
    let data = |v: &Value| {
        kong_rust_pluginserver_e2e::msgpack::get(v, "Data")
            .unwrap()
            .clone()
    };
    assert_eq!(
        kong_rust_pluginserver_e2e::msgpack::get(&data(&second), "Args").unwrap(),
        &Value::Array(vec![
            Value::from("x-hello-from-rust"),
            Value::from("Rust says fresh to h")
        ])
    );
    assert!(data(&third).is_map());
    assert_eq!(data(&last), Value::from("ret"));
    assert_eq!(kong.connections_opened(), 4);
    assert_eq!(kong.server_pids(), vec![u64::from(daemon.pid()); 4]);
}

#[test]
fn many_interleaved_events_from_concurrent_workers_all_complete() {
    const WORKERS: usize = 8;
    const EVENTS: usize = 250;
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let _daemon = scratch.start(&["rust-hello"]);
    let socket = scratch.socket("rust-hello");
    // Two workers share one pool, as the requests of one nginx worker do.
    let shared = Arc::new(Kong::new(&socket));
    let handles: Vec<_> = (0..WORKERS)
        .map(|w| {
            let kong = if w % 2 == 0 {
                shared.clone()
            } else {
                Arc::new(Kong::new(&socket))
            };
            thread::spawn(move || {
                let instance = kong
                    .start_instance("rust-hello", json!({"message": format!("w{w}")}))
                    .unwrap();
                for i in 0..EVENTS {
                    let host = format!("host-{w}-{i}.test");
                    let headers = hello_event(&kong, instance, &host);
                    assert_eq!(
                        headers["x-hello-from-rust"],
                        format!("Rust says w{w} to {host}")
                    );
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("worker thread");
    }
    assert!(shared.connections_opened() >= 1);
}
