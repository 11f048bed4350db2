//! Running phase handlers: `HandleEvent` starts one, each `Step` resumes it with Kong's
//! answer, and the handler runs to its next stop right here, on the connection's own task
//! (no thread hop, no channel). It only suspends the task when the plugin itself waits on
//! its own I/O, and its waker then resumes it.
//!
//! Between two PDK calls an event waits in the daemon-wide table, keyed by id: Kong sends
//! the next Step on whatever pooled connection it picks. A connection *removes* the event
//! while it runs it and puts it back at the next call, so no per-event lock exists (Kong
//! never sends two steps of one event at once).
//!
//! **Failing closed.** Kong's MsgPack:1 client answers an error reply by logging it and
//! going on with the request as if the plugin had not run. So a handler that fails, a Step
//! for an event the daemon no longer has, or an event the daemon cannot start is never
//! answered with an error: the daemon answers with the PDK call that ends the request
//! (`kong.response.error(500)`, `kong.response.exit(500)` in `preread`; 503 when the daemon
//! is overloaded or lost the event), unless the plugin declared
//! [`OnFailure::FailOpen`](kong_rust_plugin_abi::OnFailure). `certificate` and `log` cannot
//! end a request: there the failure is logged and the handler reported finished. Only an
//! unknown *instance* stays an error, `no plugin instance`, which makes Kong start it again.

use std::{
    future::poll_fn,
    sync::{Arc, atomic::Ordering},
    task::Poll,
    time::Instant,
};

use kong_rust_plugin_abi::{EventBox, EventPoll, FfiWaker, OnFailure, Phase, StepInput};
use kong_rust_pluginserver_protocol::frame;
use sync_wrapper::SyncWrapper;

use super::{
    Daemon, EventIds, PluginEntry, Scope,
    instances::{Instance, UnknownInstance},
};
use crate::waitable::WaitableCount;

/// What Kong is told next about an event: the `Data` of its StepData.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventReply<'a> {
    /// Run this PDK function and Step back with its result.
    Call {
        /// Kong PDK function.
        method: &'a str,
        /// Its arguments, one MessagePack array.
        args: &'a [u8],
    },
    /// The handler finished (`"ret"`): Kong goes on with the request.
    Done,
    /// The daemon ends the request in the plugin's place, because the plugin failed or
    /// could not run: `kong.response.error(status)`, or `kong.response.exit(status)` in
    /// `preread`, where Kong has no `error`.
    EndRequest {
        /// 500, or 503 when the daemon is overloaded or lost the event.
        status: u16,
        /// The event's phase, which picks the PDK function.
        phase: Phase,
    },
}

impl EventReply<'_> {
    /// The PDK call that ends a request with `status` in `phase`, as `(method, status)`.
    pub fn ending_call(status: u16, phase: Phase) -> (&'static str, u16) {
        match phase {
            Phase::Preread => ("kong.response.exit", status),
            _ => ("kong.response.error", status),
        }
    }
}

/// Why an event failed or could not run: the label of the failure counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The handler returned an error (including a PDK answer it could not decode).
    Error,
    /// The handler panicked.
    Panic,
    /// The plugin does not implement the phase Kong asked for.
    NoHandler,
    /// The instance's events are all running (none waits for Kong) and its budget is full.
    Overloaded,
    /// A Step for an event this daemon does not have: it finished, was reaped, or ran in
    /// a daemon that is gone.
    UnknownEvent,
    /// The plugin refused the instance's configuration, and the Kong served (3.0) cannot
    /// be told at StartInstance.
    ConfigRefused,
}

impl FailureReason {
    /// The metric label.
    pub const fn label(self) -> &'static str {
        match self {
            FailureReason::Error => "error",
            FailureReason::Panic => "panic",
            FailureReason::NoHandler => "no_handler",
            FailureReason::Overloaded => "overloaded",
            FailureReason::UnknownEvent => "unknown_event",
            FailureReason::ConfigRefused => "config_refused",
        }
    }

    /// The status a request gets when it is ended for this reason.
    pub const fn status(self) -> u16 {
        match self {
            FailureReason::Overloaded | FailureReason::UnknownEvent => 503,
            _ => 500,
        }
    }
}

/// `HandleEvent` with an event name that is no phase at all: there is no request phase
/// to end, so this one stays an error (Kong never sends it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin {plugin} has no handler for event {event:?}")]
pub struct NotAPhase {
    /// The plugin.
    pub plugin: String,
    /// The event name Kong sent.
    pub event: String,
}

/// Why `HandleEvent` got no StepData.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartEventError {
    /// See [`UnknownInstance`].
    #[error(transparent)]
    UnknownInstance(#[from] UnknownInstance),
    /// See [`NotAPhase`].
    #[error(transparent)]
    NotAPhase(#[from] NotAPhase),
}

/// A phase handler between two PDK calls.
pub(crate) struct Event {
    pub(crate) instance: Arc<Instance>,
    pub(crate) phase: Phase,
    handle: EventBox,
    started: Instant,
    /// When it last handed a PDK call to Kong, for reaping and eviction.
    pub(crate) waiting_since: Instant,
    live: Arc<WaitableCount>,
}

impl Event {
    fn new(
        live: Arc<WaitableCount>,
        instance: Arc<Instance>,
        phase: Phase,
        handle: EventBox,
    ) -> Self {
        live.add();
        instance.live_events.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        Event {
            instance,
            phase,
            handle,
            started: now,
            waiting_since: now,
            live,
        }
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        self.instance.live_events.fetch_sub(1, Ordering::Relaxed);
        self.live.remove();
    }
}

/// What one poll of a handler came to.
enum Stop {
    /// A stop that ends this run of the handler.
    At(Outcome),
    /// A call the daemon refuses itself: answer it and poll again.
    Refused(String),
}

/// A check of every PDK call before it goes to Kong: the Kong version served may lack the
/// function, or the protocol in use may not carry it. A refused call fails in the plugin,
/// with the reason, instead of raising a Lua error in Kong (which abandons the event).
pub trait CallGate: Send + Sync {
    /// `Some(reason)` to refuse `method`.
    fn refuse(&self, method: &str) -> Option<String>;
}

/// How a handler stopped.
enum Outcome {
    /// At a PDK call Kong will answer.
    Waiting,
    /// Returned, or handed out a call that ends the event.
    Finished,
    Failed(FailureReason, String),
}

impl Daemon {
    /// `plugin.HandleEvent`: starts the `event_name` handler of instance `instance_id` and
    /// runs it to its first stop, which `reply` encodes (with the new event's id).
    pub async fn handle_event<R>(
        &self,
        scope: &Scope,
        instance_id: u64,
        event_name: &[u8],
        reply: impl FnOnce(u64, EventReply<'_>) -> R,
    ) -> Result<R, StartEventError> {
        let instance = match self.instance(scope, instance_id) {
            Ok(instance) => instance,
            Err(unknown) => {
                let (plugin, reason) = self.refused_instance(scope, instance_id).ok_or(unknown)?;
                let phase = Phase::from_name(event_name).ok_or_else(|| NotAPhase {
                    plugin: plugin.name().to_owned(),
                    event: String::from_utf8_lossy(event_name).into_owned(),
                })?;
                let event_id = self.event_ids.next(phase);
                plugin.metrics().phase(phase).events.inc();
                let message = format!("the plugin refused this instance's configuration: {reason}");
                return Ok(self.fail(
                    &plugin,
                    instance_id,
                    phase,
                    event_id,
                    FailureReason::ConfigRefused,
                    &message,
                    reply,
                ));
            }
        };
        instance.last_used.store(self.now_ms(), Ordering::Relaxed);
        let plugin = &instance.plugin;
        let Some(phase) = Phase::from_name(event_name) else {
            return Err(NotAPhase {
                plugin: plugin.name().to_owned(),
                event: String::from_utf8_lossy(event_name).into_owned(),
            }
            .into());
        };
        let event_id = self.event_ids.next(phase);
        let metrics = plugin.metrics().phase(phase);
        metrics.events.inc();
        if !plugin.implements(phase) {
            let reason = format!("the plugin does not implement the {phase} phase");
            return Ok(self.fail(
                &instance.plugin,
                instance.id,
                phase,
                event_id,
                FailureReason::NoHandler,
                &reason,
                reply,
            ));
        }
        if instance.live_events.load(Ordering::Relaxed) >= self.limits.max_events_per_instance
            && !self.evict_waiting_events(&instance)
        {
            let reason = format!(
                "all {} events of the instance are running (--max-events-per-instance)",
                self.limits.max_events_per_instance
            );
            return Ok(self.fail(
                &instance.plugin,
                instance.id,
                phase,
                event_id,
                FailureReason::Overloaded,
                &reason,
                reply,
            ));
        }
        let handle = match instance.handle.start_event(phase.code()).into_result() {
            Ok(handle) => handle,
            Err(err) => {
                let why = if err.panicked {
                    FailureReason::Panic
                } else {
                    FailureReason::Error
                };
                let message = err.message.into_string();
                return Ok(self.fail(
                    &instance.plugin,
                    instance.id,
                    phase,
                    event_id,
                    why,
                    &message,
                    reply,
                ));
            }
        };
        let event = Event::new(self.live.clone(), instance.clone(), phase, handle);
        Ok(self.drive(event_id, event, StepInput::Resume, reply).await)
    }

    /// `plugin.Step*`: delivers Kong's answer (`None`: nil) to event `event_id` and runs it
    /// to its next stop, which `reply` encodes. An event this daemon does not have (or not
    /// on this socket) ends its request.
    pub async fn step<R>(
        &self,
        scope: &Scope,
        event_id: u64,
        answer: Option<&[u8]>,
        reply: impl FnOnce(u64, EventReply<'_>) -> R,
    ) -> R {
        let event = self
            .events
            .remove(&event_id)
            .map(|(_, event)| event.into_inner());
        let event = match event {
            Some(event) if scope.allows(event.instance.plugin.slot()) => event,
            Some(foreign) => {
                // Another plugin's event: put it back untouched, and answer as unknown.
                self.events.insert(event_id, SyncWrapper::new(foreign));
                return self.unknown_event(scope, event_id, reply);
            }
            None => return self.unknown_event(scope, event_id, reply),
        };
        let input = match answer {
            // An explicit nil is the same answer as an absent Data.
            Some([0xc0]) | None => StepInput::Nil,
            Some(raw) => StepInput::Value(raw.into()),
        };
        self.drive(event_id, event, input, reply).await
    }

    /// Frees event `event_id` of `scope`, waiting for Kong, that Kong gave up on (over
    /// ProtoBuf:1 an event lives on one connection, and Kong abandons that connection when
    /// its Lua raises inside a PDK call). Counts as abandoned; returns whether it existed.
    pub fn abandon_event(&self, scope: &Scope, event_id: u64) -> bool {
        if !self.event_allowed(scope, event_id) {
            return false;
        }
        let Some((_, event)) = self.events.remove(&event_id) else {
            return false;
        };
        let event = event.into_inner();
        let plugin = &event.instance.plugin;
        plugin.metrics().phase(event.phase).abandoned.inc();
        tracing::debug!(
            plugin = %plugin.name(),
            instance = event.instance.id,
            phase = %event.phase,
            event = event_id,
            "freed an event Kong abandoned (its connection closed)"
        );
        true
    }

    /// Whether `event_id` is an event this daemon has, waiting for Kong's Step on `scope`
    /// (a hand-over keeps the connections that Step such events).
    pub fn has_waiting_event(&self, scope: &Scope, event_id: u64) -> bool {
        self.events.contains_key(&event_id) && self.event_allowed(scope, event_id)
    }

    fn event_allowed(&self, scope: &Scope, event_id: u64) -> bool {
        match scope {
            Scope::All => true,
            Scope::One(_) => {
                // Only the owner may see an event; the table holds it owned, so look at it
                // through a short exclusive borrow.
                self.events
                    .get_mut(&event_id)
                    .is_some_and(|mut e| scope.allows(e.get_mut().instance.plugin.slot()))
            }
        }
    }

    /// Runs the handler to its next stop and has `reply` encode it.
    async fn drive<R>(
        &self,
        event_id: u64,
        mut event: Event,
        input: StepInput<'_>,
        reply: impl FnOnce(u64, EventReply<'_>) -> R,
    ) -> R {
        let mut input = Some(input);
        let mut reply = Some(reply);
        let mut answered = None;
        let mut refusal = Vec::new();
        let outcome = poll_fn(|cx| {
            let waker = FfiWaker::borrowed(cx.waker());
            let mut input = input.take().unwrap_or(StepInput::Resume);
            let slot = event.instance.plugin.slot().0;
            loop {
                // Tells the watchdog which handler this loop runs, in case it blocks.
                let _busy = crate::heartbeat::busy(slot, event.phase, event_id);
                let stop = match event.handle.poll(input, &waker) {
                    EventPoll::Pending => return Poll::Pending,
                    EventPoll::Call { method, args } => {
                        let method = method.as_str();
                        let refused = self.call_gates.iter().find_map(|g| g.refuse(method));
                        if let Some(reason) = refused {
                            // Answered here, without Kong; the handler runs on.
                            tracing::debug!(
                                plugin = %event.instance.plugin.name(),
                                event = event_id,
                                "refused {method}: {reason}"
                            );
                            Stop::Refused(reason)
                        } else if !is_one_array(args.as_slice()) {
                            Stop::At(Outcome::Failed(
                                FailureReason::Error,
                                format!("the plugin passed malformed arguments to {method}"),
                            ))
                        } else {
                            let ends = kong_rust_pluginserver_protocol::kong::ends_event(
                                method.as_bytes(),
                            );
                            let call = EventReply::Call {
                                method,
                                args: args.as_slice(),
                            };
                            answered = reply.take().map(|reply| reply(event_id, call));
                            Stop::At(if ends {
                                Outcome::Finished
                            } else {
                                Outcome::Waiting
                            })
                        }
                    }
                    EventPoll::Done => {
                        answered = reply.take().map(|reply| reply(event_id, EventReply::Done));
                        Stop::At(Outcome::Finished)
                    }
                    EventPoll::Failed(reason) => {
                        Stop::At(Outcome::Failed(FailureReason::Error, reason.into_string()))
                    }
                    EventPoll::Panicked(reason) => {
                        Stop::At(Outcome::Failed(FailureReason::Panic, reason.into_string()))
                    }
                };
                match stop {
                    Stop::At(outcome) => return Poll::Ready(outcome),
                    Stop::Refused(reason) => {
                        refusal = kong_rust_plugin_abi::encode_refusal(&reason);
                        input = StepInput::Value(refusal.as_slice().into());
                    }
                }
            }
        })
        .await;
        let metrics = event.instance.plugin.metrics().phase(event.phase);
        match outcome {
            Outcome::Waiting => {
                metrics.pdk_calls.inc();
                event.waiting_since = Instant::now();
                self.events.insert(event_id, SyncWrapper::new(event));
            }
            Outcome::Finished => {
                metrics
                    .duration
                    .observe(event.started.elapsed().as_secs_f64());
                tracing::debug!(
                    plugin = %event.instance.plugin.name(),
                    instance = event.instance.id,
                    phase = %event.phase,
                    event = event_id,
                    elapsed_us = event.started.elapsed().as_micros() as u64,
                    "event finished"
                );
            }
            Outcome::Failed(why, message) => {
                metrics
                    .duration
                    .observe(event.started.elapsed().as_secs_f64());
                let reply = reply.take().expect("a failed poll did not reply");
                return self.fail(
                    &event.instance.plugin,
                    event.instance.id,
                    event.phase,
                    event_id,
                    why,
                    &message,
                    reply,
                );
            }
        }
        answered.expect("every stop but a failure replies")
    }

    /// Logs and counts a failure of `instance`'s event, and replies as the plugin's failure
    /// policy and the phase say: end the request, or let it go on.
    #[allow(clippy::too_many_arguments)]
    fn fail<R>(
        &self,
        plugin: &PluginEntry,
        instance_id: u64,
        phase: Phase,
        event_id: u64,
        why: FailureReason,
        message: &str,
        reply: impl FnOnce(u64, EventReply<'_>) -> R,
    ) -> R {
        let policy = plugin.manifest().on_failure;
        let answer = settle(why, phase, policy);
        let metrics = plugin.metrics();
        match why {
            FailureReason::Panic => metrics.phase(phase).panics.inc(),
            _ => metrics.phase(phase).errors.inc(),
        }
        self.metrics
            .count_failure(plugin.name(), phase, why.label(), action_label(&answer));
        crate::warn_throttled!(crate::log_throttle::EVENTS,
            plugin = %plugin.name(),
            phase = %phase,
            instance = instance_id,
            event = event_id,
            reason = why.label(),
            "{message}; {}",
            consequence(&answer)
        );
        reply(event_id, answer)
    }

    /// The answer to a Step for an event this daemon does not have on `scope`.
    fn unknown_event<R>(
        &self,
        scope: &Scope,
        event_id: u64,
        reply: impl FnOnce(u64, EventReply<'_>) -> R,
    ) -> R {
        let plugin = match scope {
            Scope::One(slot) => self.plugin_in_slot(*slot),
            Scope::All => None,
        };
        let name = plugin.as_ref().map_or("(any)", |p| p.name());
        let Some(phase) = EventIds::phase_of(event_id) else {
            // Not an id this daemon issues; there is no phase to end.
            crate::warn_throttled!(crate::log_throttle::EVENTS, plugin = %name, event = event_id, reason = "unknown_event",
                "a Step for an event id no daemon issued; reporting it finished");
            return reply(event_id, EventReply::Done);
        };
        let policy = plugin
            .as_ref()
            .map_or(OnFailure::FailClosed, |p| p.manifest().on_failure);
        let answer = settle(FailureReason::UnknownEvent, phase, policy);
        self.metrics.count_failure(
            name,
            phase,
            FailureReason::UnknownEvent.label(),
            action_label(&answer),
        );
        crate::warn_throttled!(crate::log_throttle::EVENTS,
            plugin = %name,
            phase = %phase,
            event = event_id,
            reason = FailureReason::UnknownEvent.label(),
            "a Step for an event this daemon does not have (it finished, was freed, or ran in a daemon that is gone); {}",
            consequence(&answer)
        );
        reply(event_id, answer)
    }

    /// Makes room in `instance`'s event budget by freeing the events that have waited
    /// longest for Kong's next Step (Kong dropped them: its Lua raised inside a PDK call,
    /// or the client went away). Frees a sixteenth of the budget at once, so the scan is
    /// rare. Returns whether there is room now.
    fn evict_waiting_events(&self, instance: &Arc<Instance>) -> bool {
        let limit = self.limits.max_events_per_instance;
        let batch = (limit / 16).max(1);
        let mut waiting: Vec<(Instant, u64)> = Vec::new();
        for mut entry in self.events.iter_mut() {
            let event = entry.value_mut().get_mut();
            if Arc::ptr_eq(&event.instance, instance) {
                waiting.push((event.waiting_since, *entry.key()));
            }
        }
        if waiting.len() > batch {
            waiting.select_nth_unstable(batch);
            waiting.truncate(batch);
        }
        for (_, event_id) in waiting {
            if let Some((_, event)) = self.events.remove(&event_id) {
                let event = event.into_inner();
                let plugin = &event.instance.plugin;
                plugin.metrics().phase(event.phase).evicted.inc();
                tracing::debug!(
                    plugin = %plugin.name(),
                    instance = instance.id,
                    event = event_id,
                    "freed the longest-waiting event to make room (--max-events-per-instance)"
                );
            }
        }
        instance.live_events.load(Ordering::Relaxed) < limit
    }

    /// Frees events that have waited longer than the event timeout for Kong's next Step:
    /// Kong dropped them (a timeout, a closed connection, a client gone). Returns how many.
    pub fn reap_abandoned_events(&self) -> usize {
        let timeout = self.limits.event_timeout;
        let mut reaped = 0;
        self.events.retain(|id, event| {
            let event = event.get_mut();
            let keep = event.waiting_since.elapsed() < timeout;
            if !keep {
                reaped += 1;
                let plugin = &event.instance.plugin;
                plugin.metrics().phase(event.phase).abandoned.inc();
                crate::warn_throttled!(crate::log_throttle::EVENTS,
                    plugin = %plugin.name(),
                    instance = event.instance.id,
                    phase = %event.phase,
                    event = id,
                    "freed an event Kong abandoned (no Step for {}s)",
                    timeout.as_secs_f64()
                );
            }
            keep
        });
        reaped
    }
}

/// What a failure turns into: the request ends unless the phase cannot end it or the
/// plugin fails open.
fn settle(why: FailureReason, phase: Phase, policy: OnFailure) -> EventReply<'static> {
    if phase.can_end_request() && policy == OnFailure::FailClosed {
        EventReply::EndRequest {
            status: why.status(),
            phase,
        }
    } else {
        EventReply::Done
    }
}

fn action_label(answer: &EventReply<'_>) -> &'static str {
    match answer {
        EventReply::EndRequest { .. } => "ended_request",
        _ => "continued",
    }
}

fn consequence(answer: &EventReply<'_>) -> String {
    match *answer {
        EventReply::EndRequest { status, phase } => {
            let (method, _) = EventReply::ending_call(status, phase);
            format!("ending the request with {status} ({method})")
        }
        _ => "the request continues without the plugin".to_owned(),
    }
}

/// Whether `bytes` is exactly one MessagePack array: what Kong unpacks as `Args`.
fn is_one_array(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(0x90..=0x9f | 0xdc | 0xdd))
        && frame::value_len(bytes, usize::MAX) == Ok(Some(bytes.len()))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{loader::LoadedPlugin, settings::Limits, wait::block_on};

    /// A daemon in this process serving rust-hello (linked in).
    pub(crate) fn hello_daemon() -> Daemon {
        let module = kong_rust_pdk::__private::module_for::<rust_hello::RustHello>();
        let plugin = LoadedPlugin::from_module(module, Path::new("rust-hello.so")).unwrap();
        Daemon::new([plugin], Limits::default())
    }

    struct NoHeaders;

    impl CallGate for NoHeaders {
        fn refuse(&self, method: &str) -> Option<String> {
            (method == "kong.request.get_header").then(|| "not in this test's Kong".into())
        }
    }

    #[test]
    fn a_refused_call_fails_in_the_plugin_and_the_request_ends() {
        let daemon = hello_daemon().with_call_gate(NoHeaders);
        let scope = daemon.scope_of("rust-hello").unwrap();
        let status = daemon.start_instance(&scope, b"rust-hello", b"{}").unwrap();
        let reply = block_on(
            daemon.handle_event(&scope, status.id, b"access", |_, reply| {
                format!("{reply:?}")
            }),
        )
        .unwrap();
        // rust-hello's first call is refused; the handler fails on it (`?`) and the
        // daemon ends the request.
        assert_eq!(reply, "EndRequest { status: 500, phase: Access }");
        assert_eq!(daemon.live_events(), 0);
    }

    #[test]
    fn failures_end_requests_only_where_they_can_and_policy_allows() {
        use FailureReason::*;
        let closed = OnFailure::FailClosed;
        assert_eq!(
            settle(Error, Phase::Access, closed),
            EventReply::EndRequest {
                status: 500,
                phase: Phase::Access
            }
        );
        assert_eq!(
            settle(Overloaded, Phase::Rewrite, closed),
            EventReply::EndRequest {
                status: 503,
                phase: Phase::Rewrite
            }
        );
        assert_eq!(settle(Panic, Phase::Log, closed), EventReply::Done);
        assert_eq!(settle(Panic, Phase::Certificate, closed), EventReply::Done);
        assert_eq!(
            settle(Error, Phase::Access, OnFailure::FailOpen),
            EventReply::Done
        );
        assert_eq!(
            EventReply::ending_call(500, Phase::Preread),
            ("kong.response.exit", 500)
        );
        assert_eq!(
            EventReply::ending_call(503, Phase::Response),
            ("kong.response.error", 503)
        );
    }
}
