//! The workers: Kong's event loops over its client, closed or open loop, and the
//! scenarios (events, idle instances).

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    sync::{
        Arc, Barrier, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use kong_rust_pluginserver_loadgen::procfs;
use tokio::task::LocalSet;

use crate::{
    Cli, Protocol,
    daemons::{Daemons, RestartPlan, Restarter},
    mp_rpc::{self, ClientCounts, EventResult},
    outcome::{Tally, Window},
    pb_rpc,
    pool::{Pool, PoolCounts},
    report::{
        EventsReport, InstancesReport, Kind, Percentiles, Report, RestartReport, RssAt, Server,
    },
};

/// Open loop: events beyond this many in flight per worker are skipped, not queued.
const MAX_IN_FLIGHT: usize = 4096;
/// Open loop: an event whose start is this late is skipped.
const MAX_LATE: Duration = Duration::from_millis(10);

/// Counters and samples of one worker.
#[derive(Default)]
struct Stats {
    tally: Tally,
    round_trips: u64,
    skipped: u64,
    /// Events served (returned or ended), HandleEvent to end.
    latency_ns: Vec<u32>,
    lag_ns: Vec<u32>,
    /// With restarts: by window (0 before the first restart).
    windows: Vec<Window>,
}

/// Which events `--abandon` drops: evenly spread, `fraction` of them.
#[derive(Debug, Clone, Copy)]
struct Abandon {
    fraction: f64,
}

impl Abandon {
    /// Whether the `n`th event (from 0) is abandoned.
    fn picks(self, n: u64) -> bool {
        self.fraction > 0.0
            && ((n + 1) as f64 * self.fraction).floor() > (n as f64 * self.fraction).floor()
    }
}

/// A worker's client, in the protocol of the run.
enum Client {
    Msgpack(mp_rpc::Client),
    Protobuf(pb_rpc::Client),
}

impl Client {
    fn new(cli: &Cli, config: String) -> Client {
        let pool = Pool::new(cli.socket.clone());
        match cli.protocol {
            Protocol::Msgpack => {
                Client::Msgpack(mp_rpc::Client::new(pool, &cli.plugin, config, &cli.phase))
            }
            Protocol::Protobuf => {
                Client::Protobuf(pb_rpc::Client::new(pool, &cli.plugin, config, &cli.phase))
            }
        }
    }

    /// Starts the worker's instance before the run: a plugin that cannot start fails the
    /// run here, not as a stream of failed events.
    async fn start_first_instance(&self) -> anyhow::Result<()> {
        match self {
            Client::Msgpack(c) => c.start_first_instance().await.map(drop),
            Client::Protobuf(c) => c.start_first_instance().await.map(drop),
        }
    }

    /// Starts one more instance, with `config` (the idle-instances scenario).
    async fn start_instance(&self, config: &str) -> anyhow::Result<()> {
        match self {
            Client::Msgpack(c) => match c.start_instance(config).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(text)) => bail!("StartInstance: {text}"),
                Err(failure) => bail!("StartInstance: {failure:?}"),
            },
            Client::Protobuf(c) => c.start_instance(config).await.map(drop),
        }
    }

    async fn run_event(&self, abandon: bool) -> anyhow::Result<EventResult> {
        match self {
            Client::Msgpack(c) => c.run_event(abandon).await,
            Client::Protobuf(c) => c.run_event().await,
        }
    }

    fn pool_counts(&self) -> PoolCounts {
        match self {
            Client::Msgpack(c) => c.pool_counts(),
            Client::Protobuf(c) => c.pool_counts(),
        }
    }

    fn counts(&self) -> ClientCounts {
        match self {
            Client::Msgpack(c) => c.counts(),
            Client::Protobuf(c) => ClientCounts {
                instance_starts: c.instance_starts(),
                ..ClientCounts::default()
            },
        }
    }
}

/// One Kong worker: its client (pool, instance, msgids) and stats.
struct Worker {
    client: Client,
    stats: RefCell<Stats>,
    abandon: Abandon,
    started_events: Cell<u64>,
    /// With restarts: the window events now end in.
    window: Option<Arc<AtomicUsize>>,
}

impl Worker {
    fn new(cli: &Cli, config: String, window: Option<Arc<AtomicUsize>>) -> Worker {
        Worker {
            client: Client::new(cli, config),
            stats: RefCell::new(Stats::default()),
            abandon: Abandon {
                fraction: cli.abandon,
            },
            started_events: Cell::new(0),
            window,
        }
    }

    /// Runs one event and records it; `Err` only for a server that breaks the protocol.
    async fn event_recorded(&self, lag: Option<Duration>) -> anyhow::Result<()> {
        let n = self.started_events.get();
        self.started_events.set(n + 1);
        let start = Instant::now();
        let result = self.client.run_event(self.abandon.picks(n)).await?;
        let end = Instant::now();
        let mut stats = self.stats.borrow_mut();
        stats.tally.add(&result.outcome);
        stats.round_trips += result.round_trips;
        if result.outcome.served() {
            stats.latency_ns.push(nanos(end - start));
            if let Some(lag) = lag {
                stats.lag_ns.push(nanos(lag));
            }
        }
        if let Some(window) = &self.window {
            let index = window.load(Ordering::Relaxed);
            if stats.windows.len() <= index {
                stats.windows.resize_with(index + 1, Window::default);
            }
            stats.windows[index].add(&result.outcome, start, end);
        }
        Ok(())
    }
}

fn nanos(d: Duration) -> u32 {
    u32::try_from(d.as_nanos()).unwrap_or(u32::MAX)
}

/// Kong's config JSON for instance `n`: the plugin config plus Kong's bookkeeping keys.
fn kong_config(cli: &Cli, n: u64, distinct: bool) -> String {
    let mut config: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&cli.config).expect("checked in main");
    if distinct {
        let message = config
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("hello");
        config.insert("message".into(), format!("{message} #{n}").into());
    }
    config.insert(
        "__key__".into(),
        format!(
            "plugins:{}:{:08x}-0000-4000-8000-{n:012x}::::0dc6f45b-0000-4000-8000-000000000002",
            cli.plugin, n
        )
        .into(),
    );
    config.insert("__seq__".into(), (n + 1).into());
    config.insert(
        "__plugin_id".into(),
        format!("5b1e2b4e-0000-4000-8000-{n:012x}").into(),
    );
    config.insert(
        "__ws_id".into(),
        "0dc6f45b-0000-4000-8000-000000000002".into(),
    );
    serde_json::Value::Object(config).to_string()
}

/// How a worker's measured phase stops.
struct Bounds {
    /// Events claimed so far, over all workers.
    claimed: AtomicU64,
    /// Events completed so far, over all workers (for RSS checkpoints).
    completed: AtomicU64,
    limit: u64,
    duration: Option<Duration>,
    rss_at: Vec<u64>,
    rss_readings: Mutex<Vec<RssAt>>,
    pid: Option<u32>,
}

impl Bounds {
    fn claim(&self, started: Instant) -> bool {
        if self.duration.is_some_and(|d| started.elapsed() >= d) {
            return false;
        }
        self.claimed.fetch_add(1, Ordering::Relaxed) < self.limit
    }

    fn completed(&self) {
        let done = self.completed.fetch_add(1, Ordering::Relaxed) + 1;
        if self.rss_at.contains(&done)
            && let Some(pid) = self.pid
            && let Ok((rss, _)) = procfs::memory_kib(pid)
        {
            self.rss_readings.lock().unwrap().push(RssAt {
                events: done,
                rss_kib: rss,
            });
        }
    }
}

/// Runs `concurrency` event loops on `worker` until `claim` refuses.
async fn closed_loop(
    worker: &Rc<Worker>,
    concurrency: usize,
    claim: Rc<dyn Fn() -> bool>,
    done: Rc<dyn Fn()>,
) -> anyhow::Result<()> {
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let worker = worker.clone();
        let claim = claim.clone();
        let done = done.clone();
        tasks.push(tokio::task::spawn_local(async move {
            while claim() {
                worker.event_recorded(None).await?;
                done();
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Starts events at `rate` per second on `worker` until `claim` refuses; latency is measured
/// per event from its HandleEvent, and the start lag against the schedule separately.
async fn open_loop(
    worker: &Rc<Worker>,
    rate: f64,
    claim: Rc<dyn Fn() -> bool>,
    done: Rc<dyn Fn()>,
) -> anyhow::Result<()> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let in_flight = Rc::new(Cell::new(0usize));
    let failure: Rc<RefCell<Option<anyhow::Error>>> = Rc::new(RefCell::new(None));
    let mut n: u64 = 0;
    'pace: loop {
        // Start every event whose time has come, then sleep until the next one is due. A
        // tokio sleep ends on a 1 ms timer tick, so events start in bursts of rate/1000 per
        // worker: one sleep per event would fall behind. (A timerfd at the exact interval was
        // tried: its wake-ups cost the load generator more CPU than the events.)
        let now = tokio::time::Instant::now();
        let due_count = (now.duration_since(start).as_secs_f64() * rate) as u64 + 1;
        while n < due_count {
            let due = start + interval.mul_f64(n as f64);
            n += 1;
            if failure.borrow().is_some() || !claim() {
                break 'pace;
            }
            // An event the pacer reaches too late is skipped, not started in a catch-up
            // burst: when the load generator itself was starved of CPU, a burst would
            // measure that, not the server. Skips are reported.
            if in_flight.get() >= MAX_IN_FLIGHT || now.saturating_duration_since(due) > MAX_LATE {
                worker.stats.borrow_mut().skipped += 1;
                continue;
            }
            in_flight.set(in_flight.get() + 1);
            let (worker, in_flight, failure, done) = (
                worker.clone(),
                in_flight.clone(),
                failure.clone(),
                done.clone(),
            );
            tokio::task::spawn_local(async move {
                let lag = tokio::time::Instant::now().saturating_duration_since(due);
                match worker.event_recorded(Some(lag)).await {
                    Ok(()) => done(),
                    Err(err) => {
                        failure.borrow_mut().get_or_insert(err);
                    }
                }
                in_flight.set(in_flight.get() - 1);
            });
        }
        // Let the started events run before pacing again.
        tokio::task::yield_now().await;
        tokio::time::sleep_until(start + interval.mul_f64(n as f64)).await;
    }
    while in_flight.get() > 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    match failure.borrow_mut().take() {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Splits `total` over `parts`, the first ones taking the remainder.
fn share(total: u64, parts: usize, index: usize) -> u64 {
    total / parts as u64 + u64::from((index as u64) < total % parts as u64)
}

/// What a run with `--restarts` needs: the plan and the servers to restart.
pub struct Restarts {
    /// When and how often.
    pub plan: RestartPlan,
    /// The servers `--spawn` started.
    pub daemons: Arc<Mutex<Daemons>>,
}

/// What a worker hands back.
struct WorkerResult {
    stats: Stats,
    connections: u64,
    closed_dropped: u64,
    notifications: u64,
    instance_starts: u64,
    instance_retries: u64,
}

/// The events scenario. `pid`: the server to read from `/proc` (none with restarts).
pub fn events(cli: &Cli, pid: Option<u32>, restarts: Option<Restarts>) -> anyhow::Result<Report> {
    let workers = cli.workers;
    let bounds = Arc::new(Bounds {
        claimed: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        limit: cli.events.unwrap_or(u64::MAX),
        duration: cli.duration.map(Duration::from_secs_f64),
        rss_at: cli.rss_at.clone(),
        rss_readings: Mutex::new(Vec::new()),
        pid,
    });
    let window = restarts.as_ref().map(|_| Arc::new(AtomicUsize::new(0)));
    // Workers warm up, meet main (which reads /proc), then run the measured phase.
    let barrier = Arc::new(Barrier::new(workers + 1));
    let mut handles = Vec::new();
    for index in 0..workers {
        let cli = cli.clone();
        let bounds = bounds.clone();
        let barrier = barrier.clone();
        let window = window.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("kong-worker-{index}"))
                .spawn(move || worker_thread(&cli, index, &bounds, &barrier, window))?,
        );
    }
    barrier.wait();
    let before = pid.map(procfs::sample).transpose()?;
    let self_before = procfs::self_cpu_ns();
    let started = Instant::now();
    let restarter = match (&restarts, &window) {
        (Some(r), Some(window)) => Some(Restarter::start(
            r.daemons.clone(),
            r.plan,
            window.clone(),
            started,
        )?),
        _ => None,
    };
    barrier.wait();
    let mut all = Stats::default();
    let (mut connections, mut closed_dropped, mut notifications) = (0, 0, 0);
    let (mut instance_starts, mut instance_retries) = (0, 0);
    let mut failure = None;
    for handle in handles {
        match handle.join().map_err(|_| anyhow!("a worker panicked"))? {
            Ok(w) => {
                let stats = w.stats;
                all.tally.merge(&stats.tally);
                all.round_trips += stats.round_trips;
                all.skipped += stats.skipped;
                all.latency_ns.extend_from_slice(&stats.latency_ns);
                all.lag_ns.extend_from_slice(&stats.lag_ns);
                if all.windows.len() < stats.windows.len() {
                    all.windows
                        .resize_with(stats.windows.len(), Window::default);
                }
                for (into, from) in all.windows.iter_mut().zip(&stats.windows) {
                    into.merge(from);
                }
                connections += w.connections;
                closed_dropped += w.closed_dropped;
                notifications += w.notifications;
                instance_starts += w.instance_starts;
                instance_retries += w.instance_retries;
            }
            Err(err) => failure = failure.or(Some(err)),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let self_cpu = procfs::self_cpu_ns() - self_before;
    let restarted = restarter.map(Restarter::finish).transpose()?;
    if let Some(err) = failure {
        return Err(err);
    }
    let mut restart_reports = Vec::new();
    if let (Some(done), Some(r)) = (&restarted, &restarts) {
        let exits = r.daemons.lock().unwrap().finish_restarts();
        for (i, restart) in done.iter().enumerate() {
            restart_reports.push(RestartReport {
                restart: i + 1,
                at_s: (restart.at - started).as_secs_f64(),
                old_pid: restart.old_pid,
                new_pid: restart.new_pid,
                old_exit_ms: exits
                    .get(i)
                    .copied()
                    .flatten()
                    .map(|d| d.as_secs_f64() * 1e3),
                window: all.windows.get(i + 1).cloned().unwrap_or_default().report(),
            });
        }
    }
    let after = pid.map(procfs::sample).transpose()?;
    let events = all.tally.events;
    let server = before.zip(after).map(|(b, a)| {
        let cpu_ns = (a.cpu_ns - b.cpu_ns) as f64;
        let mut rss_at = std::mem::take(&mut *bounds.rss_readings.lock().unwrap());
        rss_at.sort_by_key(|r| r.events);
        Server {
            pid: pid.unwrap_or(0),
            cpu_ms: cpu_ns / 1e6,
            cpu_cores: cpu_ns / 1e9 / seconds,
            cpu_us_per_event: cpu_ns / 1e3 / events.max(1) as f64,
            cpu_us_per_round_trip: cpu_ns / 1e3 / all.round_trips.max(1) as f64,
            rss_kib_before: b.rss_kib,
            rss_kib_after: a.rss_kib,
            peak_rss_kib: a.hwm_kib,
            rss_at,
        }
    });
    let lag = cli.rate.map(|_| Percentiles::of(&mut all.lag_ns));
    Ok(Report {
        label: cli.label.clone(),
        plugin: cli.plugin.clone(),
        kind: Kind::Events(Box::new(EventsReport {
            workers,
            concurrency: cli.concurrency,
            rate: cli.rate,
            abandon: cli.abandon,
            events,
            round_trips: all.round_trips,
            outcomes: all.tally.outcomes(),
            instance_starts,
            instance_retries,
            skipped: all.skipped,
            seconds,
            events_per_s: events as f64 / seconds,
            round_trips_per_s: all.round_trips as f64 / seconds,
            latency_us: Percentiles::of(&mut all.latency_ns),
            start_lag_us: lag,
            connections,
            closed_connections_dropped: closed_dropped,
            server_pid_notifications: notifications,
            before_restarts: restarted
                .as_ref()
                .map(|_| all.windows.first().cloned().unwrap_or_default().report()),
            restarts: restart_reports,
            server,
            loadgen_cpu_us_per_event: self_cpu as f64 / 1e3 / events.max(1) as f64,
        })),
    })
}

fn worker_thread(
    cli: &Cli,
    index: usize,
    bounds: &Arc<Bounds>,
    barrier: &Barrier,
    window: Option<Arc<AtomicUsize>>,
) -> anyhow::Result<WorkerResult> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = LocalSet::new();
    let worker = Rc::new(Worker::new(
        cli,
        kong_config(cli, index as u64, false),
        window,
    ));
    let concurrency = share(cli.concurrency as u64, cli.workers, index).max(1) as usize;
    // Until the barrier is passed, a failure must still meet it or main would wait forever.
    let warm = local.block_on(&runtime, async {
        // A plugin that cannot start fails the run here, not as a stream of Kong 500s.
        worker.client.start_first_instance().await?;
        let left = Rc::new(Cell::new(share(cli.warmup, cli.workers, index)));
        let claim: Rc<dyn Fn() -> bool> = Rc::new(move || {
            let n = left.get();
            left.set(n.saturating_sub(1));
            n > 0
        });
        closed_loop(&worker, concurrency, claim, Rc::new(|| {})).await
    });
    barrier.wait();
    barrier.wait();
    warm?;
    // Connections opened (and serverPid notifications read) during the warm-up count.
    *worker.stats.borrow_mut() = Stats {
        latency_ns: Vec::with_capacity(cli.events.map_or(1 << 16, |e| {
            share(e, cli.workers, index).min(1 << 24) as usize
        })),
        ..Stats::default()
    };
    let started = Instant::now();
    let claim: Rc<dyn Fn() -> bool> = {
        let bounds = bounds.clone();
        Rc::new(move || bounds.claim(started))
    };
    let done: Rc<dyn Fn()> = {
        let bounds = bounds.clone();
        Rc::new(move || bounds.completed())
    };
    local.block_on(&runtime, async {
        match cli.rate {
            Some(rate) => open_loop(&worker, rate / cli.workers as f64, claim, done).await,
            None => closed_loop(&worker, concurrency, claim, done).await,
        }
    })?;
    drop(local);
    let worker = Rc::try_unwrap(worker).map_err(|_| anyhow!("worker still shared"))?;
    let (pool, client) = (worker.client.pool_counts(), worker.client.counts());
    Ok(WorkerResult {
        stats: worker.stats.into_inner(),
        connections: pool.opened,
        closed_dropped: pool.dropped_closed,
        notifications: client.notifications,
        instance_starts: client.instance_starts,
        instance_retries: client.instance_retries,
    })
}

/// The idle-instances scenario: RSS growth per instance started.
pub fn instances(cli: &Cli, pid: Option<u32>, n: u64) -> anyhow::Result<Report> {
    let pid = pid.context("--instances needs --spawn or --pid to read the server's memory")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = LocalSet::new();
    let worker = Rc::new(Worker::new(
        cli,
        kong_config(cli, u64::MAX >> 16, false),
        None,
    ));
    local.block_on(&runtime, async {
        // Warm the server: one instance and a few events, so that buffers and allocator
        // pools that every server needs anyway are in the baseline.
        worker.client.start_first_instance().await?;
        for _ in 0..200 {
            worker.event_recorded(None).await?;
        }
        let settle = Duration::from_millis(500);
        tokio::time::sleep(settle).await;
        let (before, _) = procfs::memory_kib(pid)?;
        let started = Instant::now();
        for i in 0..n {
            worker
                .client
                .start_instance(&kong_config(cli, i, true))
                .await?;
        }
        let seconds = started.elapsed().as_secs_f64();
        tokio::time::sleep(settle).await;
        let (after, _) = procfs::memory_kib(pid)?;
        Ok(Report {
            label: cli.label.clone(),
            plugin: cli.plugin.clone(),
            kind: Kind::Instances(InstancesReport {
                instances: n,
                seconds,
                pid,
                rss_kib_before: before,
                rss_kib_after: after,
                bytes_per_instance: (after as f64 - before as f64) * 1024.0 / n.max(1) as f64,
            }),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abandon_picks_the_fraction_evenly() {
        let picked = |fraction, n| (0..n).filter(|&i| Abandon { fraction }.picks(i)).count();
        assert_eq!(picked(0.0, 1000), 0);
        assert_eq!(picked(0.1, 1000), 100);
        assert_eq!(picked(1.0, 1000), 1000);
        // Evenly: every tenth event, not the first hundred.
        assert!(!Abandon { fraction: 0.1 }.picks(0));
        assert!(Abandon { fraction: 0.1 }.picks(9));
    }
}
