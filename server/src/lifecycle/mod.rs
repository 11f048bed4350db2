//! The daemon's life: become the serving daemon (or stand by, or take over from a running
//! one), load the plugins, bind their sockets, serve, reload on SIGHUP, and at the end
//! finish this daemon's events while handing everything else to a successor.
//!
//! Everything here is a library function so that tests and other front ends can run a
//! daemon; `main.rs` only parses the command line.

pub mod handover;
pub mod housekeeping;
pub mod isolation;
pub mod node;
pub mod reload;
pub mod serve_lock;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use signal_hook::{
    consts::{SIGHUP, SIGINT, SIGTERM},
    iterator::Signals,
};

use crate::{
    admin,
    daemon::{Daemon, Scope},
    loader::probe::Probe,
    loader::{self, LoadError, LoadOptions},
    serving::{Handed, Serving, ServingOptions, Threading},
    settings::{Isolation, Settings},
    sockets::{self, Replace, SocketAccess},
};
use handover::{Channel, ChannelListener, HandoverError, Message};
use isolation::supervisor::Supervisor;
use node::{InProcess, Node, NodeMetrics};
use serve_lock::{Acquired, ServeLock};

/// Why the daemon could not serve.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The plugins directory is unusable.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// No file of the plugins directory is a usable plugin.
    #[error("no usable plugin in {0}; nothing to serve")]
    NoPlugins(PathBuf),
    /// No plugin could get its socket.
    #[error("no plugin socket could be set up in {0}; nothing to serve")]
    NoSockets(PathBuf),
    /// Someone other than root or the daemon's user could change the prefix.
    #[error(
        "{path}: refusing to serve from this prefix: {reason}; whoever can write it can take the serve lock and the plugin sockets (--allow-insecure-prefix overrides)"
    )]
    InsecurePrefix {
        /// The prefix, or the directory above it at fault.
        path: PathBuf,
        /// Who could change it.
        reason: String,
    },
    /// A directory the daemon needs could not be made.
    #[error("cannot create {path}: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The serve lock could not be taken or waited for.
    #[error("cannot lock {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The hand-over channel failed where the daemon cannot go on without it.
    #[error(transparent)]
    Handover(#[from] HandoverError),
    /// `--socket-group` names no group.
    #[error("--socket-group: no group named {0:?}")]
    UnknownGroup(String),
    /// A thread, a signal handler or the metrics listener could not be started.
    #[error("cannot start {what}: {source}")]
    Start {
        /// What.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

fn start_error(what: &'static str) -> impl FnOnce(std::io::Error) -> LifecycleError {
    move |source| LifecycleError::Start { what, source }
}

/// What wakes the daemon's main thread.
enum Wake {
    /// The serve lock is ours (a standby's wait ended).
    Locked(std::io::Result<ServeLock>),
    /// A signal arrived.
    Signal(i32),
    /// A successor connected to the hand-over channel.
    Successor(Channel),
    /// No event of this daemon is left.
    EventsDone,
    /// No connection is left.
    ConnectionsDone,
}

/// The lock and, when another daemon still serves, the channel to it.
struct Role {
    lock: Option<ServeLock>,
    predecessor: Option<(Channel, u32)>,
}

/// Runs the daemon until SIGTERM or SIGINT (or, for a standby, until then without ever
/// serving).
pub fn run(settings: &Settings) -> Result<(), LifecycleError> {
    let options = LoadOptions {
        allow_insecure: settings.allow_insecure_plugins,
        // A library that crashes or hangs when loaded is refused instead of stopping the
        // daemon (and every other plugin).
        probe: Some(Probe {
            timeout: settings.probe_timeout,
            kong_version: settings.kong_version,
        }),
        kong_version: settings.kong_version,
    };
    // Fail fast on an unusable directory, before waiting for the lock.
    loader::plugin_files(&settings.plugins_directory, &options)?;
    let access = SocketAccess {
        group: settings
            .socket_group
            .as_deref()
            .map(resolve_group)
            .transpose()?,
    };
    let (wake, woken) = mpsc::channel();
    let wake_for_drain = wake.clone();
    forward_signals(wake.clone())?;
    exit_with_parent();
    create_dir(&settings.kong_prefix, None)?;
    if !settings.allow_insecure_prefix {
        check_prefix(&settings.kong_prefix)?;
    }
    crate::log_throttle::set_per_second(settings.max_warnings_per_second);
    let lock_path = serve_lock::lock_path(&settings.kong_prefix, &settings.plugins_directory);
    let channel_path = handover::channel_path(&lock_path);

    let Some(mut role) = become_server(settings, &lock_path, &channel_path, &wake, &woken)? else {
        tracing::info!("standby stopped");
        return Ok(());
    };
    // Load now, not before the wait: a standby that takes over serves current files.
    let node: Arc<dyn Node> = match settings.isolation {
        Isolation::None => in_process(settings, &options)?,
        Isolation::Process => Supervisor::start(settings, &options, access)?,
    };
    let replace = match &role.predecessor {
        Some((_, pid)) => Replace::Predecessor(*pid),
        None => Replace::StaleOnly,
    };
    let served = bind_sockets(settings, &*node, access, replace)?;
    let channel = ChannelListener::bind(&channel_path)?;
    accept_successors(channel, wake.clone())?;
    if let Some((predecessor, pid)) = role.predecessor.take() {
        adopt_from(predecessor, pid, served, node.clone())?;
    }
    if let Some(addr) = settings.metrics_listen {
        admin::serve(addr, Arc::new(NodeMetrics(node.clone())))
            .map_err(start_error("the metrics listener"))?;
    }

    let mut shutdown: Option<Instant> = None;
    let mut successor: Option<std::thread::JoinHandle<()>> = None;
    let mut events_done = false;
    loop {
        let wake = match shutdown {
            None => woken.recv().ok(),
            Some(deadline) => woken.recv_timeout(deadline_left(deadline)).ok(),
        };
        let Some(wake) = wake else { break };
        match wake {
            Wake::Signal(SIGHUP) => {
                if shutdown.is_some() {
                    continue;
                }
                tracing::info!(
                    "SIGHUP: rescanning {}",
                    settings.plugins_directory.display()
                );
                let reloaded = node.reload(access, &options);
                tracing::info!(
                    "reload done: {} added, {} upgraded, {} failed",
                    reloaded.added.len(),
                    reloaded.upgraded.len(),
                    reloaded.failed
                );
            }
            Wake::Signal(_) => {
                if shutdown.is_none() {
                    // Free the lock at once: a standby that takes it takes over from us.
                    drop(role.lock.take());
                    shutdown = Some(begin_shutdown(&node, settings, &wake_for_drain)?);
                }
            }
            Wake::Successor(channel) => {
                if successor.is_some() {
                    let _ = channel.send(
                        &Message::Refused {
                            reason: "already handing over to another daemon".into(),
                        },
                        None,
                    );
                    continue;
                }
                match hand_over(channel, role.lock.take(), &node) {
                    Ok(sender) => {
                        successor = Some(sender);
                        if shutdown.is_none() {
                            shutdown = Some(begin_shutdown(&node, settings, &wake_for_drain)?);
                        }
                        if events_done {
                            node.hand_over_idle();
                        }
                    }
                    Err(err) => tracing::error!("a successor failed to take over: {err}"),
                }
            }
            Wake::EventsDone => {
                events_done = true;
                if successor.is_some() {
                    tracing::info!("every event of this daemon finished; handing over the rest");
                    node.hand_over_idle();
                }
            }
            Wake::ConnectionsDone => break,
            Wake::Locked(_) => {}
        }
    }
    let left = node.live_events();
    if left > 0 {
        tracing::warn!(
            "stopped with {left} events unfinished after {}s",
            settings.drain_timeout.as_secs()
        );
    }
    if let Some(sender) = successor {
        // Whatever is still open goes too, then the channel says done.
        node.hand_over_idle();
        node.wait_for_connections(Instant::now() + Duration::from_secs(2));
        node.finish();
        node.end_hand_over();
        let _ = sender.join();
    } else {
        node.finish();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Loads every plugin into this process and starts serving them (`--isolation none`).
fn in_process(settings: &Settings, options: &LoadOptions) -> Result<Arc<dyn Node>, LifecycleError> {
    let scan = loader::scan(&settings.plugins_directory, options)?;
    for failure in &scan.failures {
        tracing::error!("skipped: {failure}");
    }
    if scan.plugins.is_empty() {
        return Err(LifecycleError::NoPlugins(
            settings.plugins_directory.clone(),
        ));
    }
    for plugin in scan.plugins.values() {
        loader::log_served(
            &plugin.manifest,
            format_args!("loaded {}", plugin.path.display()),
        );
    }
    let daemon = Daemon::new(scan.plugins.into_values(), settings.limits);
    let daemon = daemon.for_kong_version(settings.kong_version);
    let daemon = Arc::new(daemon.with_protocol(settings.protocol));
    tracing::info!("speaking {}", settings.protocol.dump_name());
    let serving = Serving::new(daemon.clone(), serving_options(settings))
        .map_err(start_error("the event loops"))?;
    housekeeping::start(daemon.clone(), settings.instance_idle_timeout)
        .map_err(start_error("the housekeeping thread"))?;
    Ok(Arc::new(InProcess {
        daemon,
        serving,
        plugins_directory: settings.plugins_directory.clone(),
        kong_prefix: settings.kong_prefix.clone(),
    }))
}

fn deadline_left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// The serving options the settings ask for.
fn serving_options(settings: &Settings) -> ServingOptions {
    ServingOptions {
        threading: if settings.thread_per_connection {
            Threading::ThreadPerConnection
        } else {
            Threading::PluginLoops {
                per_plugin: settings.event_loops,
            }
        },
        idle_timeout: settings.connection_idle_timeout,
        message_timeout: settings.message_timeout,
        max_buffered: settings.max_buffered_bytes,
        max_connections: settings.limits.max_connections,
        max_connections_per_plugin: settings.max_connections_per_plugin,
        slow_handler: settings.slow_handler,
        stuck_timeout: settings.stuck_timeout,
        board: None,
    }
}

/// Binds every plugin's socket and the socket of every plugin; a plugin whose socket
/// cannot be set up is skipped with the reason, and the others are served. Returns the
/// names bound.
fn bind_sockets(
    settings: &Settings,
    node: &dyn Node,
    access: SocketAccess,
    replace: Replace,
) -> Result<Vec<String>, LifecycleError> {
    let mut bound = Vec::new();
    let mut names: Vec<(String, Scope)> = node.sockets();
    if !names.iter().any(|(name, _)| name == sockets::SHARED_SOCKET) {
        names.push((sockets::EVERY_PLUGIN.to_owned(), Scope::All));
    }
    for (name, scope) in names {
        let file_name = if name == sockets::EVERY_PLUGIN {
            sockets::SHARED_SOCKET
        } else {
            &name
        };
        match sockets::bind(&settings.kong_prefix, file_name, scope, access, replace) {
            Ok(mut socket) => {
                socket.plugin = name.clone();
                node.listen(socket).map_err(start_error("accepting"))?;
                bound.push(name);
            }
            Err(err) if name == sockets::EVERY_PLUGIN => {
                tracing::warn!("the socket of every plugin is not served: {err}");
            }
            Err(err) => tracing::error!(plugin = %name, "not served: {err}"),
        }
    }
    if !bound.iter().any(|name| name != sockets::EVERY_PLUGIN) {
        return Err(LifecycleError::NoSockets(settings.kong_prefix.clone()));
    }
    Ok(bound)
}

/// Takes the serve lock: at once if it is free; from the serving daemon if this daemon
/// succeeds it (another parent: a new nginx worker after `kong reload`); otherwise stands
/// by, waiting for it in the kernel. `None` when SIGTERM or SIGINT came first.
fn become_server(
    settings: &Settings,
    lock_path: &Path,
    channel_path: &Path,
    wake: &mpsc::Sender<Wake>,
    woken: &mpsc::Receiver<Wake>,
) -> Result<Option<Role>, LifecycleError> {
    let lock_error = |source| LifecycleError::Lock {
        path: lock_path.to_owned(),
        source,
    };
    let holder = match serve_lock::try_acquire(lock_path).map_err(lock_error)? {
        Acquired::Serving(lock) => return Ok(Some(find_predecessor(lock, channel_path))),
        Acquired::Held { holder } => holder,
    };
    let sibling = holder.is_some_and(|h| h.ppid == Some(serve_lock::parent_pid()));
    if !sibling && let Some(channel) = Channel::connect(channel_path)? {
        channel.send(&Message::Takeover, None)?;
        match channel.receive()? {
            Some((Message::Lock { pid }, Some(fd))) => {
                let lock = ServeLock::from_passed(handover::lock_file(fd)).map_err(lock_error)?;
                tracing::info!("taking over from the serving daemon (pid {pid})");
                return Ok(Some(Role {
                    lock: Some(lock),
                    predecessor: Some((channel, pid)),
                }));
            }
            Some((Message::Released { .. }, _)) => {
                // It is shutting down and released the lock: wait for it below.
            }
            Some((Message::Refused { reason }, _)) => {
                tracing::info!("the serving daemon refused a takeover: {reason}");
            }
            other => tracing::warn!("unexpected answer to a takeover: {other:?}"),
        }
    }
    tracing::info!(
        "another daemon{} serves {} on {}; standing by to take over",
        holder
            .map(|h| format!(" (pid {})", h.pid))
            .unwrap_or_default(),
        settings.plugins_directory.display(),
        settings.kong_prefix.display()
    );
    let waiting_for = lock_path.to_owned();
    let wake = wake.clone();
    std::thread::Builder::new()
        .name("serve-lock".into())
        .spawn(move || {
            let _ = wake.send(Wake::Locked(serve_lock::acquire(&waiting_for)));
        })
        .map_err(start_error("the lock thread"))?;
    loop {
        match woken.recv() {
            Ok(Wake::Locked(Ok(lock))) => {
                tracing::info!("the serving daemon released the lock; taking over");
                return Ok(Some(find_predecessor(lock, channel_path)));
            }
            Ok(Wake::Locked(Err(source))) => return Err(lock_error(source)),
            Ok(Wake::Signal(SIGHUP)) => {}
            Ok(Wake::Signal(_)) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

/// With the lock held: a daemon that released it (at SIGTERM) may still be finishing its
/// events; if it answers on the channel, it hands over to this one.
fn find_predecessor(lock: ServeLock, channel_path: &Path) -> Role {
    let predecessor = match Channel::connect(channel_path) {
        Ok(Some(channel)) => match channel
            .send(&Message::Succeed, None)
            .and_then(|()| channel.receive())
        {
            Ok(Some((Message::Released { pid }, _))) => Some((channel, pid)),
            Ok(other) => {
                tracing::debug!("no predecessor to take over from: {other:?}");
                None
            }
            Err(err) => {
                tracing::debug!("no predecessor to take over from: {err}");
                None
            }
        },
        _ => None,
    };
    Role {
        lock: Some(lock),
        predecessor,
    }
}

/// Tells the predecessor that this daemon serves `plugins` now, and serves the connections
/// it hands over, on a thread of their own.
fn adopt_from(
    channel: Channel,
    pid: u32,
    plugins: Vec<String>,
    node: Arc<dyn Node>,
) -> Result<(), LifecycleError> {
    channel.send(&Message::Ready { plugins }, None)?;
    tracing::info!("serving; the daemon before (pid {pid}) hands over its connections");
    std::thread::Builder::new()
        .name("adopt".into())
        .spawn(move || {
            let mut adopted = 0u64;
            loop {
                match channel.receive() {
                    Ok(Some((Message::Connection { plugin, pending }, Some(fd)))) => {
                        let pending = match channel.receive_bytes(pending) {
                            Ok(bytes) => bytes,
                            Err(err) => {
                                tracing::warn!("hand-over from pid {pid} broke: {err}");
                                return;
                            }
                        };
                        node.adopt(std::os::unix::net::UnixStream::from(fd), &plugin, pending);
                        adopted += 1;
                    }
                    Ok(Some((Message::Done, _))) | Ok(None) => {
                        tracing::info!("the daemon before (pid {pid}) handed over {adopted} connections and is done");
                        return;
                    }
                    Ok(Some((other, _))) => {
                        tracing::warn!("unexpected hand-over message from pid {pid}: {other:?}");
                    }
                    Err(err) => {
                        tracing::warn!("hand-over from pid {pid} broke: {err}");
                        return;
                    }
                }
            }
        })
        .map_err(start_error("the hand-over thread"))?;
    Ok(())
}

/// Accepts successors on the channel, for the main thread.
fn accept_successors(
    listener: ChannelListener,
    wake: mpsc::Sender<Wake>,
) -> Result<(), LifecycleError> {
    std::thread::Builder::new()
        .name("handover".into())
        .spawn(move || {
            loop {
                match listener.accept() {
                    Ok(channel) => {
                        if wake.send(Wake::Successor(channel)).is_err() {
                            return;
                        }
                    }
                    Err(err) => {
                        tracing::warn!("hand-over channel: {err}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map_err(start_error("the hand-over listener"))?;
    Ok(())
}

/// Answers a successor: passes the lock (or says it was released), and once the successor
/// serves, stops accepting on its sockets and starts handing connections to it. Returns
/// the thread that sends them, which says done when the hand-over ends.
fn hand_over(
    channel: Channel,
    lock: Option<ServeLock>,
    node: &Arc<dyn Node>,
) -> Result<std::thread::JoinHandle<()>, HandoverError> {
    let pid = std::process::id();
    match channel.receive()? {
        Some((Message::Takeover, _)) => match &lock {
            Some(lock) => {
                let fd = std::os::fd::OwnedFd::from(lock.file().try_clone()?);
                channel.send(&Message::Lock { pid }, Some(&fd))?;
            }
            None => channel.send(&Message::Released { pid }, None)?,
        },
        Some((Message::Succeed, _)) => channel.send(&Message::Released { pid }, None)?,
        other => return Err(HandoverError::Protocol(format!("{other:?}"))),
    }
    // Our own hold on the lock ends here: the successor's descriptor holds it.
    drop(lock);
    let plugins = match channel.receive()? {
        Some((Message::Ready { plugins }, _)) => plugins,
        other => return Err(HandoverError::Protocol(format!("{other:?}"))),
    };
    tracing::info!(
        "a successor serves {} now; finishing this daemon's events and handing over the rest",
        plugins.join(", ")
    );
    node.stop_accepting(&plugins);
    let (handed, to_send) = mpsc::channel::<Handed>();
    let sender = std::thread::Builder::new()
        .name("handing-over".into())
        .spawn(move || {
            let mut sent = 0u64;
            for Handed {
                stream,
                plugin,
                pending,
                slot: _,
            } in to_send
            {
                match channel.send_connection(stream, &plugin, &pending) {
                    Ok(()) => sent += 1,
                    Err(err) => {
                        tracing::warn!(plugin = %plugin, "could not hand a connection over: {err}")
                    }
                }
            }
            tracing::info!("handed {sent} connections over");
            let _ = channel.send(&Message::Done, None);
        })?;
    node.hand_over_to(handed);
    Ok(sender)
}

/// Starts the shutdown: this daemon finishes its events, serving everything that comes
/// meanwhile (a refusal would let the request through without the plugin), and hands the
/// rest to a successor if one comes. A thread waits on the counters (no polling) and tells
/// the main thread when the events are done, then when the connections are (handed over,
/// or closed by Kong). Returns the deadline.
fn begin_shutdown(
    node: &Arc<dyn Node>,
    settings: &Settings,
    wake: &mpsc::Sender<Wake>,
) -> Result<Instant, LifecycleError> {
    node.begin_shutdown();
    tracing::info!(
        "shutting down: finishing {} events in flight (at most {}s)",
        node.live_events(),
        settings.drain_timeout.as_secs()
    );
    let deadline = Instant::now() + settings.drain_timeout;
    let (node, wake) = (node.clone(), wake.clone());
    std::thread::Builder::new()
        .name("drain".into())
        .spawn(move || {
            node.wait_for_events(deadline);
            if wake.send(Wake::EventsDone).is_err() {
                return;
            }
            if node.wait_for_connections(deadline) == 0 {
                let _ = wake.send(Wake::ConnectionsDone);
            }
        })
        .map_err(start_error("the drain thread"))?;
    Ok(deadline)
}

/// Sends SIGTERM, SIGINT and SIGHUP to the main thread as [`Wake::Signal`].
fn forward_signals(wake: mpsc::Sender<Wake>) -> Result<(), LifecycleError> {
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(start_error("the signal handlers"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if wake.send(Wake::Signal(signal)).is_err() {
                    return;
                }
            }
        })
        .map_err(start_error("the signal thread"))?;
    Ok(())
}

/// Creates `dir` (and its parents) if missing: with `mode`, a directory only the daemon's
/// user may use, with exactly that mode; else one only its owner may write (0755).
fn create_dir(dir: &Path, mode: Option<u32>) -> Result<(), LifecycleError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let error = |source| LifecycleError::Directory {
        path: dir.to_owned(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode.unwrap_or(0o755))
        .create(dir)
        .map_err(error)?;
    if let Some(mode) = mode {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(error)?;
    }
    Ok(())
}

/// Refuses a prefix that someone other than root or the daemon's user could change: they
/// could hold the serve lock or put their own sockets where Kong connects.
fn check_prefix(prefix: &Path) -> Result<(), LifecycleError> {
    use crate::loader::secure_path::{CheckError, check_chain};
    match check_chain(prefix) {
        Ok(_) => Ok(()),
        Err(CheckError::Insecure(err)) => Err(LifecycleError::InsecurePrefix {
            path: err.path,
            reason: err.reason,
        }),
        Err(CheckError::Io { path, source }) => Err(LifecycleError::Directory { path, source }),
    }
}

/// Kong starts the daemon; when Kong is gone, so is the daemon. The kernel sends SIGTERM
/// when the parent process exits, which takes the normal shutdown path.
fn exit_with_parent() {
    // SAFETY: getppid(2) and prctl(2) with PR_SET_PDEATHSIG have no memory preconditions.
    unsafe {
        let parent = libc::getppid();
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        // The parent may have died before prctl: then the signal never comes.
        if libc::getppid() != parent {
            libc::raise(libc::SIGTERM);
        }
    }
}

/// A group name or number, as a gid.
fn resolve_group(group: &str) -> Result<u32, LifecycleError> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let unknown = || LifecycleError::UnknownGroup(group.to_owned());
    let name = std::ffi::CString::new(group).map_err(|_| unknown())?;
    // SAFETY: getgrnam(3) with a valid C string; the result is read before any other call.
    let entry = unsafe { libc::getgrnam(name.as_ptr()) };
    if entry.is_null() {
        return Err(unknown());
    }
    // SAFETY: non-null result of getgrnam.
    Ok(unsafe { (*entry).gr_gid })
}
