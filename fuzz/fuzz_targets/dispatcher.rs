//! The dispatcher: arbitrary bytes as a connection's input, against a real in-process daemon
//! serving a real plugin: the e2e probe (access only; echo: three PDK calls and
//! `kong.instance()`; exit; a handler panic; a handler error; a constructor panic; a wait
//! on its own I/O; strict config), linked in rather than loaded from disk. Only one plugin
//! can be linked: each exports the same root-module symbol.
//!
//! Each input gets a fresh `Daemon`. The bytes are framed as a connection frames them; every
//! message that parses is answered by `rpc::respond` (the operations a connection uses; a
//! malformed one is answered as the connection answers it), and every answer must be exactly
//! one well-formed response `[1, msgid, error|nil, result|nil]` echoing the msgid, consistent
//! with the daemon's instances and events, and **failing closed**: an error reply only where
//! Kong gets one from a healthy daemon (an unknown instance, a request that does not parse,
//! an unknown method, an event name that is no phase, a StartInstance or GetPluginInfo the
//! daemon refuses); a handler that fails, a phase the plugin lacks and a Step for an unknown
//! event are answered with StepData that ends the request.
//!
//! Instance and event ids come from the clock, which no fuzzer could guess: an id argument
//! below 2^16 (InstanceId, EventId, CloseInstance's or InstanceStatus's id) names the n-th
//! id of its kind the daemon issued in this input, and is rewritten in place before the
//! request is answered (an n not issued yet stays, an id no daemon issues).

#![no_main]

use std::{path::Path, sync::LazyLock};

use kong_rust_pdk::Phase;
use kong_rust_pluginserver::{
    daemon::{Daemon, Scope},
    loader::LoadedPlugin,
    rpc::{self, Rpc, RpcError},
    settings::Limits,
    wait::block_on,
};
use kong_rust_pluginserver_fuzz::{check_parse, rmpv_decode};
use kong_rust_pluginserver_protocol::{
    RequestError, decode::Reader, encode, for_each_entry, frame, parse_request,
};
use libfuzzer_sys::fuzz_target;

/// Largest message; small so the fuzzer spends its time on requests.
const MAX_MESSAGE: usize = 1 << 16;
/// Messages per input.
const MAX_MESSAGES: usize = 48;
/// Ids below this are the fuzzer's names for the daemon's ids (see the module doc).
const SMALL_ID: u64 = 1 << 16;
/// The probe's `block` and `wait` modes take `delay_ms`; longer delays would only stall
/// the fuzzer, so such StartInstances are skipped.
const MAX_DELAY_MS: u64 = 5;

/// The panics the e2e probe raises on purpose (its `panic` mode and `panic_in_new`); the
/// plugin catches them. Every other panic aborts, as libFuzzer's hook makes it.
const PLANNED_PANICS: [&str; 2] = ["probe handler panic", "probe constructor panic"];

/// `FUZZ_TRACE=1`: print every request and response (to check what a corpus reaches).
static TRACE: LazyLock<bool> = LazyLock::new(|| std::env::var_os("FUZZ_TRACE").is_some());

fn daemon() -> Daemon {
    let module = kong_rust_pdk::__private::module_for::<e2e_probe::Probe>();
    let plugin = LoadedPlugin::from_module(module, Path::new("/fuzz/e2e-probe.so"))
        .expect("the probe describes itself validly");
    Daemon::new([plugin], Limits::default())
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

/// The ids the daemon issued in this input, in order.
#[derive(Default)]
struct Issued {
    instances: Vec<u64>,
    events: Vec<u64>,
}

fn is_step(method: &[u8]) -> bool {
    method.starts_with(b"plugin.Step")
}

/// The raw id values of a request's argument that the method reads as ids, with the list
/// of issued ids they name.
fn id_values<'a, 'i>(
    method: &[u8],
    arg: &'a [u8],
    issued: &'i Issued,
) -> (Vec<&'a [u8]>, &'i [u64]) {
    let (key, ids): (&[u8], &[u64]) = match method {
        b"plugin.HandleEvent" => (b"InstanceId", &issued.instances),
        m if is_step(m) => (b"EventId", &issued.events),
        b"plugin.CloseInstance" | b"plugin.InstanceStatus" => {
            return (vec![arg], &issued.instances);
        }
        _ => return (Vec::new(), &[]),
    };
    let mut found = Vec::new();
    let _ = for_each_entry(arg, |k, r| {
        if k == key {
            found.push(r.raw()?);
        }
        Ok(())
    });
    (found, ids)
}

/// Rewrites small ids to issued ids, keeping the kind of encoding (float, signed, unsigned).
/// MessagePack containers count elements, not bytes, so a value may change size.
fn translate_ids(message: &[u8], issued: &Issued) -> Option<Vec<u8>> {
    let req = parse_request(message).ok()?;
    let arg = req.arg?;
    let (raws, ids) = id_values(req.method, arg, issued);
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut copied = 0;
    for raw in raws {
        let Ok(small) = Reader::new(raw).u64() else {
            continue;
        };
        let Some(&id) = (small < SMALL_ID)
            .then(|| ids.get(small as usize))
            .flatten()
        else {
            continue;
        };
        let start = raw.as_ptr() as usize - message.as_ptr() as usize;
        out.extend_from_slice(&message[copied..start]);
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

/// Whether a StartInstance would make the probe sleep longer than the fuzzer should wait.
fn stalls(rpc: &Rpc<'_>) -> bool {
    let Rpc::StartInstance(start) = rpc else {
        return false;
    };
    let Ok(config) = serde_json::from_slice::<serde_json::Value>(start.config) else {
        return false;
    };
    config
        .get("delay_ms")
        .and_then(serde_json::Value::as_f64)
        .is_some_and(|ms| ms > MAX_DELAY_MS as f64)
}

/// What the daemon must answer, decided from the parsed request and the state before it.
#[derive(Debug)]
enum Expect {
    /// An error reply (the request is refused as a whole), with its exact text if known.
    Error(Option<String>),
    /// An error reply or a result, by rules the daemon checks further (StartInstance,
    /// GetPluginInfo) or that depend on the event name.
    Either,
    /// StepData for a new event of `phase`.
    NewEvent(Phase),
    /// StepData for event `id`, which the daemon had waiting.
    Resumed(u64),
    /// StepData for event `id`, which the daemon does not have: the request is ended (503)
    /// where its phase can end it, else the event is reported finished.
    Unknown(u64),
    /// The status of instance `id`, which existed (CloseInstance removes it).
    Instance { id: u64, closes: bool },
    /// A result of any shape (GetStatus).
    Result,
}

fn expect(daemon: &Daemon, rpc: &Rpc<'_>) -> Expect {
    let instance_known = |id| daemon.instance_status(&Scope::All, id).is_ok();
    let unknown_instance = |id| Expect::Error(Some(format!("no plugin instance {id}")));
    match rpc {
        Rpc::HandleEvent(h) if !instance_known(h.instance_id) => unknown_instance(h.instance_id),
        Rpc::HandleEvent(h) => match Phase::from_name(h.event_name) {
            Some(phase) => Expect::NewEvent(phase),
            None => Expect::Error(None),
        },
        Rpc::Step(s) if daemon.has_waiting_event(&Scope::All, s.event_id) => {
            Expect::Resumed(s.event_id)
        }
        Rpc::Step(s) => Expect::Unknown(s.event_id),
        Rpc::CloseInstance(c) if instance_known(c.id) => Expect::Instance {
            id: c.id,
            closes: true,
        },
        Rpc::InstanceStatus(s) if instance_known(s.id) => Expect::Instance {
            id: s.id,
            closes: false,
        },
        Rpc::CloseInstance(c) => unknown_instance(c.id),
        Rpc::InstanceStatus(s) => unknown_instance(s.id),
        Rpc::StartInstance(_) | Rpc::GetPluginInfo(_) => Expect::Either,
        Rpc::GetStatus => Expect::Result,
    }
}

fn map_get<'v>(map: &'v rmpv::Value, key: &str) -> Option<&'v rmpv::Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// What a StepData asks of Kong.
#[derive(Debug, PartialEq)]
enum StepData {
    Ret,
    /// `kong.response.exit`/`error` with its arguments: the event is over.
    Ends(String, Vec<rmpv::Value>),
    /// Any other PDK call: the handler waits for Kong's answer.
    Waits,
}

/// Checks StepData `{"EventId", "Data": "ret" | {"Method", "Args": [..]}}`; returns the
/// event id and what it asks.
fn check_step_data(result: &rmpv::Value) -> (u64, StepData) {
    let event_id = map_get(result, "EventId")
        .and_then(rmpv::Value::as_u64)
        .unwrap_or_else(|| panic!("StepData without EventId: {result:?}"));
    let data = map_get(result, "Data").expect("StepData without Data");
    if data.as_str() == Some(encode::RET) {
        return (event_id, StepData::Ret);
    }
    let method = map_get(data, "Method")
        .and_then(rmpv::Value::as_str)
        .unwrap_or_else(|| panic!("call without Method: {data:?}"));
    let args = map_get(data, "Args")
        .and_then(rmpv::Value::as_array)
        .unwrap_or_else(|| panic!("call without an Args array: {data:?}"));
    let what = match method {
        "kong.response.exit" | "kong.response.error" => StepData::Ends(method.into(), args.clone()),
        _ => StepData::Waits,
    };
    (event_id, what)
}

/// The phase bits of an event id, as the daemon issues them (`serial << 3 | phase`).
fn phase_of(event_id: u64) -> Option<Phase> {
    Phase::from_code((event_id & 7) as u8)
}

/// The call that ends a request in `phase` in a failed plugin's place: Kong has no
/// `kong.response.error` in the stream subsystem.
fn ending(phase: Phase, status: u64) -> StepData {
    let method = if phase == Phase::Preread {
        "kong.response.exit"
    } else {
        "kong.response.error"
    };
    StepData::Ends(method.into(), vec![rmpv::Value::from(status)])
}

/// Checks what an event's StepData asks, for an event of `phase`.
fn check_event_step(daemon: &Daemon, phase: Phase, event_id: u64, what: &StepData) {
    assert_eq!(
        phase_of(event_id),
        Some(phase),
        "event {event_id}'s phase bits"
    );
    assert_eq!(
        daemon.has_waiting_event(&Scope::All, event_id),
        *what == StepData::Waits,
        "the event waits exactly when the handler waits for Kong: {what:?}"
    );
    match phase {
        // The probe runs only access: its own exit(403, "denied"), or the daemon's end in
        // its place when it fails (an error, a panic, an answer it cannot decode).
        Phase::Access => {
            if let StepData::Ends(method, args) = what {
                let own = method == "kong.response.exit"
                    && args.len() == 2
                    && args[0].as_u64() == Some(403);
                assert!(
                    own || *what == ending(phase, 500),
                    "access ended with {what:?}"
                );
            }
        }
        // No handler: the request ends (500) where the phase can end it, else goes on.
        _ if phase.can_end_request() => assert_eq!(*what, ending(phase, 500), "{phase}"),
        _ => assert_eq!(*what, StepData::Ret, "{phase}"),
    }
}

/// One message, as a connection handles it; returns false when the connection would close.
fn exchange(daemon: &Daemon, issued: &mut Issued, message: &[u8], out: &mut Vec<u8>) -> bool {
    let translated = translate_ids(message, issued);
    let message = translated.as_deref().unwrap_or(message);
    out.clear();
    let (msgid, expected) = match check_parse(message) {
        Ok(req) => {
            let expected = match Rpc::parse(&req) {
                Ok(rpc) if stalls(&rpc) => return true,
                Ok(rpc) => expect(daemon, &rpc),
                Err(_) => Expect::Error(None),
            };
            block_on(rpc::respond(daemon, &Scope::All, &req, out));
            (req.msgid, expected)
        }
        Err(RequestError::Malformed { msgid, reason }) => {
            RpcError::Malformed(reason).write(msgid, out);
            (msgid, Expect::Error(None))
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

    if let Some(error) = error.as_str() {
        assert!(
            result.is_nil(),
            "an error response has no result: {response:?}"
        );
        // Kong restarts the instance on this wording: only for an unknown instance, even
        // when the request (a plugin name, an event name) or a plugin's error text echoes it.
        let restarts = error.to_lowercase().contains("no plugin instance");
        match &expected {
            Expect::Error(Some(text)) => assert_eq!(error, text),
            Expect::Error(None) | Expect::Either => {
                assert!(!restarts, "{error:?} for {expected:?}")
            }
            _ => panic!(
                "an error reply {error:?} where {expected:?}: Kong would proxy past the plugin"
            ),
        }
        return true;
    }
    assert!(error.is_nil(), "the error is a string or nil: {response:?}");
    assert!(!result.is_nil(), "a successful response has a result");
    match expected {
        Expect::Error(_) => panic!("{expected:?} succeeded: {response:?}"),
        Expect::Either => {
            if let Some(id) = map_get(result, "Id").and_then(rmpv::Value::as_u64) {
                // A started instance: new, and now known.
                assert!(!issued.instances.contains(&id));
                assert!(daemon.instance_status(&Scope::All, id).is_ok());
                issued.instances.push(id);
            } else {
                assert!(map_get(result, "Name").is_some(), "{result:?}");
            }
        }
        Expect::NewEvent(phase) => {
            let (event, what) = check_step_data(result);
            assert!(!issued.events.contains(&event), "a new event id");
            issued.events.push(event);
            check_event_step(daemon, phase, event, &what);
        }
        Expect::Resumed(id) => {
            let (event, what) = check_step_data(result);
            assert_eq!(event, id, "the step's own event");
            let phase = phase_of(id).expect("a waiting event has a phase");
            check_event_step(daemon, phase, id, &what);
        }
        Expect::Unknown(id) => {
            let (event, what) = check_step_data(result);
            assert_eq!(event, id, "the step's own event");
            assert!(!daemon.has_waiting_event(&Scope::All, id));
            match phase_of(id) {
                Some(phase) if phase.can_end_request() => assert_eq!(what, ending(phase, 503)),
                _ => assert_eq!(what, StepData::Ret),
            }
        }
        Expect::Instance { id, closes } => {
            assert_eq!(
                map_get(result, "Id").and_then(rmpv::Value::as_u64),
                Some(id)
            );
            assert_eq!(daemon.instance_status(&Scope::All, id).is_ok(), !closes);
        }
        Expect::Result => assert!(map_get(result, "Plugins").is_some(), "{result:?}"),
    }
    true
}

fuzz_target!(init: install_panic_hook(), |data: &[u8]| {
    let daemon = daemon();
    let mut issued = Issued::default();
    let mut out = Vec::new();
    let mut rest = data;
    for _ in 0..MAX_MESSAGES {
        let Ok(Some(len)) = frame::value_len(rest, MAX_MESSAGE) else {
            break;
        };
        if !exchange(&daemon, &mut issued, &rest[..len], &mut out) {
            break;
        }
        rest = &rest[len..];
    }
});
