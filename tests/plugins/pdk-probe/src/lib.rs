//! A plugin for the end-to-end PDK tests.
//!
//! Every phase logs its name with `kong.log.notice`, so the tests see each phase reach its
//! handler. In `access`, the `mode` config picks what happens:
//!
//! - `every`: calls every PDK function in a fixed order, then reports what each result
//!   decoded to in one `kong.log.notice` call (a line per call), then ends the request
//!   with a JSON `kong.response.exit`;
//! - `no_value`: calls `kong.request.get_path()` and returns its error (for a nil answer);
//! - `error`: ends the request with `kong.response.error(503, "down")`.

use std::fmt::Debug;

use kong_rust_pdk::{
    prelude::*,
    types::{Body, Consumer, Multimap},
};
use schemars::JsonSchema;
use serde::Deserialize;

/// What the access handler does.
#[derive(Debug, Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Only log the phase name.
    Phases,
    /// Call every PDK function and report.
    Every,
    /// Return the error of a call answered with nothing.
    NoValue,
    /// End with `kong.response.error`.
    Error,
}

/// Probe configuration.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Config {
    /// What the access handler does.
    pub mode: Mode,
}

/// The probe plugin.
pub struct PdkProbe {
    mode: Mode,
}

/// One line per call: `label = <decoded result>`.
#[derive(Default)]
struct Report(Vec<String>);

impl Report {
    fn add<T: Debug>(&mut self, label: &str, result: PdkResult<T>) {
        self.0.push(match result {
            Ok(v) => format!("{label} = {v:?}"),
            Err(e) => format!("{label} = Err({e})"),
        });
    }
}

#[kong_rust_pdk::plugin]
impl Plugin for PdkProbe {
    type Config = Config;
    const PRIORITY: i64 = 5;

    fn new(config: Config) -> Result<Self, ConfigError> {
        Ok(PdkProbe { mode: config.mode })
    }

    async fn certificate(&self, kong: &Kong) -> PdkResult<()> {
        kong.log().notice("certificate").await
    }

    async fn rewrite(&self, kong: &Kong) -> PdkResult<()> {
        kong.log().notice("rewrite").await
    }

    async fn access(&self, kong: &Kong) -> PdkResult<()> {
        match self.mode {
            Mode::Phases => kong.log().notice("access").await,
            Mode::Every => every(kong).await,
            Mode::NoValue => kong.request().get_path().await.map(|_| ()),
            Mode::Error => kong.response().error(503, Some("down")).await?,
        }
    }

    async fn response(&self, kong: &Kong) -> PdkResult<()> {
        kong.log().notice("response").await
    }

    async fn preread(&self, kong: &Kong) -> PdkResult<()> {
        kong.log().notice("preread").await
    }

    async fn log(&self, kong: &Kong) -> PdkResult<()> {
        kong.log().notice("log").await
    }
}

/// Calls every PDK function once, in the order the e2e test expects.
async fn every(kong: &Kong) -> PdkResult<()> {
    let mut r = Report::default();

    let client = kong.client();
    r.add("client.get_ip", client.get_ip().await);
    r.add("client.get_forwarded_ip", client.get_forwarded_ip().await);
    r.add("client.get_port", client.get_port().await);
    r.add(
        "client.get_forwarded_port",
        client.get_forwarded_port().await,
    );
    r.add(
        "client.get_credential",
        client.get_credential().await.map(|c| {
            c.map(|c| {
                (
                    c.id,
                    c.consumer.map(|k| k.id),
                    c.extra.into_keys().collect::<Vec<_>>(),
                )
            })
        }),
    );
    r.add(
        "client.load_consumer",
        client.load_consumer("alice", true).await.map(|c| {
            c.map(|c| {
                (
                    c.id,
                    c.username,
                    c.created_at,
                    c.tags,
                    c.extra.into_keys().collect::<Vec<_>>(),
                )
            })
        }),
    );
    r.add("client.get_consumer", client.get_consumer().await);
    let consumer = Consumer {
        id: "c1".into(),
        username: Some("alice".into()),
        ..Consumer::default()
    };
    r.add(
        "client.authenticate",
        client.authenticate(Some(&consumer), None).await,
    );
    r.add("client.get_protocol", client.get_protocol(Some(true)).await);
    let tls = client.tls();
    r.add(
        "tls.request_client_certificate",
        tls.request_client_certificate().await,
    );
    r.add(
        "tls.disable_session_reuse",
        tls.disable_session_reuse().await,
    );
    r.add(
        "tls.get_full_client_certificate_chain",
        tls.get_full_client_certificate_chain().await,
    );
    r.add(
        "tls.set_client_verify",
        tls.set_client_verify("SUCCESS").await,
    );

    let shared = kong.ctx().shared();
    let nested = Value::map([(
        "a",
        Value::Array(vec![Value::Int(1), Value::Float(2.5), Value::from("x")]),
    )]);
    r.add("ctx.shared.set", shared.set("k", nested).await);
    r.add("ctx.shared.get", shared.get("k").await);
    r.add("ip.is_trusted", kong.ip().is_trusted("10.0.0.1").await);

    let log = kong.log();
    r.add("log.alert", log.alert("a").await);
    r.add("log.crit", log.crit("c").await);
    r.add("log.err", log.err("e").await);
    r.add("log.warn", log.warn("w").await);
    r.add("log.notice", log.notice("n").await);
    r.add("log.info", log.info("i").await);
    r.add("log.debug", log.debug("d").await);
    r.add("log.emerg", log.emerg("m").await);
    r.add("log.deprecation", log.deprecation("old").await);
    r.add(
        "log.set_serialize_value",
        log.set_serialize_value("rust.k", "v", None).await,
    );
    r.add(
        "log.set_serialize_value/add",
        log.set_serialize_value("rust.n", 1, Some(kong_rust_pdk::pdk::SerializeMode::Add))
            .await,
    );
    r.add(
        "log.serialize",
        log.serialize()
            .await
            .map(|j| j["request"]["method"].clone()),
    );

    let nginx = kong.nginx();
    r.add("nginx.get_var", nginx.get_var("request_id").await);
    r.add(
        "nginx.get_tls1_version_str",
        nginx.get_tls1_version_str().await,
    );
    r.add("nginx.set_ctx", nginx.set_ctx("n", 5).await);
    r.add(
        "nginx.get_ctx",
        nginx.get_ctx("n").await.map(|v| v.and_then(|v| v.as_i64())),
    );
    r.add("nginx.req_start_time", nginx.req_start_time().await);
    r.add("nginx.get_subsystem", nginx.get_subsystem().await);
    r.add(
        "nginx.get_statistics",
        nginx
            .get_statistics()
            .await
            .map(|s| (s.total_requests, s.extra.into_keys().collect::<Vec<_>>())),
    );

    r.add("node.get_id", kong.node().get_id().await);
    r.add(
        "node.get_memory_stats",
        kong.node()
            .get_memory_stats()
            .await
            .map(|m| (m.lua_shared_dicts.get("kong").cloned(), m.workers_lua_vms)),
    );
    r.add(
        "node.get_memory_stats/unit",
        kong.node()
            .get_memory_stats_in("k", 2)
            .await
            .map(|m| m.lua_shared_dicts.get("kong").cloned()),
    );
    r.add("node.get_hostname", kong.node().get_hostname().await);
    r.add("cluster.get_id", kong.cluster().get_id().await);
    r.add("plugin.get_id", kong.plugin().get_id().await);

    let req = kong.request();
    r.add("request.get_scheme", req.get_scheme().await);
    r.add("request.get_host", req.get_host().await);
    r.add("request.get_port", req.get_port().await);
    r.add(
        "request.get_forwarded_scheme",
        req.get_forwarded_scheme().await,
    );
    r.add("request.get_forwarded_host", req.get_forwarded_host().await);
    r.add("request.get_forwarded_port", req.get_forwarded_port().await);
    r.add("request.get_forwarded_path", req.get_forwarded_path().await);
    r.add(
        "request.get_forwarded_prefix",
        req.get_forwarded_prefix().await,
    );
    r.add("request.get_http_version", req.get_http_version().await);
    r.add("request.get_method", req.get_method().await);
    r.add("request.get_path", req.get_path().await);
    r.add("request.get_raw_path", req.get_raw_path().await);
    r.add(
        "request.get_path_with_query",
        req.get_path_with_query().await,
    );
    r.add("request.get_raw_query", req.get_raw_query().await);
    r.add(
        "request.get_query_arg/flag",
        req.get_query_arg("debug").await,
    );
    r.add("request.get_query_arg", req.get_query_arg("page").await);
    r.add("request.get_query", req.get_query(None).await);
    r.add("request.get_query/max", req.get_query(Some(50)).await);
    r.add("request.get_header", req.get_header("host").await);
    r.add("request.get_header/invalid", req.get_header("x-bin").await);
    r.add(
        "request.get_header_bytes",
        req.get_header_bytes("x-bin").await,
    );
    r.add("request.get_headers", req.get_headers(None).await);
    r.add("request.get_raw_body", req.get_raw_body(None).await);
    r.add(
        "request.get_body",
        req.get_body(Some("application/json"), None, None).await,
    );
    r.add("request.get_start_time", req.get_start_time().await);
    r.add("request.get_uri_captures", req.get_uri_captures().await);

    let resp = kong.response();
    r.add("response.get_status", resp.get_status().await);
    r.add("response.get_header", resp.get_header("content-type").await);
    r.add("response.get_headers", resp.get_headers(None).await);
    r.add("response.get_source", resp.get_source().await);
    r.add("response.set_status", resp.set_status(201).await);
    r.add("response.set_header", resp.set_header("x-a", "1").await);
    r.add("response.add_header", resp.add_header("x-a", "2").await);
    r.add("response.clear_header", resp.clear_header("x-b").await);
    let headers = Multimap::new()
        .with("x-c", "1")
        .with("x-d", "2")
        .with("x-d", "3");
    r.add("response.set_headers", resp.set_headers(&headers).await);

    r.add(
        "router.get_route",
        kong.router().get_route().await.map(|r| {
            r.map(|r| {
                (
                    r.id,
                    r.paths,
                    r.headers,
                    r.service.map(|s| s.id),
                    r.extra.into_keys().collect::<Vec<_>>(),
                )
            })
        }),
    );
    r.add(
        "router.get_service",
        kong.router()
            .get_service()
            .await
            .map(|s| s.map(|s| (s.id, s.host, s.port, s.protocol))),
    );

    let service = kong.service();
    r.add("service.set_upstream", service.set_upstream("up").await);
    r.add(
        "service.set_target",
        service.set_target("10.0.0.2", 8080).await,
    );
    r.add("service.set_retries", service.set_retries(3).await);
    r.add(
        "service.set_timeouts",
        service.set_timeouts(1000, 2000, 3000).await,
    );
    r.add("service.set_tls_verify", service.set_tls_verify(true).await);
    r.add(
        "service.set_tls_verify_depth",
        service.set_tls_verify_depth(2).await,
    );

    let up = service.request();
    r.add("service.request.set_scheme", up.set_scheme("https").await);
    r.add("service.request.set_path", up.set_path("/p").await);
    r.add(
        "service.request.set_raw_query",
        up.set_raw_query("a=1").await,
    );
    r.add("service.request.set_method", up.set_method("POST").await);
    let query = Multimap::new().with("a", "1").with("b", "2").with("b", "3");
    r.add("service.request.set_query", up.set_query(&query).await);
    r.add("service.request.set_header", up.set_header("x", "1").await);
    r.add("service.request.add_header", up.add_header("x", "2").await);
    r.add("service.request.clear_header", up.clear_header("y").await);
    r.add(
        "service.request.set_headers",
        up.set_headers(&Multimap::new().with("z", "1")).await,
    );
    r.add(
        "service.request.clear_query_arg",
        up.clear_query_arg("a").await,
    );
    r.add(
        "service.request.set_raw_body",
        up.set_raw_body(b"raw\xff").await,
    );
    r.add(
        "service.request.enable_buffering",
        up.enable_buffering().await,
    );
    r.add(
        "service.request.set_body",
        up.set_body(
            &serde_json::json!({"k": "v", "none": []}),
            Some("application/json"),
        )
        .await,
    );
    r.add("service.request.disable_tls", up.disable_tls().await);

    let down = service.response();
    r.add("service.response.get_status", down.get_status().await);
    r.add("service.response.get_header", down.get_header("via").await);
    r.add(
        "service.response.get_header_bytes",
        down.get_header_bytes("via").await,
    );
    r.add("service.response.get_headers", down.get_headers(None).await);
    r.add("service.response.get_raw_body", down.get_raw_body().await);
    r.add("service.response.get_body", down.get_body(None, None).await);

    let vault = kong.vault();
    r.add("vault.get", vault.get("{vault://env/x}").await);
    r.add(
        "vault.is_reference",
        vault.is_reference("{vault://env/x}").await,
    );
    r.add(
        "vault.parse_reference",
        vault
            .parse_reference("{vault://env/x/k#2}")
            .await
            .map(|p| p.map(|p| (p.name, p.resource, p.key, p.version))),
    );
    r.add("vault.flush", vault.flush().await);
    let refs = Value::map([("$refs", Value::map([("k", "{vault://env/x}".into())]))]);
    r.add("vault.update", vault.update(&refs).await);
    r.add(
        "vault.warmup",
        vault
            .warmup(&Value::Array(vec!["{vault://env/x}".into()]))
            .await,
    );

    let log = kong.log();
    r.add("log.call", log.call("plain").await);
    r.add("log.inspect", log.inspect("seen").await);
    r.add("log.inspect_off", log.inspect_off().await);
    r.add("log.inspect_on", log.inspect_on().await);
    r.add("log.trace", log.trace("traced").await);
    r.add("log.set_format", log.set_format(None).await);
    r.add(
        "log.set_serialize_value(nil)",
        log.set_serialize_value("gone", Value::Nil, None).await,
    );
    r.add(
        "request.get_body(holes)",
        kong.request().get_body(None, None, Some(1024)).await,
    );
    let attributes = Value::map([("n", Value::Int(1))]);
    r.add(
        "telemetry.log",
        kong.telemetry()
            .log("pdk-probe", "probe", None, Some(&attributes))
            .await,
    );

    kong.log().notice(&r.0.join("\n")).await?;
    let body = Body::json(&serde_json::json!({"calls": r.0.len()}))?;
    kong.response()
        .exit_with_headers(418, body, &Multimap::new().with("x-exit", "1"))
        .await?
}
