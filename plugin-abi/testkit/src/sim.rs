//! Runs phase handlers in-process against a [`TestRequest`], the way the daemon and Kong
//! would: the handler's PDK calls are answered here instead of over a socket.

use std::{ops::Deref, sync::Arc};

use super::{
    TestRequest, answer,
    block_on::{thread_waker, wait},
    record::{Call, PhaseOutcome, Recorded},
};
use kong_rust_pdk::{
    __private::{
        driver::{EventDriver, Input, Step, ends_event},
        runtime::Lease,
    },
    InstanceInfo, Phase, Plugin, Value,
};

/// One simulated request: run any phases of a plugin on it, in order, then inspect what
/// they did ([`Recorded`], reachable through `Deref`: `sim.response`, `sim.logs`...).
/// State carries over between phases (`ctx.shared`, headers set, the exit), as in Kong.
pub struct Simulation {
    pub(crate) request: TestRequest,
    pub(crate) recorded: Recorded,
    /// What Kong keeps about the request besides its effects (`kong.log.inspect` on or off).
    pub(crate) kong: answer::KongState,
}

impl Simulation {
    /// A simulated request.
    pub fn new(request: TestRequest) -> Simulation {
        let mut recorded = Recorded::default();
        answer::initialize(&request, &mut recorded);
        Simulation {
            request,
            recorded,
            kong: answer::KongState::default(),
        }
    }

    /// The request described.
    pub fn request(&self) -> &TestRequest {
        &self.request
    }

    /// What the plugin did so far.
    pub fn recorded(&self) -> &Recorded {
        &self.recorded
    }

    /// Runs `phase` of `plugin` to its end and reports how it ended. Runs even a phase the
    /// plugin does not implement (the handler then fails, saying so), and after an exit
    /// (Kong would still run `log`).
    pub fn run<P: Plugin>(&mut self, plugin: &Arc<P>, phase: Phase) -> PhaseOutcome {
        let mut info = InstanceInfo::default();
        info.id = 1;
        let instance = Arc::new(info);
        let mut driver = EventDriver::start(plugin.clone(), instance, phase, Lease::process_wide());
        let (waker, unpark) = thread_waker();
        let mut reply: Option<Option<Vec<u8>>> = None;
        loop {
            let input = match &reply {
                None => Input::Resume,
                Some(None) => Input::Nil,
                Some(Some(bytes)) => Input::Value(bytes),
            };
            let step = driver.poll(input, &waker);
            reply = None;
            let (method, args) = match step {
                Step::Pending => match wait(&unpark) {
                    Ok(()) => continue,
                    Err(reason) => return self.outcome(phase, Err(reason), false),
                },
                Step::Done => return self.outcome(phase, Ok(()), false),
                Step::Failed(reason) | Step::Panicked(reason) => {
                    return self.outcome(phase, Err(reason), false);
                }
                Step::Call { method, args } => (method.to_owned(), decode_args(args)),
            };
            let args = match args {
                Ok(args) => args,
                Err(reason) => {
                    return self.outcome(
                        phase,
                        Err(format!("{method}: malformed arguments: {reason}")),
                        false,
                    );
                }
            };
            if let Some(reason) = self.refusal(&method) {
                // What the daemon's call gate answers under --kong-version.
                self.recorded.refused_calls.push((method, reason.clone()));
                reply = Some(Some(kong_rust_pdk::__private::encode_refusal(&reason)));
                continue;
            }
            let result = self.answer_call(phase, &method, &args);
            match result {
                // Kong raised a Lua error: it never answers, the event is abandoned, and
                // where a request is being served the client gets Kong's 500.
                Err(reason) => {
                    if matches!(phase, Phase::Rewrite | Phase::Access | Phase::Response) {
                        self.recorded.response.status = 500;
                        self.recorded.response.body =
                            br#"{"message":"An unexpected error occurred"}"#.to_vec();
                    }
                    let reason = format!(
                        "Kong raised a Lua error in {method} and abandoned the event: {reason}"
                    );
                    return self.outcome(phase, Err(reason), false);
                }
                Ok(_) if ends_event(&method) => return self.outcome(phase, Ok(()), true),
                Ok(value) => {
                    reply =
                        Some(value.map(|v| rmp_serde::to_vec(&v).expect("a Value always encodes")));
                }
            }
        }
    }

    /// Answers one PDK call as Kong would for the described request, and records it and
    /// its effects, as [`run`](Simulation::run) does for every call. For tools that drive a
    /// plugin elsewhere (the daemon's `try` command plays Kong with it). `Ok(None)` is a
    /// nil answer, `Err` a Lua error that aborts the handler.
    pub fn answer_call(
        &mut self,
        phase: Phase,
        method: &str,
        args: &[Value],
    ) -> Result<Option<Value>, String> {
        self.recorded.calls.push(Call {
            phase,
            method: method.to_owned(),
            args: args.to_vec(),
        });
        match self.request.answers.get(method) {
            Some(fixed) => Ok(fixed.clone()),
            None => answer::answer(
                &self.request,
                &mut self.recorded,
                &mut self.kong,
                phase,
                method,
                args,
            ),
        }
    }

    /// Why the configured Kong version lacks `method`, if it does.
    fn refusal(&self, method: &str) -> Option<String> {
        if !self.request.gate_versions {
            return None;
        }
        kong_rust_pdk::kong_versions::missing_function(method, self.request.kong_version)
    }

    /// Runs several phases in order, stopping at the first that fails.
    pub fn run_phases<P: Plugin>(
        &mut self,
        plugin: &Arc<P>,
        phases: &[Phase],
    ) -> Vec<PhaseOutcome> {
        let mut outcomes = Vec::new();
        for &phase in phases {
            let outcome = self.run(plugin, phase);
            let failed = outcome.result.is_err();
            outcomes.push(outcome);
            if failed {
                break;
            }
        }
        outcomes
    }

    fn outcome(&self, phase: Phase, result: Result<(), String>, exited: bool) -> PhaseOutcome {
        PhaseOutcome {
            phase,
            result,
            exited,
        }
    }
}

impl Deref for Simulation {
    type Target = Recorded;
    fn deref(&self) -> &Recorded {
        &self.recorded
    }
}

fn decode_args(bytes: &[u8]) -> Result<Vec<Value>, String> {
    rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
}
