//! `rust-log-shipper`: ships every request's log record (`kong.log.serialize()`) in
//! batches to a JSON-lines file or an HTTP endpoint.
//!
//! Its only phase is `log`, which Kong runs after the client has its response. Even
//! there the handler never waits on the destination: it queues the record and returns.
//! A task owned by the constructed plugin, on the plugin library's tokio runtime, ships
//! batches of `batch_size` records, or fewer once the oldest has waited
//! `flush_interval_ms`, with an async HTTP client (or a file append on a blocking thread).
//! A full queue drops records rather than slow Kong down; drops and failed batches are
//! counted and reported in Kong's error log by the next request's handler (the flusher
//! task has no Kong to talk to). When Kong releases the instance (or the daemon reloads
//! the plugin), the plugin is dropped: the task ships what is queued and ends.

pub mod shipper;
pub mod sink;

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use kong_rust_pdk::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use shipper::{Batching, Shipper, Totals};
use sink::{FileSink, HttpSink, Sink};

/// The plugin configuration (`config` of the plugin entity in Kong).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct Config {
    /// Where records go: `file` (JSON lines appended to `path`) or `http` (a JSON array
    /// POSTed to `endpoint` per batch).
    pub destination: Destination,
    /// The file records are appended to, one JSON document per line (`destination = file`).
    #[schemars(length(min = 1, max = 4096))]
    pub path: Option<String>,
    /// The URL batches are POSTed to (`destination = http`): `http://host:port/path`.
    #[schemars(length(min = 1, max = 2048))]
    pub endpoint: Option<String>,
    /// Extra request headers for `destination = http`, such as Authorization.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Timeout of one HTTP request (connect, send and answer), in milliseconds.
    #[serde(default = "defaults::timeout_ms")]
    #[schemars(range(min = 1, max = 600000))]
    pub timeout_ms: u32,
    /// Records per batch at most: a full batch is shipped at once.
    #[serde(default = "defaults::batch_size")]
    #[schemars(range(min = 1, max = 100000))]
    pub batch_size: u32,
    /// How long a record may wait for its batch to fill before the batch is shipped
    /// anyway, in milliseconds.
    #[serde(default = "defaults::flush_interval_ms")]
    #[schemars(range(min = 1, max = 3600000))]
    pub flush_interval_ms: u32,
    /// Records waiting to be shipped at most; further records are dropped (and counted)
    /// so a slow destination never holds up Kong.
    #[serde(default = "defaults::queue_size")]
    #[schemars(range(min = 1, max = 10000000))]
    pub queue_size: u32,
}

mod defaults {
    pub fn timeout_ms() -> u32 {
        10_000
    }
    pub fn batch_size() -> u32 {
        100
    }
    pub fn flush_interval_ms() -> u32 {
        1_000
    }
    pub fn queue_size() -> u32 {
        10_000
    }
}

/// Where records are shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Destination {
    /// A JSON-lines file.
    File,
    /// An HTTP endpoint.
    Http,
}

/// One per distinct configuration; owns the queue that feeds its flusher task.
pub struct LogShipper {
    shipper: Shipper,
}

impl LogShipper {
    /// Records shipped, dropped and failed so far.
    pub fn totals(&self) -> Totals {
        self.shipper.stats().totals()
    }

    /// Builds the sink `config` names, refusing incomplete configurations (Kong's schema
    /// cannot say "required when destination is http").
    fn sink(config: &Config) -> Result<Box<dyn Sink>, ConfigError> {
        match config.destination {
            Destination::File => {
                let path = config
                    .path
                    .as_deref()
                    .ok_or_else(|| ConfigError::rejected("destination `file` needs `path`"))?;
                Ok(Box::new(FileSink::new(PathBuf::from(path))))
            }
            Destination::Http => {
                let endpoint = config
                    .endpoint
                    .clone()
                    .ok_or_else(|| ConfigError::rejected("destination `http` needs `endpoint`"))?;
                check_endpoint(&endpoint)?;
                let timeout = Duration::from_millis(u64::from(config.timeout_ms));
                let sink = HttpSink::new(endpoint, config.headers.clone(), timeout)
                    .map_err(ConfigError::rejected)?;
                Ok(Box::new(sink))
            }
        }
    }
}

/// Refuses what the HTTP client could only fail on later, for every batch.
fn check_endpoint(endpoint: &str) -> Result<(), ConfigError> {
    let https = endpoint.starts_with("https://");
    if !https && !endpoint.starts_with("http://") {
        return Err(ConfigError::rejected(format!(
            "endpoint `{endpoint}` must be an http:// or https:// URL"
        )));
    }
    if https && !cfg!(feature = "https") {
        return Err(ConfigError::rejected(
            "https endpoints need rust-log-shipper built with the `https` feature",
        ));
    }
    Ok(())
}

#[kong_rust_pdk::plugin]
impl Plugin for LogShipper {
    type Config = Config;
    /// Among Kong's own logging plugins (which run from 12 down to 2).
    const PRIORITY: i64 = 12;
    /// Shipping logs is not what the request is for: a failure here (a full queue, a
    /// record that does not serialize) is logged and counted, and the request goes on.
    const ON_FAILURE: OnFailure = OnFailure::FailOpen;

    fn new(config: Config) -> Result<Self, ConfigError> {
        let sink = LogShipper::sink(&config)?;
        let batching = Batching {
            queue_size: config.queue_size as usize,
            batch_size: config.batch_size as usize,
            flush_interval: Duration::from_millis(u64::from(config.flush_interval_ms)),
        };
        // The constructor runs in the plugin runtime's context: the task is spawned there.
        Ok(LogShipper {
            shipper: Shipper::start(sink, batching),
        })
    }

    async fn log(&self, kong: &Kong) -> PdkResult<()> {
        let record = kong.log().serialize().await?;
        self.shipper.enqueue(record.to_string());
        let Some(report) = self.shipper.stats().take_report() else {
            return Ok(());
        };
        if report.dropped > 0 {
            kong.log()
                .warn(&format!(
                    "dropped {} log records: the queue is full",
                    report.dropped
                ))
                .await?;
        }
        if report.failed > 0 {
            let reason = report.last_error.unwrap_or_default();
            kong.log()
                .err(&format!(
                    "lost {} log records in batches that failed: {reason}",
                    report.failed
                ))
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
