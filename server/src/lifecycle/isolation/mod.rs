//! `--isolation process`: a supervisor that loads no plugin code, and a worker process per
//! plugin library that serves it.
//!
//! - [`messages`]: what the supervisor and a worker say to each other;
//! - [`supervisor`]: the daemon process: sockets, workers, crashes, quarantine, status;
//! - [`worker`]: a worker process.

pub mod messages;
pub mod supervisor;
pub mod worker;
