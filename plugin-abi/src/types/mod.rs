//! Typed values exchanged with Kong: multimaps, entities, bodies.

mod body;
mod entities;
mod multimap;

pub use crate::value::{Bytes, Value};
pub use body::{Body, JSON_CONTENT_TYPE};
pub(crate) use body::{WireBody, json_text};
pub use entities::{
    Consumer, Credential, ForeignKey, MemoryStats, Route, Service, SharedDictStats, Size,
    UriCaptures, WorkerStats,
};
pub use multimap::Multimap;
