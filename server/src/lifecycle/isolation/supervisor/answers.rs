//! Answering, in a dead worker's place, the requests it was handling.
//!
//! Kong's MsgPack:1 client treats a closed connection like any error: it logs it and
//! proxies the request without the plugin. So when a worker dies, the supervisor (which
//! holds a copy of every connection's descriptor) reads the worker's board and answers each
//! request that was being handled, on its own connection, as the daemon answers a failed
//! handler: `kong.response.error(500)` as StepData (`kong.response.exit(500)` in preread;
//! "ret" where the request cannot be ended or the plugin fails open), encoded by the
//! daemon's own encoder. A StartInstance gets an instance id no worker knows: Kong's event
//! for it then gets `no plugin instance` from the next worker, and Kong starts the instance
//! again there (an error would stall Kong 3.0's worker, and fail the request on 3.1+). A
//! connection caught in the middle of a message (part of a request read, or part of a
//! response written) cannot be repaired and is closed.

use std::{os::fd::OwnedFd, time::Duration};

use kong_rust_plugin_abi::OnFailure;
use kong_rust_pluginserver_protocol::encode;

use crate::{
    board::{ConnState, RequestKind, SlotView},
    daemon::{EventIds, EventReply, FailureReason, InstanceIds, settle, unix_now},
    rpc::{defuse_instance_phrase, write_step_data},
};

/// What became of a connection of a dead worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was in flight on it: it goes to the next worker.
    Idle,
    /// Its request was answered: the request ends (or continues, failing open).
    Answered(&'static str),
    /// It was in the middle of a message and is closed.
    Closed,
}

/// Ids the supervisor hands out in a dead worker's place.
#[derive(Debug)]
pub struct Ids {
    /// For the events it ends.
    pub events: EventIds,
    /// For the instances it starts (that no worker knows).
    pub instances: InstanceIds,
}

impl Ids {
    /// Ids from the clock, like a daemon's.
    pub fn from_clock() -> Ids {
        Ids {
            events: EventIds::from_clock(),
            instances: InstanceIds::from_clock(),
        }
    }
}

/// The answer to the request of `view` (a worker handling it died), if it can have one.
pub fn answer(
    view: &SlotView,
    plugin: &str,
    policy: OnFailure,
    cause: &str,
    ids: &Ids,
) -> Option<(Vec<u8>, &'static str)> {
    let mut out = Vec::with_capacity(128);
    let msgid = view.msgid;
    match (view.kind, view.phase) {
        (RequestKind::HandleEvent | RequestKind::Step, Some(phase)) => {
            let event_id = match view.kind {
                RequestKind::Step => view.subject,
                _ => ids.events.next(phase),
            };
            let reply = settle(FailureReason::Crashed, phase, policy);
            let action = match reply {
                EventReply::EndRequest { .. } => "ended_request",
                _ => "continued",
            };
            write_step_data(&mut out, msgid, event_id, reply);
            Some((out, action))
        }
        (RequestKind::StartInstance, _) => {
            encode::ok_header(&mut out, msgid);
            encode::value(
                &mut out,
                &serde_json::json!({
                    "Id": ids.instances.next(),
                    "Name": plugin,
                    "Config": {},
                    "StartTime": unix_now(),
                }),
            );
            Some((out, "restarted_instance"))
        }
        _ => {
            let message = format!(
                "plugin {plugin}: its worker process died while handling this request ({cause})"
            );
            encode::error(&mut out, msgid, &defuse_instance_phrase(&message));
            Some((out, "error_reply"))
        }
    }
}

/// Settles one connection of a dead worker: answers its request if one was being handled,
/// closes it if it was in the middle of a message.
pub fn settle_connection(
    connection: &OwnedFd,
    view: &SlotView,
    plugin: &str,
    policy: OnFailure,
    cause: &str,
    ids: &Ids,
) -> Outcome {
    match view.state {
        ConnState::Free | ConnState::Idle => Outcome::Idle,
        // Kong sends a request only once it has read the whole response to the previous
        // one: a request waiting means the worker had written its response and died
        // before saying so. The next worker serves that request.
        ConnState::Writing if request_waiting(connection) => Outcome::Idle,
        // A worker records a request as handled before it takes the request's bytes from
        // the socket (it peeks first), and Kong sends nothing more until it has the
        // answer: bytes waiting mean the worker died before taking them. The next worker
        // reads and serves the request.
        ConnState::Handling if request_waiting(connection) => Outcome::Idle,
        // Otherwise the request was taken and no byte of its response is known to be out
        // (a worker says Writing only after a first write left part of the response
        // behind): answered. A worker that died after writing its whole response in one go
        // and before saying Idle gets its request answered twice; Kong has already taken
        // the first answer, and the second one, read on that connection, either makes
        // nginx drop it from the pool or fails the next call on it (an unexpected msgid is
        // an assert: 500), never a request let through.
        ConnState::Reading | ConnState::Writing => {
            let _ = rustix::net::shutdown(connection, rustix::net::Shutdown::Both);
            Outcome::Closed
        }
        ConnState::Handling => match answer(view, plugin, policy, cause, ids) {
            Some((bytes, action)) if write_all(connection, &bytes, Duration::from_secs(2)) => {
                Outcome::Answered(action)
            }
            _ => {
                let _ = rustix::net::shutdown(connection, rustix::net::Shutdown::Both);
                Outcome::Closed
            }
        },
    }
}

/// Whether Kong has sent bytes on `connection` that nobody has read.
fn request_waiting(connection: &OwnedFd) -> bool {
    use rustix::net::{RecvFlags, recv};
    let mut byte = [0u8; 1];
    matches!(
        recv(connection, &mut byte, RecvFlags::PEEK | RecvFlags::DONTWAIT),
        Ok((1.., _))
    )
}

/// Writes all of `bytes` to `connection` without changing its blocking mode (shared with
/// the next worker), waiting at most `timeout` for room.
fn write_all(connection: &OwnedFd, mut bytes: &[u8], timeout: Duration) -> bool {
    use rustix::{
        event::{PollFd, PollFlags, Timespec, poll},
        io::Errno,
        net::{SendFlags, send},
    };
    let deadline = std::time::Instant::now() + timeout;
    while !bytes.is_empty() {
        match send(connection, bytes, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::AGAIN) => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return false;
                }
                let mut fds = [PollFd::new(connection, PollFlags::OUT)];
                let wait = Timespec {
                    tv_sec: left.as_secs() as i64,
                    tv_nsec: i64::from(left.subsec_nanos()),
                };
                let _ = poll(&mut fds, Some(&wait));
            }
            Err(Errno::INTR) => {}
            Err(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use std::{io::Read, os::unix::net::UnixStream};

    use kong_rust_plugin_abi::Phase;
    use kong_rust_pluginserver_protocol::kong::{Incoming, StepData, incoming, step_data};

    use super::*;

    fn view(kind: RequestKind, phase: Option<Phase>, subject: u64) -> SlotView {
        SlotView {
            state: ConnState::Handling,
            kind,
            phase,
            plugin: Some(0),
            since: 0,
            msgid: 42,
            subject,
        }
    }

    fn read_answer(kong: &mut UnixStream) -> Vec<u8> {
        let mut buf = vec![0u8; 256];
        let n = kong.read(&mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn requests_in_flight_fail_closed_as_the_daemon_fails_them() {
        let ids = Ids::from_clock();
        let (mut kong, ours) = UnixStream::pair().unwrap();
        let ours = OwnedFd::from(ours);
        // A Step in access: kong.response.error(500) for the same event.
        let step = view(RequestKind::Step, Some(Phase::Access), 4242 << 3 | 2);
        let outcome = settle_connection(&ours, &step, "a", OnFailure::FailClosed, "SIGSEGV", &ids);
        assert_eq!(outcome, Outcome::Answered("ended_request"));
        let answered = read_answer(&mut kong);
        let Incoming::Ok(result) = incoming(&answered, 42).unwrap() else {
            panic!("not a result")
        };
        match step_data(result).unwrap() {
            StepData::Call { method, args, .. } => {
                assert_eq!(method, b"kong.response.error");
                assert_eq!(
                    kong_rust_pluginserver_protocol::kong::first_uint_arg(args),
                    Some(500)
                );
            }
            other => panic!("{other:?}"),
        }
        // HandleEvent in preread: exit(500); in log: "ret"; failing open: "ret".
        let preread = view(RequestKind::HandleEvent, Some(Phase::Preread), 1);
        let (bytes, _) = answer(&preread, "a", OnFailure::FailClosed, "x", &ids).unwrap();
        let Incoming::Ok(result) = incoming(&bytes, 42).unwrap() else {
            panic!()
        };
        assert!(matches!(
            step_data(result).unwrap(),
            StepData::Call {
                method: b"kong.response.exit",
                ..
            }
        ));
        for (phase, policy) in [
            (Phase::Log, OnFailure::FailClosed),
            (Phase::Access, OnFailure::FailOpen),
        ] {
            let (bytes, action) = answer(
                &view(RequestKind::HandleEvent, Some(phase), 1),
                "a",
                policy,
                "x",
                &ids,
            )
            .unwrap();
            assert_eq!(action, "continued");
            let Incoming::Ok(result) = incoming(&bytes, 42).unwrap() else {
                panic!()
            };
            assert!(matches!(step_data(result).unwrap(), StepData::Ret { .. }));
        }
        // StartInstance: an id no worker knows, so Kong starts the instance again.
        let (bytes, action) = answer(
            &view(RequestKind::StartInstance, None, 0),
            "a",
            OnFailure::FailClosed,
            "x",
            &ids,
        )
        .unwrap();
        assert_eq!(action, "restarted_instance");
        let Incoming::Ok(status) = incoming(&bytes, 42).unwrap() else {
            panic!()
        };
        let status: serde_json::Value = rmp_serde::from_slice(status).unwrap();
        assert!(
            status["Id"]
                .as_u64()
                .is_some_and(|id| id > 0 && id < 1 << 53),
            "{status}"
        );
        // Its response written (Kong sent its next request) but the worker died before
        // saying so: the next worker serves the waiting request.
        let mut written = step;
        written.state = ConnState::Writing;
        let (mut kong, ours) = UnixStream::pair().unwrap();
        let ours = OwnedFd::from(ours);
        std::io::Write::write_all(&mut kong, b"\x94\x00\x2b").unwrap();
        assert_eq!(
            settle_connection(&ours, &written, "a", OnFailure::FailClosed, "x", &ids),
            Outcome::Idle
        );
        let mut waiting = [0u8; 8];
        assert_eq!(
            rustix::net::recv(&ours, &mut waiting, rustix::net::RecvFlags::DONTWAIT)
                .unwrap()
                .0,
            3
        );
        // Mid-message: closed.
        let mut writing = step;
        writing.state = ConnState::Writing;
        let (mut kong, ours) = UnixStream::pair().unwrap();
        let ours = OwnedFd::from(ours);
        assert_eq!(
            settle_connection(&ours, &writing, "a", OnFailure::FailClosed, "x", &ids),
            Outcome::Closed
        );
        assert_eq!(kong.read(&mut [0u8; 8]).unwrap(), 0);
    }

    #[test]
    fn a_request_recorded_but_still_in_the_socket_goes_to_the_next_worker() {
        let ids = Ids::from_clock();
        let handling = view(RequestKind::Step, Some(Phase::Access), 4242 << 3 | 2);
        // The worker recorded the request, then died before taking it from the socket.
        let (mut kong, ours) = UnixStream::pair().unwrap();
        let ours = OwnedFd::from(ours);
        let request = b"\x94\x00\x2a\xabplugin.Step\x91\x80";
        std::io::Write::write_all(&mut kong, request).unwrap();
        assert_eq!(
            settle_connection(&ours, &handling, "a", OnFailure::FailClosed, "x", &ids),
            Outcome::Idle
        );
        // Nothing was written, and the whole request is there for the next worker.
        let mut waiting = [0u8; 64];
        let (n, _) =
            rustix::net::recv(&ours, &mut waiting, rustix::net::RecvFlags::DONTWAIT).unwrap();
        assert_eq!(&waiting[..n], request);
        kong.set_nonblocking(true).unwrap();
        assert!(kong.read(&mut [0u8; 8]).is_err(), "something was answered");
        // Taken from the socket before the death: answered in the worker's place.
        let (mut kong, ours) = UnixStream::pair().unwrap();
        let ours = OwnedFd::from(ours);
        assert_eq!(
            settle_connection(&ours, &handling, "a", OnFailure::FailClosed, "x", &ids),
            Outcome::Answered("ended_request")
        );
        let answered = read_answer(&mut kong);
        assert!(matches!(incoming(&answered, 42).unwrap(), Incoming::Ok(_)));
    }
}
