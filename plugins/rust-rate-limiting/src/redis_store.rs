//! Counters in Redis, shared by every Kong node that uses the same server.
//!
//! Blocking `redis` connections, on purpose: the daemon runs each handler on its
//! connection's own thread, so a Redis round trip (bounded by `timeout_ms`) holds up only
//! the request it serves. Connections are kept in a small idle pool so concurrent requests
//! do not queue behind one socket.

use std::{
    sync::{Mutex, PoisonError},
    time::Duration,
};

use redis::{
    ConnectionAddr, ConnectionInfo, ConnectionLike, IntoConnectionInfo, RedisConnectionInfo,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    store::{Counter, Keys, StoreError},
    window::Counts,
};

/// Idle connections kept per constructed plugin; more are opened under load and closed
/// after use.
const MAX_IDLE: usize = 8;

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
    timeout: Duration,
    idle: Mutex<Vec<redis::Connection>>,
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
        Ok(RedisCounters {
            client,
            addr,
            timeout: Duration::from_millis(u64::from(config.timeout_ms)),
            idle: Mutex::new(Vec::new()),
        })
    }

    fn error(&self, source: redis::RedisError) -> RedisError {
        RedisError {
            addr: self.addr.clone(),
            source,
        }
    }

    fn connect(&self) -> Result<redis::Connection, RedisError> {
        let conn = self
            .client
            .get_connection_with_timeout(self.timeout)
            .map_err(|e| self.error(e))?;
        conn.set_read_timeout(Some(self.timeout))
            .map_err(|e| self.error(e))?;
        conn.set_write_timeout(Some(self.timeout))
            .map_err(|e| self.error(e))?;
        Ok(conn)
    }

    /// Runs `op` on an idle connection or a new one. A pooled connection that turns out
    /// dead (Redis restarted) is dropped and `op` retried once on a fresh one, so a Redis
    /// restart costs no failed request; a connection that failed is never pooled again.
    fn with_connection<T>(
        &self,
        op: impl Fn(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, RedisError> {
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let (conn, result) = match pooled {
            Some(mut conn) => match op(&mut conn) {
                Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                    let mut fresh = self.connect()?;
                    let result = op(&mut fresh);
                    (fresh, result)
                }
                result => (conn, result),
            },
            None => {
                let mut fresh = self.connect()?;
                let result = op(&mut fresh);
                (fresh, result)
            }
        };
        let value = result.map_err(|e| self.error(e))?;
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE && conn.is_open() {
            idle.push(conn);
        }
        Ok(value)
    }
}

impl Counter for RedisCounters {
    fn hit(&self, keys: &Keys, _now_ms: u64) -> Result<Counts, StoreError> {
        let ttl = i64::try_from(keys.ttl_ms).unwrap_or(i64::MAX);
        // One atomic round trip: count, renew the expiry, read the previous window.
        let counts: Vec<Option<u64>> = self.with_connection(|conn| {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .incr(&keys.current, 1)
                .pexpire(&keys.current, ttl)
                .ignore();
            if let Some(previous) = &keys.previous {
                pipe.get(previous);
            }
            pipe.query(conn)
        })?;
        Ok(Counts {
            current: counts.first().copied().flatten().unwrap_or(0),
            previous: counts.get(1).copied().flatten().unwrap_or(0),
        })
    }

    fn refund(&self, keys: &Keys, _now_ms: u64) -> Result<(), StoreError> {
        let ttl = i64::try_from(keys.ttl_ms).unwrap_or(i64::MAX);
        // The expiry is renewed too: had the counter expired since `hit`, DECR would
        // recreate it without one.
        self.with_connection(|conn| {
            redis::pipe()
                .atomic()
                .decr(&keys.current, 1)
                .ignore()
                .pexpire(&keys.current, ttl)
                .ignore()
                .query::<()>(conn)
        })?;
        Ok(())
    }
}
