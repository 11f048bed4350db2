//! One Kong worker's ProtoBuf:1 client (`--protocol protobuf`, Kong's `pb_rpc.lua`): a
//! whole event on one pooled connection, the exchanges from [`pb`]. Kong's instance cache
//! and restart handling are modelled for MsgPack:1 only (`mp_rpc`); here the instance is
//! started once per worker, and a broken connection ends the run.

use std::cell::Cell;

use anyhow::{Context, bail};
use kong_rust_pluginserver_loadgen::pb;

use crate::{
    mp_rpc::EventResult,
    outcome::{EndMethod, Outcome},
    pool::{CallFailure, Conn, Pool, PoolCounts},
};

/// The value Kong answers for `kong.request.get_header("host")`.
const HOST: &[u8] = b"example.com";

/// A Kong worker's ProtoBuf:1 client for one plugin configuration on one socket.
pub struct Client {
    pool: Pool,
    /// pb_rpc.lua numbers its calls from 2.
    sequence: Cell<i64>,
    plugin: String,
    config: String,
    phase: String,
    instance: Cell<Option<i32>>,
    starts: Cell<u64>,
}

impl Client {
    /// A client for instances of `plugin` with `config` (Kong's JSON), running `phase`.
    pub fn new(pool: Pool, plugin: &str, config: String, phase: &str) -> Client {
        Client {
            pool,
            sequence: Cell::new(1),
            plugin: plugin.to_owned(),
            config,
            phase: phase.to_owned(),
            instance: Cell::new(None),
            starts: Cell::new(0),
        }
    }

    /// The pool's counters.
    pub fn pool_counts(&self) -> PoolCounts {
        self.pool.counts()
    }

    /// Instances started.
    pub fn instance_starts(&self) -> u64 {
        self.starts.get()
    }

    fn next_sequence(&self) -> i64 {
        let sequence = self.sequence.get() + 1;
        self.sequence.set(sequence);
        sequence
    }

    async fn checkout(&self) -> anyhow::Result<Conn> {
        self.pool.checkout().await.map_err(|failure| match failure {
            CallFailure::Refused(text) | CallFailure::Lost(text) | CallFailure::Protocol(text) => {
                anyhow::anyhow!(text)
            }
        })
    }

    /// `cmd_start_instance` with `config`: the instance id.
    pub async fn start_instance(&self, config: &str) -> anyhow::Result<i32> {
        self.starts.set(self.starts.get() + 1);
        let mut conn = self.checkout().await?;
        let sequence = self.next_sequence();
        let (stream, rbuf, wbuf) = conn.parts();
        let id = pb::start_instance(stream, rbuf, wbuf, sequence, &self.plugin, config).await?;
        self.pool.checkin(conn);
        Ok(id)
    }

    /// Starts the worker's instance, before the run.
    pub async fn start_first_instance(&self) -> anyhow::Result<i32> {
        let id = self
            .start_instance(&self.config)
            .await
            .with_context(|| format!("StartInstance {}", self.plugin))?;
        self.instance.set(Some(id));
        Ok(id)
    }

    /// `cmd_handle_event` with Kong's bridge loop on one connection.
    pub async fn run_event(&self) -> anyhow::Result<EventResult> {
        let Some(instance) = self.instance.get() else {
            bail!("no instance started");
        };
        let mut conn = self.checkout().await?;
        let sequence = self.next_sequence();
        let (stream, rbuf, wbuf) = conn.parts();
        let end = pb::run_event(stream, rbuf, wbuf, sequence, instance, &self.phase, HOST).await?;
        Ok(match end {
            pb::EventEnd::Returned { round_trips } => {
                self.pool.checkin(conn);
                EventResult {
                    outcome: Outcome::Returned,
                    round_trips,
                }
            }
            // Kong abandons the connection after an exit.
            pb::EventEnd::Exited {
                round_trips,
                status,
            } => EventResult {
                outcome: Outcome::Ended {
                    method: EndMethod::Exit,
                    status: u16::try_from(status).unwrap_or(0),
                },
                round_trips,
            },
        })
    }
}
