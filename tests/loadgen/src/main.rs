//! `loadgen`: plays N Kong workers against a pluginserver over its unix socket, and reports
//! what Kong would have done with the requests.
//!
//! Each worker is one OS thread running a single-threaded event loop, like an nginx worker:
//! it keeps a keepalive pool of connections to the socket, takes one from the pool (or opens
//! one) for *every* RPC call and puts it back afterwards, so the Steps of one event travel on
//! whatever connection is idle, and many events of the worker run concurrently. Its MsgPack:1
//! client is Kong's (`mp_rpc`: the protocol crate's Kong side, plus Kong's instance cache,
//! retries and reactions). It answers the hello plugins' PDK calls as Kong would
//! (`kong.request.get_header("host")` → `"example.com"`, everything else → nil) and reports
//! events/s, round trips/s, latency per event, the server process's CPU time and memory
//! read from `/proc`, and each event's outcome: returned, ended by `kong.response.exit`/
//! `error` (by status), abandoned, or **proxied past the plugin** (an error reply, a refused
//! connect, a connection lost under a call).
//!
//! `--abandon` drops a fraction of events after their first Step, as Kong does when its Lua
//! raises inside a PDK call. `--restarts` hands the socket over to a new server process
//! during the run, as Kong does on reload, and reports each hand-over's gap.
//!
//! With `--protocol protobuf` it speaks Kong's ProtoBuf:1 instead (`pb_rpc.lua`): an event
//! takes one pooled connection for its whole PDK loop (`pb_rpc`).
//!
//! Runs are bounded: by `--events`, or by `--duration`, and always by `--max-seconds`.

mod daemons;
mod mp_rpc;
mod outcome;
mod pb_rpc;
mod pool;
mod report;
mod run;

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail};
use clap::Parser;

use daemons::{Daemons, RestartPlan};

/// Plays N Kong workers against a pluginserver socket and reports throughput, latency and
/// the server's CPU and memory.
#[derive(Debug, Parser, Clone)]
#[command(version, about)]
pub struct Cli {
    /// The server's unix socket.
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// Start the server with this shell command (run as `sh -c "exec CMD"`), wait for the
    /// socket, measure it, and stop it with SIGTERM at the end.
    #[arg(long, value_name = "CMD", conflicts_with = "pid")]
    pub spawn: Option<String>,
    /// Measure this already running server process.
    #[arg(long)]
    pub pid: Option<u32>,
    /// The plugin to start instances of.
    #[arg(long, default_value = "rust-hello")]
    pub plugin: String,
    /// The plugin's configuration (JSON object); Kong's bookkeeping keys are added.
    #[arg(long, default_value = r#"{"message":"Kong!"}"#)]
    pub config: String,
    /// The phase to run.
    #[arg(long, default_value = "access")]
    pub phase: String,
    /// The protocol to speak: Kong's MsgPack:1, or ProtoBuf:1 (start the server with
    /// `--protocol protobuf` too).
    #[arg(long, value_enum, default_value_t = Protocol::Msgpack)]
    pub protocol: Protocol,
    /// Kong workers (threads), each with its own connection pool and instance.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Concurrent events in flight, over all workers (closed loop).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Events to measure (after the warm-up).
    #[arg(long, conflicts_with = "duration")]
    pub events: Option<u64>,
    /// Seconds to measure (after the warm-up).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Open loop: start this many events per second over all workers, whatever the
    /// responses do (needs --duration or --events).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Abandon this fraction of events (0 to 1, spread evenly) after their first Step: the
    /// next PDK call raises, as Kong's Lua does on a bad call, and no further Step is sent.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    pub abandon: f64,
    /// Restart the server this many times during the measured run: start a NEW process
    /// (the same --spawn command), then SIGTERM the old one, as Kong does on reload.
    /// Reports each hand-over's gap and outcomes.
    #[arg(long, requires_all = ["spawn", "restart_every"], conflicts_with = "instances")]
    pub restarts: Option<usize>,
    /// Seconds from the start of the measured run to the first restart, and between
    /// restarts.
    #[arg(long, value_name = "SECS", requires = "restarts")]
    pub restart_every: Option<f64>,
    /// Events run before measuring, over all workers.
    #[arg(long, default_value_t = 2000)]
    pub warmup: u64,
    /// Instead of events: start this many idle instances (distinct configurations) and
    /// report the server's RSS growth per instance.
    #[arg(long, conflicts_with_all = ["rate", "duration", "events"])]
    pub instances: Option<u64>,
    /// Read the server's RSS when this many measured events have completed (repeatable,
    /// comma-separated), e.g. `--rss-at 1000000,5000000`.
    #[arg(long, value_delimiter = ',')]
    pub rss_at: Vec<u64>,
    /// A name for this run in the report.
    #[arg(long, default_value = "")]
    pub label: String,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for a spawned server's socket.
    #[arg(long, default_value_t = 30.0)]
    pub startup_timeout: f64,
    /// Hard bound on the whole run: the load generator gives up after this many seconds.
    #[arg(long, default_value_t = 900.0)]
    pub max_seconds: f64,
}

/// Kong's pluginserver protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// MsgPack:1: one RPC per pooled connection use, the Steps of an event on any.
    Msgpack,
    /// ProtoBuf:1: a whole event on one pooled connection.
    Protobuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match main_inner(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("loadgen: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn main_inner(cli: Cli) -> anyhow::Result<()> {
    if cli.workers == 0 || cli.concurrency == 0 {
        bail!("--workers and --concurrency must be at least 1");
    }
    if cli.instances.is_none() && cli.events.is_none() && cli.duration.is_none() {
        bail!("give --events, --duration or --instances: runs are bounded");
    }
    if let Some(rate) = cli.rate
        && (rate.is_nan() || rate <= 0.0)
    {
        bail!("--rate must be positive");
    }
    if !(0.0..=1.0).contains(&cli.abandon) {
        bail!("--abandon is a fraction, from 0 to 1");
    }
    if cli.protocol == Protocol::Protobuf && (cli.abandon > 0.0 || cli.restarts.is_some()) {
        bail!("--abandon and --restarts model Kong's MsgPack:1 client only");
    }
    let plan = match (cli.restarts, cli.restart_every) {
        (Some(count), Some(every)) => {
            if !(every.is_finite() && every > 0.0) {
                bail!("--restart-every must be a positive number of seconds");
            }
            if let Some(duration) = cli.duration
                && every * count as f64 >= duration
            {
                bail!("{count} restarts every {every} s do not fit in --duration {duration}");
            }
            Some(RestartPlan {
                every: Duration::from_secs_f64(every),
                count,
            })
        }
        _ => None,
    };
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&cli.config)
        .context("--config must be a JSON object")?;
    let spawned = cli
        .spawn
        .as_deref()
        .map(|cmd| {
            Daemons::spawn(
                cmd,
                &cli.socket,
                Duration::from_secs_f64(cli.startup_timeout),
            )
        })
        .transpose()?
        .map(|daemons| Arc::new(Mutex::new(daemons)));
    let pid = spawned
        .as_ref()
        .map(|d| d.lock().unwrap().pid())
        .or(cli.pid);

    // The hard bound: whatever happens on the socket, the process ends.
    let max = Duration::from_secs_f64(cli.max_seconds);
    let alive = spawned.as_ref().map(|d| d.lock().unwrap().alive());
    std::thread::spawn(move || {
        std::thread::sleep(max);
        eprintln!(
            "loadgen: --max-seconds {} reached; giving up",
            max.as_secs_f64()
        );
        for pid in alive.iter().flat_map(|a| a.lock().unwrap().clone()) {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        std::process::exit(3);
    });

    let report = match cli.instances {
        Some(n) => run::instances(&cli, pid, n)?,
        None => {
            let restarts = plan
                .zip(spawned.clone())
                .map(|(plan, daemons)| run::Restarts { plan, daemons });
            // With restarts the server changes: no /proc readings.
            let pid = if restarts.is_some() { None } else { pid };
            run::events(&cli, pid, restarts)?
        }
    };
    drop(spawned);
    if cli.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report::text(&report));
    }
    Ok(())
}
