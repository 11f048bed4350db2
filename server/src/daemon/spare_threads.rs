//! Threads kept for plugin code that must not run on an event loop (constructors): a job
//! goes to an idle thread when there is one, to a new thread otherwise.
//!
//! A thread of its own per job keeps a constructor that never returns from holding up
//! anything else, but starting one costs more than most constructors (starting 2 000
//! instances took 1.7 s instead of 0.09 s). Reusing threads keeps the first property
//! without the cost: a stuck job keeps only its own thread, and idle threads end after a
//! while.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::Duration,
};

/// Work for a spare thread.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long a thread waits idle for another job before it ends.
const IDLE_FOR: Duration = Duration::from_secs(30);

/// An idle thread: its number and where it takes its next job.
struct Idle {
    id: u64,
    next: mpsc::Sender<Job>,
}

static IDLE: Mutex<Vec<Idle>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn idle() -> std::sync::MutexGuard<'static, Vec<Idle>> {
    IDLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `job` on an idle spare thread, or on a new one (named `name`). Fails only when no
/// thread is idle and none can be started; the job is then given back.
pub(crate) fn run(name: &str, job: Job) -> Result<(), (std::io::Error, Job)> {
    let mut job = job;
    while let Some(idle) = idle().pop() {
        match idle.next.send(job) {
            Ok(()) => return Ok(()),
            // That thread ended meanwhile: try the next.
            Err(mpsc::SendError(back)) => job = back,
        }
    }
    let pending = std::sync::Arc::new(Mutex::new(Some(job)));
    let theirs = pending.clone();
    let spawned = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let first = theirs.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(first) = first {
                serve(first);
            }
        });
    match spawned {
        Ok(_) => Ok(()),
        Err(err) => {
            let job = pending.lock().unwrap_or_else(|e| e.into_inner()).take();
            Err((err, job.expect("the thread never started")))
        }
    }
}

/// A spare thread's life: run a job, wait idle for the next, end after [`IDLE_FOR`].
fn serve(first: Job) {
    let mut job = first;
    loop {
        job();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let (next, jobs) = mpsc::channel();
        idle().push(Idle { id, next });
        job = match jobs.recv_timeout(IDLE_FOR) {
            Ok(job) => job,
            Err(_) => {
                let mut idle = idle();
                match idle.iter().position(|entry| entry.id == id) {
                    Some(at) => {
                        idle.swap_remove(at);
                        return;
                    }
                    // Taken just now: its job is on the way.
                    None => {
                        drop(idle);
                        match jobs.recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        }
                    }
                }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_runs_once_whether_its_thread_is_new_or_reused() {
        let (done, finished) = mpsc::channel();
        for n in 0..50 {
            let done = done.clone();
            run("spare-test", Box::new(move || done.send(n).unwrap()))
                .unwrap_or_else(|(err, _)| panic!("{err}"));
            // One at a time, so later jobs find the earlier threads idle.
            assert_eq!(finished.recv_timeout(Duration::from_secs(10)), Ok(n));
        }
    }

    #[test]
    fn a_stuck_job_holds_only_its_own_thread() {
        let (release, stuck) = mpsc::channel::<()>();
        run(
            "spare-test",
            Box::new(move || {
                let _ = stuck.recv();
            }),
        )
        .unwrap_or_else(|(err, _)| panic!("{err}"));
        let (done, finished) = mpsc::channel();
        run("spare-test", Box::new(move || done.send(()).unwrap()))
            .unwrap_or_else(|(err, _)| panic!("{err}"));
        finished
            .recv_timeout(Duration::from_secs(10))
            .expect("a second job runs while the first is stuck");
        release.send(()).unwrap();
    }
}
