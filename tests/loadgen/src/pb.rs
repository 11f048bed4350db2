//! A Kong worker's ProtoBuf:1 exchanges (`pb_rpc.lua`), for `--protocol protobuf`: one
//! `RpcCall` per connection use; an event runs its whole PDK loop on that connection
//! before the `RpcReturn`. Frames and messages come from the protocol crate; the PDK calls
//! are answered as the MsgPack:1 mode answers them (`get_header("host")` → the host,
//! everything else → nil, an empty frame).

use std::ops::Range;

use anyhow::{Context, bail};
use kong_rust_pluginserver_protocol::protobuf::{
    Message, frame,
    kong::{handle_event, read_return, start_instance as start_call},
    messages::{ExitArgs, Str, rpc_return::Return},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
};

/// Largest frame accepted.
const MAX_FRAME: usize = 16 << 20;

/// How an event ended.
pub enum EventEnd {
    /// The loop ended and the RpcReturn echoed the sequence: the connection can be pooled.
    Returned {
        /// Exchanges on the connection: the call and one per PDK call.
        round_trips: u64,
    },
    /// `kong.response.exit`: Kong abandons the connection.
    Exited {
        /// As above.
        round_trips: u64,
        /// The exit's status (0 if its arguments do not decode).
        status: i32,
    },
}

/// Reads the next frame into `rbuf` (after the `consumed` bytes of the previous one).
async fn read_frame(
    stream: &mut UnixStream,
    rbuf: &mut Vec<u8>,
    consumed: &mut usize,
) -> anyhow::Result<Range<usize>> {
    rbuf.drain(..*consumed);
    *consumed = 0;
    loop {
        if let Some(payload) = frame::first(rbuf, MAX_FRAME)? {
            *consumed = payload.end;
            return Ok(payload);
        }
        if rbuf.capacity() - rbuf.len() < 1024 {
            rbuf.reserve(4096);
        }
        if stream.read_buf(rbuf).await.context("read")? == 0 {
            bail!("the server closed the connection (Kong: restart the instance)");
        }
    }
}

/// `cmd_start_instance`; returns the instance id.
pub async fn start_instance(
    stream: &mut UnixStream,
    rbuf: &mut Vec<u8>,
    wbuf: &mut Vec<u8>,
    sequence: i64,
    plugin: &str,
    config: &str,
) -> anyhow::Result<i32> {
    wbuf.clear();
    start_call(wbuf, sequence, plugin, config);
    stream.write_all(wbuf).await.context("write")?;
    rbuf.clear();
    let mut consumed = 0;
    let range = read_frame(stream, rbuf, &mut consumed).await?;
    let ret = read_return(&rbuf[range], sequence).map_err(anyhow::Error::msg)?;
    rbuf.drain(..consumed);
    match ret.r#return {
        Some(Return::InstanceStatus(status)) => Ok(status.instance_id),
        other => bail!("StartInstance answered {other:?}"),
    }
}

/// `cmd_handle_event` with Kong's bridge loop.
pub async fn run_event(
    stream: &mut UnixStream,
    rbuf: &mut Vec<u8>,
    wbuf: &mut Vec<u8>,
    sequence: i64,
    instance: i32,
    phase: &str,
    host: &[u8],
) -> anyhow::Result<EventEnd> {
    wbuf.clear();
    handle_event(wbuf, sequence, instance, phase);
    stream.write_all(wbuf).await.context("write")?;
    rbuf.clear();
    let mut consumed = 0;
    let mut round_trips = 1;
    loop {
        let method = read_frame(stream, rbuf, &mut consumed).await?;
        if method.is_empty() {
            break;
        }
        let method = rbuf[method].to_vec();
        let args = read_frame(stream, rbuf, &mut consumed).await?;
        if method == b"kong.response.exit" {
            let status = ExitArgs::decode(&rbuf[args]).map_or(0, |exit| exit.status);
            return Ok(EventEnd::Exited {
                round_trips,
                status,
            });
        }
        wbuf.clear();
        let asks_host = method == b"kong.request.get_header"
            && Str::decode(&rbuf[args]).is_ok_and(|name| name.v.eq_ignore_ascii_case(b"host"));
        if asks_host {
            frame::write_message(wbuf, &Str { v: host.to_vec() });
        } else {
            frame::write(wbuf, b"");
        }
        stream.write_all(wbuf).await.context("write")?;
        round_trips += 1;
    }
    let ret = read_frame(stream, rbuf, &mut consumed).await?;
    read_return(&rbuf[ret], sequence).map_err(anyhow::Error::msg)?;
    rbuf.drain(..consumed);
    Ok(EventEnd::Returned { round_trips })
}
