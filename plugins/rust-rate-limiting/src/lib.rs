//! `rust-rate-limiting`: limits how many requests a consumer (or a client IP) may make per
//! window, and tells clients where they stand.
//!
//! In the `access` phase it identifies the client (the authenticated consumer's id, or
//! the client IP as Kong sees it through trusted proxies), counts the request in a fixed
//! or sliding window, and either
//!
//! - lets it through, setting `RateLimit-Limit`, `RateLimit-Remaining` and
//!   `RateLimit-Reset` (or their `X-RateLimit-*` forms) on the response, or
//! - ends it with `429 {"message":"API rate limit exceeded"}`, the same headers and
//!   `Retry-After`.
//!
//! Counters live in the daemon's memory (`policy = local`: one daemon serves every worker
//! of a Kong node, so that is exact for one node) or in Redis (`policy = redis`: shared
//! by a cluster of nodes). When Redis fails, `fault_tolerant` decides: let the request
//! through and log the error, or answer 500.

pub mod redis_store;
pub mod store;
pub mod window;

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use kong_rust_pdk::{
    prelude::*,
    types::{Body, Multimap},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use redis_store::{RedisConfig, RedisCounters};
use store::{Counter, Keys, LocalCounters, StoreFuture};
use window::{Counts, Decision, Slot, WindowKind};

/// The body of the 429 answer, as Kong's own rate limiting answers.
pub const EXCEEDED_MESSAGE: &str = "API rate limit exceeded";

/// The plugin configuration (`config` of the plugin entity in Kong).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct Config {
    /// Requests one client may make per window.
    #[schemars(range(min = 1, max = 1000000000))]
    pub limit: u64,
    /// Length of a window in seconds (up to a day).
    #[schemars(range(min = 1, max = 86400))]
    pub window_seconds: u32,
    /// Fixed windows (counters reset on the boundary) or sliding ones (the previous
    /// window counts in proportion to its overlap).
    #[serde(default)]
    pub window: WindowKind,
    /// Whom to count: the authenticated consumer (falling back to the client IP when
    /// there is none) or always the client IP.
    #[serde(default)]
    pub limit_by: LimitBy,
    /// Where counters live: `local` (the pluginserver's memory, exact for one Kong node)
    /// or `redis` (shared by every node using the same Redis).
    #[serde(default)]
    pub policy: Policy,
    /// Response headers telling clients their quota: `ietf` (RateLimit-*),
    /// `x-ratelimit` (X-RateLimit-*) or `none`.
    #[serde(default)]
    pub headers: HeaderStyle,
    /// When the counter store fails: true lets the request through (and logs the error),
    /// false answers 500.
    #[serde(default = "fault_tolerant_default")]
    pub fault_tolerant: bool,
    /// The Redis server, for `policy = redis`.
    #[serde(default)]
    pub redis: RedisConfig,
}

fn fault_tolerant_default() -> bool {
    true
}

/// Whom a limit applies to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LimitBy {
    /// The consumer an auth plugin identified; the client IP for anonymous requests.
    #[default]
    Consumer,
    /// The client IP (Kong's forwarded IP: the real client behind trusted proxies).
    Ip,
}

/// Where counters are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// In the pluginserver's memory.
    #[default]
    Local,
    /// In Redis.
    Redis,
}

/// Which response headers report the quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum HeaderStyle {
    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (IETF draft).
    #[default]
    #[serde(rename = "ietf")]
    Ietf,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`.
    #[serde(rename = "x-ratelimit")]
    XRateLimit,
    /// No quota headers (`Retry-After` is still sent with a 429).
    #[serde(rename = "none")]
    None,
}

impl HeaderStyle {
    fn names(self) -> Option<[&'static str; 3]> {
        match self {
            HeaderStyle::Ietf => {
                Some(["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"])
            }
            HeaderStyle::XRateLimit => Some([
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
            ]),
            HeaderStyle::None => None,
        }
    }
}

/// Milliseconds since the Unix epoch; windows are aligned on it so that every node
/// agrees on them.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    })
}

/// One per distinct configuration, shared by concurrent requests: its state is the
/// (thread-safe) counter store.
pub struct RateLimiter {
    config: Config,
    counters: Arc<dyn Counter>,
    clock: Clock,
}

impl RateLimiter {
    /// A limiter for `config` counting in `counters` and reading time from `clock` (tests
    /// pass their own store and clock).
    pub fn with_parts(config: Config, counters: Arc<dyn Counter>, clock: Clock) -> RateLimiter {
        RateLimiter {
            config,
            counters,
            clock,
        }
    }

    /// The counter keys for `client` at `slot`. The scope is the plugin entity (the same
    /// configuration on two routes is two limits), and the window length is part of the
    /// key so that a changed window never reads counts of another length.
    fn keys(&self, scope: &str, client: &str, slot: Slot) -> Keys {
        let base = format!(
            "rust-rate-limiting:{scope}:{client}:{}",
            self.config.window_seconds
        );
        let sliding = self.config.window == WindowKind::Sliding;
        Keys {
            current: format!("{base}:{}", slot.index),
            previous: sliding.then(|| format!("{base}:{}", slot.index.wrapping_sub(1))),
            ttl_ms: slot.length_ms * if sliding { 2 } else { 1 },
        }
    }

    /// Whom this request counts for: `consumer:<id>` or `ip:<address>`.
    async fn client(&self, kong: &Kong) -> PdkResult<String> {
        if self.config.limit_by == LimitBy::Consumer
            && let Some(consumer) = kong.client().get_consumer().await?
        {
            return Ok(format!("consumer:{}", consumer.id));
        }
        Ok(format!("ip:{}", kong.client().get_forwarded_ip().await?))
    }

    fn quota_headers(&self, decision: &Decision) -> Multimap {
        let mut headers = Multimap::new();
        if let Some([limit, remaining, reset]) = self.config.headers.names() {
            headers
                .set(limit, self.config.limit.to_string())
                .set(remaining, decision.remaining.to_string())
                .set(reset, decision.reset_seconds.to_string());
        }
        headers
    }
}

/// Where a plugin entity's counters are scoped: the plugin id when Kong sends it (3.3+),
/// else the route/service it is attached to.
fn scope(instance: &InstanceInfo) -> String {
    match (
        &instance.plugin_id,
        &instance.route_id,
        &instance.service_id,
    ) {
        (Some(id), _, _) => format!("plugin={id}"),
        (None, route, service) => format!(
            "route={},service={}",
            route.as_deref().unwrap_or("*"),
            service.as_deref().unwrap_or("*")
        ),
    }
}

#[kong_rust_pdk::plugin]
impl Plugin for RateLimiter {
    type Config = Config;
    /// After authentication plugins (priority 1000 and up), so the consumer is known;
    /// the same as Kong's own rate limiting.
    const PRIORITY: i64 = 910;

    fn new(config: Config) -> Result<Self, ConfigError> {
        let counters: Arc<dyn Counter> = match config.policy {
            Policy::Local => Arc::new(SharedLocal),
            Policy::Redis => {
                Arc::new(RedisCounters::new(&config.redis).map_err(ConfigError::rejected)?)
            }
        };
        Ok(RateLimiter::with_parts(config, counters, system_clock()))
    }

    async fn access(&self, kong: &Kong) -> PdkResult<()> {
        let client = self.client(kong).await?;
        let now_ms = (self.clock)();
        let slot = Slot::at(now_ms, u64::from(self.config.window_seconds) * 1000);
        let keys = self.keys(&scope(kong.instance()), &client, slot);
        let counts = match self.counters.hit(&keys, now_ms).await {
            Ok(counts) => counts,
            Err(e) if self.config.fault_tolerant => {
                return kong
                    .log()
                    .err(&format!(
                        "rate limiting skipped, request allowed (fault_tolerant): {e}"
                    ))
                    .await;
            }
            Err(e) => {
                kong.log()
                    .err(&format!("rate limiting failed, request refused: {e}"))
                    .await?;
                kong.response()
                    .error(500, Some("An unexpected error occurred"))
                    .await?;
            }
        };
        let decision = window::decide(self.config.window, self.config.limit, counts, slot);
        if !decision.allowed
            && let Err(e) = self.counters.refund(&keys, now_ms).await
        {
            // The verdict stands; the client's count just stays one higher.
            kong.log()
                .err(&format!("could not take back a refused request: {e}"))
                .await?;
        }
        let mut headers = self.quota_headers(&decision);
        if !decision.allowed {
            headers.set("Retry-After", decision.reset_seconds.to_string());
            let body = Body::json(&exceeded_body())?;
            kong.response()
                .exit_with_headers(429, body, &headers)
                .await?;
        }
        if headers.is_empty() {
            return Ok(());
        }
        kong.response().set_headers(&headers).await
    }
}

/// `{"message": "API rate limit exceeded"}`.
fn exceeded_body() -> std::collections::BTreeMap<&'static str, &'static str> {
    [("message", EXCEEDED_MESSAGE)].into()
}

/// The process-wide [`LocalCounters`], as a [`Counter`] a plugin can own.
struct SharedLocal;

impl Counter for SharedLocal {
    fn hit<'a>(&'a self, keys: &'a Keys, now_ms: u64) -> StoreFuture<'a, Counts> {
        Counter::hit(LocalCounters::shared(), keys, now_ms)
    }

    fn refund<'a>(&'a self, keys: &'a Keys, now_ms: u64) -> StoreFuture<'a, ()> {
        Counter::refund(LocalCounters::shared(), keys, now_ms)
    }
}

#[cfg(test)]
mod tests;
