//! Roost: very many actors, each owning a private SQLite database stored in a KV store.
//!
//! Layers, top to bottom: `vfs` (SQLite over the store, the [`Database`] handle) and `kv`
//! (the batch-shaped store and its backends).

pub mod kv;
