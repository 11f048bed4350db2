//! A worker process of process isolation: `kong-rust-pluginserver __worker`, started by the
//! supervisor (a fresh exec of the same binary, never a fork of a threaded process).
//!
//! It inherits its channel to the supervisor (descriptor 3), its board (4) and a sealed
//! in-memory copy of each library it serves (5...), receives its settings as the first
//! message, loads its libraries and serves the connections the supervisor passes it with
//! the ordinary machinery ([`Serving::adopt_tracked`]), recording each connection's state
//! in its board slot. Kong's messages go straight between Kong and this process. It answers
//! the supervisor's status and metrics questions on its control thread, so a worker whose
//! event loop is stuck still answers them.

use std::{
    collections::{HashMap, HashSet},
    os::unix::net::UnixStream,
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::messages::{BOARD_FD, CHANNEL_FD, Down, Sender, Up, WorkerConfig};
use crate::{
    board::{self, Board},
    daemon::Daemon,
    inherit,
    lifecycle::{handover::Channel, housekeeping, node::render_metrics},
    loader::{self, LoadOptions, LoadedPlugin},
    serving::{Handed, Serving, ServingOptions, Threading, tracking::Tracked},
    settings::{self, Limits, Protocol},
};
use kong_rust_pdk::kong_versions::KongVersion;

/// The hidden subcommand that runs a worker.
pub const SUBCOMMAND: &str = "__worker";

/// `__worker`: serves until the supervisor says exit (or is gone and the events are done).
pub fn main(_args: &[std::ffi::OsString]) -> ExitCode {
    inherit::close_on_exec(CHANNEL_FD);
    inherit::close_on_exec(BOARD_FD);
    // SAFETY: descriptor 3 was inherited from the supervisor for exactly this.
    let channel = Channel::from_fd(unsafe { board::owned(CHANNEL_FD) });
    let config = match channel.receive_json::<Down>() {
        Ok(Some((Down::Start(config), _))) => *config,
        other => {
            eprintln!(
                "kong-rust-pluginserver worker: no start message from the supervisor: {other:?}"
            );
            return ExitCode::from(2);
        }
    };
    settings::init_logging(config.log_level, config.log_format);
    match run(channel, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("worker: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(channel: Channel, config: WorkerConfig) -> Result<(), String> {
    // SAFETY: the board descriptor was inherited from the supervisor for exactly this.
    let board_fd = unsafe { board::owned(config.board_fd) };
    let board = Board::open_shared(&board_fd).map_err(|e| format!("cannot map the board: {e}"))?;
    drop(board_fd);
    // The board lives as long as the process: its heartbeats are handed out for good.
    let board: &'static Arc<Board> = Box::leak(Box::new(Arc::new(board)));
    crate::heartbeat::place_in(board.heartbeats());

    let plugins = load(&config)?;
    let limits = Limits {
        max_message: config.max_message,
        max_events_per_instance: config.max_events_per_instance,
        max_connections: config.max_connections,
        event_timeout: config.event_timeout,
        max_instances_per_plugin: config.max_instances_per_plugin,
        max_config_bytes_per_plugin: config.max_config_bytes_per_plugin,
    };
    crate::log_throttle::set_per_second(config.max_warnings_per_second);
    let kong_version = config
        .kong_version
        .as_deref()
        .and_then(|v| KongVersion::parse(v).ok());
    let daemon = Daemon::new(plugins, limits).for_kong_version(kong_version);
    let daemon = Arc::new(daemon.with_protocol(if config.protobuf {
        Protocol::Protobuf
    } else {
        Protocol::Msgpack
    }));
    daemon.set_quarantine(config.quarantine.clone());
    let sender = Arc::new(Sender::new(channel));
    let replies: Replies = Arc::new(Mutex::new(HashMap::new()));
    connect_hooks(&daemon, &sender, &replies);
    let serving = Serving::new(
        daemon.clone(),
        ServingOptions {
            threading: if config.thread_per_connection {
                Threading::ThreadPerConnection
            } else {
                Threading::PluginLoops {
                    per_plugin: config.event_loops,
                }
            },
            idle_timeout: config.connection_idle_timeout,
            message_timeout: config.message_timeout,
            max_buffered: config.max_buffered,
            max_connections: config.max_connections,
            max_connections_per_plugin: config.max_connections_per_plugin,
            slow_handler: config.slow_handler,
            stuck_timeout: config.stuck_timeout,
            board: Some(board.clone()),
        },
    )
    .map_err(|e| format!("cannot start the event loops: {e}"))?;
    housekeeping::start(daemon.clone(), config.instance_idle_timeout)
        .map_err(|e| format!("cannot start the housekeeping thread: {e}"))?;
    let plugins: Vec<(u32, String)> = daemon
        .plugins()
        .iter()
        .map(|p| (p.slot().0, p.name().to_owned()))
        .collect();
    sender
        .send(
            &Up::Ready {
                pid: std::process::id(),
                plugins,
            },
            None,
            &[],
        )
        .map_err(|e| e.to_string())?;
    tracing::debug!(worker = %config.key, "serving");
    Control {
        config,
        board,
        daemon,
        serving,
        sender,
        replies,
    }
    .run();
    Ok(())
}

/// Loads the worker's libraries from their inherited copies.
fn load(config: &WorkerConfig) -> Result<Vec<LoadedPlugin>, String> {
    let options = LoadOptions {
        // The supervisor checked the files (and probed these very bytes).
        allow_insecure: true,
        probe: None,
        kong_version: config
            .kong_version
            .as_deref()
            .and_then(|v| KongVersion::parse(v).ok()),
    };
    let mut plugins = Vec::new();
    for library in &config.libraries {
        inherit::close_on_exec(library.fd);
        let path = PathBuf::from(format!("/proc/self/fd/{}", library.fd));
        let mut plugin = loader::load(&path, &options)
            .map_err(|e| format!("{}: {e}", library.path.display()))?;
        plugin.path = library.path.clone();
        plugin.identity = None;
        plugin.modified = UNIX_EPOCH + Duration::from_secs(library.modified);
        plugins.push(plugin);
    }
    Ok(plugins)
}

/// Status requests sent to the supervisor, waiting for its reply.
type Replies = Arc<Mutex<HashMap<u64, tokio::sync::oneshot::Sender<serde_json::Value>>>>;

/// `plugin.GetStatus` asks the supervisor (every worker's status); StartInstance tells it
/// the configurations it sees (shown if one is ever quarantined).
fn connect_hooks(daemon: &Arc<Daemon>, sender: &Arc<Sender>, replies: &Replies) {
    let (to_supervisor, waiting) = (sender.clone(), replies.clone());
    let local = Arc::downgrade(daemon);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(1));
    daemon.set_status_source(Arc::new(move || {
        let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (reply, answer) = tokio::sync::oneshot::channel();
        waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, reply);
        let sent = to_supervisor.send(&Up::StatusRequest { id }, None, &[]);
        let local = local.clone();
        Box::pin(async move {
            let own = || {
                local
                    .upgrade()
                    .and_then(|d| serde_json::to_value(d.status()).ok())
                    .unwrap_or_default()
            };
            if sent.is_err() {
                return own();
            }
            answer.await.unwrap_or_else(|_| own())
        })
    }));
    let to_supervisor = sender.clone();
    let seen = Mutex::new(HashSet::new());
    daemon.on_configuration_seen(Box::new(move |plugin, fingerprint, config| {
        let new = seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((plugin.to_owned(), fingerprint));
        if new {
            let _ = to_supervisor.send(
                &Up::Configured {
                    plugin: plugin.to_owned(),
                    fingerprint,
                    config: config.to_owned(),
                },
                None,
                &[],
            );
        }
    }));
}

/// The worker's control thread: the supervisor's messages.
struct Control {
    config: WorkerConfig,
    board: &'static Arc<Board>,
    daemon: Arc<Daemon>,
    serving: Arc<Serving>,
    sender: Arc<Sender>,
    replies: Replies,
}

impl Control {
    fn run(self) {
        let mut draining = false;
        loop {
            let received = self.sender.channel().receive_json::<Down>();
            let (message, fd) = match received {
                Ok(Some(received)) => received,
                Ok(None) | Err(_) => {
                    // The supervisor is gone: finish what is running, then leave.
                    tracing::warn!(worker = %self.config.key, "the supervisor is gone; finishing the events in flight");
                    self.daemon.begin_shutdown();
                    self.daemon
                        .wait_for_events(Instant::now() + self.config.drain_timeout);
                    std::process::exit(0);
                }
            };
            match message {
                Down::Connection {
                    slot,
                    plugin,
                    pending,
                } => {
                    let Ok(bytes) = self.sender.channel().receive_bytes(pending) else {
                        continue;
                    };
                    if let Some(fd) = fd {
                        self.adopt(fd, slot, &plugin, bytes);
                    }
                }
                Down::Quarantine { list } => self.daemon.set_quarantine(list),
                Down::Status { id } => {
                    let status = serde_json::to_vec(&self.daemon.status()).unwrap_or_default();
                    self.answer(id, &status);
                }
                Down::Metrics { id } => {
                    let text = render_metrics(&self.daemon, &self.serving);
                    self.answer(id, text.as_bytes());
                }
                Down::StatusReply { id, len } => {
                    let Ok(bytes) = self.sender.channel().receive_bytes(len) else {
                        continue;
                    };
                    let waiting = self
                        .replies
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                    if let (Some(waiting), Ok(status)) = (waiting, serde_json::from_slice(&bytes)) {
                        let _ = waiting.send(status);
                    }
                }
                Down::Shutdown => {
                    self.daemon.begin_shutdown();
                    if !draining {
                        draining = true;
                        self.report_events_done();
                    }
                }
                Down::Retire => {
                    self.daemon.begin_shutdown();
                    self.return_connections();
                    if !draining {
                        draining = true;
                        self.report_events_done();
                    }
                }
                Down::ReturnIdle => self.serving.hand_over_idle(),
                Down::Exit => std::process::exit(0),
                Down::Start(_) => {}
            }
        }
    }

    /// Serves a connection the supervisor passed, in its board slot.
    fn adopt(&self, fd: std::os::fd::OwnedFd, slot: u32, plugin: &str, pending: Vec<u8>) {
        let tracked = match fd.try_clone() {
            Ok(copy) => {
                let sender = self.sender.clone();
                Tracked::assigned(
                    self.board,
                    slot,
                    copy,
                    Arc::new(move |slot| {
                        let _ = sender.send(&Up::Released { slot }, None, &[]);
                    }),
                )
            }
            Err(err) => {
                tracing::warn!("cannot track a connection: {err}");
                None
            }
        };
        if tracked.is_none() {
            // Without its slot the supervisor could not answer for it: tell it now.
            let _ = self.sender.send(&Up::Released { slot }, None, &[]);
        }
        self.serving
            .adopt_tracked(UnixStream::from(fd), plugin, pending, tracked);
    }

    /// Sends an answer too large for one message: its header, then its bytes.
    fn answer(&self, id: u64, bytes: &[u8]) {
        let _ = self.sender.send(
            &Up::Answer {
                id,
                len: bytes.len(),
            },
            None,
            bytes,
        );
    }

    /// From now on connections go back to the supervisor at their next request that is
    /// not a Step of this worker's own events.
    fn return_connections(&self) {
        let (handed, returned) = mpsc::channel::<Handed>();
        let sender = self.sender.clone();
        let spawned = std::thread::Builder::new()
            .name("returning".into())
            .spawn(move || {
                for Handed {
                    stream,
                    plugin,
                    pending,
                    slot,
                } in returned
                {
                    let fd = std::os::fd::OwnedFd::from(stream);
                    let message = Up::Returned {
                        plugin: plugin.to_string(),
                        pending: pending.len(),
                    };
                    if let Err(err) = sender.send(&message, Some(&fd), &pending) {
                        tracing::warn!(plugin = %plugin, "cannot return a connection: {err}");
                    }
                    // Released only now, after Returned: the supervisor lets go of its copy
                    // (and may tell this worker to exit) only once it has the connection back.
                    drop(slot);
                }
            });
        match spawned {
            Ok(_) => self.serving.hand_over_to(handed),
            Err(err) => tracing::error!("cannot start returning connections: {err}"),
        }
    }

    /// Says [`Up::EventsDone`] once no event is left but those stuck.
    fn report_events_done(&self) {
        let (daemon, sender) = (self.daemon.clone(), self.sender.clone());
        let _ = std::thread::Builder::new()
            .name("drain".into())
            .spawn(move || {
                loop {
                    let live = daemon.live_events();
                    if live <= daemon.stuck().len() {
                        let _ = sender.send(&Up::EventsDone, None, &[]);
                        return;
                    }
                    daemon.wait_for_events(Instant::now() + Duration::from_millis(100));
                }
            });
    }
}

/// Unix seconds of `time`.
pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
