//! The process allocator: jemalloc, for SQLite's C allocations too (unprefixed `malloc`), with
//! statistics for `/debug/memory` and heap profiles for `/debug/pprof/heap`.
//!
//! Profiling is compiled in but off unless `roost serve --heap-profile` (or
//! `ROOST_HEAP_PROFILE=1`) restarts the process with `MALLOC_CONF` asking for it: with
//! `prof:false` jemalloc takes no samples, so it costs nothing by default.

use roost::server::AllocatorStats;
use tikv_jemalloc_ctl::{epoch, stats};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc options of a profiling run: sample every 512 KiB allocated on average.
pub const PROFILING_CONF: &str = "prof:true,prof_active:true,lg_prof_sample:19";

pub fn stats() -> AllocatorStats {
    // Statistics are cached until the epoch advances.
    let _ = epoch::advance();
    let read = |r: tikv_jemalloc_ctl::Result<usize>| r.unwrap_or(0) as u64;
    AllocatorStats {
        allocated_bytes: read(stats::allocated::read()),
        active_bytes: read(stats::active::read()),
        resident_bytes: read(stats::resident::read()),
        retained_bytes: read(stats::retained::read()),
    }
}

/// A gzipped pprof heap profile of the sampled live allocations.
pub fn heap_profile() -> Result<Vec<u8>, String> {
    let off = "heap profiling is off: start the server with --heap-profile (or ROOST_HEAP_PROFILE=1)";
    let ctl = jemalloc_pprof::PROF_CTL.as_ref().ok_or(off)?;
    let mut ctl = ctl.blocking_lock();
    if !ctl.activated() {
        return Err(off.into());
    }
    ctl.dump_pprof().map_err(|e| format!("cannot write the heap profile: {e}"))
}
