//! The daemon's life: wait for the serve lock (standing by while another daemon serves the
//! same plugins directory), load the plugins, bind their sockets, serve until SIGTERM,
//! reload on SIGHUP, then let the events in flight finish.
//!
//! Everything here is a library function so that tests and other front ends can run a
//! daemon; `main.rs` only parses the command line.

pub mod housekeeping;
pub mod reload;
pub mod serve_lock;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
    time::Instant,
};

use signal_hook::{
    consts::{SIGHUP, SIGINT, SIGTERM},
    iterator::Signals,
};

use crate::{
    admin::{self, MetricsSource},
    daemon::Daemon,
    listener::{self, Listener, SocketAccess, SocketError, Threading},
    loader::{self, LoadError, LoadOptions},
    metrics::{Gauges, PluginGauge},
    settings::Settings,
};
use serve_lock::ServeLock;

/// Why the daemon could not serve.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The plugins directory is unusable.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// No file of the plugins directory is a usable plugin.
    #[error("no usable plugin in {0}; nothing to serve")]
    NoPlugins(PathBuf),
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
    /// A plugin socket could not be set up.
    #[error(transparent)]
    Socket(#[from] SocketError),
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
    /// The serve lock is ours.
    Locked(std::io::Result<ServeLock>),
    /// A signal arrived.
    Signal(i32),
}

/// Runs the daemon until SIGTERM or SIGINT (or, for a standby, until then without ever
/// serving).
pub fn run(settings: &Settings) -> Result<(), LifecycleError> {
    let options = LoadOptions {
        allow_insecure: settings.allow_insecure_plugins,
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
    forward_signals(wake.clone())?;
    exit_with_parent();
    create_dir(&settings.kong_prefix)?;
    if !settings.allow_insecure_prefix {
        check_prefix(&settings.kong_prefix)?;
    }
    crate::log_throttle::set_per_second(settings.max_warnings_per_second);

    let Some(lock) = wait_for_serve_lock(settings, wake, &woken)? else {
        tracing::info!("standby stopped");
        return Ok(());
    };
    // Load now, not before the wait: a standby that takes over serves current files.
    let scan = loader::scan(&settings.plugins_directory, &options)?;
    for failure in &scan.failures {
        tracing::error!("skipped: {failure}");
    }
    if scan.plugins.is_empty() {
        return Err(LifecycleError::NoPlugins(
            settings.plugins_directory.clone(),
        ));
    }
    for plugin in scan.plugins.values() {
        let manifest = &plugin.manifest;
        tracing::info!(
            plugin = %manifest.name,
            version = %manifest.version,
            priority = manifest.priority,
            phases = ?manifest.phases.iter().map(|p| p.name()).collect::<Vec<_>>(),
            on_failure = manifest.on_failure.label(),
            "loaded {}",
            plugin.path.display()
        );
    }
    let daemon = Arc::new(Daemon::new(scan.plugins.into_values(), settings.limits));
    let threading = match settings.event_loops {
        0 => Threading::PerConnection,
        n => Threading::EventLoops(n),
    };
    let server =
        Listener::new(daemon.clone(), threading).map_err(start_error("the event loops"))?;
    for plugin in daemon.plugins() {
        let scope = daemon.scope_of(plugin.name()).expect("a served plugin");
        let socket = listener::bind(&settings.kong_prefix, plugin.name(), scope, access)?;
        server
            .listen(socket)
            .map_err(start_error("an accept thread"))?;
    }
    if let Some(addr) = settings.metrics_listen {
        let view = Arc::new(MetricsView {
            daemon: daemon.clone(),
            listener: server.clone(),
        });
        admin::serve(addr, view).map_err(start_error("the metrics listener"))?;
    }
    housekeeping::start(daemon.clone(), settings.instance_idle_timeout)
        .map_err(start_error("the housekeeping thread"))?;

    for wake in woken {
        match wake {
            Wake::Signal(SIGHUP) => {
                tracing::info!(
                    "SIGHUP: rescanning {}",
                    settings.plugins_directory.display()
                );
                let reloaded = reload::reload(
                    &server,
                    &settings.plugins_directory,
                    &settings.kong_prefix,
                    access,
                    &options,
                );
                tracing::info!(
                    "reload done: {} added, {} upgraded, {} failed",
                    reloaded.added.len(),
                    reloaded.upgraded.len(),
                    reloaded.failed
                );
            }
            Wake::Signal(_) => break,
            Wake::Locked(_) => {}
        }
    }
    drain(&daemon, settings);
    drop(lock);
    Ok(())
}

/// After SIGTERM: let the events in flight finish (Kong still sends their Steps), up to
/// the drain timeout; waits on the last event's end, not by polling.
fn drain(daemon: &Daemon, settings: &Settings) {
    daemon.begin_shutdown();
    let timeout = settings.drain_timeout;
    tracing::info!(
        "shutting down: finishing {} events in flight (at most {}s)",
        daemon.live_events(),
        timeout.as_secs()
    );
    let left = daemon.wait_for_events(Instant::now() + timeout);
    if left > 0 {
        tracing::warn!(
            "stopped with {left} events unfinished after {}s",
            timeout.as_secs()
        );
    } else {
        tracing::info!("stopped");
    }
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

/// Takes the serve lock, standing by while another daemon holds it: a thread waits in the
/// kernel for the lock while this one waits for signals. `None` when SIGTERM or SIGINT came
/// first (a standby has nothing to reload: it loads the plugins when it takes over).
fn wait_for_serve_lock(
    settings: &Settings,
    wake: mpsc::Sender<Wake>,
    woken: &mpsc::Receiver<Wake>,
) -> Result<Option<ServeLock>, LifecycleError> {
    let path = serve_lock::lock_path(&settings.kong_prefix, &settings.plugins_directory);
    let lock_error = |source| LifecycleError::Lock {
        path: path.clone(),
        source,
    };
    match serve_lock::try_acquire(&path).map_err(lock_error)? {
        serve_lock::Acquired::Serving(lock) => return Ok(Some(lock)),
        serve_lock::Acquired::Held { pid } => tracing::info!(
            "another daemon{} serves {} on {}; standing by to take over",
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
            settings.plugins_directory.display(),
            settings.kong_prefix.display()
        ),
    }
    let waiting_for = path.clone();
    std::thread::Builder::new()
        .name("serve-lock".into())
        .spawn(move || {
            let _ = wake.send(Wake::Locked(serve_lock::acquire(&waiting_for)));
        })
        .map_err(start_error("the lock thread"))?;
    loop {
        match woken.recv() {
            Ok(Wake::Locked(Ok(lock))) => {
                tracing::info!("the serving daemon is gone; taking over");
                return Ok(Some(lock));
            }
            Ok(Wake::Locked(Err(source))) => return Err(lock_error(source)),
            Ok(Wake::Signal(SIGHUP)) => {}
            Ok(Wake::Signal(_)) | Err(_) => return Ok(None),
        }
    }
}

/// Creates `dir` (and its parents) if missing, as a directory only its owner may write.
fn create_dir(dir: &Path) -> Result<(), LifecycleError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|source| LifecycleError::Directory {
            path: dir.to_owned(),
            source,
        })
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

/// The metrics endpoint's view of a running daemon.
struct MetricsView {
    daemon: Arc<Daemon>,
    listener: Arc<Listener>,
}

impl MetricsSource for MetricsView {
    fn render_metrics(&self) -> String {
        let gauges = Gauges {
            events_in_flight: self.daemon.live_events(),
            connections: self.listener.connections(),
            plugins: self
                .daemon
                .plugins()
                .iter()
                .map(|plugin| PluginGauge {
                    name: plugin.name().to_owned(),
                    version: plugin.manifest().version.clone(),
                    file: plugin.loaded().path.display().to_string(),
                    instances: self.daemon.instance_count(plugin),
                })
                .collect(),
        };
        self.daemon.metrics().render(&gauges)
    }
}
