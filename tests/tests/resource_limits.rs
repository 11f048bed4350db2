//! Nothing a client sends grows without limit: instances, configurations, status answers,
//! warning lines.

use std::{
    io::{Read, Write},
    time::Duration,
};

use kong_rust_pluginserver_e2e::{
    daemon::Scratch,
    msgpack::{get, map},
};
use rmpv::Value;
use serde_json::json;

#[test]
fn instances_beyond_the_per_plugin_limit_are_refused() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = scratch.start_with(&["rust-hello"], |cmd| {
        cmd.args(["--max-instances-per-plugin", "20"]);
    });
    let kong = daemon.kong();
    let ids: Vec<u64> = (0..20)
        .map(|_| kong.start_instance("rust-hello", json!({})).unwrap())
        .collect();
    let err = kong
        .start_instance("rust-hello", json!({}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--max-instances-per-plugin"), "{err}");
    assert_eq!(kong.status()["rust-hello.InstanceCount"], 20);
    // Closing one makes room.
    kong.call("plugin.CloseInstance", Value::from(ids[0]))
        .unwrap();
    kong.start_instance("rust-hello", json!({})).unwrap();
}

#[test]
fn configuration_bytes_beyond_the_per_plugin_budget_are_refused() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = scratch.start_with(&["rust-hello"], |cmd| {
        cmd.args(["--max-config-bytes-per-plugin", "1000000"]);
    });
    let kong = daemon.kong();
    let config = |c: char| json!({"message": c.to_string().repeat(300_000)});
    let a = kong.start_instance("rust-hello", config('a')).unwrap();
    kong.start_instance("rust-hello", config('b')).unwrap();
    kong.start_instance("rust-hello", config('c')).unwrap();
    let err = kong
        .start_instance("rust-hello", config('d'))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--max-config-bytes-per-plugin"), "{err}");
    // A configuration already held costs nothing more.
    let shared_a = kong.start_instance("rust-hello", config('a')).unwrap();
    assert_eq!(kong.status()["rust-hello.Configurations"], 3);
    // Once no instance uses it, its bytes are free again.
    for id in [a, shared_a] {
        kong.call("plugin.CloseInstance", Value::from(id)).unwrap();
    }
    kong.start_instance("rust-hello", config('d')).unwrap();
}

#[test]
fn get_status_lists_a_bounded_number_of_instances_and_says_how_many_it_left_out() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = scratch.start(&["rust-hello"]);
    let kong = daemon.kong();
    for _ in 0..250 {
        kong.start_instance("rust-hello", json!({})).unwrap();
    }
    // One big configuration.
    kong.start_instance("rust-hello", json!({"message": "x".repeat(1 << 20)}))
        .unwrap();
    let mut stream = std::os::unix::net::UnixStream::connect(scratch.socket("rust-hello")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(&kong_rust_pluginserver_e2e::msgpack::encode(&Value::Array(
            vec![
                Value::from(0),
                Value::from(1),
                Value::from("plugin.GetStatus"),
                Value::Array(vec![Value::Nil]),
            ],
        )))
        .unwrap();
    // serverPid first, then the answer.
    kong_rust_pluginserver_e2e::kong::read_value(&mut stream).unwrap();
    let mut raw = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    let answer = loop {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "closed");
        raw.extend_from_slice(&chunk[..n]);
        if let Ok(value) = rmpv::decode::read_value(&mut &raw[..]) {
            break value;
        }
    };
    assert!(
        raw.len() < 256 * 1024,
        "GetStatus answered {} bytes",
        raw.len()
    );
    let status = &answer.as_array().unwrap()[3];
    let plugin = get(get(status, "Plugins").unwrap(), "rust-hello").unwrap();
    let listed = get(plugin, "Instances").unwrap().as_array().unwrap().len();
    assert_eq!(listed, 100);
    assert_eq!(
        get(plugin, "InstanceCount").and_then(Value::as_u64),
        Some(251)
    );
    assert_eq!(
        get(plugin, "InstancesOmitted").and_then(Value::as_u64),
        Some(151)
    );
}

#[test]
fn repeated_warnings_are_rate_limited_with_a_summary() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = scratch.start(&["rust-hello"]);
    let kong = daemon.kong();
    let step = |id: u64| {
        kong.call(
            "plugin.Step",
            map([("EventId", Value::from(id)), ("Data", Value::from("x"))]),
        )
        .unwrap()
    };
    for id in 0..1000 {
        step(id);
    }
    std::thread::sleep(Duration::from_millis(1200));
    step(1000);
    daemon.wait_for_log("suppressed", Duration::from_secs(5));
    let stderr = daemon.stderr();
    let lines = stderr.matches("a Step for an event").count();
    assert!(
        lines <= 40,
        "{lines} warning lines for 1001 Steps:\n{}",
        &stderr[..stderr.len().min(4000)]
    );
    // Every warning is either written or counted in a summary.
    let suppressed: usize = stderr
        .split("suppressed ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<usize>().ok())
        .sum();
    assert_eq!(lines + suppressed, 1001, "{stderr}");
}
