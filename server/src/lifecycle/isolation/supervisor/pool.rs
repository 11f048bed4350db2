//! A socket's worker process, across its restarts (a [`Pool`] of one current [`Worker`]
//! and the older ones still finishing their events), and what the supervisor does when one
//! dies.

use std::{
    collections::{HashMap, VecDeque},
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::{net::UnixStream, process::ExitStatusExt},
    },
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use kong_rust_plugin_abi::OnFailure;

use super::{
    Ctx,
    answers::{self, Outcome},
    images::Image,
};
use crate::{
    board::Board,
    lifecycle::handover::{Channel, HandoverError},
    lifecycle::isolation::{
        messages::{BOARD_FD, CHANNEL_FD, Down, FIRST_LIBRARY_FD, Library, Sender, Up},
        worker,
    },
    loader::probe,
    serving::Handed,
    waitable::WaitableCount,
};

/// Deaths within this window count towards the back-off.
const DEATH_WINDOW: Duration = Duration::from_secs(10);
/// Deaths within the window restarted at once; beyond them, the restart waits.
const FREE_RESTARTS: usize = 10;
/// The longest wait before a restart (so a plugin is back within a second).
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// A connection the supervisor holds: its own copy of the descriptor, kept as long as the
/// connection lives, to answer for it if its worker dies.
pub struct Conn {
    /// The supervisor's copy.
    pub fd: OwnedFd,
    /// The socket it came on (a plugin name, or `*`).
    pub socket: Arc<str>,
    /// Bytes read from it and not answered (handed over by a predecessor or a worker).
    pub pending: Vec<u8>,
    counted: Counted,
}

/// A connection's place in the supervisor's count.
struct Counted(Arc<WaitableCount>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.remove();
    }
}

impl Conn {
    /// Holds `fd`, counted in `count`.
    pub fn new(
        fd: OwnedFd,
        socket: Arc<str>,
        pending: Vec<u8>,
        count: &Arc<WaitableCount>,
    ) -> Conn {
        count.add();
        Conn {
            fd,
            socket,
            pending,
            counted: Counted(count.clone()),
        }
    }

    /// Closes it under Kong (nothing can serve it).
    pub fn close(self) {
        let _ = rustix::net::shutdown(&self.fd, rustix::net::Shutdown::Both);
    }
}

/// One worker process.
pub struct Worker {
    /// Its generation in the pool (1, 2, ...).
    pub generation: u64,
    /// Its pid.
    pub pid: u32,
    child: Mutex<Option<Child>>,
    sender: Sender,
    /// Its board (read when it dies, and for stuck requests).
    pub board: Board,
    ready: AtomicBool,
    conns: Mutex<HashMap<u32, Conn>>,
    free: Mutex<Vec<u32>>,
    /// Plugin slot numbers in the worker, by name.
    slots: Mutex<HashMap<u32, String>>,
    /// It said its events are done (after Shutdown or Retire).
    pub events_done: AtomicBool,
    retiring: AtomicBool,
    /// It is ended on purpose (exit asked, or killed by the supervisor).
    exiting: AtomicBool,
    /// Already being replaced for a stuck request.
    pub replacing: AtomicBool,
    reader: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The coarse clock last seen on its board, and when it last moved.
    pub clock: Mutex<(u64, Instant)>,
}

impl Worker {
    /// Sends a message (and a descriptor, and bytes) to it.
    pub fn send(
        &self,
        message: &Down,
        fd: Option<&OwnedFd>,
        bytes: &[u8],
    ) -> Result<(), HandoverError> {
        self.sender.send(message, fd, bytes)
    }

    /// Whether it serves (it said Ready).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Whether it is being retired.
    pub fn is_retiring(&self) -> bool {
        self.retiring.load(Ordering::Relaxed)
    }

    /// Connections it holds.
    pub fn connections(&self) -> usize {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The plugin in board slot `slot` of this worker.
    pub fn plugin_in_slot(&self, slot: u16) -> Option<String> {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&u32::from(slot))
            .cloned()
    }

    /// Passes `conn` to it. On failure (it died meanwhile), the connection stays with it
    /// and its death routes it on.
    fn give(&self, mut conn: Conn) -> Result<(), Conn> {
        let Some(slot) = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop() else {
            tracing::warn!(
                plugin = %conn.socket,
                "refusing a connection: no free connection slot in the worker (--max-connections-per-plugin)"
            );
            conn.close();
            return Ok(());
        };
        let Ok(copy) = conn.fd.try_clone() else {
            self.free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(slot);
            return Err(conn);
        };
        let pending = std::mem::take(&mut conn.pending);
        let socket = conn.socket.to_string();
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(slot, conn);
        let message = Down::Connection {
            slot,
            plugin: socket,
            pending: pending.len(),
        };
        // If this fails the worker is gone: its death settles the connection.
        let _ = self.sender.send(&message, Some(&copy), &pending);
        Ok(())
    }

    /// The connection in `slot` is done in the worker.
    fn release(&self, slot: u32) {
        let conn = self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&slot);
        if conn.is_some() {
            self.free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(slot);
        }
    }

    /// Ends the process (if it still runs) and reaps it.
    fn reap(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let child = child.as_mut()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        // It closed its channel: it is exiting. Give it a moment, then make sure.
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(1));
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// Kills it now (its death is handled by its reader thread).
    pub fn kill(&self) {
        self.exiting.store(true, Ordering::Relaxed);
        if let Some(child) = self
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            let _ = child.kill();
        }
    }

    /// Waits for its reader thread (its death handled).
    pub fn join(&self) {
        let reader = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(reader) = reader {
            let _ = reader.join();
        }
    }
}

/// What the status shows of a pool.
#[derive(Debug, Clone, Default)]
pub struct PoolFigures {
    /// The current worker's pid (0: none).
    pub pid: u32,
    /// Whether it serves.
    pub up: bool,
    /// Its generation.
    pub generation: u64,
    /// Workers that died by accident.
    pub crashes: u64,
    /// Workers started after the first.
    pub restarts: u64,
    /// How the last one died.
    pub last_crash: Option<String>,
    /// How long the last restart took, death to serving.
    pub last_restart_ms: Option<u64>,
    /// Connections held.
    pub connections: usize,
}

struct State {
    generation: u64,
    current: Option<Arc<Worker>>,
    retiring: Vec<Arc<Worker>>,
    waiting: Vec<Conn>,
    deaths: VecDeque<Instant>,
    restart_due: Option<Instant>,
    died_at: Option<Instant>,
    figures: PoolFigures,
    stopped: bool,
}

/// The worker of one socket, across restarts.
pub struct Pool {
    /// The socket it serves: a plugin name, or `*`.
    pub key: Arc<str>,
    images: Mutex<Vec<Arc<Image>>>,
    state: Mutex<State>,
    ctx: Weak<Ctx>,
}

impl Pool {
    /// A pool for socket `key`, loading `images`; no worker yet.
    pub fn new(key: &str, images: Vec<Arc<Image>>, ctx: &Arc<Ctx>) -> Arc<Pool> {
        Arc::new(Pool {
            key: Arc::from(key),
            images: Mutex::new(images),
            state: Mutex::new(State {
                generation: 0,
                current: None,
                retiring: Vec::new(),
                waiting: Vec::new(),
                deaths: VecDeque::new(),
                restart_due: None,
                died_at: None,
                figures: PoolFigures::default(),
                stopped: false,
            }),
            ctx: Arc::downgrade(ctx),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The plugin names its workers serve.
    pub fn plugins(&self) -> Vec<String> {
        self.images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|i| i.name().to_owned())
            .collect()
    }

    /// Whether it loads plugin `name`.
    pub fn serves(&self, name: &str) -> bool {
        self.plugins().iter().any(|p| p == name)
    }

    /// Its images now.
    pub fn images(&self) -> Vec<Arc<Image>> {
        self.images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every live worker: the current one first.
    pub fn workers(&self) -> Vec<Arc<Worker>> {
        let state = self.state();
        state
            .current
            .iter()
            .chain(state.retiring.iter())
            .cloned()
            .collect()
    }

    /// The current worker, if it serves.
    pub fn current(&self) -> Option<Arc<Worker>> {
        self.state().current.clone().filter(|w| w.is_ready())
    }

    /// What the status shows.
    pub fn figures(&self) -> PoolFigures {
        let state = self.state();
        let mut figures = state.figures.clone();
        if let Some(current) = &state.current {
            figures.pid = current.pid;
            figures.up = current.is_ready();
            figures.generation = current.generation;
        }
        figures.connections = state.waiting.len()
            + state
                .current
                .iter()
                .chain(state.retiring.iter())
                .map(|w| w.connections())
                .sum::<usize>();
        figures
    }

    /// Passes `conn` to the current worker; keeps it until one serves (starting one if
    /// none runs); hands it to the successor daemon while handing over.
    pub fn route(self: &Arc<Self>, conn: Conn) {
        let Some(ctx) = self.ctx.upgrade() else {
            conn.close();
            return;
        };
        let conn = match ctx.to_successor(conn) {
            None => return,
            Some(conn) => conn,
        };
        let mut state = self.state();
        if state.stopped {
            drop(state);
            conn.close();
            return;
        }
        match state.current.clone() {
            Some(worker) if worker.is_ready() => {
                drop(state);
                if let Err(conn) = worker.give(conn) {
                    self.state().waiting.push(conn);
                }
            }
            current => {
                state.waiting.push(conn);
                let idle = current.is_none() && state.restart_due.is_none();
                drop(state);
                if idle {
                    self.spawn(&ctx);
                }
            }
        }
    }

    /// Starts a new current worker.
    pub fn spawn(self: &Arc<Self>, ctx: &Arc<Ctx>) {
        let images = self.images();
        let mut state = self.state();
        if state.stopped || ctx.is_handing_over() {
            return;
        }
        state.restart_due = None;
        state.generation += 1;
        let generation = state.generation;
        match start_worker(self, ctx, &images, generation) {
            Ok(worker) => {
                if generation > 1 {
                    state.figures.restarts += 1;
                }
                state.current = Some(worker);
            }
            Err(err) => {
                tracing::error!(plugin = %self.key, "cannot start a worker process: {err}");
                drop(state);
                self.restart_later(ctx, Duration::from_millis(500));
            }
        }
    }

    /// Starts a worker after `delay` (back-off).
    fn restart_later(self: &Arc<Self>, ctx: &Arc<Ctx>, delay: Duration) {
        let due = Instant::now() + delay;
        self.state().restart_due = Some(due);
        let (pool, ctx) = (self.clone(), Arc::downgrade(ctx));
        let spawned = std::thread::Builder::new()
            .name("restart".into())
            .spawn(move || {
                std::thread::sleep(delay);
                let Some(ctx) = ctx.upgrade() else { return };
                let still_due = pool.state().restart_due == Some(due);
                if still_due {
                    pool.spawn(&ctx);
                }
            });
        if spawned.is_err() {
            self.state().restart_due = None;
        }
    }

    /// Replaces the current worker by a new one (a new build, or a stuck request): the old
    /// one finishes its events and returns its connections, which go to the new one; it
    /// is killed if it has not finished within the drain timeout (its requests still in
    /// flight are then answered, failing closed).
    pub fn replace(self: &Arc<Self>, ctx: &Arc<Ctx>, images: Option<Vec<Arc<Image>>>) {
        if let Some(images) = images {
            *self.images.lock().unwrap_or_else(|e| e.into_inner()) = images;
        }
        let old = {
            let mut state = self.state();
            let old = state.current.take();
            if let Some(old) = &old {
                state.retiring.push(old.clone());
            }
            old
        };
        self.spawn(ctx);
        if let Some(old) = old {
            retire(&old, Some(ctx.drain_timeout()));
        }
    }

    /// A worker said Ready.
    fn ready(&self, worker: &Arc<Worker>, plugins: Vec<(u32, String)>) {
        *worker.slots.lock().unwrap_or_else(|e| e.into_inner()) = plugins.into_iter().collect();
        worker.ready.store(true, Ordering::Release);
        let (waiting, took) = {
            let mut state = self.state();
            if !state
                .current
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, worker))
            {
                return;
            }
            let took = state.died_at.take().map(|died| died.elapsed());
            if let Some(took) = took {
                state.figures.last_restart_ms = Some(took.as_millis() as u64);
            }
            (std::mem::take(&mut state.waiting), took)
        };
        match took {
            Some(took) => tracing::info!(
                plugin = %self.key,
                pid = worker.pid,
                "worker serving again {} ms after the last one died",
                took.as_millis()
            ),
            None => tracing::debug!(plugin = %self.key, pid = worker.pid, "worker serving"),
        }
        if let Some(ctx) = self.ctx.upgrade() {
            ctx.metrics.worker_ready(&self.key, took);
        }
        for conn in waiting {
            if let Err(conn) = worker.give(conn) {
                self.state().waiting.push(conn);
            }
        }
    }

    /// A worker's channel closed: it died (or exited as asked). Settles its connections
    /// and starts another if it was the current one.
    fn died(self: &Arc<Self>, worker: &Arc<Worker>) {
        let status = worker.reap();
        let ctx = self.ctx.upgrade();
        let deliberate = worker.exiting.load(Ordering::Relaxed);
        let cause = describe(status);
        let was_current = {
            let mut state = self.state();
            let was_current = state
                .current
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, worker));
            if was_current {
                state.current = None;
            } else {
                state.retiring.retain(|w| !Arc::ptr_eq(w, worker));
            }
            if !deliberate {
                let now = Instant::now();
                state.figures.crashes += 1;
                state.figures.last_crash = Some(cause.clone());
                if was_current {
                    state.died_at = Some(now);
                }
                state.deaths.push_back(now);
                while state
                    .deaths
                    .front()
                    .is_some_and(|&t| now.duration_since(t) > DEATH_WINDOW)
                {
                    state.deaths.pop_front();
                }
            }
            was_current
        };
        let Some(ctx) = ctx else { return };
        if !deliberate {
            ctx.crashed(self, worker, &cause);
        }
        // Start the next one first: it loads while the connections are settled.
        let restart = was_current && !self.state().stopped && !ctx.is_handing_over();
        if restart {
            let delay = backoff(self.state().deaths.len());
            if delay.is_zero() {
                self.spawn(&ctx);
            } else {
                tracing::warn!(
                    plugin = %self.key,
                    "the worker keeps dying; next start in {} ms",
                    delay.as_millis()
                );
                self.restart_later(&ctx, delay);
            }
        }
        let conns: Vec<(u32, Conn)> = worker
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        let (mut answered, mut closed) = (0usize, 0usize);
        let mut survivors = Vec::new();
        for (slot, conn) in conns {
            let view = worker
                .board
                .slot(slot)
                .map(|s| s.view())
                .unwrap_or_else(idle_view);
            let plugin = view
                .plugin
                .and_then(|p| worker.plugin_in_slot(p))
                .unwrap_or_else(|| self.key.to_string());
            let policy = ctx.policy_of(&plugin);
            match answers::settle_connection(&conn.fd, &view, &plugin, policy, &cause, &ctx.ids) {
                Outcome::Idle => survivors.push(conn),
                Outcome::Answered(action) => {
                    answered += 1;
                    ctx.metrics.answered(&plugin, action);
                    survivors.push(conn);
                }
                Outcome::Closed => {
                    closed += 1;
                    ctx.metrics.answered(&plugin, "closed");
                }
            }
        }
        if deliberate {
            if answered + closed > 0 {
                tracing::warn!(
                    plugin = %self.key,
                    pid = worker.pid,
                    "stopped a worker with {answered} requests in flight (answered, failing closed) and {closed} connections in the middle of a message (closed)"
                );
            }
        } else {
            tracing::error!(
                plugin = %self.key,
                pid = worker.pid,
                "the worker process died ({cause}); {answered} requests in flight were answered in its place (failing closed), {closed} connections caught in the middle of a message were closed; {}",
                if restart { "restarting it" } else { "not restarting it" }
            );
        }
        for conn in survivors {
            self.route(conn);
        }
    }

    /// Whether a new connection for this pool should start a worker at once (every pool
    /// but the socket of every plugin starts its worker with the daemon).
    pub fn stop(&self) {
        self.state().stopped = true;
    }

    /// Connections waiting for a worker, taken (to hand them to a successor).
    pub fn take_waiting(&self) -> Vec<Conn> {
        std::mem::take(&mut self.state().waiting)
    }
}

/// The wait before restarting a worker after `deaths` recent deaths.
fn backoff(deaths: usize) -> Duration {
    if deaths <= FREE_RESTARTS {
        return Duration::ZERO;
    }
    let doublings = (deaths - FREE_RESTARTS - 1).min(8) as u32;
    (Duration::from_millis(50) * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

/// A slot view for a connection whose slot is unknown: idle.
fn idle_view() -> crate::board::SlotView {
    crate::board::ConnSlot::default().view()
}

/// How a worker ended, for the log and the metrics.
pub fn describe(status: Option<ExitStatus>) -> String {
    match status {
        Some(status) => match (status.signal(), status.code()) {
            (Some(signal), _) => format!("killed by {}", probe::signal_name(signal)),
            (None, Some(code)) => format!("exited with status {code}"),
            _ => "ended".into(),
        },
        None => "ended (status unknown)".into(),
    }
}

/// Asks `worker` to finish its events and return its connections; kills it after
/// `deadline` if it is still there (`None`: the daemon's drain decides).
pub fn retire(worker: &Arc<Worker>, deadline: Option<Duration>) {
    worker.retiring.store(true, Ordering::Relaxed);
    let _ = worker.send(&Down::Retire, None, &[]);
    let Some(deadline) = deadline else { return };
    let weak = Arc::downgrade(worker);
    let _ = std::thread::Builder::new()
        .name("retire".into())
        .spawn(move || {
            std::thread::sleep(deadline);
            if let Some(worker) = weak.upgrade()
                && !worker.exiting.load(Ordering::Relaxed)
            {
                tracing::warn!(
                    pid = worker.pid,
                    "a retired worker has not finished within the drain timeout; stopping it"
                );
                worker.kill();
            }
        });
}

/// Starts worker process `generation` of `pool`.
fn start_worker(
    pool: &Arc<Pool>,
    ctx: &Arc<Ctx>,
    images: &[Arc<Image>],
    generation: u64,
) -> std::io::Result<Arc<Worker>> {
    let slots = if &*pool.key == crate::sockets::EVERY_PLUGIN {
        ctx.settings.limits.max_connections
    } else {
        ctx.settings
            .max_connections_per_plugin
            .min(ctx.settings.limits.max_connections)
    } + 1;
    let (board, board_fd) = Board::create_shared(slots)?;
    let (ours, theirs) = Channel::pair().map_err(std::io::Error::other)?;
    let mut fds = vec![
        (theirs.as_fd().as_raw_fd(), CHANNEL_FD),
        (board_fd.as_raw_fd(), BOARD_FD),
    ];
    let mut libraries = Vec::new();
    for (i, image) in images.iter().enumerate() {
        let fd = FIRST_LIBRARY_FD + i as i32;
        fds.push((image.fd.as_raw_fd(), fd));
        libraries.push(Library {
            fd,
            path: image.path.clone(),
            modified: worker::unix_seconds(image.modified),
        });
    }
    let mut command = Command::new(probe::own_binary());
    command
        .arg(worker::SUBCOMMAND)
        .arg(&*pool.key)
        // A worker that aborts is restarted (its requests failed closed): a panic the
        // plugin cannot recover from may abort it rather than park a thread for good.
        .env(kong_rust_pdk::__private::ABORT_ALLOWED_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    crate::inherit::at_fixed_numbers(&mut command, fds);
    if let Some(limit) = ctx.settings.worker_memory_limit {
        crate::inherit::limit_address_space(&mut command, limit);
    }
    let child = command.spawn()?;
    drop(theirs);
    drop(board_fd);
    let config = ctx.worker_config(&pool.key, libraries, &pool.plugins());
    let sender = Sender::new(ours);
    sender
        .send(&Down::Start(Box::new(config)), None, &[])
        .map_err(std::io::Error::other)?;
    let pid = child.id();
    let worker = Arc::new(Worker {
        generation,
        pid,
        child: Mutex::new(Some(child)),
        sender,
        board,
        ready: AtomicBool::new(false),
        conns: Mutex::new(HashMap::new()),
        free: Mutex::new((0..slots as u32).rev().collect()),
        slots: Mutex::new(HashMap::new()),
        events_done: AtomicBool::new(false),
        retiring: AtomicBool::new(false),
        exiting: AtomicBool::new(false),
        replacing: AtomicBool::new(false),
        reader: Mutex::new(None),
        clock: Mutex::new((0, Instant::now())),
    });
    let reader = {
        let (pool, worker, ctx) = (pool.clone(), worker.clone(), Arc::downgrade(ctx));
        std::thread::Builder::new()
            .name(format!("worker-{}", pool.key))
            .spawn(move || read(&pool, &worker, &ctx))?
    };
    *worker.reader.lock().unwrap_or_else(|e| e.into_inner()) = Some(reader);
    tracing::debug!(plugin = %pool.key, pid, generation, "started a worker process");
    Ok(worker)
}

/// A worker's messages, until its channel closes.
fn read(pool: &Arc<Pool>, worker: &Arc<Worker>, ctx: &Weak<Ctx>) {
    loop {
        let (message, fd) = match worker.sender.channel().receive_json::<Up>() {
            Ok(Some(received)) => received,
            Ok(None) => break,
            Err(err) => {
                tracing::debug!(plugin = %pool.key, "worker channel: {err}");
                break;
            }
        };
        let Some(ctx) = ctx.upgrade() else { break };
        match message {
            Up::Ready { pid: _, plugins } => pool.ready(worker, plugins),
            Up::Released { slot } => {
                worker.release(slot);
                if worker.is_retiring()
                    && worker.events_done.load(Ordering::Relaxed)
                    && worker.connections() == 0
                {
                    worker.exiting.store(true, Ordering::Relaxed);
                    let _ = worker.send(&Down::Exit, None, &[]);
                }
            }
            Up::Returned { plugin, pending } => {
                let Ok(bytes) = worker.sender.channel().receive_bytes(pending) else {
                    break;
                };
                if let Some(fd) = fd {
                    ctx.route(Conn::new(
                        fd,
                        Arc::from(plugin.as_str()),
                        bytes,
                        &ctx.connections,
                    ));
                }
            }
            Up::Answer { id, len } => {
                let Ok(bytes) = worker.sender.channel().receive_bytes(len) else {
                    break;
                };
                ctx.queries.answered(id, bytes);
            }
            Up::StatusRequest { id } => {
                // Gathering asks every worker, this one included: not on this thread.
                let (worker, ctx) = (worker.clone(), ctx.clone());
                let _ = std::thread::Builder::new()
                    .name("status".into())
                    .spawn(move || {
                        let status = serde_json::to_vec(&ctx.status()).unwrap_or_default();
                        let _ = worker.send(
                            &Down::StatusReply {
                                id,
                                len: status.len(),
                            },
                            None,
                            &status,
                        );
                    });
            }
            Up::Configured {
                plugin,
                fingerprint,
                config,
            } => ctx.saw_configuration(&plugin, fingerprint, config),
            Up::EventsDone => {
                worker.events_done.store(true, Ordering::Relaxed);
                ctx.events_changed();
                if worker.is_retiring() {
                    let _ = worker.send(&Down::ReturnIdle, None, &[]);
                    if worker.connections() == 0 {
                        worker.exiting.store(true, Ordering::Relaxed);
                        let _ = worker.send(&Down::Exit, None, &[]);
                    }
                }
            }
        }
    }
    pool.died(worker);
    if let Some(ctx) = ctx.upgrade() {
        ctx.events_changed();
    }
}

/// The failure policy of a plugin, as its manifest declares it.
pub fn policy_of(images: &[Arc<Image>], plugin: &str) -> OnFailure {
    images
        .iter()
        .find(|i| i.name() == plugin)
        .map_or(OnFailure::FailClosed, |i| i.manifest.on_failure)
}

/// A connection taken over: the stream as a [`Handed`] for the successor daemon.
pub fn handed(conn: Conn) -> Handed {
    let Conn {
        fd,
        socket,
        pending,
        counted: _counted,
    } = conn;
    Handed {
        stream: UnixStream::from(fd),
        plugin: socket,
        pending,
        slot: None,
    }
}
