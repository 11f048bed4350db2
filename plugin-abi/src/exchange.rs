//! The hand-over point between a running handler and whoever drives it.
//!
//! A PDK call does not talk to Kong itself: it leaves its method and encoded arguments here
//! and waits. The driver (the daemon through the FFI, or the test kit) takes the call out,
//! gets Kong's answer and puts it back, then polls the handler again. Buffers are swapped,
//! not reallocated, so a steady stream of calls costs no allocation.

use std::{borrow::Cow, sync::Mutex, task::Poll};

use serde::{Serialize, de::DeserializeOwned};

use crate::error::{PdkError, PdkResult};

/// MessagePack `nil`, decoded when Kong answers with no `Data`.
const NIL: &[u8] = &[0xc0];

pub(crate) struct Exchange {
    state: Mutex<State>,
}

/// Room for the arguments and answer of a typical PDK call, so an event's calls do not
/// grow the buffers step by step.
const BUFFER: usize = 256;

impl Default for Exchange {
    fn default() -> Exchange {
        Exchange {
            state: Mutex::new(State {
                args: Vec::with_capacity(BUFFER),
                reply_buf: Vec::with_capacity(BUFFER),
                ..State::default()
            }),
        }
    }
}

#[derive(Default)]
struct State {
    /// The call the handler is waiting on, if it was not taken out yet or not answered.
    pending: Option<Cow<'static, str>>,
    /// Whether the pending call was taken out by the driver (and so awaits an answer).
    taken: bool,
    args: Vec<u8>,
    /// Set once a call that ends the event (`kong.response.exit`/`error`) was submitted:
    /// Kong never answers it, so no later call can be served.
    ended: Option<Cow<'static, str>>,
    reply: Reply,
    reply_buf: Vec<u8>,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Reply {
    #[default]
    None,
    Nil,
    Value,
}

/// PDK calls Kong never answers: handing one out ends the event.
pub fn ends_event(method: &str) -> bool {
    matches!(method, "kong.response.exit" | "kong.response.error")
}

/// A call handed out to the driver.
pub(crate) struct TakenCall {
    pub(crate) method: Cow<'static, str>,
}

impl Exchange {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State inconsistent: every method
        // finishes its few assignments; so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a PDK call; fails if another one is already in flight.
    pub(crate) fn submit<A: Serialize + ?Sized>(
        &self,
        method: Cow<'static, str>,
        args: &A,
    ) -> PdkResult<()> {
        let mut state = self.lock();
        if let Some(ending) = &state.ended {
            return Err(PdkError::AfterExit {
                method,
                ending: ending.clone(),
            });
        }
        if let Some(pending) = &state.pending {
            return Err(PdkError::ConcurrentCall {
                method,
                pending: pending.clone(),
            });
        }
        state.args.clear();
        // Structs go out as maps: Kong decodes a MessagePack map into a Lua table with named
        // fields, which is what every PDK function taking a table expects.
        let mut ser = rmp_serde::Serializer::new(&mut state.args).with_struct_map();
        if let Err(e) = args.serialize(&mut ser) {
            return Err(PdkError::Encode {
                method,
                reason: e.to_string(),
            });
        }
        if ends_event(&method) {
            state.ended = Some(method.clone());
        }
        state.pending = Some(method);
        state.taken = false;
        state.reply = Reply::None;
        Ok(())
    }

    /// Waits for the answer to the submitted call and decodes it.
    pub(crate) fn poll_reply<R: DeserializeOwned>(&self) -> Poll<PdkResult<R>> {
        let mut state = self.lock();
        let bytes = match state.reply {
            Reply::None => return Poll::Pending,
            Reply::Nil => NIL,
            Reply::Value => &state.reply_buf[..],
        };
        let refusal = kong_rust_plugin_abi::decode_refusal(bytes).map(str::to_owned);
        let decoded = match refusal {
            Some(_) => None,
            None => Some(rmp_serde::from_slice::<R>(bytes)),
        };
        let nil = state.reply == Reply::Nil;
        let method = state.pending.take().unwrap_or(Cow::Borrowed("PDK call"));
        state.reply = Reply::None;
        let Some(decoded) = decoded else {
            let reason = refusal.unwrap_or_default();
            return Poll::Ready(Err(PdkError::Unavailable { method, reason }));
        };
        Poll::Ready(decoded.map_err(|e| {
            if nil {
                PdkError::NoValue { method }
            } else {
                let hint = match e {
                    rmp_serde::decode::Error::Utf8Error(_) => {
                        " (Kong's strings need not be UTF-8: read this one as bytes, e.g. with a `*_bytes` method)"
                    }
                    _ => "",
                };
                PdkError::Decode {
                    method,
                    reason: format!("{e}{hint}"),
                }
            }
        }))
    }

    /// Takes out a newly submitted call, swapping its arguments into `args`.
    pub(crate) fn take_call(&self, args: &mut Vec<u8>) -> Option<TakenCall> {
        let mut state = self.lock();
        if state.taken {
            return None;
        }
        let method = state.pending.clone()?;
        state.taken = true;
        std::mem::swap(&mut state.args, args);
        Some(TakenCall { method })
    }

    /// Delivers Kong's answer to the call in flight. `None` is a nil answer.
    pub(crate) fn answer(&self, value: Option<&[u8]>) {
        let mut state = self.lock();
        match value {
            None => state.reply = Reply::Nil,
            Some(bytes) => {
                state.reply_buf.clear();
                state.reply_buf.extend_from_slice(bytes);
                state.reply = Reply::Value;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_round_trips_and_buffers_are_recycled() {
        let ex = Exchange::default();
        ex.submit("kong.request.get_header".into(), &("host",))
            .unwrap();
        let mut args = Vec::new();
        let call = ex.take_call(&mut args).unwrap();
        assert_eq!(call.method, "kong.request.get_header");
        assert_eq!(args, [0x91, 0xa4, b'h', b'o', b's', b't']);
        assert!(
            ex.take_call(&mut args).is_none(),
            "a call is taken out once"
        );
        assert!(ex.poll_reply::<String>().is_pending());
        ex.answer(Some(&[0xa2, b'o', b'k']));
        let Poll::Ready(Ok(v)) = ex.poll_reply::<String>() else {
            panic!("expected a decoded reply")
        };
        assert_eq!(v, "ok");
    }

    #[test]
    fn nil_answers_are_none_or_a_clear_error() {
        let ex = Exchange::default();
        ex.submit("kong.request.get_header".into(), &("x",))
            .unwrap();
        ex.take_call(&mut Vec::new()).unwrap();
        ex.answer(None);
        assert!(matches!(
            ex.poll_reply::<Option<String>>(),
            Poll::Ready(Ok(None))
        ));

        ex.submit("kong.request.get_path".into(), &()).unwrap();
        ex.take_call(&mut Vec::new()).unwrap();
        ex.answer(None);
        let Poll::Ready(Err(err)) = ex.poll_reply::<String>() else {
            panic!("expected an error")
        };
        assert!(matches!(err, PdkError::NoValue { .. }), "{err}");
        assert!(err.to_string().contains("kong.request.get_path"));
    }

    #[test]
    fn structs_are_sent_as_maps_and_nothing_follows_an_exit() {
        #[derive(serde::Serialize)]
        struct Opts {
            mode: &'static str,
        }
        let ex = Exchange::default();
        ex.submit(
            "kong.log.set_serialize_value".into(),
            &("k", 1, Opts { mode: "add" }),
        )
        .unwrap();
        let mut args = Vec::new();
        ex.take_call(&mut args).unwrap();
        assert_eq!(&args[..4], [0x93, 0xa1, b'k', 0x01]);
        assert_eq!(args[4], 0x81, "a one-entry map");

        let ex = Exchange::default();
        ex.submit("kong.response.exit".into(), &(403,)).unwrap();
        ex.take_call(&mut Vec::new()).unwrap();
        let err = ex.submit("kong.log.err".into(), &("late",)).unwrap_err();
        assert!(matches!(err, PdkError::AfterExit { .. }), "{err}");
    }

    #[test]
    fn a_refusal_from_the_daemon_fails_the_call_with_its_reason() {
        let ex = Exchange::default();
        ex.submit("kong.service.set_retries".into(), &(3,)).unwrap();
        ex.take_call(&mut Vec::new()).unwrap();
        ex.answer(Some(&kong_rust_plugin_abi::encode_refusal(
            "needs Kong 3.8",
        )));
        let Poll::Ready(Err(err)) = ex.poll_reply::<Option<String>>() else {
            panic!("expected an error")
        };
        assert_eq!(
            err.to_string(),
            "kong.service.set_retries is not available: needs Kong 3.8"
        );
    }

    #[test]
    fn concurrent_calls_are_refused() {
        let ex = Exchange::default();
        ex.submit("kong.a".into(), &()).unwrap();
        let err = ex.submit("kong.b".into(), &()).unwrap_err();
        assert!(matches!(err, PdkError::ConcurrentCall { .. }));
    }
}
