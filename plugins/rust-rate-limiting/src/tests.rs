//! The plugin against the test kit, with a private counter store and a clock the tests
//! move by hand.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use kong_rust_pdk::types::Consumer;
use kong_rust_pdk_testkit::{Simulation, TestRequest, instance};
use serde_json::json;

use super::*;
use crate::store::StoreError;

/// 2026-01-01T00:00:00Z plus 10 s: a minute window has 50 s left.
const T0: u64 = 1_767_225_600_000 + 10_000;

struct Fixture {
    plugin: Arc<RateLimiter>,
    now: Arc<AtomicU64>,
}

impl Fixture {
    fn new(config: serde_json::Value) -> Fixture {
        let config: Config = serde_json::from_value(config).unwrap();
        let now = Arc::new(AtomicU64::new(T0));
        let clock = now.clone();
        let plugin = RateLimiter::with_parts(
            config,
            Arc::new(LocalCounters::default()),
            Arc::new(move || clock.load(Ordering::SeqCst)),
        );
        Fixture {
            plugin: Arc::new(plugin),
            now,
        }
    }

    fn advance(&self, ms: u64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }

    fn run(&self, request: TestRequest) -> Simulation {
        request.run(&self.plugin, Phase::Access)
    }
}

fn consumer(id: &str) -> Consumer {
    Consumer {
        id: id.into(),
        ..Consumer::default()
    }
}

fn from_ip(ip: &str) -> TestRequest {
    TestRequest::get("/").client_ip(ip)
}

#[test]
fn allows_the_limit_then_answers_429_with_the_quota_headers() {
    let fx = Fixture::new(json!({"limit": 2, "window_seconds": 60}));
    for remaining in ["1", "0"] {
        let sim = fx.run(from_ip("198.51.100.1"));
        assert!(sim.exit.is_none());
        assert_eq!(sim.response.header("ratelimit-limit"), Some("2"));
        assert_eq!(sim.response.header("ratelimit-remaining"), Some(remaining));
        assert_eq!(sim.response.header("ratelimit-reset"), Some("50"));
        assert_eq!(
            sim.methods(),
            [
                "kong.client.get_consumer",
                "kong.client.get_forwarded_ip",
                "kong.response.set_headers"
            ]
        );
    }
    let refused = fx.run(from_ip("198.51.100.1"));
    let exit = refused.exit.as_ref().expect("the third request is refused");
    assert_eq!(exit.status, 429);
    // The JSON body goes to Kong as JSON text, with Kong's JSON content type.
    let body: serde_json::Value = serde_json::from_slice(&refused.response.body).unwrap();
    assert_eq!(body["message"], EXCEEDED_MESSAGE);
    assert_eq!(
        exit.headers.get("Content-Type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(exit.headers.get("RateLimit-Remaining"), Some("0"));
    assert_eq!(exit.headers.get("Retry-After"), Some("50"));
    // Another client has its own quota.
    assert!(fx.run(from_ip("198.51.100.2")).exit.is_none());
}

#[test]
fn a_fixed_window_starts_afresh_on_the_boundary() {
    let fx = Fixture::new(json!({"limit": 1, "window_seconds": 60}));
    assert!(fx.run(from_ip("198.51.100.1")).exit.is_none());
    assert!(fx.run(from_ip("198.51.100.1")).exit.is_some());
    fx.advance(49_999);
    assert!(
        fx.run(from_ip("198.51.100.1")).exit.is_some(),
        "still the same window"
    );
    fx.advance(1);
    let sim = fx.run(from_ip("198.51.100.1"));
    assert!(sim.exit.is_none(), "a new window");
    assert_eq!(sim.response.header("ratelimit-reset"), Some("60"));
}

#[test]
fn refused_requests_do_not_count() {
    let fx = Fixture::new(json!({"limit": 1, "window_seconds": 60, "window": "sliding"}));
    assert!(fx.run(from_ip("198.51.100.1")).exit.is_none());
    for _ in 0..5 {
        assert!(fx.run(from_ip("198.51.100.1")).exit.is_some());
    }
    // Next window, 59 s in: the previous window's one request weighs 1/60 → 0.
    fx.advance(50_000 + 59_000);
    assert!(fx.run(from_ip("198.51.100.1")).exit.is_none());
}

#[test]
fn a_sliding_window_carries_the_previous_window_over() {
    let fx = Fixture::new(json!({"limit": 4, "window_seconds": 60, "window": "sliding"}));
    for _ in 0..4 {
        assert!(fx.run(from_ip("198.51.100.1")).exit.is_none());
    }
    // 5 s into the next window, 55/60 of the previous 4 still count: 3 used, 1 left.
    fx.advance(50_000 + 5_000);
    let sim = fx.run(from_ip("198.51.100.1"));
    assert!(sim.exit.is_none());
    assert_eq!(sim.response.header("ratelimit-remaining"), Some("0"));
    let refused = fx.run(from_ip("198.51.100.1"));
    let exit = refused.exit.as_ref().expect("over the sliding limit");
    // One more fits once the carried-over share drops below 3, just after 15 s into the
    // window: 10.001 s from now, rounded up.
    assert_eq!(exit.headers.get("Retry-After"), Some("11"));
    // A fixed window would have allowed all four again.
    let fixed = Fixture::new(json!({"limit": 4, "window_seconds": 60}));
    for _ in 0..4 {
        fixed.run(from_ip("198.51.100.1"));
    }
    fixed.advance(50_000 + 5_000);
    assert_eq!(
        fixed
            .run(from_ip("198.51.100.1"))
            .response
            .header("ratelimit-remaining"),
        Some("3")
    );
}

#[test]
fn consumers_are_limited_by_id_and_anonymous_clients_by_ip() {
    let fx = Fixture::new(json!({"limit": 1, "window_seconds": 60}));
    let alice = || from_ip("198.51.100.1").consumer(consumer("alice-id"));
    assert!(fx.run(alice()).exit.is_none());
    assert!(fx.run(alice()).exit.is_some());
    // Same IP, another consumer: another quota; the IP alone is a third.
    assert!(
        fx.run(from_ip("198.51.100.1").consumer(consumer("bob-id")))
            .exit
            .is_none()
    );
    assert!(fx.run(from_ip("198.51.100.1")).exit.is_none());
    // Behind a trusted proxy, the forwarded address is the client.
    assert!(
        fx.run(from_ip("10.0.0.1").forwarded_ip("203.0.113.9"))
            .exit
            .is_none()
    );
    assert!(
        fx.run(from_ip("10.0.0.2").forwarded_ip("203.0.113.9"))
            .exit
            .is_some()
    );
}

#[test]
fn limit_by_ip_ignores_the_consumer() {
    let fx = Fixture::new(json!({"limit": 1, "window_seconds": 60, "limit_by": "ip"}));
    assert!(
        fx.run(from_ip("198.51.100.1").consumer(consumer("alice-id")))
            .exit
            .is_none()
    );
    let sim = fx.run(from_ip("198.51.100.1").consumer(consumer("bob-id")));
    assert!(sim.exit.is_some());
    assert!(!sim.methods().contains(&"kong.client.get_consumer"));
}

#[test]
fn header_styles() {
    let fx = Fixture::new(json!({"limit": 5, "window_seconds": 60, "headers": "x-ratelimit"}));
    let sim = fx.run(from_ip("198.51.100.1"));
    assert_eq!(sim.response.header("x-ratelimit-limit"), Some("5"));
    assert_eq!(sim.response.header("x-ratelimit-remaining"), Some("4"));
    assert_eq!(sim.response.header("ratelimit-limit"), None);

    let fx = Fixture::new(json!({"limit": 1, "window_seconds": 60, "headers": "none"}));
    let sim = fx.run(from_ip("198.51.100.1"));
    assert!(sim.response.headers.is_empty());
    assert!(!sim.methods().contains(&"kong.response.set_headers"));
    let refused = fx.run(from_ip("198.51.100.1"));
    let exit = refused.exit.as_ref().unwrap();
    // Retry-After, and the content type of the JSON body.
    assert_eq!(exit.headers.len(), 2, "{:?}", exit.headers);
    assert_eq!(exit.headers.get("Retry-After"), Some("50"));
}

/// A store that always fails, like an unreachable Redis.
struct Broken;

impl Counter for Broken {
    fn hit<'a>(&'a self, _: &'a Keys, _: u64) -> StoreFuture<'a, Counts> {
        Box::pin(std::future::ready(Err(broken())))
    }
    fn refund<'a>(&'a self, _: &'a Keys, _: u64) -> StoreFuture<'a, ()> {
        Box::pin(std::future::ready(Err(broken())))
    }
}

fn broken() -> StoreError {
    StoreError::Redis(redis_store::RedisError {
        addr: "127.0.0.1:1/0".into(),
        source: redis::RedisError::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )),
    })
}

fn with_broken_store(fault_tolerant: bool) -> Arc<RateLimiter> {
    let config: Config = serde_json::from_value(
        json!({"limit": 1, "window_seconds": 60, "policy": "redis", "fault_tolerant": fault_tolerant}),
    )
    .unwrap();
    Arc::new(RateLimiter::with_parts(
        config,
        Arc::new(Broken),
        system_clock(),
    ))
}

#[test]
fn a_failing_store_lets_requests_through_when_fault_tolerant() {
    let sim = from_ip("198.51.100.1").run(&with_broken_store(true), Phase::Access);
    assert!(sim.exit.is_none());
    assert!(
        sim.logged(
            "err",
            "request allowed (fault_tolerant): redis 127.0.0.1:1/0"
        ),
        "{:?}",
        sim.logs
    );
}

#[test]
fn a_failing_store_refuses_requests_otherwise() {
    let sim = from_ip("198.51.100.1").run(&with_broken_store(false), Phase::Access);
    let exit = sim.exit.as_ref().expect("refused");
    assert_eq!(
        (exit.method.as_str(), exit.status),
        ("kong.response.error", 500)
    );
    assert!(sim.logged("err", "request refused"), "{:?}", sim.logs);
}

/// Counts, but cannot take a request back (Redis failing between the two calls).
struct RefundFails(LocalCounters);

impl Counter for RefundFails {
    fn hit<'a>(&'a self, keys: &'a Keys, now_ms: u64) -> StoreFuture<'a, Counts> {
        Counter::hit(&self.0, keys, now_ms)
    }
    fn refund<'a>(&'a self, _: &'a Keys, _: u64) -> StoreFuture<'a, ()> {
        Box::pin(std::future::ready(Err(broken())))
    }
}

#[test]
fn a_failed_refund_still_refuses() {
    let config: Config =
        serde_json::from_value(json!({"limit": 1, "window_seconds": 60, "fault_tolerant": true}))
            .unwrap();
    let plugin = Arc::new(RateLimiter::with_parts(
        config,
        Arc::new(RefundFails(LocalCounters::default())),
        Arc::new(|| T0),
    ));
    assert!(
        from_ip("198.51.100.1")
            .run(&plugin, Phase::Access)
            .exit
            .is_none()
    );
    let sim = from_ip("198.51.100.1").run(&plugin, Phase::Access);
    assert_eq!(sim.exit.as_ref().map(|e| e.status), Some(429));
    assert!(
        sim.logged("err", "could not take back a refused request"),
        "{:?}",
        sim.logs
    );
}

#[test]
fn the_built_plugin_counts_in_the_process_wide_store_per_plugin_entity() {
    let config = json!({"limit": 1, "window_seconds": 3600, "limit_by": "ip"});
    let first = instance::<RateLimiter>(config.clone()).unwrap();
    let second = instance::<RateLimiter>(config).unwrap();
    // An address no other test uses: the store is shared by the whole test binary.
    let client = || from_ip("192.0.2.77");
    let hour = || system_clock()() / 3_600_000;
    let start = hour();
    assert!(client().run(&first, Phase::Access).exit.is_none());
    // Another plugin value with the same scope (a rebuilt instance) sees the same count.
    let again = client().run(&second, Phase::Access);
    if hour() == start {
        assert_eq!(again.exit.as_ref().map(|e| e.status), Some(429));
    }
}

#[test]
fn configs_are_validated_with_their_defaults() {
    let plugin = instance::<RateLimiter>(json!({"limit": 10, "window_seconds": 1})).unwrap();
    assert_eq!(plugin.config.window, WindowKind::Fixed);
    assert_eq!(plugin.config.limit_by, LimitBy::Consumer);
    assert_eq!(plugin.config.policy, Policy::Local);
    assert!(plugin.config.fault_tolerant);
    assert_eq!(plugin.config.redis, RedisConfig::default());
    let err =
        instance::<RateLimiter>(json!({"limit": 10, "window_seconds": 1, "limit_by": "header"}))
            .err()
            .expect("an unknown limit_by");
    assert!(err.to_string().contains("limit_by"), "{err}");
    assert!(
        instance::<RateLimiter>(json!({"window_seconds": 1})).is_err(),
        "limit is required"
    );
}

#[test]
fn the_schema_tells_kong_the_choices_and_defaults() {
    let schema = RateLimiter::config_schema().unwrap();
    let field = |name: &str| {
        schema["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|f| f.get(name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {schema}"))
    };
    assert_eq!(field("limit")["required"], json!(true));
    assert_eq!(field("window")["one_of"], json!(["fixed", "sliding"]));
    assert_eq!(field("window")["default"], json!("fixed"));
    assert_eq!(
        field("headers")["one_of"],
        json!(["ietf", "x-ratelimit", "none"])
    );
    assert_eq!(field("fault_tolerant")["default"], json!(true));
    assert_eq!(field("window_seconds")["between"], json!([1, 86400]));
    assert_eq!(field("redis")["type"], json!("record"));
}
