//! The transcoding against hand-made encodings, and every function of the protocol
//! round-tripped: the plugin's MessagePack arguments through the pluginserver's encoder
//! and Kong's `unwrap`, and Kong's MsgPack:1-shaped result through Kong's `wrap` and the
//! pluginserver's decoder.

use prost::Message;
use rmpv::Value as V;

use super::{
    METHODS, frame,
    kong::{self as kong_side, lua_args, wrap_result},
    messages::{CmdHandleEvent, RpcCall, RpcReturn, rpc_call::Call},
    transcode::{Answer, Sent, encode_call, write_end_request},
};

fn mp(v: &V) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).unwrap();
    out
}

fn unmp(bytes: &[u8]) -> V {
    let mut slice = bytes;
    let v = rmpv::decode::read_value(&mut slice).unwrap();
    assert!(slice.is_empty(), "one value");
    v
}

fn map(entries: &[(&str, V)]) -> V {
    V::Map(
        entries
            .iter()
            .map(|(k, v)| (V::from(*k), v.clone()))
            .collect(),
    )
}

/// Splits the method and argument frames `encode_call` wrote.
fn frames(out: &[u8]) -> (String, Vec<u8>) {
    let method = frame::first(out, 1 << 20).unwrap().unwrap();
    let rest = &out[method.end..];
    let args = frame::first(rest, 1 << 20).unwrap().unwrap();
    assert_eq!(args.end, rest.len(), "exactly two frames");
    (
        String::from_utf8(out[method].to_vec()).unwrap(),
        rest[args].to_vec(),
    )
}

#[test]
fn hello_calls_are_byte_exact() {
    // kong.request.get_header("host"): String{v = "host"}.
    let mut out = Vec::new();
    let sent = encode_call(
        "kong.request.get_header",
        &mp(&V::Array(vec!["host".into()])),
        &mut out,
    )
    .unwrap();
    let mut expected = vec![0x17, 0, 0, 0];
    expected.extend_from_slice(b"kong.request.get_header");
    expected.extend_from_slice(&[0x06, 0, 0, 0, 0x0a, 0x04, b'h', b'o', b's', b't']);
    assert_eq!(out, expected);
    let Sent::Awaiting(pending) = sent else {
        panic!("get_header awaits an answer")
    };
    // Kong answers String{v = "127.0.0.1:18100"}; an absent header is an empty frame.
    let mut reply = vec![0x0a, 0x0f];
    reply.extend_from_slice(b"127.0.0.1:18100");
    let mut value = Vec::new();
    assert_eq!(pending.decode(&reply, &mut value), Ok(Answer::Value));
    assert_eq!(unmp(&value), V::from("127.0.0.1:18100"));
    value.clear();
    pending.decode(b"", &mut value).unwrap();
    assert_eq!(value, [0xc0]);

    // kong.response.set_header(k, v): KV{k, v = Value{string_value}}.
    out.clear();
    encode_call(
        "kong.response.set_header",
        &mp(&V::Array(vec!["x-a".into(), "b".into()])),
        &mut out,
    )
    .unwrap();
    let (method, args) = frames(&out);
    assert_eq!(method, "kong.response.set_header");
    assert_eq!(
        args,
        [0x0a, 0x03, b'x', b'-', b'a', 0x12, 0x03, 0x1a, 0x01, b'b']
    );
}

#[test]
fn kongs_rpc_frames_decode_and_the_end_of_an_event_is_exact() {
    // From the protocol notes: HandleEvent{instance 5, "access"}, sequence 3.
    let bytes = [
        0x08, 0x03, 0xa2, 0x02, 0x0a, 0x08, 0x05, 0x12, 0x06, b'a', b'c', b'c', b'e', b's', b's',
    ];
    let call = RpcCall::decode(&bytes[..]).unwrap();
    assert_eq!(call.sequence, 3);
    assert_eq!(
        call.call,
        Some(Call::CmdHandleEvent(CmdHandleEvent {
            instance_id: 5,
            event_name: b"access".to_vec()
        }))
    );
    // Field order is Kong's `lua_next` order: the sequence may come last.
    let reordered = [&bytes[2..], &bytes[..2]].concat();
    assert_eq!(RpcCall::decode(&reordered[..]).unwrap(), call);
    let mut out = Vec::new();
    kong_side::handle_event(&mut out, 3, 5, "access");
    assert_eq!(&out[4..], &bytes[..]);

    // RpcReturn{sequence = 3}.
    let mut out = Vec::new();
    frame::write_message(
        &mut out,
        &RpcReturn {
            sequence: 3,
            r#return: None,
        },
    );
    assert_eq!(out, [0x02, 0, 0, 0, 0x08, 0x03]);
}

#[test]
fn a_failed_plugin_ends_the_request_with_exit_and_a_json_body() {
    let mut out = Vec::new();
    write_end_request(500, false, &mut out);
    let (method, args) = frames(&out);
    assert_eq!(method, "kong.response.exit");
    assert_eq!(args, [0x08, 0xf4, 0x03], "a stream gets the status alone");
    out.clear();
    write_end_request(500, true, &mut out);
    let (method, args) = frames(&out);
    assert_eq!(method, "kong.response.exit");
    let lua = unmp(&lua_args(&method, &args).unwrap());
    assert_eq!(
        lua,
        V::Array(vec![
            500.into(),
            r#"{"message":"An unexpected error occurred"}"#.into(),
            map(&[("Content-Type", "application/json; charset=utf-8".into())]),
        ])
    );
}

#[test]
fn calls_outside_the_protocol_and_arguments_it_cannot_carry_are_refused() {
    let mut out = Vec::new();
    for method in [
        "kong.response.error",
        "kong.log.emerg",
        "kong.log.deprecation",
        "kong.vault.get",
        "kong.node.get_hostname",
        "kong.service.set_timeouts",
    ] {
        let err = encode_call(method, &[0x90], &mut out).unwrap_err();
        assert!(err.0.contains("ProtoBuf:1"), "{err}");
    }
    let args = mp(&V::Array(vec![
        "k".into(),
        1.into(),
        map(&[("mode", "add".into())]),
    ]));
    let err = encode_call("kong.log.set_serialize_value", &args, &mut out).unwrap_err();
    assert!(err.0.contains("mode"), "{err}");
    let args = mp(&V::Array(vec!["m".into(), 2.into()]));
    assert!(encode_call("kong.node.get_memory_stats", &args, &mut out).is_err());
    let args = mp(&V::Array(vec![1.into()]));
    assert!(encode_call("kong.request.get_header", &args, &mut out).is_err());
    assert!(out.is_empty(), "nothing is written for a refused call");
}

#[test]
fn values_keep_false_and_nil_apart_from_kongs_traps() {
    // ctx.shared.set("k", nil) sends KV{k} without v (Kong calls set("k", nil)), never a
    // null_value (which Lua would see as the string "NULL_VALUE").
    let mut out = Vec::new();
    encode_call(
        "kong.ctx.shared.set",
        &mp(&V::Array(vec!["k".into(), V::Nil])),
        &mut out,
    )
    .unwrap();
    let (_, args) = frames(&out);
    assert_eq!(args, [0x0a, 0x01, b'k']);
    // A nil inside a list is an empty Value, read back as nil.
    out.clear();
    let list = V::Array(vec![1.into(), V::Nil, "x".into()]);
    encode_call(
        "kong.ctx.shared.set",
        &mp(&V::Array(vec!["k".into(), list.clone()])),
        &mut out,
    )
    .unwrap();
    let (method, args) = frames(&out);
    assert_eq!(
        unmp(&lua_args(&method, &args).unwrap()),
        V::Array(vec!["k".into(), list])
    );
    // Kong's answers: nil is null_value (08 01), read back as nil; false is `20 00`.
    let get = |reply: &[u8]| {
        let mut out = Vec::new();
        let Sent::Awaiting(p) = encode_call(
            "kong.ctx.shared.get",
            &mp(&V::Array(vec!["k".into()])),
            &mut out,
        )
        .unwrap() else {
            panic!()
        };
        let mut value = Vec::new();
        p.decode(reply, &mut value).unwrap();
        unmp(&value)
    };
    assert_eq!(
        get(&wrap_result("kong.ctx.shared.get", None).unwrap()),
        V::Nil
    );
    assert_eq!(
        wrap_result("kong.ctx.shared.get", None).unwrap(),
        [0x08, 0x01]
    );
    assert_eq!(
        wrap_result("kong.ctx.shared.get", Some(&mp(&V::from(false)))).unwrap(),
        [0x20, 0x00]
    );
    assert_eq!(get(&[0x20, 0x00]), V::from(false));
    assert_eq!(get(&[]), V::Nil);
    // An empty table is an empty struct: MsgPack:1 carries it as an empty array.
    assert_eq!(get(&[0x2a, 0x00]), V::Array(vec![]));
}

/// One function's round trip: what the plugin sends, what Kong's function is called with,
/// what it returns (as MsgPack:1 carries it), and what the plugin gets back.
struct Case {
    args: V,
    lua: V,
    result: Option<V>,
    back: V,
}

fn case(args: V, lua: V, result: Option<V>, back: V) -> Case {
    Case {
        args,
        lua,
        result,
        back,
    }
}

fn arr(items: Vec<V>) -> V {
    V::Array(items)
}

/// The round trip of every function of the protocol.
fn case_for(method: &str) -> Case {
    let none = || arr(vec![]);
    let s = |t: &str| V::from(t);
    let same = |args: V, result: V| case(args.clone(), args, Some(result.clone()), result);
    let unit = |args: V| case(args.clone(), args, None, V::Nil);
    let consumer = map(&[
        ("id", s("c1")),
        ("created_at", 1700000000.into()),
        ("username", s("alice")),
        ("tags", arr(vec![s("t")])),
    ]);
    let multimap_kong = map(&[
        ("a", s("1")),
        ("b", arr(vec![s("2"), s("3")])),
        ("flag", true.into()),
    ]);
    let multimap_mp = map(&[
        ("a", arr(vec![s("1")])),
        ("b", arr(vec![s("2"), s("3")])),
        ("flag", arr(vec![])),
    ]);
    match method {
        "kong.client.get_ip" | "kong.client.get_forwarded_ip" => same(none(), s("203.0.113.7")),
        "kong.client.get_port" | "kong.client.get_forwarded_port" => same(none(), 443.into()),
        "kong.client.get_credential" => {
            let cred = map(&[("id", s("k1")), ("consumer_id", s("c1"))]);
            same(none(), cred)
        }
        "kong.client.load_consumer" => case(
            arr(vec![s("alice"), true.into()]),
            arr(vec![s("alice"), true.into()]),
            Some(consumer.clone()),
            consumer.clone(),
        ),
        "kong.client.get_consumer" => same(none(), consumer.clone()),
        "kong.client.authenticate" => {
            let cred = map(&[("id", s("k1")), ("consumer", map(&[("id", s("c1"))]))]);
            case(
                arr(vec![consumer.clone(), cred]),
                arr(vec![
                    map(&[
                        ("id", s("c1")),
                        ("created_at", 1700000000.into()),
                        ("username", s("alice")),
                        ("custom_id", s("")),
                        ("tags", arr(vec![s("t")])),
                    ]),
                    map(&[("id", s("k1")), ("consumer_id", s("c1"))]),
                ]),
                None,
                V::Nil,
            )
        }
        "kong.client.get_protocol" => case(
            arr(vec![true.into()]),
            arr(vec![true.into()]),
            Some(s("https")),
            s("https"),
        ),
        "kong.ctx.shared.set" | "kong.log.set_serialize_value" => unit(arr(vec![
            s("k"),
            map(&[("n", 1.into()), ("l", arr(vec![s("x")]))]),
        ])),
        "kong.nginx.set_ctx" => case(
            arr(vec![s("k"), 2.5.into()]),
            arr(vec![s("k"), 2.5.into()]),
            None,
            V::Nil,
        ),
        "kong.ctx.shared.get" | "kong.nginx.get_ctx" => same(
            arr(vec![s("k")]),
            map(&[("n", 1.into()), ("f", 1.5.into())]),
        ),
        "kong.ip.is_trusted" => same(arr(vec![s("10.0.0.1")]), true.into()),
        m if m.starts_with("kong.log.") && m != "kong.log.serialize" => {
            unit(arr(vec![s("a message")]))
        }
        "kong.log.serialize" => same(none(), s(r#"{"request":{}}"#)),
        "kong.nginx.get_var" => same(arr(vec![s("request_uri")]), s("/x?y")),
        "kong.nginx.get_tls1_version_str" => same(none(), s("TLSv1.3")),
        "kong.nginx.req_start_time" => same(none(), 1700000000.123.into()),
        "kong.nginx.get_subsystem" => same(none(), s("http")),
        "kong.node.get_id" => same(none(), s("5b1e2b4e-0000-4000-8000-000000000001")),
        "kong.node.get_memory_stats" => same(
            none(),
            map(&[
                (
                    "lua_shared_dicts",
                    map(&[(
                        "kong",
                        map(&[
                            ("allocated_slabs", 12288.into()),
                            ("capacity", 5242880.into()),
                        ]),
                    )]),
                ),
                (
                    "workers_lua_vms",
                    arr(vec![map(&[
                        ("http_allocated_gc", 1024.into()),
                        ("pid", 42.into()),
                    ])]),
                ),
            ]),
        ),
        "kong.request.get_port" | "kong.request.get_forwarded_port" => same(none(), 8000.into()),
        "kong.request.get_http_version" => same(none(), 1.1.into()),
        m if m.starts_with("kong.request.get_")
            && [
                "scheme",
                "host",
                "forwarded_scheme",
                "forwarded_host",
                "method",
                "path",
                "path_with_query",
                "raw_query",
            ]
            .iter()
            .any(|g| m == format!("kong.request.get_{g}")) =>
        {
            same(none(), s("text"))
        }
        "kong.request.get_query_arg" => case(
            arr(vec![s("b")]),
            // Asked as get_query(100).
            arr(vec![100.into()]),
            Some(multimap_kong.clone()),
            s("2"),
        ),
        "kong.request.get_query"
        | "kong.request.get_headers"
        | "kong.response.get_headers"
        | "kong.service.response.get_headers" => case(
            arr(vec![]),
            arr(vec![100.into()]),
            Some(multimap_kong.clone()),
            multimap_mp.clone(),
        ),
        "kong.request.get_header"
        | "kong.response.get_header"
        | "kong.service.response.get_header" => {
            // Header values are raw bytes, not necessarily UTF-8.
            let value = unmp(&[0xa2, 0xff, 0xfe]);
            same(arr(vec![s("x-key")]), value)
        }
        "kong.request.get_raw_body" => case(
            arr(vec![]),
            arr(vec![]),
            Some(V::Binary(b"{\"a\":1}".to_vec())),
            V::Binary(b"{\"a\":1}".to_vec()),
        ),
        "kong.request.get_uri_captures" => case(
            none(),
            none(),
            Some(map(&[
                (
                    "unnamed",
                    V::Map(vec![(0.into(), s("/users/7")), (1.into(), s("7"))]),
                ),
                ("named", map(&[("id", s("7"))])),
            ])),
            // Index 0 (the whole match) cannot cross.
            map(&[
                ("unnamed", arr(vec![s("7")])),
                ("named", map(&[("id", s("7"))])),
            ]),
        ),
        "kong.response.get_status" => same(none(), 200.into()),
        "kong.response.get_source" => same(none(), s("service")),
        "kong.response.set_status" => unit(arr(vec![418.into()])),
        "kong.response.set_header"
        | "kong.response.add_header"
        | "kong.service.request.set_header"
        | "kong.service.request.add_header" => unit(arr(vec![s("x-a"), s("b")])),
        "kong.response.clear_header"
        | "kong.service.request.clear_header"
        | "kong.service.request.set_scheme"
        | "kong.service.request.set_path"
        | "kong.service.request.set_raw_query"
        | "kong.service.request.set_method" => unit(arr(vec![s("v")])),
        "kong.response.set_headers"
        | "kong.service.request.set_headers"
        | "kong.service.request.set_query" => unit(arr(vec![map(&[
            ("a", s("1")),
            ("b", arr(vec![s("2"), s("3")])),
        ])])),
        "kong.response.exit" => case(
            arr(vec![403.into(), s("denied"), map(&[("x-why", s("no"))])]),
            arr(vec![403.into(), s("denied"), map(&[("x-why", s("no"))])]),
            None,
            V::Nil,
        ),
        "kong.router.get_route" => {
            let route = map(&[
                ("id", s("r1")),
                ("created_at", 1.into()),
                ("updated_at", 2.into()),
                ("name", s("route")),
                ("protocols", arr(vec![s("http")])),
                ("paths", arr(vec![s("/")])),
                ("https_redirect_status_code", 426.into()),
                ("regex_priority", 0.into()),
                ("strip_path", true.into()),
                ("preserve_host", false.into()),
                ("service", map(&[("id", s("s1"))])),
            ]);
            same(none(), route)
        }
        "kong.router.get_service" => {
            let service = map(&[
                ("id", s("s1")),
                ("created_at", 1.into()),
                ("updated_at", 2.into()),
                ("name", s("svc")),
                ("retries", 5.into()),
                ("protocol", s("http")),
                ("host", s("example.com")),
                ("port", 80.into()),
                ("path", s("/")),
                ("connect_timeout", 60000.into()),
                ("write_timeout", 60000.into()),
                ("read_timeout", 60000.into()),
            ]);
            same(none(), service)
        }
        "kong.service.set_upstream" => same(arr(vec![s("backend")]), true.into()),
        "kong.service.set_target" => unit(arr(vec![s("example.com"), 8080.into()])),
        "kong.service.request.set_raw_body" => unit(arr(vec![V::Binary(vec![0, 1, 0xff])])),
        "kong.service.response.get_status" => same(none(), 502.into()),
        "kong.service.response.get_raw_body" => same(none(), V::Binary(b"upstream".to_vec())),
        other => panic!("no round trip for {other}"),
    }
}

/// What the pluginserver hands the plugin for Kong's answer `result` to `method(args)`.
fn through(method: &str, args: &V, result: Option<&V>) -> (String, V, V) {
    let mut out = Vec::new();
    let sent = encode_call(method, &mp(args), &mut out)
        .unwrap_or_else(|e| panic!("{method} refused: {e}"));
    let (wire_method, input) = frames(&out);
    let lua = unmp(&lua_args(&wire_method, &input).unwrap());
    let back = match sent {
        Sent::Ending => V::Nil,
        Sent::Awaiting(pending) => {
            let reply = wrap_result(&wire_method, result.map(mp).as_deref())
                .unwrap_or_else(|e| panic!("{method}: Kong raised: {e}"));
            let mut value = Vec::new();
            assert_eq!(
                pending.decode(&reply, &mut value),
                Ok(Answer::Value),
                "{method}"
            );
            unmp(&value)
        }
    };
    (wire_method, lua, back)
}

#[test]
fn every_function_round_trips() {
    for method in &METHODS {
        let case = case_for(method.name);
        let (wire, lua, back) = through(method.name, &case.args, case.result.as_ref());
        if method.name != "kong.request.get_query_arg" {
            assert_eq!(wire, method.name);
        }
        assert_eq!(lua, case.lua, "{}: Kong's arguments", method.name);
        assert_eq!(back, case.back, "{}: the plugin's result", method.name);
    }
}

#[test]
fn empty_answers_are_nil_or_the_zero_value_per_function() {
    let empty = |method: &str, args: V| {
        let mut out = Vec::new();
        let Sent::Awaiting(p) = encode_call(method, &mp(&args), &mut out).unwrap() else {
            panic!("{method} ends the event")
        };
        let mut value = Vec::new();
        p.decode(b"", &mut value).unwrap();
        unmp(&value)
    };
    let none = V::Array(vec![]);
    assert_eq!(empty("kong.request.get_path", none.clone()), V::from(""));
    assert_eq!(empty("kong.client.get_port", none.clone()), V::from(0));
    assert_eq!(
        empty("kong.ip.is_trusted", V::Array(vec!["a".into()])),
        V::from(false)
    );
    assert_eq!(
        empty("kong.service.response.get_status", none.clone()),
        V::Nil
    );
    assert_eq!(
        empty("kong.service.set_upstream", V::Array(vec!["u".into()])),
        V::Nil
    );
    assert_eq!(
        empty("kong.nginx.get_var", V::Array(vec!["v".into()])),
        V::Nil
    );
    assert_eq!(empty("kong.client.get_consumer", none.clone()), V::Nil);
    assert_eq!(empty("kong.router.get_route", none.clone()), V::Nil);
    assert_eq!(
        empty("kong.request.get_headers", none.clone()),
        V::Map(vec![])
    );
    assert_eq!(
        empty("kong.service.response.get_raw_body", none.clone()),
        V::Binary(vec![])
    );
    assert_eq!(
        empty("kong.request.get_query_arg", V::Array(vec!["q".into()])),
        V::Nil
    );
    // A flag argument reads as true, as Kong's get_query_arg returns it.
    let mut out = Vec::new();
    let Sent::Awaiting(p) = encode_call(
        "kong.request.get_query_arg",
        &mp(&V::Array(vec!["flag".into()])),
        &mut out,
    )
    .unwrap() else {
        panic!()
    };
    let reply = wrap_result(
        "kong.request.get_query",
        Some(&mp(&map(&[("flag", true.into())]))),
    )
    .unwrap();
    let mut value = Vec::new();
    p.decode(&reply, &mut value).unwrap();
    assert_eq!(unmp(&value), V::from(true));
}

#[test]
fn a_body_in_a_file_is_handed_back_with_the_plugins_limit() {
    let mut out = Vec::new();
    let Sent::Awaiting(p) = encode_call(
        "kong.request.get_raw_body",
        &mp(&V::Array(vec![1024.into()])),
        &mut out,
    )
    .unwrap() else {
        panic!()
    };
    let (_, input) = frames(&out);
    assert!(input.is_empty(), "Kong's rpc takes no argument");
    // RawBodyResult{body_filepath = "/tmp/b"}.
    let reply = [0x12, 0x06, b'/', b't', b'm', b'p', b'/', b'b'];
    assert_eq!(
        p.decode(&reply, &mut Vec::new()),
        Ok(Answer::BodyFile {
            path: b"/tmp/b".to_vec(),
            max: Some(1024)
        })
    );
    let dir = std::env::temp_dir().join(format!("pb-body-{}", std::process::id()));
    std::fs::write(&dir, b"0123456789").unwrap();
    let path = dir.as_os_str().as_encoded_bytes();
    use super::transcode::read_body_file;
    assert_eq!(read_body_file(path, Some(10)), Some(b"0123456789".to_vec()));
    assert_eq!(read_body_file(path, Some(0)), Some(b"0123456789".to_vec()));
    assert_eq!(read_body_file(path, Some(9)), None);
    assert_eq!(read_body_file(path, None), None);
    std::fs::remove_file(dir).unwrap();
}

#[test]
fn exit_with_a_table_body_is_json_with_kongs_content_type() {
    let args = V::Array(vec![401.into(), map(&[("message", "no".into())])]);
    let mut out = Vec::new();
    assert_eq!(
        encode_call("kong.response.exit", &mp(&args), &mut out),
        Ok(Sent::Ending)
    );
    let (method, input) = frames(&out);
    assert_eq!(
        unmp(&lua_args(&method, &input).unwrap()),
        V::Array(vec![
            401.into(),
            r#"{"message":"no"}"#.into(),
            map(&[("Content-Type", "application/json; charset=utf-8".into())]),
        ])
    );
    // exit(204) alone: Kong's decoder fills the body in as "".
    out.clear();
    encode_call(
        "kong.response.exit",
        &mp(&V::Array(vec![204.into()])),
        &mut out,
    )
    .unwrap();
    let (method, input) = frames(&out);
    assert_eq!(
        unmp(&lua_args(&method, &input).unwrap()),
        V::Array(vec![204.into(), "".into()])
    );
}
