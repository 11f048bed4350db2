//! `loadgen`: plays N Kong workers against a pluginserver over its unix socket.
//!
//! Each worker is one OS thread running a single-threaded event loop, like an nginx worker:
//! it keeps a keepalive pool of connections to the socket, takes one from the pool (or opens
//! one) for *every* RPC call and puts it back afterwards, so the Steps of one event travel on
//! whatever connection is idle, and many events of the worker run concurrently. It answers
//! the hello plugins' PDK calls as Kong would (`kong.request.get_header("host")` →
//! `"example.com"`, everything else → nil) and reports events/s, round trips/s, latency per
//! event, and the server process's CPU time and memory read from `/proc`.
//!
//! With `--protocol protobuf` it speaks Kong's ProtoBuf:1 instead (`pb_rpc.lua`): an event
//! takes one pooled connection for its whole PDK loop.
//!
//! Runs are bounded: by `--events`, or by `--duration`, and always by `--max-seconds`.

mod report;
mod run;

use std::{
    path::PathBuf,
    process::{Child, Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;

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

/// A server started by `--spawn`; stopped when dropped.
struct Spawned {
    child: Child,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(cli: &Cli, cmd: &str) -> anyhow::Result<Spawned> {
    if cli.socket.exists() {
        if std::os::unix::net::UnixStream::connect(&cli.socket).is_ok() {
            bail!(
                "{} is already served by another process",
                cli.socket.display()
            );
        }
        let _ = std::fs::remove_file(&cli.socket);
    }
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {cmd}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("spawning `{cmd}`"))?;
    let mut spawned = Spawned { child };
    let deadline = Instant::now() + Duration::from_secs_f64(cli.startup_timeout);
    while std::os::unix::net::UnixStream::connect(&cli.socket).is_err() {
        if let Ok(Some(status)) = spawned.child.try_wait() {
            bail!(
                "`{cmd}` exited with {status} before opening {}",
                cli.socket.display()
            );
        }
        if Instant::now() > deadline {
            bail!("`{cmd}` did not open {} in time", cli.socket.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(spawned)
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
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&cli.config)
        .context("--config must be a JSON object")?;
    let spawned = cli
        .spawn
        .as_deref()
        .map(|cmd| spawn(&cli, cmd))
        .transpose()?;
    let pid = spawned.as_ref().map(|s| s.child.id()).or(cli.pid);

    // The hard bound: whatever happens on the socket, the process ends.
    let max = Duration::from_secs_f64(cli.max_seconds);
    let spawned_pid = spawned.as_ref().map(|s| s.child.id());
    std::thread::spawn(move || {
        std::thread::sleep(max);
        eprintln!(
            "loadgen: --max-seconds {} reached; giving up",
            max.as_secs_f64()
        );
        if let Some(pid) = spawned_pid {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        std::process::exit(3);
    });

    let report = match cli.instances {
        Some(n) => run::instances(&cli, pid, n)?,
        None => run::events(&cli, pid)?,
    };
    drop(spawned);
    if cli.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report::text(&report));
    }
    Ok(())
}
