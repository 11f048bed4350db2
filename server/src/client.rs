//! A MsgPack:1 client for the daemon's own tools (`status`, `try`): one connection, one
//! request at a time, as Kong talks to the daemon.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::protocol::{decode::Reader, encode, frame};

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
pub struct Client {
    stream: UnixStream,
    buffer: Vec<u8>,
    msgid: u64,
    /// The pid the daemon announced.
    pub server_pid: Option<u64>,
}

impl Client {
    /// Connects and reads the `serverPid` notification.
    pub fn connect(socket: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
            path: socket.to_owned(),
            source,
        })?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut client = Client {
            stream,
            buffer: Vec::new(),
            msgid: 0,
            server_pid: None,
        };
        let notification = client.read_message()?;
        let mut r = Reader::new(&notification);
        if r.array_len().ok() == Some(3) && r.u64().ok() == Some(2) {
            let _ = r.bytes();
            client.server_pid = r.u64().ok();
        }
        Ok(client)
    }

    /// Calls `method` with one argument (already MessagePack) and returns the raw result.
    pub fn call_raw(&mut self, method: &str, arg: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.msgid += 1;
        let mut request = Vec::with_capacity(32 + method.len() + arg.len());
        encode::request(&mut request, self.msgid, method, arg);
        self.stream.write_all(&request)?;
        let response = self.read_message()?;
        let mut r = Reader::new(&response);
        let shape = |e| ClientError::Protocol(format!("{e}"));
        if r.array_len().map_err(shape)? != 4 || r.u64().map_err(shape)? != 1 {
            return Err(ClientError::Protocol("not a response".into()));
        }
        if r.u64().map_err(shape)? != self.msgid {
            return Err(ClientError::Protocol("msgid mismatch".into()));
        }
        if !r.is_nil() {
            let error = r.bytes().map_err(shape)?;
            return Err(ClientError::Remote(
                String::from_utf8_lossy(error).into_owned(),
            ));
        }
        r.skip().map_err(shape)?;
        Ok(r.raw().map_err(shape)?.to_vec())
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

/// The socket to reach a running daemon through: the first `*.socket` in `prefix`.
pub fn any_socket(prefix: &Path) -> Option<PathBuf> {
    let mut sockets: Vec<PathBuf> = std::fs::read_dir(prefix)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "socket"))
        .collect();
    sockets.sort();
    sockets.into_iter().next()
}
