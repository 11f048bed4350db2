//! The workers: Kong's connection pool and event loop, closed or open loop.

use std::{
    cell::{Cell, RefCell},
    ops::Range,
    path::PathBuf,
    rc::Rc,
    sync::{
        Arc, Barrier, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use kong_rust_pluginserver_loadgen::{
    pb, procfs,
    wire::{self, Answer, Incoming, StepData},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
    task::LocalSet,
};

use crate::{
    Cli, Protocol,
    report::{EventsReport, InstancesReport, Kind, Percentiles, Report, RssAt, Server},
};

/// Largest response accepted.
const MAX_MESSAGE: usize = 16 << 20;
/// Open loop: events beyond this many in flight per worker are skipped, not queued.
const MAX_IN_FLIGHT: usize = 4096;
/// Open loop: an event whose start is this late is skipped.
const MAX_LATE: Duration = Duration::from_millis(10);
/// The value Kong answers for `kong.request.get_header("host")`.
const HOST: &[u8] = b"example.com";

/// One pooled connection with its reusable buffers.
struct Conn {
    stream: UnixStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
}

impl Conn {
    /// Sends `wbuf` and reads the response to `msgid`, skipping notifications (serverPid).
    /// Returns where the response sits in `rbuf` and how many notifications came first.
    async fn call(&mut self, msgid: u64) -> anyhow::Result<(Range<usize>, u64)> {
        self.stream.write_all(&self.wbuf).await.context("write")?;
        self.rbuf.clear();
        let mut start = 0;
        let mut notifications = 0;
        loop {
            match wire::value_len(&self.rbuf[start..], MAX_MESSAGE)? {
                Some(n) => {
                    let range = start..start + n;
                    match wire::incoming(&self.rbuf[range.clone()], msgid)? {
                        Incoming::Notification { .. } => {
                            notifications += 1;
                            start += n;
                        }
                        _ => return Ok((range, notifications)),
                    }
                }
                None => {
                    if self.rbuf.capacity() - self.rbuf.len() < 1024 {
                        self.rbuf.reserve(4096);
                    }
                    if self.stream.read_buf(&mut self.rbuf).await.context("read")? == 0 {
                        bail!("the server closed the connection without answering");
                    }
                }
            }
        }
    }
}

/// Counters and samples of one worker.
#[derive(Default)]
struct Stats {
    events: u64,
    round_trips: u64,
    errors: u64,
    first_error: Option<String>,
    skipped: u64,
    latency_ns: Vec<u32>,
    lag_ns: Vec<u32>,
    connections: u64,
    notifications: u64,
}

/// One Kong worker: its pool, msgid counter and stats.
struct Worker {
    socket: PathBuf,
    phase: String,
    protocol: Protocol,
    pool: RefCell<Vec<Conn>>,
    msgid: Cell<u64>,
    stats: RefCell<Stats>,
}

/// What to do after a response.
enum Next {
    Done,
    Step {
        event_id: u64,
        method: &'static str,
        answer: Answer,
    },
    Failed(String),
}

impl Worker {
    fn new(cli: &Cli) -> Worker {
        Worker {
            socket: cli.socket.clone(),
            phase: cli.phase.clone(),
            protocol: cli.protocol,
            pool: RefCell::new(Vec::new()),
            msgid: Cell::new(0),
            stats: RefCell::new(Stats::default()),
        }
    }

    fn next_msgid(&self) -> u64 {
        let id = self.msgid.get() + 1;
        self.msgid.set(id);
        id
    }

    /// A connection from the keepalive pool (most recently used first, as ngx_lua's pool),
    /// or a new one.
    async fn checkout(&self) -> anyhow::Result<Conn> {
        let pooled = self.pool.borrow_mut().pop();
        if let Some(conn) = pooled {
            return Ok(conn);
        }
        // A full listen backlog answers EAGAIN: wait a little, as a busy nginx would.
        let mut attempts = 0;
        let stream = loop {
            match UnixStream::connect(&self.socket).await {
                Ok(stream) => break stream,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock && attempts < 1000 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(err) => {
                    return Err(err).with_context(|| format!("connect {}", self.socket.display()));
                }
            }
        };
        self.stats.borrow_mut().connections += 1;
        Ok(Conn {
            stream,
            rbuf: Vec::with_capacity(4096),
            wbuf: Vec::with_capacity(512),
        })
    }

    fn checkin(&self, conn: Conn) {
        self.pool.borrow_mut().push(conn);
    }

    /// One RPC on a pooled connection; `encode` writes the request for the msgid given.
    async fn rpc<T>(
        &self,
        encode: impl FnOnce(&mut Vec<u8>, u64),
        read: impl FnOnce(Incoming<'_>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut conn = self.checkout().await?;
        let msgid = self.next_msgid();
        conn.wbuf.clear();
        encode(&mut conn.wbuf, msgid);
        // A connection that failed is dropped, not returned to the pool.
        let (range, notifications) = conn.call(msgid).await?;
        let result = read(wire::incoming(&conn.rbuf[range], msgid)?);
        if notifications > 0 {
            self.stats.borrow_mut().notifications += notifications;
        }
        self.checkin(conn);
        result
    }

    async fn start_instance(&self, plugin: &str, config: &str) -> anyhow::Result<u64> {
        if self.protocol == Protocol::Protobuf {
            let mut conn = self.checkout().await?;
            // pb_rpc.lua's first call sends sequence 2.
            let sequence = self.next_msgid() as i64 + 1;
            let Conn {
                stream, rbuf, wbuf, ..
            } = &mut conn;
            let id = pb::start_instance(stream, rbuf, wbuf, sequence, plugin, config).await?;
            self.checkin(conn);
            return Ok(id as u64);
        }
        self.rpc(
            |out, msgid| wire::start_instance(out, msgid, plugin, config),
            |incoming| match incoming {
                Incoming::Ok(status) => status_id(status),
                Incoming::Err(e) => bail!("StartInstance: {}", String::from_utf8_lossy(e)),
                Incoming::Notification { .. } => unreachable!(),
            },
        )
        .await
    }

    /// Kong's event loop for one event: HandleEvent, then a Step per PDK call.
    /// Returns the number of round trips, or the error the server answered.
    async fn run_event(&self, instance: u64) -> anyhow::Result<Result<u64, String>> {
        if self.protocol == Protocol::Protobuf {
            return self.run_event_pb(instance).await;
        }
        let mut next = self
            .rpc(
                |out, msgid| wire::handle_event(out, msgid, instance, &self.phase),
                decide,
            )
            .await?;
        let mut round_trips = 1;
        loop {
            match next {
                Next::Done => return Ok(Ok(round_trips)),
                Next::Failed(err) => return Ok(Err(err)),
                Next::Step {
                    event_id,
                    method,
                    answer,
                } => {
                    next = self
                        .rpc(
                            |out, msgid| wire::step(out, msgid, method, event_id, answer),
                            decide,
                        )
                        .await?;
                    round_trips += 1;
                }
            }
        }
    }

    /// Kong's ProtoBuf:1 event: one pooled connection for the whole PDK loop; after
    /// `kong.response.exit` Kong abandons the connection.
    async fn run_event_pb(&self, instance: u64) -> anyhow::Result<Result<u64, String>> {
        let mut conn = self.checkout().await?;
        let sequence = self.next_msgid() as i64 + 1;
        let Conn {
            stream, rbuf, wbuf, ..
        } = &mut conn;
        let end = pb::run_event(
            stream,
            rbuf,
            wbuf,
            sequence,
            instance as i32,
            &self.phase,
            HOST,
        )
        .await?;
        Ok(Ok(match end {
            pb::EventEnd::Returned { round_trips } => {
                self.checkin(conn);
                round_trips
            }
            pb::EventEnd::Exited { round_trips } => round_trips,
        }))
    }

    /// Runs one event and records it.
    async fn event_recorded(&self, instance: u64, lag: Option<Duration>) -> anyhow::Result<()> {
        let start = Instant::now();
        let outcome = self.run_event(instance).await?;
        let elapsed = start.elapsed();
        let mut stats = self.stats.borrow_mut();
        match outcome {
            Ok(round_trips) => {
                stats.events += 1;
                stats.round_trips += round_trips;
                stats.latency_ns.push(nanos(elapsed));
                if let Some(lag) = lag {
                    stats.lag_ns.push(nanos(lag));
                }
            }
            Err(err) => {
                stats.errors += 1;
                stats.first_error.get_or_insert(err);
            }
        }
        Ok(())
    }
}

fn nanos(d: Duration) -> u32 {
    u32::try_from(d.as_nanos()).unwrap_or(u32::MAX)
}

/// The `Id` of an InstanceStatus map.
fn status_id(status: &[u8]) -> anyhow::Result<u64> {
    let mut r = wire::Reader::new(status);
    for _ in 0..r.map_len()? {
        if r.bytes()? == b"Id" {
            return Ok(r.uint()?);
        }
        r.raw()?;
    }
    bail!("StartInstance answered without an Id")
}

/// Kong's reaction to a HandleEvent or Step response.
fn decide(incoming: Incoming<'_>) -> anyhow::Result<Next> {
    let result = match incoming {
        Incoming::Ok(result) => result,
        Incoming::Err(err) => return Ok(Next::Failed(String::from_utf8_lossy(err).into_owned())),
        Incoming::Notification { .. } => unreachable!(),
    };
    Ok(match wire::step_data(result)? {
        StepData::Ret { .. } => Next::Done,
        StepData::Call {
            event_id,
            method,
            args,
        } => match method {
            // Kong never answers these: the event ends when they are handed out.
            b"kong.response.exit" | b"kong.response.error" => Next::Done,
            b"kong.request.get_header" => Next::Step {
                event_id,
                method: "plugin.Step",
                answer: match wire::first_str_arg(args) {
                    Some(name) if name.eq_ignore_ascii_case(b"host") => Answer::Str(HOST),
                    _ => Answer::Nil,
                },
            },
            other => Next::Step {
                event_id,
                method: wire::step_method_for(other),
                answer: Answer::Nil,
            },
        },
    })
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
    instance: u64,
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
                worker.event_recorded(instance, None).await?;
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
    instance: u64,
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
                match worker.event_recorded(instance, Some(lag)).await {
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

/// The events scenario.
pub fn events(cli: &Cli, pid: Option<u32>) -> anyhow::Result<Report> {
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
    // Workers warm up, meet main (which reads /proc), then run the measured phase.
    let barrier = Arc::new(Barrier::new(workers + 1));
    let mut handles = Vec::new();
    for index in 0..workers {
        let cli = cli.clone();
        let bounds = bounds.clone();
        let barrier = barrier.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("kong-worker-{index}"))
                .spawn(move || worker_thread(&cli, index, &bounds, &barrier))?,
        );
    }
    barrier.wait();
    let before = pid.map(procfs::sample).transpose()?;
    let self_before = procfs::self_cpu_ns();
    let started = Instant::now();
    barrier.wait();
    let mut all = Stats::default();
    let mut failure = None;
    for handle in handles {
        match handle.join().map_err(|_| anyhow!("a worker panicked"))? {
            Ok(stats) => {
                all.events += stats.events;
                all.round_trips += stats.round_trips;
                all.errors += stats.errors;
                all.skipped += stats.skipped;
                all.connections += stats.connections;
                all.notifications += stats.notifications;
                if all.first_error.is_none() {
                    all.first_error = stats.first_error;
                }
                all.latency_ns.extend_from_slice(&stats.latency_ns);
                all.lag_ns.extend_from_slice(&stats.lag_ns);
            }
            Err(err) => failure = failure.or(Some(err)),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let self_cpu = procfs::self_cpu_ns() - self_before;
    if let Some(err) = failure {
        return Err(err);
    }
    let after = pid.map(procfs::sample).transpose()?;
    let server = before.zip(after).map(|(b, a)| {
        let cpu_ns = (a.cpu_ns - b.cpu_ns) as f64;
        let mut rss_at = std::mem::take(&mut *bounds.rss_readings.lock().unwrap());
        rss_at.sort_by_key(|r| r.events);
        Server {
            pid: pid.unwrap_or(0),
            cpu_ms: cpu_ns / 1e6,
            cpu_cores: cpu_ns / 1e9 / seconds,
            cpu_us_per_event: cpu_ns / 1e3 / all.events.max(1) as f64,
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
            events: all.events,
            round_trips: all.round_trips,
            errors: all.errors,
            first_error: all.first_error,
            skipped: all.skipped,
            seconds,
            events_per_s: all.events as f64 / seconds,
            round_trips_per_s: all.round_trips as f64 / seconds,
            latency_us: Percentiles::of(&mut all.latency_ns),
            start_lag_us: lag,
            connections: all.connections,
            server_pid_notifications: all.notifications,
            server,
            loadgen_cpu_us_per_event: self_cpu as f64 / 1e3 / all.events.max(1) as f64,
        })),
    })
}

fn worker_thread(
    cli: &Cli,
    index: usize,
    bounds: &Arc<Bounds>,
    barrier: &Barrier,
) -> anyhow::Result<Stats> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = LocalSet::new();
    let worker = Rc::new(Worker::new(cli));
    let concurrency = share(cli.concurrency as u64, cli.workers, index).max(1) as usize;
    // Until the barrier is passed, a failure must still meet it or main would wait forever.
    let warm = local.block_on(&runtime, async {
        let instance = worker
            .start_instance(&cli.plugin, &kong_config(cli, index as u64, false))
            .await?;
        let left = Rc::new(Cell::new(share(cli.warmup, cli.workers, index)));
        let claim: Rc<dyn Fn() -> bool> = Rc::new(move || {
            let n = left.get();
            left.set(n.saturating_sub(1));
            n > 0
        });
        closed_loop(&worker, instance, concurrency, claim, Rc::new(|| {})).await?;
        anyhow::Ok(instance)
    });
    barrier.wait();
    barrier.wait();
    let instance = warm?;
    // Connections opened (and serverPid notifications read) during the warm-up count.
    let (connections, notifications) = {
        let warm = worker.stats.borrow();
        (warm.connections, warm.notifications)
    };
    *worker.stats.borrow_mut() = Stats {
        latency_ns: Vec::with_capacity(cli.events.map_or(1 << 16, |e| {
            share(e, cli.workers, index).min(1 << 24) as usize
        })),
        connections,
        notifications,
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
            Some(rate) => {
                open_loop(&worker, instance, rate / cli.workers as f64, claim, done).await
            }
            None => closed_loop(&worker, instance, concurrency, claim, done).await,
        }
    })?;
    drop(local);
    let worker = Rc::try_unwrap(worker).map_err(|_| anyhow!("worker still shared"))?;
    Ok(worker.stats.into_inner())
}

/// The idle-instances scenario: RSS growth per instance started.
pub fn instances(cli: &Cli, pid: Option<u32>, n: u64) -> anyhow::Result<Report> {
    let pid = pid.context("--instances needs --spawn or --pid to read the server's memory")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = LocalSet::new();
    let worker = Rc::new(Worker::new(cli));
    local.block_on(&runtime, async {
        // Warm the server: one instance and a few events, so that buffers and allocator
        // pools that every server needs anyway are in the baseline.
        let instance = worker
            .start_instance(&cli.plugin, &kong_config(cli, u64::MAX >> 16, false))
            .await?;
        for _ in 0..200 {
            worker.event_recorded(instance, None).await?;
        }
        let settle = Duration::from_millis(500);
        tokio::time::sleep(settle).await;
        let (before, _) = procfs::memory_kib(pid)?;
        let started = Instant::now();
        for i in 0..n {
            worker
                .start_instance(&cli.plugin, &kong_config(cli, i, true))
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
