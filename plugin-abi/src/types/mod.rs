//! Typed values exchanged with Kong: multimaps, entities, bodies.

mod body;
mod entities;
mod multimap;

pub use crate::value::{Bytes, Value};
pub use body::Body;
pub use entities::{
    Consumer, Credential, ForeignKey, MemoryStats, Route, Service, SharedDictStats, Size,
    UriCaptures, WorkerStats,
};
pub use multimap::Multimap;
