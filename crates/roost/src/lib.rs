//! Roost: very many actors, each owning a private SQLite database stored in a KV store.
//!
//! Layers, top to bottom: `host` (actors: wake, sleep, memory budget, admission control),
//! `vfs` (SQLite over the store, the [`Database`] handle) and `kv` (the batch-shaped store and
//! its backends).

pub mod cluster;
pub mod host;
pub mod kv;
pub mod server;
pub mod vfs;

mod actor_id;
mod sql;

pub use actor_id::{ActorId, InvalidActorId, ACTOR_ID_BYTES_MAX};
pub use host::{ActorState, Host, HostConfig, HostError};
pub use vfs::{Database, Error, Params, QueryResult, Statement, Storage, StorageConfig, Value};
