//! Every PDK wrapper against Lua's argument rule: Kong calls `method(unpack(args))`, and
//! LuaJIT's `unpack` stops at `#args`, a border of the table lua-MessagePack built, so a
//! nil before a value can cut every later argument. For each wrapper and each combination
//! of its optional arguments, the arguments it sends must all reach Kong's function.

use std::{
    collections::BTreeSet,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use proptest::prelude::*;

use super::{Kong, SerializeMode};
use crate::{
    InstanceInfo, Phase, Value,
    exchange::Exchange,
    kong_versions::PDK_FUNCTIONS,
    types::{Body, Consumer, Credential, Multimap},
};

/// How many arguments Lua passes for an `Args` array of `len` values: `UNPACK[len - 1]`
/// indexed by the bit pattern of its non-nil values (bit `i` = argument `i + 1`).
///
/// Measured, not derived: the count depends on how LuaJIT grows the table while
/// lua-MessagePack fills it (`for i = 1, n do t[i] = v end`, nils included), which the
/// notes on Kong's versions (§H) describe. Produced with OpenResty's LuaJIT 2.1 (Debian
/// `luajit2`, JIT on and off alike) and lua-MessagePack 0.5.2, the version Kong 3.0 pins:
///
/// ```lua
/// local mp = require "MessagePack"
/// for len = 1, 8 do for bits = 0, 2^len - 1 do
///   local bytes = { string.char(0x90 + len) }
///   for i = 1, len do
///     bytes[#bytes+1] = math.floor(bits / 2^(i-1)) % 2 == 1 and "\xa1x" or "\xc0"
///   end
///   print(len, bits, select('#', unpack(mp.unpack(table.concat(bytes)))))
/// end end
/// ```
const UNPACK: [&[u8]; 8] = [
    // 1 arguments
    &[0, 1],
    // 2 arguments
    &[0, 1, 2, 2],
    // 3 arguments
    &[0, 1, 2, 2, 0, 1, 3, 3],
    // 4 arguments
    &[0, 1, 2, 2, 0, 1, 3, 3, 0, 4, 4, 4, 0, 4, 4, 4],
    // 5 arguments
    &[
        0, 1, 2, 2, 0, 1, 3, 3, 0, 4, 4, 4, 4, 4, 4, 4, 0, 1, 2, 2, 0, 1, 3, 3, 0, 5, 5, 5, 5, 5,
        5, 5,
    ],
    // 6 arguments
    &[
        0, 1, 2, 2, 0, 1, 3, 3, 0, 4, 4, 4, 4, 4, 4, 4, 0, 1, 2, 2, 0, 1, 3, 3, 5, 5, 5, 5, 5, 5,
        5, 5, 0, 1, 2, 2, 0, 1, 3, 3, 0, 6, 6, 6, 6, 6, 6, 6, 0, 1, 2, 2, 0, 1, 3, 3, 6, 6, 6, 6,
        6, 6, 6, 6,
    ],
    // 7 arguments
    &[
        0, 1, 2, 2, 0, 1, 3, 3, 0, 4, 4, 4, 4, 4, 4, 4, 0, 1, 2, 2, 0, 1, 3, 3, 5, 5, 5, 5, 5, 5,
        5, 5, 0, 1, 2, 2, 0, 1, 3, 3, 6, 6, 6, 6, 6, 6, 6, 6, 0, 1, 2, 2, 0, 1, 3, 3, 6, 6, 6, 6,
        6, 6, 6, 6, 0, 1, 2, 2, 0, 1, 3, 3, 0, 4, 4, 4, 4, 4, 4, 4, 0, 1, 2, 2, 0, 1, 3, 3, 5, 5,
        5, 5, 5, 5, 5, 5, 0, 1, 2, 2, 0, 1, 3, 3, 7, 7, 7, 7, 7, 7, 7, 7, 0, 1, 2, 2, 0, 1, 3, 3,
        7, 7, 7, 7, 7, 7, 7, 7,
    ],
    // 8 arguments
    &[
        0, 1, 2, 2, 0, 1, 3, 3, 0, 4, 4, 4, 4, 4, 4, 4, 0, 1, 2, 2, 0, 1, 3, 3, 5, 5, 5, 5, 5, 5,
        5, 5, 0, 1, 2, 2, 0, 1, 3, 3, 6, 6, 6, 6, 6, 6, 6, 6, 0, 1, 2, 2, 0, 1, 3, 3, 6, 6, 6, 6,
        6, 6, 6, 6, 0, 1, 2, 2, 0, 1, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 0, 1, 2, 2, 0, 1, 3, 3, 5, 5,
        5, 5, 5, 5, 5, 5, 0, 1, 2, 2, 0, 1, 3, 3, 7, 7, 7, 7, 7, 7, 7, 7, 0, 1, 2, 2, 0, 1, 3, 3,
        7, 7, 7, 7, 7, 7, 7, 7, 0, 1, 2, 8, 0, 8, 8, 8, 0, 8, 8, 8, 8, 8, 8, 8, 0, 8, 8, 8, 8, 8,
        8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 0, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
        8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 0, 1, 2, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
        8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
        8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
    ],
];

/// The arguments Kong's function receives for `args`.
fn lua_arguments(args: &[Value]) -> usize {
    assert!(
        (1..=UNPACK.len()).contains(&args.len()) || args.is_empty(),
        "no measurement for {} arguments",
        args.len()
    );
    if args.is_empty() {
        return 0;
    }
    let bits = args
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nil())
        .fold(0usize, |bits, (i, _)| bits | 1 << i);
    usize::from(UNPACK[args.len() - 1][bits])
}

#[test]
fn the_measured_rule_matches_kongs_notes() {
    let x = || Value::from("x");
    let n = || Value::Nil;
    assert_eq!(
        lua_arguments(&[n(), x()]),
        2,
        "[nil, x] keeps its leading nil"
    );
    assert_eq!(lua_arguments(&[n(), n(), x()]), 0);
    assert_eq!(lua_arguments(&[x(), n(), x()]), 1);
    assert_eq!(lua_arguments(&[x(), n()]), 1);
    assert_eq!(lua_arguments(&[x(), n(), n(), x()]), 4);
    assert_eq!(lua_arguments(&[x(), x(), n(), n(), x()]), 2);
    assert_eq!(lua_arguments(&[n(), x(), x(), n(), x()]), 3);
    // Without holes, every argument arrives.
    for len in 1..=UNPACK.len() {
        assert_eq!(usize::from(UNPACK[len - 1][(1 << len) - 1]), len);
    }
}

/// One PDK call a wrapper handed out, its arguments decoded.
#[derive(Debug)]
struct Captured {
    method: String,
    args: Vec<Value>,
}

type BoxFuture<'k> = Pin<Box<dyn Future<Output = ()> + 'k>>;
type Case = Box<dyn for<'k> FnOnce(&'k Kong) -> BoxFuture<'k>>;

fn case<F>(f: F) -> Case
where
    F: for<'k> FnOnce(&'k Kong) -> BoxFuture<'k> + 'static,
{
    Box::new(f)
}

/// Runs a wrapper the way the daemon would, answering each call with `reply`, and
/// returns every call it made.
fn capture(case: Case, reply: fn(&str) -> Option<Value>) -> Vec<Captured> {
    let exchange = Arc::new(Exchange::default());
    let mut info = InstanceInfo::default();
    info.plugin_id = Some("0b5e5b8e-0000-4000-8000-000000000001".into());
    let kong = Kong::new(exchange.clone(), Arc::new(info), Phase::Access);
    let mut future = case(&kong);
    let mut cx = Context::from_waker(Waker::noop());
    let mut calls = Vec::new();
    for _ in 0..8 {
        if let Poll::Ready(()) = future.as_mut().poll(&mut cx) {
            break;
        }
        let mut args = Vec::new();
        let Some(taken) = exchange.take_call(&mut args) else {
            break;
        };
        let args: Vec<Value> = rmp_serde::from_slice(&args).expect("arguments are an array");
        let answer = reply(&taken.method).map(|v| rmp_serde::to_vec(&v).unwrap());
        calls.push(Captured {
            method: taken.method.into_owned(),
            args,
        });
        exchange.answer(answer.as_deref());
    }
    calls
}

/// Every combination of two optional values.
fn options2<A: Clone, B: Clone>(a: &A, b: &B) -> Vec<(Option<A>, Option<B>)> {
    let (a, b) = (a.clone(), b.clone());
    vec![
        (None, None),
        (Some(a.clone()), None),
        (None, Some(b.clone())),
        (Some(a), Some(b)),
    ]
}

/// Every combination of three optional values.
fn options3<A: Clone, B: Clone, C: Clone>(
    a: &A,
    b: &B,
    c: &C,
) -> Vec<(Option<A>, Option<B>, Option<C>)> {
    let mut all = Vec::new();
    for (a, b) in options2(a, b) {
        all.push((a.clone(), b.clone(), None));
        all.push((a, b, Some(c.clone())));
    }
    all
}

/// Generated argument values.
#[derive(Debug, Clone)]
struct Inputs {
    text: String,
    number: u16,
    big: u64,
    flag: bool,
    value: Value,
    mode: SerializeMode,
}

fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        "[a-z]{0,6}".prop_map(Value::from),
        prop::collection::vec("[a-z]{1,3}".prop_map(Value::from), 0..3).prop_map(Value::Array),
    ]
}

fn inputs() -> impl Strategy<Value = Inputs> {
    (
        "[a-z./]{1,12}",
        1u16..=1000,
        any::<u64>(),
        any::<bool>(),
        any_value(),
        prop_oneof![
            Just(SerializeMode::Set),
            Just(SerializeMode::Add),
            Just(SerializeMode::Replace)
        ],
    )
        .prop_map(|(text, number, big, flag, value, mode)| Inputs {
            text,
            number,
            big,
            flag,
            value,
            mode,
        })
}

macro_rules! call {
    ($k:ident => $e:expr) => {
        case(move |$k| {
            Box::pin(async move {
                let _ = $e.await;
            })
        })
    };
}

/// Every wrapper, with every combination of its optional arguments.
fn cases(i: &Inputs) -> Vec<Case> {
    let mut all: Vec<Case> = Vec::new();
    let t = i.text.clone();
    macro_rules! text_calls {
        ($($group:ident . $method:ident),* $(,)?) => {$({
            let t = t.clone();
            all.push(call!(k => k.$group().$method(&t)));
        })*};
    }
    macro_rules! plain_calls {
        ($($group:ident => $method:ident),* $(,)?) => {$(
            all.push(call!(k => k.$group().$method()));
        )*};
    }
    // kong.client
    plain_calls!(
        client => get_ip, client => get_forwarded_ip, client => get_port,
        client => get_forwarded_port, client => get_credential, client => get_consumer,
    );
    {
        let (t, flag) = (t.clone(), i.flag);
        all.push(call!(k => k.client().load_consumer(&t, flag)));
    }
    let consumer = Consumer {
        id: i.text.clone(),
        ..Consumer::default()
    };
    let credential = Credential {
        id: i.text.clone(),
        ..Credential::default()
    };
    for (c, cred) in options2(&consumer, &credential) {
        all.push(call!(k => k.client().authenticate(c.as_ref(), cred.as_ref())));
    }
    for allow in [None, Some(i.flag)] {
        all.push(call!(k => k.client().get_protocol(allow)));
    }
    all.push(call!(k => k.client().tls().request_client_certificate()));
    all.push(call!(k => k.client().tls().disable_session_reuse()));
    all.push(call!(k => k.client().tls().get_full_client_certificate_chain()));
    {
        let t = t.clone();
        all.push(call!(k => k.client().tls().set_client_verify(&t)));
    }
    // kong.ctx.shared, kong.ip, kong.nginx, kong.node, kong.cluster, kong.plugin
    {
        let t2 = t.clone();
        all.push(call!(k => k.ctx().shared().get(&t2)));
        let (t2, v) = (t.clone(), i.value.clone());
        all.push(call!(k => k.ctx().shared().set(&t2, v)));
        let (t2, v) = (t.clone(), i.value.clone());
        all.push(call!(k => k.nginx().set_ctx(&t2, v)));
    }
    text_calls!(ip.is_trusted, nginx.get_var, nginx.get_ctx);
    plain_calls!(
        nginx => get_tls1_version_str, nginx => req_start_time, nginx => get_subsystem,
        nginx => get_statistics, node => get_id, node => get_memory_stats,
        node => get_hostname, cluster => get_id, plugin => get_id,
    );
    {
        let (t, n) = (t.clone(), u32::from(i.number));
        all.push(call!(k => k.node().get_memory_stats_in(&t, n)));
    }
    // kong.log
    text_calls!(
        log.call,
        log.alert,
        log.crit,
        log.err,
        log.warn,
        log.notice,
        log.info,
        log.debug,
        log.emerg,
        log.deprecation,
        log.trace,
    );
    plain_calls!(log => inspect_on, log => inspect_off, log => serialize);
    {
        let v = i.value.clone();
        all.push(call!(k => k.log().inspect(v)));
    }
    for format in [None, Some(i.text.clone())] {
        all.push(call!(k => k.log().set_format(format.as_deref())));
    }
    for (value, mode) in options2(&i.value, &i.mode) {
        let t = t.clone();
        let value = value.unwrap_or_default();
        all.push(call!(k => k.log().set_serialize_value(&t, value, mode)));
    }
    // kong.request
    plain_calls!(
        request => get_scheme, request => get_host, request => get_port,
        request => get_forwarded_scheme, request => get_forwarded_host,
        request => get_forwarded_port, request => get_forwarded_path,
        request => get_forwarded_prefix, request => get_http_version, request => get_method,
        request => get_path, request => get_raw_path, request => get_path_with_query,
        request => get_raw_query, request => get_start_time, request => get_uri_captures,
    );
    text_calls!(
        request.get_query_arg,
        request.get_header,
        request.get_header_bytes
    );
    for max in [None, Some(i.number)] {
        all.push(call!(k => k.request().get_query(max)));
        all.push(call!(k => k.request().get_headers(max)));
        all.push(call!(k => k.response().get_headers(max)));
        all.push(call!(k => k.service().response().get_headers(max)));
    }
    for size in [None, Some(i.big)] {
        all.push(call!(k => k.request().get_raw_body(size)));
    }
    for (mime, max, size) in options3(&i.text, &i.number, &i.big) {
        all.push(call!(k => k.request().get_body(mime.as_deref(), max, size)));
    }
    // kong.response
    plain_calls!(response => get_status, response => get_source);
    text_calls!(
        response.get_header,
        response.get_header_bytes,
        response.clear_header
    );
    {
        let n = i.number;
        all.push(call!(k => k.response().set_status(n)));
        let t2 = t.clone();
        all.push(call!(k => k.response().set_header(&t2, &t2)));
        let t2 = t.clone();
        all.push(call!(k => k.response().add_header(&t2, &t2)));
        let headers = Multimap::new().with(i.text.clone(), "v");
        all.push(call!(k => k.response().set_headers(&headers)));
    }
    let bodies = [
        Body::Empty,
        Body::Text(i.text.clone()),
        Body::Bytes(i.text.clone().into_bytes()),
        Body::json(&serde_json::json!({"items": [], "x": i.text})).unwrap(),
    ];
    for body in bodies {
        let status = i.number;
        let plain = body.clone();
        all.push(call!(k => k.response().exit(status, plain)));
        let headers = Multimap::new().with("x-a", "1");
        all.push(call!(k => k.response().exit_with_headers(status, body, &headers)));
    }
    for message in [None, Some(i.text.clone())] {
        let status = i.number;
        all.push(call!(k => k.response().error(status, message.as_deref())));
    }
    {
        let (status, t) = (i.number, t.clone());
        let headers = Multimap::new().with("x-a", "1");
        all.push(call!(k => k.response().error_with_headers(status, &t, &headers)));
    }
    // kong.router, kong.service
    plain_calls!(router => get_route, router => get_service);
    text_calls!(service.set_upstream);
    {
        let (t2, n) = (t.clone(), i.number);
        all.push(call!(k => k.service().set_target(&t2, n)));
        let n = u32::from(i.number);
        all.push(call!(k => k.service().set_retries(n)));
        all.push(call!(k => k.service().set_timeouts(n, n, n)));
        all.push(call!(k => k.service().set_tls_verify_depth(n)));
        let flag = i.flag;
        all.push(call!(k => k.service().set_tls_verify(flag)));
    }
    // kong.service.request
    macro_rules! upstream_text_calls {
        ($($method:ident),*) => {$({
            let t = t.clone();
            all.push(call!(k => k.service().request().$method(&t)));
        })*};
    }
    upstream_text_calls!(
        set_scheme,
        set_path,
        set_raw_query,
        set_method,
        clear_header,
        clear_query_arg
    );
    {
        let t2 = t.clone();
        all.push(call!(k => k.service().request().set_header(&t2, &t2)));
        let t2 = t.clone();
        all.push(call!(k => k.service().request().add_header(&t2, &t2)));
        let map = Multimap::new().with(i.text.clone(), "v");
        all.push(call!(k => k.service().request().set_headers(&map)));
        let map = Multimap::new().with(i.text.clone(), "v");
        all.push(call!(k => k.service().request().set_query(&map)));
        let bytes = i.text.clone().into_bytes();
        all.push(call!(k => k.service().request().set_raw_body(&bytes)));
    }
    all.push(call!(k => k.service().request().enable_buffering()));
    all.push(call!(k => k.service().request().disable_tls()));
    all.push(call!(k => k.service().response().get_status()));
    all.push(call!(k => k.service().response().get_raw_body()));
    for mime in [
        None,
        Some("application/json".to_owned()),
        Some("application/x-www-form-urlencoded".to_owned()),
    ] {
        let body = serde_json::json!({"k": i.text, "list": []});
        all.push(call!(k => k.service().request().set_body(&body, mime.as_deref())));
    }
    // kong.service.response
    {
        let t2 = t.clone();
        all.push(call!(k => k.service().response().get_header(&t2)));
        let t = t.clone();
        all.push(call!(k => k.service().response().get_header_bytes(&t)));
    }
    for (mime, max) in options2(&i.text, &i.number) {
        all.push(call!(k => k.service().response().get_body(mime.as_deref(), max)));
    }
    // kong.telemetry
    let attributes = Value::map([("a", i.value.clone())]);
    for (message, attributes) in options2(&i.text, &attributes) {
        let t = t.clone();
        all.push(call!(k => k.telemetry().log(&t, &t, message.as_deref(), attributes.as_ref())));
    }
    // kong.vault
    text_calls!(vault.get, vault.is_reference, vault.parse_reference);
    plain_calls!(vault => flush);
    {
        let v = Value::map([("$refs", Value::map([("k", i.value.clone())]))]);
        let w = v.clone();
        all.push(call!(k => k.vault().update(&v)));
        all.push(call!(k => k.vault().warmup(&w)));
    }
    all
}

/// Kong answers nil to everything, except the request's `Content-Type` when asked.
fn json_request(method: &str) -> Option<Value> {
    (method == "kong.request.get_header").then(|| Value::from("application/json"))
}

fn nil_answers(_: &str) -> Option<Value> {
    None
}

/// Every argument a call sends reaches Kong's function.
fn assert_nothing_lost(call: &Captured) {
    let passed = lua_arguments(&call.args);
    if let Some((lost, value)) = call
        .args
        .iter()
        .enumerate()
        .skip(passed)
        .find(|(_, v)| !v.is_nil())
    {
        panic!(
            "{}({:?}): Lua passes {passed} arguments, losing argument #{} ({value:?})",
            call.method,
            call.args,
            lost + 1
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_wrapper_sends_arguments_lua_passes_whole(inputs in inputs()) {
        let mut methods = BTreeSet::new();
        for reply in [nil_answers as fn(&str) -> Option<Value>, json_request] {
            for case in cases(&inputs) {
                for call in capture(case, reply) {
                    assert_nothing_lost(&call);
                    methods.insert(call.method);
                }
            }
        }
        // Every function a wrapper exists for was exercised.
        for function in PDK_FUNCTIONS.iter().filter(|f| f.rust.is_some()) {
            prop_assert!(methods.contains(function.name), "{} was not called", function.name);
        }
    }
}

/// The calls `case` makes, with nil answers (the request's type is JSON when asked).
fn calls_of(case: Case) -> Vec<(String, Vec<Value>)> {
    capture(case, json_request)
        .into_iter()
        .map(|c| (c.method, c.args))
        .collect()
}

#[test]
fn holes_get_the_value_kongs_function_would_use() {
    let get_body = |m: Option<&'static str>, n: Option<u16>, f: Option<u64>| {
        calls_of(call!(k => k.request().get_body(m, n, f)))[0]
            .1
            .clone()
    };
    assert_eq!(
        get_body(None, None, Some(7)),
        [Value::Bool(false), Value::Int(100), Value::Int(7)]
    );
    assert_eq!(
        get_body(Some("application/json"), None, Some(7)),
        [
            Value::from("application/json"),
            Value::Int(100),
            Value::Int(7)
        ]
    );
    assert_eq!(
        get_body(None, Some(5), None),
        [Value::Bool(false), Value::Int(5)]
    );
    assert!(get_body(None, None, None).is_empty());

    let telemetry = calls_of(
        call!(k => k.telemetry().log("p", "t", None, Some(&Value::map([("a", Value::Int(1))])))),
    );
    assert_eq!(telemetry[0].1[3], Value::from(""));
    assert_eq!(
        telemetry[0].1[1],
        Value::map([(
            "__plugin_id",
            Value::from("0b5e5b8e-0000-4000-8000-000000000001")
        )])
    );

    let remove = calls_of(
        call!(k => k.log().set_serialize_value("a.b", Value::Nil, Some(SerializeMode::Set))),
    );
    assert_eq!(remove[0].1, [Value::from("a.b")]);
    let refused = calls_of(
        call!(k => k.log().set_serialize_value("a.b", Value::Nil, Some(SerializeMode::Replace))),
    );
    assert!(refused.is_empty(), "refused before reaching Kong");
    let replace = calls_of(
        call!(k => k.log().set_serialize_value("a\\.b", Value::Nil, Some(SerializeMode::Replace))),
    );
    assert_eq!(replace[0].1, [Value::from("a\\.b")]);
}

#[test]
fn json_bodies_go_as_text_with_kongs_content_type() {
    let body = Body::json(&serde_json::json!({"items": []})).unwrap();
    let exit = calls_of(call!(k => k.response().exit(200, body)));
    assert_eq!(
        exit[0].1,
        [
            Value::Int(200),
            Value::from(r#"{"items":[]}"#),
            Value::map([(
                "Content-Type",
                Value::from("application/json; charset=utf-8")
            )]),
        ]
    );
    let typed = Multimap::new().with("content-type", "application/problem+json");
    let body = Body::json(&serde_json::json!({"e": 1})).unwrap();
    let exit = calls_of(call!(k => k.response().exit_with_headers(400, body, &typed)));
    assert_eq!(
        exit[0].1[2],
        Value::map([("content-type", Value::from("application/problem+json"))])
    );

    let set_body = calls_of(
        call!(k => k.service().request().set_body(&serde_json::json!({"items": []}), None)),
    );
    let methods: Vec<&str> = set_body.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        methods,
        [
            "kong.request.get_header",
            "kong.service.request.set_raw_body",
            "kong.service.request.set_header"
        ]
    );
    assert_eq!(set_body[1].1, [Value::Bytes(br#"{"items":[]}"#.to_vec())]);
    assert_eq!(
        set_body[2].1,
        [Value::from("Content-Type"), Value::from("application/json")]
    );
}
