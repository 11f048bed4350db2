//! The whole PDK through the real daemon: every function's exact `Method` and `Args` as
//! Kong receives them, every kind of result Kong sends decoded into its Rust type, all six
//! phases dispatched, and nil answers turned into clear errors.

use kong_rust_pluginserver_e2e::{
    daemon::{Daemon, Scratch},
    kong::{EventEnd, PdkCall},
    msgpack::map,
};
use rmpv::Value;
use serde_json::json;

/// One expected PDK call: what Kong must receive, what it answers, and the line the probe
/// reports for the decoded result (none for a call that is a step of a wrapper making
/// several).
struct Expect {
    method: &'static str,
    args: Vec<Value>,
    answer: Option<Value>,
    line: Option<String>,
}

fn e(
    label: &str,
    method: &'static str,
    args: Vec<Value>,
    answer: Option<Value>,
    decoded: &str,
) -> Expect {
    Expect {
        method,
        args,
        answer,
        line: Some(format!("{label} = {decoded}")),
    }
}

/// A call a wrapper makes before the one it reports.
fn step(method: &'static str, args: Vec<Value>, answer: Option<Value>) -> Expect {
    Expect {
        method,
        args,
        answer,
        line: None,
    }
}

fn s(v: &str) -> Value {
    Value::from(v)
}

fn arr(items: Vec<Value>) -> Value {
    Value::Array(items)
}

fn bin(bytes: &[u8]) -> Value {
    Value::Binary(bytes.to_vec())
}

/// A MessagePack str holding bytes that are not UTF-8, as Kong may send a header value.
fn invalid_str() -> Value {
    rmpv::decode::read_value(&mut &[0xa2, 0xc3, 0x28][..]).unwrap()
}

fn int_map(entries: Vec<(i64, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

fn none() -> Vec<Value> {
    Vec::new()
}

/// Every call of the probe's `every` mode, in order.
fn expectations() -> Vec<Expect> {
    let unit = "()";
    vec![
        e(
            "client.get_ip",
            "kong.client.get_ip",
            none(),
            Some(s("10.0.0.1")),
            "\"10.0.0.1\"",
        ),
        e(
            "client.get_forwarded_ip",
            "kong.client.get_forwarded_ip",
            none(),
            Some(s("203.0.113.7")),
            "\"203.0.113.7\"",
        ),
        e(
            "client.get_port",
            "kong.client.get_port",
            none(),
            Some(Value::from(54321)),
            "54321",
        ),
        e(
            "client.get_forwarded_port",
            "kong.client.get_forwarded_port",
            none(),
            Some(Value::from(443)),
            "443",
        ),
        e(
            "client.get_credential",
            "kong.client.get_credential",
            none(),
            Some(map([
                ("id", s("cred1")),
                ("consumer", map([("id", s("c1"))])),
                ("key", s("secret")),
                ("created_at", Value::from(1_700_000_000)),
            ])),
            "Some((\"cred1\", Some(\"c1\"), [\"key\"]))",
        ),
        e(
            "client.load_consumer",
            "kong.client.load_consumer",
            vec![s("alice"), Value::from(true)],
            Some(map([
                ("id", s("c1")),
                ("username", s("alice")),
                ("custom_id", Value::Nil),
                ("created_at", Value::from(1_700_000_000)),
                ("tags", arr(vec![])),
                ("type", Value::from(0)),
            ])),
            "Some((\"c1\", Some(\"alice\"), Some(1700000000), Some([]), [\"type\"]))",
        ),
        e(
            "client.get_consumer",
            "kong.client.get_consumer",
            none(),
            None,
            "None",
        ),
        e(
            "client.authenticate",
            "kong.client.authenticate",
            vec![map([("id", s("c1")), ("username", s("alice"))])],
            None,
            unit,
        ),
        e(
            "client.get_protocol",
            "kong.client.get_protocol",
            vec![Value::from(true)],
            Some(s("https")),
            "Some(\"https\")",
        ),
        e(
            "tls.request_client_certificate",
            "kong.client.tls.request_client_certificate",
            none(),
            Some(Value::from(true)),
            "true",
        ),
        e(
            "tls.disable_session_reuse",
            "kong.client.tls.disable_session_reuse",
            none(),
            Some(Value::from(true)),
            "true",
        ),
        e(
            "tls.get_full_client_certificate_chain",
            "kong.client.tls.get_full_client_certificate_chain",
            none(),
            None,
            "None",
        ),
        e(
            "tls.set_client_verify",
            "kong.client.tls.set_client_verify",
            vec![s("SUCCESS")],
            None,
            unit,
        ),
        e(
            "ctx.shared.set",
            "kong.ctx.shared.set",
            vec![
                s("k"),
                map([("a", arr(vec![Value::from(1), Value::F64(2.5), s("x")]))]),
            ],
            None,
            unit,
        ),
        e(
            "ctx.shared.get",
            "kong.ctx.shared.get",
            vec![s("k")],
            Some(map([
                ("a", arr(vec![Value::from(1), Value::F64(2.5), s("x")])),
                ("b", map([("c", Value::from(true))])),
            ])),
            "Some(Map([(Str(\"a\"), Array([Int(1), Float(2.5), Str(\"x\")])), (Str(\"b\"), Map([(Str(\"c\"), Bool(true))]))]))",
        ),
        e(
            "ip.is_trusted",
            "kong.ip.is_trusted",
            vec![s("10.0.0.1")],
            Some(Value::from(false)),
            "false",
        ),
        e("log.alert", "kong.log.alert", vec![s("a")], None, unit),
        e("log.crit", "kong.log.crit", vec![s("c")], None, unit),
        e("log.err", "kong.log.err", vec![s("e")], None, unit),
        e("log.warn", "kong.log.warn", vec![s("w")], None, unit),
        e("log.notice", "kong.log.notice", vec![s("n")], None, unit),
        e("log.info", "kong.log.info", vec![s("i")], None, unit),
        e("log.debug", "kong.log.debug", vec![s("d")], None, unit),
        e("log.emerg", "kong.log.emerg", vec![s("m")], None, unit),
        e(
            "log.deprecation",
            "kong.log.deprecation",
            vec![s("old")],
            None,
            unit,
        ),
        e(
            "log.set_serialize_value",
            "kong.log.set_serialize_value",
            vec![s("rust.k"), s("v")],
            None,
            unit,
        ),
        e(
            "log.set_serialize_value/add",
            "kong.log.set_serialize_value",
            vec![s("rust.n"), Value::from(1), map([("mode", s("add"))])],
            None,
            unit,
        ),
        e(
            "log.serialize",
            "kong.log.serialize",
            none(),
            Some(s(r#"{"request":{"method":"GET"},"latencies":{"kong":1}}"#)),
            "String(\"GET\")",
        ),
        e(
            "nginx.get_var",
            "kong.nginx.get_var",
            vec![s("request_id")],
            Some(s("abc")),
            "Some(\"abc\")",
        ),
        e(
            "nginx.get_tls1_version_str",
            "kong.nginx.get_tls1_version_str",
            none(),
            Some(s("TLSv1.3")),
            "Some(\"TLSv1.3\")",
        ),
        e(
            "nginx.set_ctx",
            "kong.nginx.set_ctx",
            vec![s("n"), Value::from(5)],
            None,
            unit,
        ),
        e(
            "nginx.get_ctx",
            "kong.nginx.get_ctx",
            vec![s("n")],
            Some(Value::from(5)),
            "Some(5)",
        ),
        // A float Kong sends as an integer because it has no fraction.
        e(
            "nginx.req_start_time",
            "kong.nginx.req_start_time",
            none(),
            Some(Value::from(1_700_000_000)),
            "1700000000.0",
        ),
        e(
            "nginx.get_subsystem",
            "kong.nginx.get_subsystem",
            none(),
            Some(s("http")),
            "\"http\"",
        ),
        e(
            "nginx.get_statistics",
            "kong.nginx.get_statistics",
            none(),
            Some(map([
                ("total_requests", Value::from(12)),
                ("connections_active", Value::from(1)),
                ("new_counter", Value::from(3)),
            ])),
            "(Some(12), [\"new_counter\"])",
        ),
        e(
            "node.get_id",
            "kong.node.get_id",
            none(),
            Some(s("node-uuid")),
            "\"node-uuid\"",
        ),
        e(
            "node.get_memory_stats",
            "kong.node.get_memory_stats",
            none(),
            Some(map([
                (
                    "lua_shared_dicts",
                    map([(
                        "kong",
                        map([
                            ("capacity", Value::from(5_242_880)),
                            ("allocated_slabs", Value::from(12_288)),
                        ]),
                    )]),
                ),
                (
                    "workers_lua_vms",
                    arr(vec![
                        map([
                            ("pid", Value::from(10)),
                            ("http_allocated_gc", Value::from(1024)),
                        ]),
                        map([("pid", Value::from(11)), ("err", s("unreachable"))]),
                    ]),
                ),
            ])),
            "(Some(SharedDictStats { capacity: Some(Number(5242880.0)), allocated_slabs: Some(Number(12288.0)) }), \
             [WorkerStats { pid: 10, http_allocated_gc: Some(Number(1024.0)), err: None }, \
             WorkerStats { pid: 11, http_allocated_gc: None, err: Some(\"unreachable\") }])",
        ),
        e(
            "node.get_memory_stats/unit",
            "kong.node.get_memory_stats",
            vec![s("k"), Value::from(2)],
            Some(map([
                (
                    "lua_shared_dicts",
                    map([(
                        "kong",
                        map([
                            ("capacity", s("5120.00 KiB")),
                            ("allocated_slabs", s("12.00 KiB")),
                        ]),
                    )]),
                ),
                ("workers_lua_vms", arr(vec![])),
            ])),
            "Some(SharedDictStats { capacity: Some(Text(\"5120.00 KiB\")), allocated_slabs: Some(Text(\"12.00 KiB\")) })",
        ),
        e(
            "node.get_hostname",
            "kong.node.get_hostname",
            none(),
            Some(s("gw-1")),
            "\"gw-1\"",
        ),
        e(
            "cluster.get_id",
            "kong.cluster.get_id",
            none(),
            None,
            "None",
        ),
        e(
            "plugin.get_id",
            "kong.plugin.get_id",
            none(),
            Some(s("plugin-uuid")),
            "\"plugin-uuid\"",
        ),
        e(
            "request.get_scheme",
            "kong.request.get_scheme",
            none(),
            Some(s("https")),
            "\"https\"",
        ),
        e(
            "request.get_host",
            "kong.request.get_host",
            none(),
            Some(s("example.com")),
            "\"example.com\"",
        ),
        e(
            "request.get_port",
            "kong.request.get_port",
            none(),
            Some(Value::from(8443)),
            "8443",
        ),
        e(
            "request.get_forwarded_scheme",
            "kong.request.get_forwarded_scheme",
            none(),
            Some(s("https")),
            "\"https\"",
        ),
        e(
            "request.get_forwarded_host",
            "kong.request.get_forwarded_host",
            none(),
            Some(s("example.com")),
            "\"example.com\"",
        ),
        e(
            "request.get_forwarded_port",
            "kong.request.get_forwarded_port",
            none(),
            Some(Value::from(443)),
            "443",
        ),
        e(
            "request.get_forwarded_path",
            "kong.request.get_forwarded_path",
            none(),
            Some(s("/api/x")),
            "\"/api/x\"",
        ),
        e(
            "request.get_forwarded_prefix",
            "kong.request.get_forwarded_prefix",
            none(),
            None,
            "None",
        ),
        e(
            "request.get_http_version",
            "kong.request.get_http_version",
            none(),
            Some(Value::from(2)),
            "2.0",
        ),
        e(
            "request.get_method",
            "kong.request.get_method",
            none(),
            Some(s("GET")),
            "\"GET\"",
        ),
        e(
            "request.get_path",
            "kong.request.get_path",
            none(),
            Some(s("/x")),
            "\"/x\"",
        ),
        e(
            "request.get_raw_path",
            "kong.request.get_raw_path",
            none(),
            Some(s("/x")),
            "\"/x\"",
        ),
        e(
            "request.get_path_with_query",
            "kong.request.get_path_with_query",
            none(),
            Some(s("/x?page=2&debug")),
            "\"/x?page=2&debug\"",
        ),
        e(
            "request.get_raw_query",
            "kong.request.get_raw_query",
            none(),
            Some(s("page=2&debug")),
            "\"page=2&debug\"",
        ),
        e(
            "request.get_query_arg/flag",
            "kong.request.get_query_arg",
            vec![s("debug")],
            Some(Value::from(true)),
            "Some(Flag(true))",
        ),
        e(
            "request.get_query_arg",
            "kong.request.get_query_arg",
            vec![s("page")],
            Some(s("2")),
            "Some(Value(\"2\"))",
        ),
        e(
            "request.get_query",
            "kong.request.get_query",
            none(),
            Some(map([("page", arr(vec![s("2")])), ("debug", arr(vec![]))])),
            "Multimap({\"debug\": [], \"page\": [\"2\"]})",
        ),
        // Kong's empty multimap is an empty *map*.
        e(
            "request.get_query/max",
            "kong.request.get_query",
            vec![Value::from(50)],
            Some(Value::Map(vec![])),
            "Multimap({})",
        ),
        e(
            "request.get_header",
            "kong.request.get_header",
            vec![s("host")],
            Some(s("example.com")),
            "Some(\"example.com\")",
        ),
        e(
            "request.get_header/invalid",
            "kong.request.get_header",
            vec![s("x-bin")],
            Some(invalid_str()),
            "Err(kong.request.get_header returned an unexpected value: string found to be invalid utf8: \
             invalid utf-8 sequence of 1 bytes from index 0 (Kong's strings need not be UTF-8: \
             read this one as bytes, e.g. with a `*_bytes` method))",
        ),
        e(
            "request.get_header_bytes",
            "kong.request.get_header",
            vec![s("x-bin")],
            Some(invalid_str()),
            "Some(b\"\\xc3(\")",
        ),
        e(
            "request.get_headers",
            "kong.request.get_headers",
            none(),
            Some(map([
                ("accept", arr(vec![s("a"), s("b")])),
                ("host", arr(vec![s("example.com")])),
            ])),
            "Multimap({\"accept\": [\"a\", \"b\"], \"host\": [\"example.com\"]})",
        ),
        e(
            "request.get_raw_body",
            "kong.request.get_raw_body",
            none(),
            Some(bin(&[0, 1, 0xff])),
            "b\"\\x00\\x01\\xff\"",
        ),
        e(
            "request.get_body",
            "kong.request.get_body",
            vec![s("application/json")],
            Some(map([("k", s("v"))])),
            "Some(Map([(Str(\"k\"), Str(\"v\"))]))",
        ),
        e(
            "request.get_start_time",
            "kong.request.get_start_time",
            none(),
            Some(Value::from(1_700_000_000_123_i64)),
            "1700000000123.0",
        ),
        e(
            "request.get_uri_captures",
            "kong.request.get_uri_captures",
            none(),
            Some(map([
                ("unnamed", int_map(vec![(0, s("/x/1")), (1, s("1"))])),
                ("named", map([("id", s("1"))])),
            ])),
            "UriCaptures { unnamed: [\"/x/1\", \"1\"], named: {\"id\": \"1\"} }",
        ),
        e(
            "response.get_status",
            "kong.response.get_status",
            none(),
            Some(Value::from(200)),
            "200",
        ),
        e(
            "response.get_header",
            "kong.response.get_header",
            vec![s("content-type")],
            Some(s("text/plain")),
            "Some(\"text/plain\")",
        ),
        e(
            "response.get_headers",
            "kong.response.get_headers",
            none(),
            Some(map([("content-type", arr(vec![s("text/plain")]))])),
            "Multimap({\"content-type\": [\"text/plain\"]})",
        ),
        e(
            "response.get_source",
            "kong.response.get_source",
            none(),
            Some(s("service")),
            "\"service\"",
        ),
        e(
            "response.set_status",
            "kong.response.set_status",
            vec![Value::from(201)],
            None,
            unit,
        ),
        e(
            "response.set_header",
            "kong.response.set_header",
            vec![s("x-a"), s("1")],
            None,
            unit,
        ),
        e(
            "response.add_header",
            "kong.response.add_header",
            vec![s("x-a"), s("2")],
            None,
            unit,
        ),
        e(
            "response.clear_header",
            "kong.response.clear_header",
            vec![s("x-b")],
            None,
            unit,
        ),
        e(
            "response.set_headers",
            "kong.response.set_headers",
            vec![map([("x-c", s("1")), ("x-d", arr(vec![s("2"), s("3")]))])],
            None,
            unit,
        ),
        e(
            "router.get_route",
            "kong.router.get_route",
            none(),
            Some(map([
                ("id", s("r1")),
                ("paths", arr(vec![s("/x")])),
                // An empty Lua table arrives as an empty array.
                ("headers", arr(vec![])),
                ("service", map([("id", s("s1"))])),
                ("strip_path", Value::from(true)),
                ("name", Value::Nil),
                ("expression", s("http.path == \"/x\"")),
            ])),
            "Some((\"r1\", Some([\"/x\"]), None, Some(\"s1\"), [\"expression\"]))",
        ),
        e(
            "router.get_service",
            "kong.router.get_service",
            none(),
            Some(map([
                ("id", s("s1")),
                ("host", s("up.internal")),
                ("port", Value::from(80)),
                ("protocol", s("http")),
                ("new_field", map([("x", Value::from(1))])),
            ])),
            "Some((\"s1\", Some(\"up.internal\"), Some(80), Some(\"http\")))",
        ),
        e(
            "service.set_upstream",
            "kong.service.set_upstream",
            vec![s("up")],
            Some(Value::from(true)),
            "true",
        ),
        e(
            "service.set_target",
            "kong.service.set_target",
            vec![s("10.0.0.2"), Value::from(8080)],
            None,
            unit,
        ),
        e(
            "service.set_retries",
            "kong.service.set_retries",
            vec![Value::from(3)],
            None,
            unit,
        ),
        e(
            "service.set_timeouts",
            "kong.service.set_timeouts",
            vec![Value::from(1000), Value::from(2000), Value::from(3000)],
            None,
            unit,
        ),
        e(
            "service.set_tls_verify",
            "kong.service.set_tls_verify",
            vec![Value::from(true)],
            Some(Value::from(true)),
            "true",
        ),
        e(
            "service.set_tls_verify_depth",
            "kong.service.set_tls_verify_depth",
            vec![Value::from(2)],
            Some(Value::from(true)),
            "true",
        ),
        e(
            "service.request.set_scheme",
            "kong.service.request.set_scheme",
            vec![s("https")],
            None,
            unit,
        ),
        e(
            "service.request.set_path",
            "kong.service.request.set_path",
            vec![s("/p")],
            None,
            unit,
        ),
        e(
            "service.request.set_raw_query",
            "kong.service.request.set_raw_query",
            vec![s("a=1")],
            None,
            unit,
        ),
        e(
            "service.request.set_method",
            "kong.service.request.set_method",
            vec![s("POST")],
            None,
            unit,
        ),
        e(
            "service.request.set_query",
            "kong.service.request.set_query",
            vec![map([("a", s("1")), ("b", arr(vec![s("2"), s("3")]))])],
            None,
            unit,
        ),
        e(
            "service.request.set_header",
            "kong.service.request.set_header",
            vec![s("x"), s("1")],
            None,
            unit,
        ),
        e(
            "service.request.add_header",
            "kong.service.request.add_header",
            vec![s("x"), s("2")],
            None,
            unit,
        ),
        e(
            "service.request.clear_header",
            "kong.service.request.clear_header",
            vec![s("y")],
            None,
            unit,
        ),
        e(
            "service.request.set_headers",
            "kong.service.request.set_headers",
            vec![map([("z", s("1"))])],
            None,
            unit,
        ),
        e(
            "service.request.clear_query_arg",
            "kong.service.request.clear_query_arg",
            vec![s("a")],
            None,
            unit,
        ),
        e(
            "service.request.set_raw_body",
            "kong.service.request.set_raw_body",
            vec![bin(b"raw\xff")],
            None,
            unit,
        ),
        e(
            "service.request.enable_buffering",
            "kong.service.request.enable_buffering",
            none(),
            None,
            unit,
        ),
        // A JSON body is encoded by the PDK and sent as text (Kong's cjson would turn an
        // empty list into `{}`): the raw body, then the content type.
        step(
            "kong.service.request.set_raw_body",
            vec![bin(br#"{"k":"v","none":[]}"#)],
            None,
        ),
        e(
            "service.request.set_body",
            "kong.service.request.set_header",
            vec![s("Content-Type"), s("application/json")],
            None,
            "Some(true)",
        ),
        e(
            "service.request.disable_tls",
            "kong.service.request.disable_tls",
            none(),
            Some(Value::from(true)),
            "true",
        ),
        e(
            "service.response.get_status",
            "kong.service.response.get_status",
            none(),
            Some(Value::from(502)),
            "Some(502)",
        ),
        e(
            "service.response.get_header",
            "kong.service.response.get_header",
            vec![s("via")],
            Some(s("kong/3.9")),
            "Some(\"kong/3.9\")",
        ),
        e(
            "service.response.get_header_bytes",
            "kong.service.response.get_header",
            vec![s("via")],
            Some(s("kong/3.9")),
            "Some(b\"kong/3.9\")",
        ),
        e(
            "service.response.get_headers",
            "kong.service.response.get_headers",
            none(),
            Some(Value::Map(vec![])),
            "Multimap({})",
        ),
        e(
            "service.response.get_raw_body",
            "kong.service.response.get_raw_body",
            none(),
            Some(bin(b"upstream")),
            "b\"upstream\"",
        ),
        e(
            "service.response.get_body",
            "kong.service.response.get_body",
            none(),
            None,
            "None",
        ),
        e(
            "vault.get",
            "kong.vault.get",
            vec![s("{vault://env/x}")],
            Some(s("s3cret")),
            "Some(\"s3cret\")",
        ),
        e(
            "vault.is_reference",
            "kong.vault.is_reference",
            vec![s("{vault://env/x}")],
            Some(Value::from(true)),
            "true",
        ),
        e(
            "vault.parse_reference",
            "kong.vault.parse_reference",
            vec![s("{vault://env/x/k#2}")],
            Some(map([
                ("name", s("env")),
                ("resource", s("x")),
                ("key", s("k")),
                ("version", Value::from(2)),
                ("config", arr(vec![])),
            ])),
            "Some((\"env\", \"x\", Some(\"k\"), Some(2)))",
        ),
        e("vault.flush", "kong.vault.flush", none(), None, unit),
        e(
            "vault.update",
            "kong.vault.update",
            vec![map([("$refs", map([("k", s("{vault://env/x}"))]))])],
            Some(map([("k", s("secret"))])),
            "Map([(Str(\"k\"), Str(\"secret\"))])",
        ),
        e(
            "vault.warmup",
            "kong.vault.warmup",
            vec![arr(vec![s("{vault://env/x}")])],
            None,
            unit,
        ),
        e("log.call", "kong.log", vec![s("plain")], None, unit),
        e(
            "log.inspect",
            "kong.log.inspect",
            vec![s("seen")],
            None,
            unit,
        ),
        e(
            "log.inspect_off",
            "kong.log.inspect.off",
            none(),
            None,
            unit,
        ),
        e("log.inspect_on", "kong.log.inspect.on", none(), None, unit),
        e("log.trace", "kong.log.trace", vec![s("traced")], None, unit),
        e("log.set_format", "kong.log.set_format", none(), None, unit),
        e(
            "log.set_serialize_value(nil)",
            "kong.log.set_serialize_value",
            vec![s("gone")],
            None,
            unit,
        ),
        // Holes get the value Kong's function would use: `false` (mimetype), 100 (max_args).
        e(
            "request.get_body(holes)",
            "kong.request.get_body",
            vec![Value::from(false), Value::from(100), Value::from(1024)],
            None,
            "None",
        ),
        e(
            "telemetry.log",
            "kong.telemetry.log",
            vec![
                s("pdk-probe"),
                // The instance's plugin id (the harness's Kong sends one), as plugin_config.
                map([("__plugin_id", s("5b1e2b4e-0000-4000-8000-000000000001"))]),
                s("probe"),
                s(""),
                map([("n", Value::from(1))]),
            ],
            Some(Value::from(true)),
            "true",
        ),
    ]
}

fn start(mode: &str) -> (Scratch, Daemon, u64) {
    let scratch = Scratch::with_plugins(&["pdk-probe"]);
    let daemon = scratch.start(&["pdk-probe"]);
    let id = daemon
        .kong()
        .start_instance("pdk-probe", json!({ "mode": mode }))
        .unwrap();
    (scratch, daemon, id)
}

#[test]
fn every_pdk_function_sends_kongs_method_and_args_and_decodes_kongs_answer() {
    let (_scratch, daemon, id) = start("every");
    let expected = expectations();
    let mut next = 0;
    let run = daemon.kong().run_event(id, "access", |call: &PdkCall| {
        let Some(want) = expected.get(next) else {
            // The report, after every function.
            assert_eq!(call.method, "kong.log.notice");
            return None;
        };
        next += 1;
        assert_eq!(
            (call.method.as_str(), &call.args),
            (want.method, &want.args),
            "call #{next}"
        );
        want.answer.clone()
    });
    assert!(matches!(run.end, EventEnd::Ended { .. }), "{run:?}");
    assert_eq!(run.calls.len(), expected.len() + 2, "{:#?}", run.calls);

    let report = &run.calls[expected.len()];
    let lines: Vec<&str> = report.args[0]
        .as_str()
        .expect("report text")
        .lines()
        .collect();
    let wanted: Vec<&str> = expected.iter().filter_map(|e| e.line.as_deref()).collect();
    for (i, want) in wanted.iter().enumerate() {
        assert_eq!(lines.get(i), Some(want), "report line #{}", i + 1);
    }
    assert_eq!(lines.len(), wanted.len());

    let exit = run.calls.last().unwrap();
    assert_eq!(exit.method, "kong.response.exit");
    // A JSON body goes as JSON text, with Kong's JSON content type added to the headers.
    assert_eq!(
        exit.args,
        [
            Value::from(418),
            s(&format!(r#"{{"calls":{}}}"#, wanted.len())),
            map([
                ("Content-Type", s("application/json; charset=utf-8")),
                ("x-exit", s("1")),
            ]),
        ]
    );
}

#[test]
fn all_six_phases_reach_their_handler() {
    let (_scratch, daemon, id) = start("phases");
    let kong = daemon.kong();
    for phase in [
        "certificate",
        "rewrite",
        "access",
        "response",
        "preread",
        "log",
    ] {
        let run = kong.run_event(id, phase, |_| None);
        assert_eq!(run.end, EventEnd::Returned, "{phase}: {run:?}");
        assert_eq!(run.calls.len(), 1, "{phase}");
        assert_eq!(run.calls[0].method, "kong.log.notice");
        assert_eq!(run.calls[0].args, [s(phase)], "{phase} ran another handler");
    }
}

#[test]
fn the_dump_lists_exactly_the_implemented_phases() {
    let scratch = Scratch::with_plugins(&["pdk-probe", "rust-hello"]);
    let out = scratch
        .command()
        .arg("--dump-all-plugins")
        .output()
        .unwrap();
    assert!(out.status.success());
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let phases = |name: &str| {
        dump["Plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["Name"] == name)
            .map(|p| p["Phases"].clone())
            .unwrap()
    };
    assert_eq!(
        phases("pdk-probe"),
        json!([
            "certificate",
            "rewrite",
            "access",
            "response",
            "preread",
            "log"
        ])
    );
    assert_eq!(phases("rust-hello"), json!(["access"]));
}

#[test]
fn a_nil_answer_for_a_required_value_fails_the_handler_clearly() {
    let (_scratch, daemon, id) = start("no_value");
    let kong = daemon.kong();
    let run = kong.run_event(id, "access", |_| None);
    assert_eq!(
        run.end.status(),
        Some(500),
        "expected the request ended: {run:?}"
    );
    let stderr = daemon.stderr();
    assert!(
        stderr.contains("kong.request.get_path returned no value"),
        "{stderr}"
    );
    // The daemon carries on.
    let run = kong.run_event(id, "log", |_| None);
    assert_eq!(run.end, EventEnd::Returned);
}

#[test]
fn response_error_ends_the_event() {
    let (_scratch, daemon, id) = start("error");
    let run = daemon.kong().run_event(id, "access", |_| None);
    assert_eq!(
        run.end,
        EventEnd::Ended {
            method: "kong.response.error".into(),
            status: 503
        }
    );
    assert_eq!(run.calls.len(), 1);
    assert_eq!(run.calls[0].method, "kong.response.error");
    assert_eq!(run.calls[0].args, [Value::from(503), s("down")]);
}
