//! The dispatcher: arbitrary bytes as a connection's input, against a real in-process daemon
//! serving a real plugin: the e2e probe (echo: three PDK calls and `kong.instance()`; exit;
//! a handler panic; a handler error; a constructor panic; strict config), linked in rather
//! than loaded from disk. Only one plugin can be linked: each exports the same root-module
//! symbol.
//!
//! Each input gets a fresh `Daemon`. The bytes are framed as a connection frames them; every
//! message that parses is dispatched with `methods::dispatch` (a malformed one is answered
//! as the connection answers it), and every answer must be exactly one well-formed response
//! `[1, msgid, error|nil, result|nil]` echoing the msgid, consistent with the daemon's
//! instance and event tables.
//!
//! Instance and event ids start at the clock in microseconds, which no fuzzer could guess:
//! an id argument below 2^16 (InstanceId, EventId, CloseInstance's or InstanceStatus's id)
//! is rewritten in place to the daemon's first id plus that number before dispatch.

#![no_main]

use std::{collections::HashMap, path::PathBuf, sync::LazyLock, time::SystemTime};

use abi_stable::std_types::RResult;
use kong_rust_pdk::{Phase, ffi::PluginModuleRef};
use kong_rust_pluginserver::{
    loader::{LoadedPlugin, PluginInfo},
    methods,
    protocol::{RequestError, decode::Reader, encode, for_each_entry, frame, parse_request},
    state::Daemon,
};
use kong_rust_pluginserver_fuzz::{block_on, check_parse, rmpv_decode};
use libfuzzer_sys::fuzz_target;

/// Largest message; small so the fuzzer spends its time on requests.
const MAX_MESSAGE: usize = 1 << 16;
/// Messages per input.
const MAX_MESSAGES: usize = 48;
/// Ids below this are the fuzzer's names for the daemon's ids (see the module doc).
const SMALL_ID: u64 = 1 << 16;

/// The panics the e2e probe raises on purpose (its `panic` mode and `panic_in_new`); the
/// plugin catches them. Every other panic aborts, as libFuzzer's hook makes it.
const PLANNED_PANICS: [&str; 2] = ["probe handler panic", "probe constructor panic"];

/// `FUZZ_TRACE=1`: print every request and response (to check what a corpus reaches).
static TRACE: LazyLock<bool> = LazyLock::new(|| std::env::var_os("FUZZ_TRACE").is_some());

struct Plugin {
    info: PluginInfo,
    module: PluginModuleRef,
}

static PLUGINS: LazyLock<Vec<Plugin>> = LazyLock::new(|| {
    [kong_rust_pdk::ffi::module_for::<e2e_probe::Probe>()]
        .into_iter()
        .map(|module| {
            let RResult::ROk(info) = (module.info())() else {
                panic!("plugin info failed");
            };
            let info = PluginInfo {
                name: info.name.into_string(),
                version: info.version.into_string(),
                priority: info.priority,
                phases: Phase::from_bits(info.phases).collect(),
                config_schema: serde_json_from(info.config_schema.as_str()),
            };
            Plugin { info, module }
        })
        .collect()
});

fn serde_json_from(text: &str) -> serde_json::Value {
    serde_json::from_str(text).expect("the schema is JSON")
}

fn daemon() -> Daemon {
    let plugins = PLUGINS
        .iter()
        .map(|p| {
            let loaded = LoadedPlugin {
                info: p.info.clone(),
                path: PathBuf::from(format!("/fuzz/{}.so", p.info.name)),
                modified: SystemTime::UNIX_EPOCH,
                loaded: SystemTime::UNIX_EPOCH,
                module: p.module,
            };
            (p.info.name.clone(), loaded)
        })
        .collect::<HashMap<_, _>>();
    Daemon::new(plugins)
}

fn install_panic_hook() {
    let abort = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str));
        if message.is_some_and(|m| PLANNED_PANICS.contains(&m)) {
            return; // unwinds to the plugin's catch_unwind
        }
        abort(info);
    }));
}

/// Which id a request names, by the method's own rules (the last occurrence of a key wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Instance(u64),
    Event(u64),
    None,
}

fn is_step(method: &[u8]) -> bool {
    method.starts_with(b"plugin.Step")
}

/// The raw id values of a request's argument that the method reads as ids.
fn id_values<'a>(method: &[u8], arg: &'a [u8]) -> Vec<&'a [u8]> {
    let key: &[u8] = match method {
        b"plugin.HandleEvent" => b"InstanceId",
        m if is_step(m) => b"EventId",
        b"plugin.CloseInstance" | b"plugin.InstanceStatus" => return vec![arg],
        _ => return Vec::new(),
    };
    let mut found = Vec::new();
    let _ = for_each_entry(arg, |k, r| {
        if k == key {
            found.push(r.raw()?);
        }
        Ok(())
    });
    found
}

/// Rewrites small ids to the daemon's ids, keeping the kind of encoding (float, signed,
/// unsigned). MessagePack containers count elements, not bytes, so a value may change size.
fn translate_ids(message: &[u8], base: u64) -> Option<Vec<u8>> {
    let req = parse_request(message).ok()?;
    let arg = req.arg?;
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut copied = 0;
    for raw in id_values(req.method, arg) {
        let Ok(small) = Reader::new(raw).u64() else {
            continue;
        };
        if small >= SMALL_ID {
            continue;
        }
        let start = raw.as_ptr() as usize - message.as_ptr() as usize;
        out.extend_from_slice(&message[copied..start]);
        let id = base + small;
        match raw[0] {
            0xca | 0xcb => {
                out.push(0xcb);
                out.extend_from_slice(&(id as f64).to_bits().to_be_bytes());
            }
            0xd0..=0xd3 => {
                out.push(0xd3);
                out.extend_from_slice(&id.to_be_bytes());
            }
            _ => {
                out.push(0xcf);
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
        copied = start + raw.len();
    }
    if copied == 0 {
        return None;
    }
    out.extend_from_slice(&message[copied..]);
    Some(out)
}

/// The id the request names, read as the method reads it: the same visitors, the same
/// "last occurrence wins", and only when the method gets as far as looking the id up.
fn target_of(method: &[u8], arg: Option<&[u8]>) -> Target {
    let arg = arg.unwrap_or(&[0xc0]);
    let id = match method {
        b"plugin.HandleEvent" => {
            let (mut id, mut name) = (None, None);
            for_each_entry(arg, |k, r| {
                match k {
                    b"InstanceId" => id = Some(r.u64()?),
                    b"EventName" => name = Some(r.bytes()?),
                    _ => {}
                }
                Ok(())
            })
            .ok()
            .and(name)
            .and(id)
            .map(Target::Instance)
        }
        m if is_step(m) => {
            let mut id = None;
            for_each_entry(arg, |k, r| {
                match k {
                    b"EventId" => id = Some(r.u64()?),
                    b"Data" => drop(r.raw()?),
                    _ => {}
                }
                Ok(())
            })
            .ok()
            .and(id)
            .map(Target::Event)
        }
        b"plugin.CloseInstance" | b"plugin.InstanceStatus" => {
            Reader::new(arg).u64().ok().map(Target::Instance)
        }
        _ => None,
    };
    id.unwrap_or(Target::None)
}

fn map_get<'v>(map: &'v rmpv::Value, key: &str) -> Option<&'v rmpv::Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// Checks StepData `{"EventId", "Data": "ret" | {"Method", "Args": [..]}}`; returns the
/// event id and whether the handler now waits for Kong's answer.
fn check_step_data(result: &rmpv::Value) -> (u64, bool) {
    let event_id = map_get(result, "EventId")
        .and_then(rmpv::Value::as_u64)
        .unwrap_or_else(|| panic!("StepData without EventId: {result:?}"));
    let data = map_get(result, "Data").expect("StepData without Data");
    if data.as_str() == Some(encode::RET) {
        return (event_id, false);
    }
    let method = map_get(data, "Method")
        .and_then(rmpv::Value::as_str)
        .unwrap_or_else(|| panic!("call without Method: {data:?}"));
    let args = map_get(data, "Args").expect("call without Args");
    assert!(args.is_array(), "Args is not an array: {args:?}");
    let ends = matches!(method, "kong.response.exit" | "kong.response.error");
    (event_id, !ends)
}

/// One message, as a connection handles it; returns false when the connection would close.
fn exchange(daemon: &Daemon, base: u64, message: &[u8], out: &mut Vec<u8>) -> bool {
    let translated = translate_ids(message, base);
    let message = translated.as_deref().unwrap_or(message);
    out.clear();
    let (msgid, method, target) = match check_parse(message) {
        Ok(req) => {
            let target = target_of(req.method, req.arg);
            let before = match target {
                Target::Instance(id) => daemon.instances.contains_key(&id),
                Target::Event(id) => daemon.events.contains_key(&id),
                Target::None => false,
            };
            block_on(methods::dispatch(daemon, &req, out));
            (req.msgid, Some((req.method.to_vec(), before)), target)
        }
        Err(RequestError::Malformed { msgid, reason }) => {
            encode::error(out, msgid, &format!("malformed request: {reason}"));
            (msgid, None, Target::None)
        }
        Err(RequestError::Unanswerable(_)) => return false,
    };

    // Exactly one response, and nothing else.
    assert_eq!(
        frame::value_len(out, usize::MAX),
        Ok(Some(out.len())),
        "one value"
    );
    let (response, len) = rmpv_decode(out).expect("rmpv reads the response");
    assert_eq!(len, out.len());
    let parts = response.as_array().expect("the response is an array");
    assert_eq!(parts.len(), 4, "{response:?}");
    assert_eq!(parts[0].as_u64(), Some(1), "response type");
    assert_eq!(parts[1].as_u64(), Some(msgid), "msgid echoed");
    let (error, result) = (&parts[2], &parts[3]);
    if *TRACE {
        eprintln!("{:?} -> {response}", String::from_utf8_lossy(message));
    }

    let Some((method, existed)) = method else {
        assert!(error.is_str() && result.is_nil(), "{response:?}");
        return true;
    };
    if let Some(error) = error.as_str() {
        assert!(
            result.is_nil(),
            "an error response has no result: {response:?}"
        );
        // Kong restarts the instance on this wording: only for an unknown instance, even
        // when the request (a plugin name, an event name) or a plugin's error text echoes it.
        if error.to_lowercase().contains("no plugin instance") {
            let genuine = matches!(target, Target::Instance(id)
                if !existed && error == format!("no plugin instance {id}"));
            assert!(genuine, "{error:?} for {:?}", String::from_utf8_lossy(&method));
        }
        match target {
            Target::Instance(id) if !existed => {
                assert_eq!(error, format!("no plugin instance {id}"))
            }
            Target::Event(id) => {
                assert!(
                    !daemon.events.contains_key(&id),
                    "a failed step leaves its event"
                );
                if !existed {
                    assert!(
                        error.starts_with(&format!("no running event {id} ")),
                        "{error}"
                    );
                }
            }
            _ => {}
        }
        return true;
    }
    assert!(error.is_nil(), "the error is a string or nil: {response:?}");
    assert!(!result.is_nil(), "a successful response has a result");
    match method.as_slice() {
        b"plugin.StartInstance" => {
            let id = map_get(result, "Id")
                .and_then(rmpv::Value::as_u64)
                .expect("Id");
            assert!(id >= base && daemon.instances.contains_key(&id));
        }
        b"plugin.HandleEvent" => {
            assert!(matches!(target, Target::Instance(_)) && existed);
            let (event, waits) = check_step_data(result);
            assert!(event >= base);
            assert_eq!(daemon.events.contains_key(&event), waits, "event table");
        }
        m if is_step(m) => {
            let Target::Event(id) = target else {
                panic!("a step without an event id succeeded")
            };
            assert!(existed, "a step for no event succeeded");
            let (event, waits) = check_step_data(result);
            assert_eq!(event, id, "the step's own event");
            assert_eq!(daemon.events.contains_key(&event), waits, "event table");
        }
        b"plugin.CloseInstance" => {
            let Target::Instance(id) = target else {
                panic!("closed no id")
            };
            assert!(existed && !daemon.instances.contains_key(&id));
            assert_eq!(
                map_get(result, "Id").and_then(rmpv::Value::as_u64),
                Some(id)
            );
        }
        b"plugin.InstanceStatus" => {
            let Target::Instance(id) = target else {
                panic!("status of no id")
            };
            assert!(existed);
            assert_eq!(
                map_get(result, "Id").and_then(rmpv::Value::as_u64),
                Some(id)
            );
        }
        b"plugin.GetPluginInfo" => assert!(map_get(result, "Name").is_some(), "{result:?}"),
        b"plugin.GetStatus" => assert!(map_get(result, "Plugins").is_some(), "{result:?}"),
        other => panic!("{:?} succeeded", String::from_utf8_lossy(other)),
    }
    true
}

fuzz_target!(init: install_panic_hook(), |data: &[u8]| {
    let daemon = daemon();
    // The daemon's next id; the fuzzer's id n means base + n.
    let base = daemon.ids.next() + 1;
    let mut out = Vec::new();
    let mut rest = data;
    for _ in 0..MAX_MESSAGES {
        let Ok(Some(len)) = frame::value_len(rest, MAX_MESSAGE) else {
            break;
        };
        if !exchange(&daemon, base, &rest[..len], &mut out) {
            break;
        }
        rest = &rest[len..];
    }
});
