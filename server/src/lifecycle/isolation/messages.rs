//! What the supervisor and a worker say to each other over their channel (a unix
//! SEQPACKET socket pair; see [`crate::lifecycle::handover::Channel`]), and how a worker is
//! set up.
//!
//! Connections travel as descriptors (`SCM_RIGHTS`) with the message that names them; the
//! bytes already read from one, and answers too large for one message, follow as raw
//! chunks. A sender of such multi-part messages holds the channel's send lock throughout.

use std::{os::fd::OwnedFd, path::PathBuf, sync::Mutex, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    daemon::QuarantinedConfig,
    lifecycle::handover::{Channel, HandoverError},
    settings::{LogFormat, LogLevel},
};

/// Supervisor → worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Down {
    /// The first message: what to serve and how.
    Start(Box<WorkerConfig>),
    /// Serve this connection (its descriptor comes with the message) in board slot `slot`,
    /// with `pending` bytes already read to follow.
    Connection {
        /// The board slot assigned to it.
        slot: u32,
        /// The socket it came on (a plugin name, or `*`).
        plugin: String,
        /// Bytes that follow.
        pending: usize,
    },
    /// The quarantined configurations now.
    Quarantine {
        /// All of them (for this worker's plugins).
        list: Vec<QuarantinedConfig>,
    },
    /// Send your status (answered with [`Up::Answer`]).
    Status {
        /// Echoed in the answer.
        id: u64,
    },
    /// Send your metrics text (answered with [`Up::Answer`]).
    Metrics {
        /// Echoed in the answer.
        id: u64,
    },
    /// The answer to [`Up::StatusRequest`]: the status of every worker; its bytes follow.
    StatusReply {
        /// The request.
        id: u64,
        /// Bytes of JSON that follow.
        len: usize,
    },
    /// The daemon is shutting down: keep serving, finish your events, say
    /// [`Up::EventsDone`] when they are done.
    Shutdown,
    /// Another worker (or a successor daemon) takes over: finish your events, and return
    /// every connection at its next request that is not a Step of one of them.
    Retire,
    /// Return your idle connections too.
    ReturnIdle,
    /// Exit now.
    Exit,
}

/// Worker → supervisor.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Up {
    /// The plugins are loaded: connections may come.
    Ready {
        /// The worker's pid (what it announces to Kong).
        pid: u32,
        /// Each plugin's slot number in the worker, as the board records it.
        plugins: Vec<(u32, String)>,
    },
    /// The connection in `slot` is done here (the slot is free again).
    Released {
        /// The slot.
        slot: u32,
    },
    /// A connection goes back to the supervisor (its descriptor comes with the message),
    /// with `pending` bytes read and not answered to follow. Its slot is released apart
    /// ([`Up::Released`], without shutting it down).
    Returned {
        /// The socket it came on.
        plugin: String,
        /// Bytes that follow.
        pending: usize,
    },
    /// The answer to a [`Down::Status`] or [`Down::Metrics`]; its bytes follow.
    Answer {
        /// The request.
        id: u64,
        /// Bytes that follow.
        len: usize,
    },
    /// Kong (or `status`) asked this worker for `plugin.GetStatus`: the supervisor answers
    /// with every worker's with [`Down::StatusReply`].
    StatusRequest {
        /// Echoed in the reply.
        id: u64,
    },
    /// A StartInstance named this configuration (shown if it is ever quarantined).
    Configured {
        /// The plugin.
        plugin: String,
        /// Its fingerprint.
        fingerprint: u64,
        /// The canonical configuration.
        config: String,
    },
    /// After [`Down::Shutdown`] or [`Down::Retire`]: no event of this worker is left (but
    /// those stuck past the stuck timeout).
    EventsDone,
}

/// A library a worker loads: the descriptor it inherits it at, and what the daemon shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Library {
    /// The descriptor number in the worker (a sealed in-memory copy of the file).
    pub fd: i32,
    /// The file in the plugins directory.
    pub path: PathBuf,
    /// Its modification time, Unix seconds.
    pub modified: u64,
}

/// How a worker serves: the daemon's settings, as far as a worker uses them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerConfig {
    /// The socket it serves: a plugin name, or `*` (every plugin).
    pub key: String,
    /// Its libraries.
    pub libraries: Vec<Library>,
    /// The board's descriptor number.
    pub board_fd: i32,
    /// `--max-message-size`.
    pub max_message: usize,
    /// `--max-events-per-instance`.
    pub max_events_per_instance: usize,
    /// `--max-connections`.
    pub max_connections: usize,
    /// `--max-instances-per-plugin`.
    pub max_instances_per_plugin: usize,
    /// `--max-config-bytes-per-plugin`.
    pub max_config_bytes_per_plugin: usize,
    /// `--max-warnings-per-second`.
    pub max_warnings_per_second: u32,
    /// `--max-connections-per-plugin`.
    pub max_connections_per_plugin: usize,
    /// `--event-timeout`.
    pub event_timeout: Duration,
    /// `--instance-idle-timeout`.
    pub instance_idle_timeout: Option<Duration>,
    /// `--max-buffered-bytes`.
    pub max_buffered: usize,
    /// `--connection-idle-timeout`.
    pub connection_idle_timeout: Duration,
    /// `--message-timeout`.
    pub message_timeout: Duration,
    /// `--slow-handler-ms`.
    pub slow_handler: Duration,
    /// `--stuck-timeout`.
    pub stuck_timeout: Option<Duration>,
    /// `--drain-timeout`.
    pub drain_timeout: Duration,
    /// `--event-loops`.
    pub event_loops: usize,
    /// `--thread-per-connection`.
    pub thread_per_connection: bool,
    /// `--log-level`.
    pub log_level: LogLevel,
    /// `--log-format`.
    pub log_format: LogFormat,
    /// The quarantined configurations at start.
    pub quarantine: Vec<QuarantinedConfig>,
    /// `--kong-version`, as given.
    pub kong_version: Option<String>,
    /// `--protocol protobuf`.
    pub protobuf: bool,
}

/// The descriptor number of a worker's channel.
pub const CHANNEL_FD: i32 = 3;
/// The descriptor number of a worker's board.
pub const BOARD_FD: i32 = 4;
/// The descriptor number of a worker's first library.
pub const FIRST_LIBRARY_FD: i32 = 5;

/// A channel's sending side, safe to use from several threads: multi-part messages are
/// sent whole.
pub struct Sender {
    channel: Channel,
    lock: Mutex<()>,
}

impl Sender {
    /// Wraps `channel`.
    pub fn new(channel: Channel) -> Sender {
        Sender {
            channel,
            lock: Mutex::new(()),
        }
    }

    /// The channel (to receive on: one thread only).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Sends `message`, with `fd` attached if given, then `bytes` as raw chunks.
    pub fn send<M: Serialize>(
        &self,
        message: &M,
        fd: Option<&OwnedFd>,
        bytes: &[u8],
    ) -> Result<(), HandoverError> {
        let _whole = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.channel.send_json(message, fd)?;
        if !bytes.is_empty() {
            self.channel.send_bytes(bytes)?;
        }
        Ok(())
    }
}
