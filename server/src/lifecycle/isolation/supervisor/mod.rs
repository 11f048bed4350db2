//! The supervisor of `--isolation process`: the daemon process, which loads no plugin code.
//!
//! It takes the serve lock (the lifecycle does that for it, as for any daemon), checks and
//! probes every library (`images`), binds every plugin socket, and runs one worker
//! process per plugin library (`pool`; one more, started on first use, for the socket of
//! every plugin). It accepts Kong's connections and passes each to its plugin's worker
//! over the worker's channel (`SCM_RIGHTS`), keeping its own copy of the descriptor: Kong's
//! messages never pass through the supervisor, and while a worker restarts, connections
//! wait in the socket's backlog or with the supervisor, never refused.
//!
//! When a worker dies, the supervisor answers the requests it was handling (`answers`,
//! failing closed), remembers which configuration was running (`book`: twice within
//! the window quarantines it), starts the next worker at once (with a back-off if it keeps
//! dying) and passes it the connections. `plugin.GetStatus` and the metrics gather every
//! worker's figures (`gather`). A worker whose requests stay stuck past the stuck timeout
//! is replaced; so is one whose library is replaced on SIGHUP.

mod answers;
mod book;
mod gather;
mod images;
mod pool;

use std::{
    collections::{BTreeMap, HashMap},
    io,
    os::{fd::OwnedFd, unix::net::UnixStream},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use kong_rust_plugin_abi::OnFailure;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use serde_json::Value;

use book::Book;
use gather::{Queries, merge_metrics, merge_plugins, object};
use images::Image;
use pool::{Conn, Pool, Worker, handed};

use super::messages::{Down, Library, WorkerConfig};
use crate::{
    board::{ConnState, RequestKind},
    daemon::Scope,
    lifecycle::{LifecycleError, node::Node, reload::Reloaded},
    loader::probe::Probe,
    loader::{self, FileIdentity, LoadOptions},
    serving::Handed,
    settings::Settings,
    sockets::{self, PluginSocket, Replace, SocketAccess},
    waitable::WaitableCount,
};

/// What every part of the supervisor shares.
pub struct Ctx {
    settings: Settings,
    probe: Probe,
    access: SocketAccess,
    pools: Mutex<BTreeMap<String, Arc<Pool>>>,
    accepting: Mutex<HashMap<String, Arc<AtomicBool>>>,
    successor: Mutex<Option<mpsc::Sender<Handed>>>,
    handing_over: AtomicBool,
    shutting_down: AtomicBool,
    connections: Arc<WaitableCount>,
    book: Mutex<Book>,
    queries: Queries,
    metrics: SupervisorMetrics,
    ids: answers::Ids,
    events: (Mutex<()>, Condvar),
}

/// The supervisor: serves the plugin sockets with worker processes.
pub struct Supervisor {
    ctx: Arc<Ctx>,
}

impl Supervisor {
    /// Checks and probes every library of the plugins directory and starts a worker for
    /// each plugin.
    pub fn start(
        settings: &Settings,
        options: &LoadOptions,
        access: SocketAccess,
    ) -> Result<Arc<dyn Node>, LifecycleError> {
        let probe = options.probe.clone().unwrap_or_default();
        let scan = images::scan(&settings.plugins_directory, options, &probe)?;
        for failure in &scan.failures {
            tracing::error!("skipped: {failure}");
        }
        if scan.plugins.is_empty() {
            return Err(LifecycleError::NoPlugins(
                settings.plugins_directory.clone(),
            ));
        }
        let ctx = Arc::new(Ctx {
            settings: settings.clone(),
            probe,
            access,
            pools: Mutex::new(BTreeMap::new()),
            accepting: Mutex::new(HashMap::new()),
            successor: Mutex::new(None),
            handing_over: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            connections: Arc::new(WaitableCount::default()),
            book: Mutex::new(Book::new(settings.quarantine_window)),
            queries: Queries::default(),
            metrics: SupervisorMetrics::new(),
            ids: answers::Ids::from_clock(),
            events: (Mutex::new(()), Condvar::new()),
        });
        for image in scan.plugins.values() {
            loader::log_served(
                &image.manifest,
                format_args!(
                    "serving {} in a worker process of its own",
                    image.path.display()
                ),
            );
            let pool = Pool::new(image.name(), vec![image.clone()], &ctx);
            pool.spawn(&ctx);
            ctx.pools_mut().insert(image.name().to_owned(), pool);
        }
        housekeeping(&ctx).map_err(|source| LifecycleError::Start {
            what: "the supervisor's housekeeping thread",
            source,
        })?;
        Ok(Arc::new(Supervisor { ctx }))
    }
}

impl Ctx {
    fn pools_mut(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Pool>>> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pools(&self) -> Vec<Arc<Pool>> {
        self.pools_mut().values().cloned().collect()
    }

    fn pool(&self, key: &str) -> Option<Arc<Pool>> {
        self.pools_mut().get(key).cloned()
    }

    /// Every plugin's image, from the plugins' own pools.
    fn images(&self) -> Vec<Arc<Image>> {
        self.pools()
            .iter()
            .filter(|p| &*p.key != sockets::EVERY_PLUGIN)
            .flat_map(|p| p.images())
            .collect()
    }

    /// The pool of the socket of every plugin, made on first use.
    fn shared_pool(self: &Arc<Self>) -> Arc<Pool> {
        if let Some(pool) = self.pool(sockets::EVERY_PLUGIN) {
            return pool;
        }
        let pool = Pool::new(sockets::EVERY_PLUGIN, self.images(), self);
        self.pools_mut()
            .entry(sockets::EVERY_PLUGIN.to_owned())
            .or_insert(pool)
            .clone()
    }

    fn is_handing_over(&self) -> bool {
        self.handing_over.load(Ordering::Relaxed)
    }

    fn drain_timeout(&self) -> Duration {
        self.settings.drain_timeout
    }

    /// While handing over to a successor daemon, `conn` goes there (`None`); otherwise it
    /// is given back.
    fn to_successor(&self, conn: Conn) -> Option<Conn> {
        if !self.is_handing_over() {
            return Some(conn);
        }
        let successor = self.successor.lock().unwrap_or_else(|e| e.into_inner());
        match successor.as_ref() {
            Some(sink) => {
                if let Err(mpsc::SendError(handed)) = sink.send(handed(conn)) {
                    tracing::warn!(plugin = %handed.plugin, "the successor is gone; closing a connection");
                }
            }
            None => conn.close(),
        }
        None
    }

    /// Routes a connection to the pool of the socket it came on.
    fn route(self: &Arc<Self>, conn: Conn) {
        let pool = if &*conn.socket == sockets::EVERY_PLUGIN {
            Some(self.shared_pool())
        } else {
            self.pool(&conn.socket)
        };
        match pool {
            Some(pool) => pool.route(conn),
            None => {
                tracing::warn!(plugin = %conn.socket, "a connection for a plugin this daemon does not serve; closing it");
                conn.close();
            }
        }
    }

    fn policy_of(&self, plugin: &str) -> OnFailure {
        pool::policy_of(&self.images(), plugin)
    }

    /// A worker of `pool` died by accident: blame the configurations it was running, and
    /// quarantine those that did it before.
    fn crashed(&self, pool: &Arc<Pool>, worker: &Arc<Worker>, cause: &str) {
        self.metrics.crashed(&pool.key, cause);
        let now = Instant::now();
        let quarantined: Vec<String> = {
            let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
            let mut running = Vec::new();
            for heartbeat in worker.board.heartbeats() {
                let Some(busy) = heartbeat.busy() else {
                    continue;
                };
                let plugin = worker
                    .plugin_in_slot(busy.slot as u16)
                    .unwrap_or_else(|| pool.key.to_string());
                let what = busy.phase.map_or("its constructor", |p| p.name());
                tracing::warn!(
                    plugin = %plugin,
                    config = format_args!("{:016x}", busy.config),
                    event = busy.event,
                    "the worker died while running {what} for configuration {}",
                    book.config(&plugin, busy.config).unwrap_or("(not seen)")
                );
                running.push((plugin, busy.config));
            }
            book.worker_died(running, now)
                .into_iter()
                .map(|(plugin, fingerprint)| {
                    tracing::error!(
                        plugin = %plugin,
                        config = format_args!("{fingerprint:016x}"),
                        "quarantined configuration {} for {} s: it crashed the plugin's worker twice; its events end with 503 without running",
                        book.config(&plugin, fingerprint).unwrap_or("(not seen)"),
                        self.settings.quarantine_window.as_secs()
                    );
                    plugin
                })
                .collect()
        };
        for plugin in quarantined {
            self.broadcast_quarantine(&plugin);
        }
    }

    /// Tells every worker serving `plugin` its quarantined configurations.
    fn broadcast_quarantine(&self, plugin: &str) {
        for pool in self.pools() {
            if !pool.serves(plugin) {
                continue;
            }
            let list = self
                .book
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .list(Some(&pool.plugins()), Instant::now());
            for worker in pool.workers() {
                let _ = worker.send(&Down::Quarantine { list: list.clone() }, None, &[]);
            }
        }
    }

    fn saw_configuration(&self, plugin: &str, fingerprint: u64, config: String) {
        self.book
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .saw(plugin, fingerprint, config);
    }

    fn events_changed(&self) {
        let _guard = self.events.0.lock().unwrap_or_else(|e| e.into_inner());
        self.events.1.notify_all();
    }

    /// What a new worker of socket `key` (loading `plugins`) is told.
    fn worker_config(
        &self,
        key: &str,
        libraries: Vec<Library>,
        plugins: &[String],
    ) -> WorkerConfig {
        let s = &self.settings;
        WorkerConfig {
            key: key.to_owned(),
            libraries,
            board_fd: super::messages::BOARD_FD,
            max_message: s.limits.max_message,
            max_events_per_instance: s.limits.max_events_per_instance,
            max_connections: s.limits.max_connections,
            max_instances_per_plugin: s.limits.max_instances_per_plugin,
            max_config_bytes_per_plugin: s.limits.max_config_bytes_per_plugin,
            max_warnings_per_second: s.max_warnings_per_second,
            max_connections_per_plugin: s.max_connections_per_plugin,
            event_timeout: s.limits.event_timeout,
            instance_idle_timeout: s.instance_idle_timeout,
            max_buffered: s.max_buffered_bytes,
            connection_idle_timeout: s.connection_idle_timeout,
            message_timeout: s.message_timeout,
            slow_handler: s.slow_handler,
            stuck_timeout: s.stuck_timeout,
            drain_timeout: s.drain_timeout,
            event_loops: s.event_loops,
            thread_per_connection: s.thread_per_connection,
            log_level: s.log_level,
            log_format: s.log_format,
            quarantine: self
                .book
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .list(Some(plugins), Instant::now()),
            kong_version: s.kong_version.map(|v| v.to_string()),
            protobuf: s.protocol == crate::settings::Protocol::Protobuf,
        }
    }

    /// Every live worker of every pool.
    fn workers(&self) -> Vec<Arc<Worker>> {
        self.pools()
            .iter()
            .flat_map(|p| p.workers())
            .filter(|w| w.is_ready())
            .collect()
    }

    /// Every worker's status, put together, with the supervisor's own view of them.
    fn status(&self) -> Value {
        let workers = self.workers();
        let answers = self.queries.ask(&workers, |id| Down::Status { id });
        let mut plugins = BTreeMap::new();
        let (mut live, mut stuck) = (0u64, Vec::new());
        let mut silent = Vec::new();
        for (worker, answer) in workers.iter().zip(answers) {
            match answer.and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok()) {
                Some(status) => {
                    live += status["LiveEvents"].as_u64().unwrap_or(0);
                    if let Some(more) = status["Stuck"].as_array() {
                        stuck.extend(more.iter().cloned());
                    }
                    merge_plugins(&mut plugins, &status);
                }
                None => silent.push(worker.pid),
            }
        }
        // Plugins whose worker is down still show, with what the supervisor knows.
        for image in self.images() {
            plugins.entry(image.name().to_owned()).or_insert_with(|| {
                object([
                    ("Name", image.name().into()),
                    ("Version", image.manifest.version.clone().into()),
                    ("File", image.path.display().to_string().into()),
                    ("OnFailure", image.manifest.on_failure.label().into()),
                    ("Instances", Value::Array(Vec::new())),
                ])
            });
        }
        let now = Instant::now();
        let quarantined = self
            .book
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .list(None, now);
        let mut pools = serde_json::Map::new();
        for pool in self.pools() {
            let figures = pool.figures();
            pools.insert(
                pool.key.to_string(),
                object([
                    ("Pid", figures.pid.into()),
                    ("Up", figures.up.into()),
                    ("Generation", figures.generation.into()),
                    ("Crashes", figures.crashes.into()),
                    ("Restarts", figures.restarts.into()),
                    ("LastCrash", figures.last_crash.into()),
                    ("LastRestartMs", figures.last_restart_ms.into()),
                    ("Connections", figures.connections.into()),
                ]),
            );
        }
        for (name, plugin) in plugins.iter_mut() {
            if let (Some(figures), Some(plugin)) = (pools.get(name), plugin.as_object_mut()) {
                plugin.insert("Crashes".into(), figures["Crashes"].clone());
                plugin.insert("WorkerPid".into(), figures["Pid"].clone());
            }
        }
        object([
            ("Pid", std::process::id().into()),
            ("LiveEvents", live.into()),
            (
                "Draining",
                self.shutting_down.load(Ordering::Relaxed).into(),
            ),
            ("Isolation", "process".into()),
            ("Plugins", Value::Object(plugins.into_iter().collect())),
            ("Stuck", Value::Array(stuck)),
            (
                "Quarantined",
                serde_json::to_value(quarantined).unwrap_or_default(),
            ),
            ("Workers", Value::Object(pools)),
            (
                "SilentWorkers",
                Value::Array(silent.into_iter().map(Value::from).collect()),
            ),
        ])
    }

    /// Events alive now, over every worker: as each says, or as its watchdog last
    /// recorded on its board if it does not answer.
    fn live_events(&self) -> usize {
        let workers = self.workers();
        let answers = self.queries.ask(&workers, |id| Down::Status { id });
        workers
            .iter()
            .zip(answers)
            .map(|(worker, answer)| {
                answer
                    .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
                    .and_then(|status| status["LiveEvents"].as_u64())
                    .unwrap_or_else(|| worker.board.header().live_events.load(Ordering::Relaxed))
                    as usize
            })
            .sum()
    }
}

impl Node for Supervisor {
    fn sockets(&self) -> Vec<(String, Scope)> {
        self.ctx
            .images()
            .iter()
            .map(|i| (i.name().to_owned(), Scope::All))
            .collect()
    }

    fn listen(&self, socket: PluginSocket) -> io::Result<()> {
        tracing::info!(plugin = %socket.plugin, "listening on {}", socket.path.display());
        let stop = Arc::new(AtomicBool::new(false));
        accept(
            &self.ctx,
            socket.listener,
            Arc::from(socket.plugin.as_str()),
            stop.clone(),
        )?;
        self.ctx
            .accepting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(socket.plugin, stop);
        Ok(())
    }

    fn adopt(&self, stream: UnixStream, plugin: &str, pending: Vec<u8>) {
        let conn = Conn::new(
            OwnedFd::from(stream),
            Arc::from(plugin),
            pending,
            &self.ctx.connections,
        );
        self.ctx.route(conn);
    }

    fn stop_accepting(&self, plugins: &[String]) {
        let accepting = self.ctx.accepting.lock().unwrap_or_else(|e| e.into_inner());
        for plugin in plugins {
            if let Some(stop) = accepting.get(plugin) {
                stop.store(true, Ordering::Relaxed);
            }
        }
    }

    fn hand_over_to(&self, successor: mpsc::Sender<Handed>) {
        *self.ctx.successor.lock().unwrap_or_else(|e| e.into_inner()) = Some(successor);
        self.ctx.handing_over.store(true, Ordering::Relaxed);
        self.ctx.shutting_down.store(true, Ordering::Relaxed);
        for pool in self.ctx.pools() {
            for conn in pool.take_waiting() {
                self.ctx.to_successor(conn);
            }
            for worker in pool.workers() {
                pool::retire(&worker, None);
            }
        }
    }

    fn hand_over_idle(&self) {
        for worker in self.ctx.pools().iter().flat_map(|p| p.workers()) {
            let _ = worker.send(&Down::ReturnIdle, None, &[]);
        }
    }

    fn end_hand_over(&self) {
        self.ctx
            .successor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    fn begin_shutdown(&self) {
        self.ctx.shutting_down.store(true, Ordering::Relaxed);
        for worker in self.ctx.pools().iter().flat_map(|p| p.workers()) {
            let _ = worker.send(&Down::Shutdown, None, &[]);
        }
    }

    fn live_events(&self) -> usize {
        self.ctx.live_events()
    }

    fn wait_for_events(&self, deadline: Instant) -> usize {
        let (lock, changed) = &self.ctx.events;
        let mut guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let left = self
                .ctx
                .pools()
                .iter()
                .flat_map(|p| p.workers())
                .filter(|w| !w.events_done.load(Ordering::Relaxed))
                .count();
            let now = Instant::now();
            if left == 0 || now >= deadline {
                return left;
            }
            guard = changed
                .wait_timeout(guard, (deadline - now).min(Duration::from_millis(200)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn wait_for_connections(&self, deadline: Instant) -> usize {
        self.ctx.connections.wait_idle(deadline)
    }

    fn reload(&self, _access: SocketAccess, options: &LoadOptions) -> Reloaded {
        reload(&self.ctx, options)
    }

    fn render_metrics(&self) -> String {
        let workers = self.ctx.workers();
        let answers = self.ctx.queries.ask(&workers, |id| Down::Metrics { id });
        let mut texts: Vec<String> = answers
            .into_iter()
            .flatten()
            .filter_map(|bytes| String::from_utf8(bytes).ok())
            .collect();
        texts.push(self.ctx.metrics.render(&self.ctx));
        merge_metrics(&texts)
    }

    fn finish(&self) {
        let pools = self.ctx.pools();
        for pool in &pools {
            pool.stop();
        }
        let workers: Vec<Arc<Worker>> = pools.iter().flat_map(|p| p.workers()).collect();
        for worker in &workers {
            worker.kill();
        }
        for worker in &workers {
            worker.join();
        }
    }
}

/// Accepts connections on `listener` on a thread of its own until `stop`, and routes each
/// to its worker.
fn accept(
    ctx: &Arc<Ctx>,
    listener: std::os::unix::net::UnixListener,
    socket: Arc<str>,
    stop: Arc<AtomicBool>,
) -> io::Result<()> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    listener.set_nonblocking(true)?;
    let ctx = Arc::downgrade(ctx);
    std::thread::Builder::new()
        .name(format!("accept-{socket}"))
        .spawn(move || {
            let wait = Timespec {
                tv_sec: 0,
                tv_nsec: 100_000_000,
            };
            loop {
                let stopping = stop.load(Ordering::Relaxed);
                match listener.accept() {
                    Ok((stream, _)) => {
                        let Some(ctx) = ctx.upgrade() else { return };
                        // Blocking as accepted; the worker sets what it needs.
                        let _ = stream.set_nonblocking(false);
                        let conn = Conn::new(
                            OwnedFd::from(stream),
                            socket.clone(),
                            Vec::new(),
                            &ctx.connections,
                        );
                        ctx.route(conn);
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        if stopping {
                            tracing::debug!(plugin = %socket, "stopped accepting");
                            return;
                        }
                        let mut fds = [PollFd::new(&listener, PollFlags::IN)];
                        let _ = poll(&mut fds, Some(&wait));
                    }
                    Err(err) => {
                        tracing::error!(plugin = %socket, "accept failed: {err}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(())
}

/// Once a second: ends quarantines whose time is up, and replaces workers whose requests
/// are stuck past the stuck timeout (or whose clock stopped: the whole process is stuck).
fn housekeeping(ctx: &Arc<Ctx>) -> io::Result<()> {
    let weak = Arc::downgrade(ctx);
    std::thread::Builder::new()
        .name("supervisor".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let Some(ctx) = weak.upgrade() else { return };
                let ended = ctx
                    .book
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .expire(Instant::now());
                for plugin in ended {
                    tracing::info!(plugin = %plugin, "a quarantine ended; the configuration runs again");
                    ctx.broadcast_quarantine(&plugin);
                }
                if let Some(limit) = ctx.settings.stuck_timeout
                    && !ctx.is_handing_over()
                {
                    for pool in ctx.pools() {
                        if let Some(worker) = pool.current() {
                            check_stuck(&ctx, &pool, &worker, limit);
                        }
                    }
                }
            }
        })?;
    Ok(())
}

/// Replaces `worker` if a request of it has waited past `limit`, or its clock stopped.
fn check_stuck(ctx: &Arc<Ctx>, pool: &Arc<Pool>, worker: &Arc<Worker>, limit: Duration) {
    if worker.replacing.load(Ordering::Relaxed) {
        return;
    }
    let tick = worker.board.header().tick.load(Ordering::Relaxed);
    let frozen = {
        let mut clock = worker.clock.lock().unwrap_or_else(|e| e.into_inner());
        if clock.0 != tick {
            *clock = (tick, Instant::now());
        }
        clock.1.elapsed() > limit
    };
    let limit_ticks = (limit.as_millis() / 10) as u32;
    let stuck = worker.board.slots().iter().map(|s| s.view()).find(|view| {
        view.state == ConnState::Handling && (tick as u32).wrapping_sub(view.since) > limit_ticks
    });
    if stuck.is_none() && !frozen {
        return;
    }
    worker.replacing.store(true, Ordering::Relaxed);
    let what = match stuck {
        Some(view) => format!(
            "a {} request{} has waited over {} s for its handler",
            match view.kind {
                RequestKind::HandleEvent => "HandleEvent",
                RequestKind::Step => "Step",
                RequestKind::StartInstance => "StartInstance",
                RequestKind::Other => "",
            },
            view.phase.map(|p| format!(" ({p})")).unwrap_or_default(),
            limit.as_secs()
        ),
        None => format!(
            "the worker process has not run for over {} s",
            limit.as_secs()
        ),
    };
    tracing::error!(
        plugin = %pool.key,
        pid = worker.pid,
        "{what} (--stuck-timeout): replacing the worker; its other events finish first, and \
         what is still stuck then is answered in its place (failing closed)"
    );
    ctx.metrics.replaced(&pool.key);
    pool.replace(ctx, None);
}

/// SIGHUP: new plugins get a worker and a socket; a new build of a served plugin gets a new
/// worker, and the old one finishes its events and hands its connections over.
fn reload(ctx: &Arc<Ctx>, options: &LoadOptions) -> Reloaded {
    let mut result = Reloaded::default();
    let files = match crate::loader::plugin_files(&ctx.settings.plugins_directory, options) {
        Ok(files) => files,
        Err(err) => {
            tracing::error!("reload: {err}; keeping every running plugin");
            result.failed += 1;
            return result;
        }
    };
    let served: Vec<FileIdentity> = ctx.images().iter().filter_map(|i| i.identity).collect();
    for path in files {
        if FileIdentity::of(&path).is_ok_and(|id| served.contains(&id)) {
            continue;
        }
        let image = match Image::load(&path, options, &ctx.probe) {
            Ok(image) => Arc::new(image),
            Err(err) => {
                tracing::error!("reload: {err}; the running version keeps serving");
                result.failed += 1;
                continue;
            }
        };
        let name = image.name().to_owned();
        match ctx.pool(&name) {
            Some(pool) => {
                let old = pool.images();
                if let Some(old) = old.first()
                    && old.path != path
                {
                    tracing::error!(
                        "reload: {}: plugin name `{name}` is already provided by {}",
                        path.display(),
                        old.path.display()
                    );
                    result.failed += 1;
                    continue;
                }
                if ctx
                    .book
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .forget(&name)
                {
                    tracing::info!(plugin = %name, "a new build: its quarantined configurations run again");
                }
                tracing::info!(
                    plugin = %name,
                    "upgraded from {} to {} ({}); a new worker serves it, the old one finishes its events",
                    old.first().map_or("?", |o| o.manifest.version.as_str()),
                    image.manifest.version,
                    path.display()
                );
                pool.replace(ctx, Some(vec![image.clone()]));
                result.upgraded.push(name.clone());
            }
            None => {
                tracing::info!(plugin = %name, version = %image.manifest.version, "added {}", path.display());
                let pool = Pool::new(&name, vec![image.clone()], ctx);
                pool.spawn(ctx);
                ctx.pools_mut().insert(name.clone(), pool);
                result.added.push(name.clone());
                let listened = sockets::bind(
                    &ctx.settings.kong_prefix,
                    &name,
                    Scope::All,
                    ctx.access,
                    Replace::StaleOnly,
                )
                .map_err(|e| e.to_string())
                .and_then(|socket| {
                    let stop = Arc::new(AtomicBool::new(false));
                    accept(ctx, socket.listener, Arc::from(name.as_str()), stop.clone())
                        .map_err(|e| e.to_string())?;
                    ctx.accepting
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name.clone(), stop);
                    Ok(())
                });
                if let Err(err) = listened {
                    tracing::error!(plugin = %name, "reload: cannot serve the new plugin: {err}");
                }
            }
        }
    }
    // The socket of every plugin serves the new builds too.
    if !(result.added.is_empty() && result.upgraded.is_empty())
        && let Some(shared) = ctx.pool(sockets::EVERY_PLUGIN)
    {
        shared.replace(ctx, Some(ctx.images()));
    }
    result
}

/// The supervisor's own metric families.
struct SupervisorMetrics {
    registry: Registry,
    crashes: IntCounterVec,
    replaced: IntCounterVec,
    answered: IntCounterVec,
    restart: HistogramVec,
    up: IntGaugeVec,
    quarantined: IntGaugeVec,
}

impl SupervisorMetrics {
    fn new() -> SupervisorMetrics {
        let registry = Registry::new();
        let opts =
            |name: &str, help: &str| Opts::new(name, help).namespace("kong_rust_pluginserver");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(opts(name, help), labels).expect("valid counter");
            registry.register(Box::new(c.clone())).expect("unique");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(opts(name, help), &["plugin"]).expect("valid gauge");
            registry.register(Box::new(g.clone())).expect("unique");
            g
        };
        let restart = HistogramVec::new(
            HistogramOpts::new(
                "worker_restart_seconds",
                "Time from a worker's death to its successor serving (process isolation).",
            )
            .namespace("kong_rust_pluginserver")
            .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            &["plugin"],
        )
        .expect("valid histogram");
        registry
            .register(Box::new(restart.clone()))
            .expect("unique");
        SupervisorMetrics {
            crashes: counter(
                "worker_crashes_total",
                "Worker processes that died by accident, by cause (process isolation).",
                &["plugin", "cause"],
            ),
            replaced: counter(
                "worker_replacements_total",
                "Workers replaced because a request stayed stuck past --stuck-timeout.",
                &["plugin"],
            ),
            answered: counter(
                "crash_answers_total",
                "Requests in flight when their worker died, by what the supervisor did: ended_request, continued (the plugin fails open or the phase cannot end the request), restarted_instance (a StartInstance: Kong starts the instance again on the next worker), error_reply (other calls), closed (caught in the middle of a message).",
                &["plugin", "action"],
            ),
            restart,
            up: gauge(
                "worker_up",
                "Whether the plugin's worker process serves (1) or not (0).",
            ),
            quarantined: gauge(
                "quarantined_configurations",
                "Plugin configurations quarantined after crashing their worker twice.",
            ),
            registry,
        }
    }

    fn crashed(&self, plugin: &str, cause: &str) {
        let short = cause
            .split_whitespace()
            .find(|w| w.starts_with("SIG"))
            .map(str::to_owned)
            .unwrap_or_else(|| cause.replace("exited with status ", "exit "));
        self.crashes.with_label_values(&[plugin, &short]).inc();
    }

    fn replaced(&self, plugin: &str) {
        self.replaced.with_label_values(&[plugin]).inc();
    }

    fn answered(&self, plugin: &str, action: &str) {
        self.answered.with_label_values(&[plugin, action]).inc();
    }

    fn worker_ready(&self, plugin: &str, took: Option<Duration>) {
        if let Some(took) = took {
            self.restart
                .with_label_values(&[plugin])
                .observe(took.as_secs_f64());
        }
    }

    fn render(&self, ctx: &Ctx) -> String {
        self.up.reset();
        self.quarantined.reset();
        for pool in ctx.pools() {
            self.up
                .with_label_values(&[&pool.key])
                .set(i64::from(pool.current().is_some()));
        }
        for q in ctx
            .book
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .list(None, Instant::now())
        {
            self.quarantined.with_label_values(&[&q.plugin]).inc();
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding metrics into a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}
