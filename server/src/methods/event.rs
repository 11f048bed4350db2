//! `plugin.HandleEvent` and `plugin.Step*`: running phase handlers.
//!
//! HandleEvent starts a handler and runs it to its first PDK call; each Step delivers Kong's
//! answer and runs it to the next one. The handler is polled right here on the connection's
//! task: no thread hop, no channel. It only suspends the task when the plugin itself waits
//! on its own I/O, and its waker then resumes it.

use std::{future::poll_fn, sync::atomic::Ordering, task::Poll, time::Instant};

use kong_rust_pdk::{
    Phase,
    ffi::{EventPoll, FfiWaker, StepInput},
};

use sync_wrapper::SyncWrapper;

use super::{MethodError, decode_error};
use crate::{
    protocol::{encode, for_each_entry, frame},
    state::{Daemon, Event},
};

const HANDLE_EVENT: &str = "plugin.HandleEvent";
const STEP: &str = "plugin.Step";

/// PDK calls Kong never answers: the event ends when they are handed out.
fn ends_event(method: &str) -> bool {
    matches!(method, "kong.response.exit" | "kong.response.error")
}

/// `[{"InstanceId": id, "EventName": phase}]` → the handler's first StepData.
pub async fn handle_event(
    daemon: &Daemon,
    msgid: u64,
    arg: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), MethodError> {
    let (mut instance_id, mut event_name) = (None, None);
    for_each_entry(arg, |key, r| {
        match key {
            b"InstanceId" => instance_id = Some(r.u64()?),
            b"EventName" => event_name = Some(r.bytes()?),
            _ => {}
        }
        Ok(())
    })
    .map_err(decode_error(HANDLE_EVENT))?;
    let instance_id =
        instance_id.ok_or_else(|| MethodError::bad_argument(HANDLE_EVENT, "missing InstanceId"))?;
    let event_name =
        event_name.ok_or_else(|| MethodError::bad_argument(HANDLE_EVENT, "missing EventName"))?;

    let instance = daemon
        .instances
        .get(&instance_id)
        .map(|entry| entry.value().clone())
        .ok_or(MethodError::NoInstance(instance_id))?;
    let no_handler = || MethodError::NoHandler {
        plugin: instance.plugin.plugin.info.name.clone(),
        event: String::from_utf8_lossy(event_name).into_owned(),
    };
    instance.last_used.store(daemon.now_ms(), Ordering::Relaxed);
    let phase = Phase::from_name(event_name).ok_or_else(no_handler)?;
    if !instance.plugin.plugin.info.phases.contains(&phase) {
        return Err(no_handler());
    }
    let plugin = &instance.plugin;
    if daemon.draining.load(Ordering::Relaxed) {
        return Err(MethodError::Draining {
            plugin: plugin.plugin.info.name.clone(),
        });
    }
    let limit = daemon.limits.max_events_per_instance;
    if instance.live_events.load(Ordering::Relaxed) >= limit {
        return Err(MethodError::TooManyEvents {
            plugin: plugin.plugin.info.name.clone(),
            instance: instance.id,
            limit,
        });
    }
    let metrics = plugin.metrics.phase(phase);
    metrics.events.inc();
    let handle = instance.handle.start_event(phase.code()).into_result();
    let handle = handle.map_err(|err| {
        if err.panicked {
            metrics.panics.inc();
        } else {
            metrics.errors.inc();
        }
        MethodError::HandlerFailed {
            plugin: plugin.plugin.info.name.clone(),
            phase,
            reason: err.message.into_string(),
        }
    })?;
    let event = Event::new(daemon, instance.clone(), phase, handle);
    let event_id = daemon.ids.next();
    drive(daemon, event_id, event, StepInput::Resume, msgid, out).await
}

/// `[{"EventId": id, "Data": value}]` (no `Data` when Kong's answer was nil) → the next
/// StepData. Every `plugin.Step*` variant is handled alike.
pub async fn step(
    daemon: &Daemon,
    msgid: u64,
    arg: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), MethodError> {
    let (mut event_id, mut data) = (None, None);
    for_each_entry(arg, |key, r| {
        match key {
            b"EventId" => event_id = Some(r.u64()?),
            b"Data" => data = Some(r.raw()?),
            _ => {}
        }
        Ok(())
    })
    .map_err(decode_error(STEP))?;
    let event_id = event_id.ok_or_else(|| MethodError::bad_argument(STEP, "missing EventId"))?;
    let (_, event) = daemon
        .events
        .remove(&event_id)
        .ok_or(MethodError::NoEvent(event_id))?;
    let event = event.into_inner();
    let input = match data {
        // An explicit nil is the same answer as an absent Data.
        Some([0xc0]) | None => StepInput::Nil,
        Some(raw) => StepInput::Value(raw.into()),
    };
    drive(daemon, event_id, event, input, msgid, out).await
}

enum Outcome {
    /// Stopped at a PDK call Kong will answer.
    Waiting,
    /// Finished (returned, or handed out a call that ends the event).
    Finished,
    Failed(String),
    Panicked(String),
}

/// Runs the handler to its next stop and writes the StepData for it.
async fn drive(
    daemon: &Daemon,
    event_id: u64,
    mut event: Event,
    input: StepInput<'_>,
    msgid: u64,
    out: &mut Vec<u8>,
) -> Result<(), MethodError> {
    let mut input = Some(input);
    let outcome = poll_fn(|cx| {
        let waker = FfiWaker::borrowed(cx.waker());
        let input = input.take().unwrap_or(StepInput::Resume);
        match event.handle.poll(input, &waker) {
            EventPoll::Pending => Poll::Pending,
            EventPoll::Call { method, args } => {
                let method = method.as_str();
                if !is_one_array(args.as_slice()) {
                    return Poll::Ready(Outcome::Failed(format!(
                        "the plugin passed malformed arguments to {method}"
                    )));
                }
                encode::ok_header(out, msgid);
                encode::step_call(out, event_id, method, args.as_slice());
                Poll::Ready(if ends_event(method) {
                    Outcome::Finished
                } else {
                    Outcome::Waiting
                })
            }
            EventPoll::Done => {
                encode::ok_header(out, msgid);
                encode::step_ret(out, event_id);
                Poll::Ready(Outcome::Finished)
            }
            EventPoll::Failed(reason) => Poll::Ready(Outcome::Failed(reason.into_string())),
            EventPoll::Panicked(reason) => Poll::Ready(Outcome::Panicked(reason.into_string())),
        }
    })
    .await;
    let metrics = event.instance.plugin.metrics.phase(event.phase);
    if !matches!(outcome, Outcome::Waiting) {
        metrics
            .duration
            .observe(event.started.elapsed().as_secs_f64());
    }
    match outcome {
        Outcome::Waiting => {
            metrics.pdk_calls.inc();
            event.waiting_since = Instant::now();
            daemon.events.insert(event_id, SyncWrapper::new(event));
            Ok(())
        }
        Outcome::Finished => {
            tracing::debug!(
                plugin = %event.instance.plugin.plugin.info.name,
                instance = event.instance.id,
                phase = %event.phase,
                event = event_id,
                elapsed_us = event.started.elapsed().as_micros() as u64,
                "event finished"
            );
            Ok(())
        }
        Outcome::Failed(reason) => Err(failed(&event, event_id, false, reason)),
        Outcome::Panicked(reason) => Err(failed(&event, event_id, true, reason)),
    }
}

/// Counts a failed event and describes it with plugin, phase, instance and event.
fn failed(event: &Event, event_id: u64, panicked: bool, reason: String) -> MethodError {
    let metrics = event.instance.plugin.metrics.phase(event.phase);
    if panicked {
        metrics.panics.inc();
    } else {
        metrics.errors.inc();
    }
    MethodError::HandlerFailed {
        plugin: event.instance.plugin.plugin.info.name.clone(),
        phase: event.phase,
        reason: format!(
            "{reason} (instance {}, event {event_id})",
            event.instance.id
        ),
    }
}

/// Whether `bytes` is exactly one MessagePack array: what Kong unpacks as `Args`.
fn is_one_array(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(0x90..=0x9f | 0xdc | 0xdd))
        && frame::value_len(bytes, usize::MAX) == Ok(Some(bytes.len()))
}
