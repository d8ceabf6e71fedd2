//! The host's counters and memory as the actor benchmarks report them.

use roost::host::HostStats;
use serde::{Deserialize, Serialize};

/// One named memory pool of the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pool {
    pub name: String,
    pub bytes_max: u64,
    pub bytes_used: u64,
}

/// The host's counters and memory, serializable.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostFigures {
    pub actors_awake: usize,
    pub actors_known: usize,
    pub awake_max: usize,
    #[serde(default)]
    pub actor_bytes_measured: u64,
    pub wakes_total: u64,
    pub sleeps_total: u64,
    pub evictions_total: u64,
    pub idle_sleeps_total: u64,
    pub overloaded_total: u64,
    pub requests_total: u64,
    pub budget_bytes: u64,
    pub sqlite_used_bytes: u64,
    pub sqlite_highwater_bytes: u64,
    pub sqlite_page_cache_bytes: u64,
    pub store_cache_bytes: u64,
    pub store_cache_bytes_max: u64,
    pub store_write_buffer_bytes: u64,
    pub store_write_buffer_bytes_max: u64,
    pub pools: Vec<Pool>,
}

impl From<HostStats> for HostFigures {
    fn from(s: HostStats) -> Self {
        let m = s.memory;
        Self {
            actors_awake: s.actors_awake,
            actors_known: s.actors_known,
            awake_max: s.awake_max,
            actor_bytes_measured: s.actor_bytes_measured,
            wakes_total: s.wakes_total,
            sleeps_total: s.sleeps_total,
            evictions_total: s.evictions_total,
            idle_sleeps_total: s.idle_sleeps_total,
            overloaded_total: s.overloaded_total,
            requests_total: s.requests_total,
            budget_bytes: m.budget_bytes,
            sqlite_used_bytes: m.sqlite.used_bytes,
            sqlite_highwater_bytes: m.sqlite.highwater_bytes,
            sqlite_page_cache_bytes: m.sqlite.page_cache_bytes,
            store_cache_bytes: m.store.cache_bytes,
            store_cache_bytes_max: m.store.cache_bytes_max,
            store_write_buffer_bytes: m.store.write_buffer_bytes,
            store_write_buffer_bytes_max: m.store.write_buffer_bytes_max,
            pools: m
                .pools
                .into_iter()
                .map(|p| Pool { name: p.name.to_string(), bytes_max: p.bytes_max, bytes_used: p.bytes_used })
                .collect(),
        }
    }
}
