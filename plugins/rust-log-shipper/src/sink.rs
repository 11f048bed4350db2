//! Where batches go: a JSON-lines file or an HTTP endpoint.

use std::{collections::BTreeMap, fs::OpenOptions, io::Write, path::PathBuf, time::Duration};

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
    #[error("POST {endpoint}: {source}")]
    Http {
        /// The endpoint.
        endpoint: String,
        /// What the client reported (including `http status: 503`).
        #[source]
        source: ureq::Error,
    },
}

/// A destination for batches of records (each one JSON document, without newline).
pub trait Sink: Send + 'static {
    /// Ships one batch, in order.
    fn ship(&mut self, batch: &[String]) -> Result<(), ShipError>;
}

/// Appends each record as one line (JSON lines). The file is opened for every batch, so
/// a log rotation that moves it away is picked up at the next batch without a signal.
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
    fn ship(&mut self, batch: &[String]) -> Result<(), ShipError> {
        self.buffer.clear();
        for record in batch {
            self.buffer.extend_from_slice(record.as_bytes());
            self.buffer.push(b'\n');
        }
        let error = |source| ShipError::File {
            path: self.path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(error)?;
        // One write of whole lines: with O_APPEND, concurrent writers never interleave
        // within a batch.
        file.write_all(&self.buffer).map_err(error)
    }
}

/// POSTs each batch as one JSON array.
pub struct HttpSink {
    agent: ureq::Agent,
    endpoint: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl HttpSink {
    /// A sink posting to `endpoint` with `headers`, each request bounded by `timeout`.
    pub fn new(endpoint: String, headers: BTreeMap<String, String>, timeout: Duration) -> HttpSink {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .build();
        HttpSink {
            agent: ureq::Agent::new_with_config(config),
            endpoint,
            headers,
            body: Vec::new(),
        }
    }
}

impl Sink for HttpSink {
    fn ship(&mut self, batch: &[String]) -> Result<(), ShipError> {
        // The records are JSON already: join them rather than parse and re-encode.
        self.body.clear();
        self.body.push(b'[');
        for (i, record) in batch.iter().enumerate() {
            if i > 0 {
                self.body.push(b',');
            }
            self.body.extend_from_slice(record.as_bytes());
        }
        self.body.push(b']');
        let mut request = self
            .agent
            .post(&self.endpoint)
            .content_type("application/json");
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        request
            .send(&self.body[..])
            .map(drop)
            .map_err(|source| ShipError::Http {
                endpoint: self.endpoint.clone(),
                source,
            })
    }
}
