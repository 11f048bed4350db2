//! A blocking connection to a pluginserver socket, talking as Kong does: one request at a
//! time, notifications read before the response. For the daemon's own tools (`status`,
//! `try`) and for tests.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{CallResult, Incoming, KongSideError, Transport, incoming};
use crate::frame;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("cannot connect to {path}: {source} (is the daemon running with this --kong-prefix?)")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Reading or writing failed, or the daemon closed the connection.
    #[error("talking to the daemon: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon answered with an error.
    #[error("the daemon answered: {0}")]
    Remote(String),
    /// The answer is not a MessagePack-RPC response.
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
}

/// A connection to one plugin socket.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    buffer: Vec<u8>,
    msgid: u64,
    /// The pid the pluginserver announced (with its first response).
    pub server_pid: Option<u64>,
}

impl Client {
    /// Connects; the pluginserver's `serverPid` is read with the first response.
    pub fn connect(socket: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
            path: socket.to_owned(),
            source,
        })?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Client {
            stream,
            buffer: Vec::new(),
            msgid: 0,
            server_pid: None,
        })
    }

    /// Calls `method` with one argument (already MessagePack) and returns the raw result.
    pub fn call_raw(&mut self, method: &str, arg: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.msgid += 1;
        let mut request = Vec::with_capacity(32 + method.len() + arg.len());
        super::request(&mut request, self.msgid, method, arg);
        match Transport::call(self, self.msgid, &request) {
            Ok(CallResult::Ok(result)) => Ok(result),
            Ok(CallResult::Err(error)) => Err(ClientError::Remote(error)),
            Err(KongSideError::Io(error)) => Err(ClientError::Io(std::io::Error::other(error))),
            Err(other) => Err(ClientError::Protocol(other.to_string())),
        }
    }

    /// The next msgid this connection would use, for callers that number requests
    /// themselves (through [`Transport`]).
    pub fn msgid(&mut self) -> &mut u64 {
        &mut self.msgid
    }

    /// Calls `method` with a serializable argument (structs as maps) and decodes the
    /// result as JSON.
    pub fn call<A: serde::Serialize>(
        &mut self,
        method: &str,
        arg: &A,
    ) -> Result<serde_json::Value, ClientError> {
        let mut encoded = Vec::new();
        arg.serialize(&mut rmp_serde::Serializer::new(&mut encoded).with_struct_map())
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let raw = self.call_raw(method, &encoded)?;
        rmp_serde::from_slice(&raw).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    fn read_message(&mut self) -> Result<Vec<u8>, ClientError> {
        let mut chunk = [0u8; 8192];
        loop {
            if let Ok(Some(len)) = frame::value_len(&self.buffer, 64 << 20) {
                let message = self.buffer[..len].to_vec();
                self.buffer.drain(..len);
                return Ok(message);
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }
}

impl Transport for Client {
    fn call(&mut self, msgid: u64, request: &[u8]) -> Result<CallResult, KongSideError> {
        self.stream
            .write_all(request)
            .map_err(|e| KongSideError::Io(e.to_string()))?;
        loop {
            let message = self
                .read_message()
                .map_err(|e| KongSideError::Io(e.to_string()))?;
            match incoming(&message, msgid)? {
                Incoming::Notification { method, value } => {
                    if method == b"serverPid" {
                        self.server_pid = value;
                    }
                }
                Incoming::Ok(result) => return Ok(CallResult::Ok(result.to_vec())),
                Incoming::Err(error) => {
                    return Ok(CallResult::Err(String::from_utf8_lossy(error).into_owned()));
                }
            }
        }
    }
}
