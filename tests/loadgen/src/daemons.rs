//! The server processes `--spawn` starts: the first one, and with `--restarts` the
//! hand-overs, each a NEW process (the same command) started and then SIGTERM to the old
//! one, as Kong does on `kong reload` and restart.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// How long a server may take to exit once told to, at the end of a run, before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The spawned servers: the one serving now, and those told to stop.
pub struct Daemons {
    cmd: String,
    current: Child,
    /// Old servers by restart, each watched by a thread until it exits; it returns how
    /// long the exit took after SIGTERM (`None`: still running at the end of the run).
    old: Vec<JoinHandle<Option<Duration>>>,
    /// Set when the run is over: old servers still running get [`STOP_GRACE`], then SIGKILL.
    ending: Arc<AtomicBool>,
    /// Pids of the servers alive, for the `--max-seconds` bound.
    alive: Arc<Mutex<Vec<u32>>>,
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a child of ours.
    unsafe { libc::kill(pid as i32, signal) };
}

fn start(cmd: &str) -> anyhow::Result<Child> {
    Command::new("sh")
        .arg("-c")
        .arg(format!("exec {cmd}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("spawning `{cmd}`"))
}

impl Daemons {
    /// Starts `cmd` and waits until it accepts connections on `socket`.
    pub fn spawn(cmd: &str, socket: &Path, timeout: Duration) -> anyhow::Result<Daemons> {
        if socket.exists() {
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                bail!("{} is already served by another process", socket.display());
            }
            let _ = std::fs::remove_file(socket);
        }
        let child = start(cmd)?;
        let mut daemons = Daemons {
            cmd: cmd.to_owned(),
            alive: Arc::new(Mutex::new(vec![child.id()])),
            current: child,
            old: Vec::new(),
            ending: Arc::new(AtomicBool::new(false)),
        };
        let deadline = Instant::now() + timeout;
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            if let Ok(Some(status)) = daemons.current.try_wait() {
                bail!(
                    "`{cmd}` exited with {status} before opening {}",
                    socket.display()
                );
            }
            if Instant::now() > deadline {
                bail!("`{cmd}` did not open {} in time", socket.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(daemons)
    }

    /// The pid of the server serving now.
    pub fn pid(&self) -> u32 {
        self.current.id()
    }

    /// The pids alive, kept up to date for a watchdog.
    pub fn alive(&self) -> Arc<Mutex<Vec<u32>>> {
        self.alive.clone()
    }

    /// A hand-over: starts a new server (which may stand by until the old one lets go),
    /// then sends SIGTERM to the old one. Returns (old pid, new pid).
    pub fn restart(&mut self) -> anyhow::Result<(u32, u32)> {
        let new = start(&self.cmd)?;
        let new_pid = new.id();
        self.alive.lock().unwrap().push(new_pid);
        let mut old = std::mem::replace(&mut self.current, new);
        let old_pid = old.id();
        let told = Instant::now();
        signal(old_pid, libc::SIGTERM);
        let (ending, alive) = (self.ending.clone(), self.alive.clone());
        let watcher = std::thread::Builder::new()
            .name(format!("old-server-{old_pid}"))
            .spawn(move || {
                let mut ending_since = None;
                loop {
                    if let Ok(Some(_)) = old.try_wait() {
                        alive.lock().unwrap().retain(|&p| p != old_pid);
                        return ending_since.is_none().then(|| told.elapsed());
                    }
                    if ending.load(Ordering::Relaxed) {
                        let since = *ending_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > STOP_GRACE {
                            let _ = old.kill();
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })?;
        self.old.push(watcher);
        Ok((old_pid, new_pid))
    }

    /// Ends the restarts: old servers still running get a grace period, then SIGKILL.
    /// Returns, per restart, how long the old server took to exit after SIGTERM (`None`:
    /// it was still running when the run ended).
    pub fn finish_restarts(&mut self) -> Vec<Option<Duration>> {
        self.ending.store(true, Ordering::Relaxed);
        self.old
            .drain(..)
            .map(|watcher| watcher.join().unwrap_or(None))
            .collect()
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        self.finish_restarts();
        signal(self.current.id(), libc::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.current.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.current.kill();
        let _ = self.current.wait();
    }
}

/// `--restarts N --restart-every SECS`.
#[derive(Debug, Clone, Copy)]
pub struct RestartPlan {
    /// Between the start of the measured run and the first restart, and between restarts.
    pub every: Duration,
    /// How many.
    pub count: usize,
}

/// One restart, as it happened.
#[derive(Debug, Clone, Copy)]
pub struct Restarted {
    /// When the new server was started (the old one got SIGTERM right after).
    pub at: Instant,
    /// The server told to stop.
    pub old_pid: u32,
    /// The server started.
    pub new_pid: u32,
}

/// The thread that restarts the servers on schedule, and the window counter the workers
/// read to place each event (0 before the first restart, `i` from restart `i` on).
pub struct Restarter {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<anyhow::Result<Vec<Restarted>>>,
}

impl Restarter {
    /// Runs `plan` from `started` on, moving `window` forward as each restart begins.
    pub fn start(
        daemons: Arc<Mutex<Daemons>>,
        plan: RestartPlan,
        window: Arc<AtomicUsize>,
        started: Instant,
    ) -> anyhow::Result<Restarter> {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("restarter".into())
            .spawn(move || {
                let mut done = Vec::with_capacity(plan.count);
                for i in 1..=plan.count {
                    let due = started + plan.every * i as u32;
                    let wait = due.saturating_duration_since(Instant::now());
                    if !matches!(
                        stopped.recv_timeout(wait),
                        Err(mpsc::RecvTimeoutError::Timeout)
                    ) {
                        break;
                    }
                    let at = Instant::now();
                    window.store(i, Ordering::Relaxed);
                    let (old_pid, new_pid) = daemons.lock().unwrap().restart()?;
                    done.push(Restarted {
                        at,
                        old_pid,
                        new_pid,
                    });
                }
                Ok(done)
            })?;
        Ok(Restarter { stop, thread })
    }

    /// Stops restarting (the run is over) and returns the restarts done.
    pub fn finish(self) -> anyhow::Result<Vec<Restarted>> {
        let _ = self.stop.send(());
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the restarter panicked"))?
    }
}
