//! Counters in Redis, shared by every Kong node that uses the same server.
//!
//! An async, multiplexed connection on the plugin library's runtime: concurrent requests
//! pipeline their commands on one socket, and a request waiting for Redis holds no thread
//! (the daemon serves other events meanwhile). Connecting and each command are bounded
//! by `timeout_ms`.

use std::{
    sync::{Mutex, PoisonError},
    time::Duration,
};

use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo,
    aio::MultiplexedConnection,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    store::{Counter, Keys, StoreFuture},
    window::Counts,
};

/// Where the Redis server is (used by `policy = redis`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RedisConfig {
    /// Host name or address of the Redis server.
    #[schemars(length(min = 1, max = 255))]
    pub host: String,
    /// TCP port of the Redis server.
    #[schemars(range(min = 1))]
    pub port: u16,
    /// Redis database number the counters are kept in.
    #[schemars(range(max = 1024))]
    pub database: u16,
    /// Password sent with AUTH when set (may be a Kong vault reference).
    #[schemars(extend("x-kong-referenceable" = true))]
    pub password: Option<String>,
    /// Timeout for connecting and for each Redis command, in milliseconds.
    #[schemars(range(min = 1, max = 60000))]
    pub timeout_ms: u32,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            host: "127.0.0.1".into(),
            port: 6379,
            database: 0,
            password: None,
            timeout_ms: 1000,
        }
    }
}

/// A Redis failure, with the server it concerns.
#[derive(Debug, thiserror::Error)]
#[error("redis {addr}: {source}")]
pub struct RedisError {
    /// `host:port/database`.
    pub addr: String,
    /// What the client reported.
    #[source]
    pub source: redis::RedisError,
}

/// Counters in one Redis database.
pub struct RedisCounters {
    client: redis::Client,
    addr: String,
    settings: AsyncConnectionConfig,
    /// The shared connection, once made; dropped when it fails, and made again by the
    /// next request.
    connection: Mutex<Option<MultiplexedConnection>>,
}

impl RedisCounters {
    /// A store for `config`. Connects lazily: a Redis that is down when Kong starts the
    /// instance only fails requests (or lets them through, if fault tolerant), and the
    /// store recovers as soon as Redis is back.
    pub fn new(config: &RedisConfig) -> Result<RedisCounters, RedisError> {
        let addr = format!("{}:{}/{}", config.host, config.port, config.database);
        let mut settings = RedisConnectionInfo::default().set_db(i64::from(config.database));
        if let Some(password) = &config.password {
            settings = settings.set_password(password);
        }
        let info: ConnectionInfo = ConnectionAddr::Tcp(config.host.clone(), config.port)
            .into_connection_info()
            .map_err(|source| RedisError {
                addr: addr.clone(),
                source,
            })?
            .set_redis_settings(settings);
        let client = redis::Client::open(info).map_err(|source| RedisError {
            addr: addr.clone(),
            source,
        })?;
        let timeout = Some(Duration::from_millis(u64::from(config.timeout_ms)));
        Ok(RedisCounters {
            client,
            addr,
            settings: AsyncConnectionConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout),
            connection: Mutex::new(None),
        })
    }

    fn error(&self, source: redis::RedisError) -> RedisError {
        RedisError {
            addr: self.addr.clone(),
            source,
        }
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Option<MultiplexedConnection>> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        let fresh = self
            .client
            .get_multiplexed_async_connection_with_config(&self.settings)
            .await
            .map_err(|e| self.error(e))?;
        *self.shared() = Some(fresh.clone());
        Ok(fresh)
    }

    /// Runs `pipe` on the shared connection, making it first if needed. A connection that
    /// turns out dead (Redis restarted) is dropped and `pipe` retried once on a fresh
    /// one, so a Redis restart costs no failed request. A timeout is not retried: that
    /// would double the wait.
    async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, RedisError> {
        let shared = self.shared().clone();
        let (mut conn, fresh) = match shared {
            Some(conn) => (conn, false),
            None => (self.connect().await?, true),
        };
        match pipe.query_async(&mut conn).await {
            Err(e)
                if !fresh && !e.is_timeout() && (e.is_io_error() || e.is_connection_dropped()) =>
            {
                *self.shared() = None;
                let mut conn = self.connect().await?;
                pipe.query_async(&mut conn).await.map_err(|e| self.error(e))
            }
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() {
                    *self.shared() = None;
                }
                Err(self.error(e))
            }
            Ok(value) => Ok(value),
        }
    }

    async fn count(&self, keys: &Keys) -> Result<Counts, RedisError> {
        let ttl = i64::try_from(keys.ttl_ms).unwrap_or(i64::MAX);
        // One atomic round trip: count, renew the expiry, read the previous window.
        let mut pipe = redis::pipe();
        pipe.atomic()
            .incr(&keys.current, 1)
            .pexpire(&keys.current, ttl)
            .ignore();
        if let Some(previous) = &keys.previous {
            pipe.get(previous);
        }
        let counts: Vec<Option<u64>> = self.query(&pipe).await?;
        Ok(Counts {
            current: counts.first().copied().flatten().unwrap_or(0),
            previous: counts.get(1).copied().flatten().unwrap_or(0),
        })
    }

    async fn take_back(&self, keys: &Keys) -> Result<(), RedisError> {
        let ttl = i64::try_from(keys.ttl_ms).unwrap_or(i64::MAX);
        // The expiry is renewed too: had the counter expired since `hit`, DECR would
        // recreate it without one.
        let mut pipe = redis::pipe();
        pipe.atomic()
            .decr(&keys.current, 1)
            .ignore()
            .pexpire(&keys.current, ttl)
            .ignore();
        self.query::<()>(&pipe).await
    }
}

impl Counter for RedisCounters {
    fn hit<'a>(&'a self, keys: &'a Keys, _now_ms: u64) -> StoreFuture<'a, Counts> {
        Box::pin(async move { Ok(self.count(keys).await?) })
    }

    fn refund<'a>(&'a self, keys: &'a Keys, _now_ms: u64) -> StoreFuture<'a, ()> {
        Box::pin(async move { Ok(self.take_back(keys).await?) })
    }
}
