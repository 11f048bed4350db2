//! Instances keyed by configuration, instance metadata, ids across restarts, idle expiry.

use std::{collections::HashMap, time::Duration};

use kong_rust_pluginserver_e2e::{
    daemon::Scratch,
    kong::{EventEnd, Kong, RpcError},
    msgpack::{get, map},
};
use rmpv::Value;
use serde_json::json;

/// Runs one echo event and returns the probe's `x-instance` header, parsed.
fn describe(kong: &Kong, instance: u64) -> HashMap<String, String> {
    let mut described = None;
    let run = kong.run_event(instance, "access", |call| {
        if call.method == "kong.response.set_header" && call.args[0].as_str() == Some("x-instance")
        {
            described = call.args[1].as_str().map(str::to_owned);
        }
        None
    });
    assert_eq!(run.end, EventEnd::Returned, "{run:?}");
    described
        .expect("the probe reports its instance")
        .split(' ')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// StartInstance with the exact Config text given (no bookkeeping keys added).
fn start_raw(kong: &Kong, config: serde_json::Value) -> Result<u64, RpcError> {
    let status = kong.call(
        "plugin.StartInstance",
        map([
            ("Name", Value::from("e2e-probe")),
            ("Config", Value::from(config.to_string())),
        ]),
    )?;
    Ok(get(&status, "Id").and_then(Value::as_u64).unwrap())
}

#[test]
fn identical_configs_share_one_construction_and_keep_their_own_metadata() {
    let scratch = Scratch::with_plugins(&["e2e-probe"]);
    let daemon = scratch.start(&["e2e-probe"]);
    let kong = daemon.kong();
    // Three workers start the same plugin entity config, with Kong's bookkeeping keys
    // differing (and keys in another order), then a config change starts a fourth.
    let a = start_raw(
        &kong,
        json!({"mode": "echo", "panic_in_new": false,
        "__plugin_id": "p-1", "__seq__": 3, "__key__": "k", "__ws_id": "w", "route_id": "r-1"}),
    )
    .unwrap();
    let b = start_raw(
        &kong,
        json!({"__seq__": 4, "panic_in_new": false, "mode": "echo",
        "__plugin_id": "p-2", "service_id": "s-1"}),
    )
    .unwrap();
    let c = start_raw(&kong, json!({"mode": "echo", "panic_in_new": false})).unwrap();
    let d = start_raw(
        &kong,
        json!({"mode": "echo", "panic_in_new": false, "extra_mode": 1}),
    );
    assert!(
        matches!(&d, Err(RpcError::Remote(e)) if e.contains("unknown field `extra_mode`")),
        "{d:?}"
    );
    assert!(a < b && b < c, "ids are distinct and increasing");
    let (da, db, dc) = (describe(&kong, a), describe(&kong, b), describe(&kong, c));
    assert_eq!(da["serial"], db["serial"]);
    assert_eq!(db["serial"], dc["serial"]);
    assert_eq!(da["id"], a.to_string());
    assert_eq!(da["plugin_id"], "p-1");
    assert_eq!(da["route_id"], "r-1");
    assert_eq!(da["seq"], "3");
    assert_eq!(db["plugin_id"], "p-2");
    assert_eq!(db["route_id"], "-");
    assert_eq!(dc["plugin_id"], "-");

    // Another configuration is constructed separately (the constructor runs, and here
    // panics), and a distinct valid one gets its own construction.
    let e = start_raw(&kong, json!({"mode": "echo", "panic_in_new": true}));
    assert!(
        matches!(&e, Err(RpcError::Remote(m)) if m.contains("constructor panicked")),
        "{e:?}"
    );
    let other = start_raw(&kong, json!({"mode": "echo"})).unwrap();
    let other_serial = describe(&kong, other)["serial"].clone();
    assert_ne!(other_serial, da["serial"]);

    // Once every instance of a configuration is closed, it is released: starting it again
    // constructs it anew.
    for id in [a, b, c] {
        kong.call("plugin.CloseInstance", Value::from(id)).unwrap();
    }
    let g = start_raw(&kong, json!({"mode": "echo", "panic_in_new": false})).unwrap();
    let new_serial = describe(&kong, g)["serial"].clone();
    assert_ne!(new_serial, da["serial"]);
    assert_ne!(new_serial, other_serial);
}

#[test]
fn instance_ids_are_never_reused_across_a_restart() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let first = scratch.start(&["rust-hello"]);
    let kong = first.kong();
    let before = kong.start_instance("rust-hello", json!({})).unwrap();
    let first_pid = first.pid();
    drop(first); // killed
    let second = scratch.start(&["rust-hello"]);
    let kong = second.kong();
    // Kong would still hold `before`: the new daemon does not know it, so Kong restarts it.
    let run = kong.run_event(before, "access", |_| None);
    assert!(
        matches!(&run.end, EventEnd::ErrorReply(e) if e.contains("no plugin instance")),
        "{run:?}"
    );
    let after = kong.start_instance("rust-hello", json!({})).unwrap();
    assert!(after > before, "{after} must be above {before}");
    assert_ne!(
        kong.server_pids()[0],
        u64::from(first_pid),
        "Kong sees the new pid"
    );
}

#[test]
fn idle_instances_expire_and_busy_ones_stay() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let daemon = scratch.start_with(&["rust-hello"], |cmd| {
        cmd.args(["--instance-idle-timeout", "1"]);
    });
    let kong = daemon.kong();
    let idle = kong
        .start_instance("rust-hello", json!({"message": "idle"}))
        .unwrap();
    let busy = kong
        .start_instance("rust-hello", json!({"message": "busy"}))
        .unwrap();
    for _ in 0..12 {
        assert_eq!(
            kong.run_event(busy, "access", |_| None).end,
            EventEnd::Returned
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let err = kong
        .call("plugin.InstanceStatus", Value::from(idle))
        .unwrap_err();
    assert!(
        matches!(&err, RpcError::Remote(e) if e.contains("no plugin instance")),
        "{err}"
    );
    kong.call("plugin.InstanceStatus", Value::from(busy))
        .unwrap();
    let status = kong.call("plugin.GetStatus", Value::Nil).unwrap();
    let hello = get(get(&status, "Plugins").unwrap(), "rust-hello").unwrap();
    let ids: Vec<u64> = get(hello, "Instances")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| get(i, "Id").unwrap().as_u64().unwrap())
        .collect();
    assert_eq!(ids, [busy]);
}
