//! Where batches go: a JSON-lines file or an HTTP endpoint.

use std::{
    collections::BTreeMap, fs::OpenOptions, future::Future, io::Write, path::PathBuf, pin::Pin,
    time::Duration,
};

/// Why a batch could not be shipped.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// The log file could not be opened or written.
    #[error("writing {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The endpoint could not be reached, timed out or answered an error status.
    #[error("POST {endpoint}: {reason}")]
    Http {
        /// The endpoint.
        endpoint: String,
        /// What the client reported, with its causes (a refused connection, a timeout,
        /// `HTTP status server error (503 Service Unavailable)`).
        reason: String,
    },
}

/// What [`Sink::ship`] returns: awaited by the flusher task.
pub type ShipFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ShipError>> + Send + 'a>>;

/// A destination for batches of records (each one JSON document, without newline).
pub trait Sink: Send + 'static {
    /// Ships one batch, in order.
    fn ship<'a>(&'a mut self, batch: &'a [String]) -> ShipFuture<'a>;
}

/// Appends each record as one line (JSON lines). The file is opened for every batch, so
/// a log rotation that moves it away is picked up at the next batch without a signal.
/// The write runs on a blocking thread: a slow disk holds up no task of the runtime.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    buffer: Vec<u8>,
}

impl FileSink {
    /// A sink appending to `path` (created if missing).
    pub fn new(path: impl Into<PathBuf>) -> FileSink {
        FileSink {
            path: path.into(),
            buffer: Vec::new(),
        }
    }
}

impl Sink for FileSink {
    fn ship<'a>(&'a mut self, batch: &'a [String]) -> ShipFuture<'a> {
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        for record in batch {
            buffer.extend_from_slice(record.as_bytes());
            buffer.push(b'\n');
        }
        let path = self.path.clone();
        Box::pin(async move {
            let written = kong_rust_pdk::spawn_blocking(move || {
                let written = append(&path, &buffer);
                (written, buffer)
            })
            .await;
            let error = |source| ShipError::File {
                path: self.path.clone(),
                source,
            };
            match written {
                Ok((written, buffer)) => {
                    self.buffer = buffer;
                    written.map_err(error)
                }
                Err(e) => Err(error(std::io::Error::other(e.to_string()))),
            }
        })
    }
}

fn append(path: &PathBuf, lines: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    // One write of whole lines: with O_APPEND, concurrent writers never interleave
    // within a batch.
    file.write_all(lines)
}

/// POSTs each batch as one JSON array, with an async client: waiting for the endpoint
/// holds no thread.
pub struct HttpSink {
    client: reqwest::Client,
    endpoint: String,
    headers: BTreeMap<String, String>,
}

impl HttpSink {
    /// A sink posting to `endpoint` with `headers`, each request bounded by `timeout`.
    pub fn new(
        endpoint: String,
        headers: BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<HttpSink, ShipError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| ShipError::Http {
                endpoint: endpoint.clone(),
                reason: e.to_string(),
            })?;
        Ok(HttpSink {
            client,
            endpoint,
            headers,
        })
    }

    fn error(&self, e: reqwest::Error) -> ShipError {
        // The chain of causes names the real problem (connection refused, timed out...).
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            reason = format!("{reason}: {cause}");
            source = cause.source();
        }
        ShipError::Http {
            endpoint: self.endpoint.clone(),
            reason,
        }
    }
}

impl Sink for HttpSink {
    fn ship<'a>(&'a mut self, batch: &'a [String]) -> ShipFuture<'a> {
        // The records are JSON already: join them rather than parse and re-encode.
        let mut body = Vec::with_capacity(batch.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
        body.push(b'[');
        for (i, record) in batch.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(record.as_bytes());
        }
        body.push(b']');
        let mut request = self
            .client
            .post(&self.endpoint)
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        Box::pin(async move {
            request
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map(drop)
                .map_err(|e| self.error(e))
        })
    }
}
