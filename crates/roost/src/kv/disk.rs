//! The free-space guard of the embedded store: writes are refused with
//! [`KvError::StorageFull`] while the data folder's file system has less than the reserve free.
//!
//! Why a reserve: fjall poisons itself (fail-stop) when a journal write or flush hits a full
//! disk, and it needs room to flush memtables and compact before space can be reclaimed. Refusing
//! writes *before* the file system is full keeps the store healthy: a refused write changes
//! nothing, and writes succeed again as soon as space is back, without a restart.
//!
//! Invariants:
//! - the free space is sampled with `statvfs` at most every [`SAMPLE_INTERVAL_MS`]; between
//!   samples every accepted batch is charged [`WRITE_AMPLIFICATION`] times its payload, so a
//!   burst of writes cannot overshoot the reserve by more than one batch;
//! - the effective reserve is the configured one capped at a quarter of the file system, so a
//!   small file system (tests, tiny volumes) stays usable;
//! - a file system that cannot be sampled never refuses writes (the store's own errors then
//!   decide);
//! - [`DiskGuard::is_full`] (health) turns true once the free space is within
//!   [`HEALTH_HEADROOM_BYTES`] of the reserve: slightly before writes are refused, so health
//!   never says "ok" while ordinary writes are being refused (tiny ones may still pass).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::{KvError, KvResult};

/// How long a free-space sample is trusted.
pub const SAMPLE_INTERVAL_MS: u64 = 100;
/// Bytes charged per payload byte between samples: the journal plus the flushed segment.
pub const WRITE_AMPLIFICATION: u64 = 2;
/// Free space above the reserve below which health reports the store full.
pub const HEALTH_HEADROOM_BYTES: u64 = 1 << 20;
/// The default reserve (`--disk-reserve`).
pub const DEFAULT_RESERVE_BYTES: u64 = 256 << 20;

/// Space figures of the store's file system.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes an unprivileged writer may still use (`f_bavail`), less the charge since the sample.
    pub free_bytes: u64,
    /// Size of the file system.
    pub total_bytes: u64,
    /// Effective reserve: writes are refused while `free_bytes` is below it.
    pub reserve_bytes: u64,
}

impl DiskSpace {
    /// Would a batch of `payload_bytes` leave less than the reserve free?
    pub fn refuses(&self, payload_bytes: u64) -> bool {
        self.free_bytes.saturating_sub(payload_bytes.saturating_mul(WRITE_AMPLIFICATION)) < self.reserve_bytes
    }
}

#[derive(Debug, Default)]
struct Sample {
    at: Option<Instant>,
    free_bytes: u64,
    total_bytes: u64,
    charged_bytes: u64,
}

/// Samples and caches the free space of one folder's file system.
#[derive(Debug)]
pub struct DiskGuard {
    path: PathBuf,
    reserve_bytes: AtomicU64,
    sample: parking_lot::Mutex<Sample>,
}

impl DiskGuard {
    pub fn new(path: impl Into<PathBuf>, reserve_bytes: u64) -> Self {
        Self { path: path.into(), reserve_bytes: AtomicU64::new(reserve_bytes), sample: Default::default() }
    }

    /// Changes the configured reserve (takes effect on the next check).
    pub fn set_reserve_bytes(&self, reserve_bytes: u64) {
        self.reserve_bytes.store(reserve_bytes, Ordering::Relaxed);
    }

    /// The current figures (sampling the file system if the last sample is stale).
    pub fn space(&self) -> DiskSpace {
        let mut sample = self.sample.lock();
        let stale = sample.at.is_none_or(|at| at.elapsed().as_millis() as u64 >= SAMPLE_INTERVAL_MS);
        if stale {
            let (free_bytes, total_bytes) = statvfs_bytes(&self.path).unwrap_or((u64::MAX, u64::MAX));
            *sample = Sample { at: Some(Instant::now()), free_bytes, total_bytes, charged_bytes: 0 };
        }
        let reserve = self.reserve_bytes.load(Ordering::Relaxed).min(sample.total_bytes / 4);
        DiskSpace {
            free_bytes: sample.free_bytes.saturating_sub(sample.charged_bytes),
            total_bytes: sample.total_bytes,
            reserve_bytes: reserve,
        }
    }

    /// Refuses a batch of `payload_bytes` that would eat into the reserve; charges an accepted
    /// one against the free space until the next sample.
    pub fn admit(&self, payload_bytes: u64) -> KvResult<()> {
        let space = self.space();
        if space.refuses(payload_bytes) {
            return Err(KvError::StorageFull {
                free_bytes: space.free_bytes,
                reserve_bytes: space.reserve_bytes,
            });
        }
        let mut sample = self.sample.lock();
        sample.charged_bytes = sample.charged_bytes.saturating_add(payload_bytes * WRITE_AMPLIFICATION);
        Ok(())
    }
}

impl DiskGuard {
    /// Would writes be refused now (see the module invariants)?
    pub fn is_full(&self) -> bool {
        let space = self.space();
        space.free_bytes < space.reserve_bytes.saturating_add(HEALTH_HEADROOM_BYTES)
    }
}

/// Free (for unprivileged writers) and total bytes of the file system holding `path`.
fn statvfs_bytes(path: &std::path::Path) -> Option<(u64, u64)> {
    let stat = rustix::fs::statvfs(path).ok()?;
    let block = stat.f_frsize.max(1);
    Some((stat.f_bavail.saturating_mul(block), stat.f_blocks.saturating_mul(block)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_folder_has_space_and_the_reserve_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let guard = DiskGuard::new(dir.path(), u64::MAX);
        let space = guard.space();
        assert!(space.total_bytes > 0 && space.free_bytes > 0);
        assert_eq!(space.reserve_bytes, space.total_bytes / 4);
        guard.set_reserve_bytes(0);
        assert!(guard.admit(1 << 20).is_ok());
    }

    #[test]
    fn a_full_reserve_refuses_and_freeing_it_admits_again() {
        let dir = tempfile::tempdir().unwrap();
        let guard = DiskGuard::new(dir.path(), 0);
        let free = guard.space().free_bytes;
        // Charging more than is free makes the next check refuse until a new sample.
        let _ = guard.admit(free / WRITE_AMPLIFICATION);
        guard.set_reserve_bytes(1);
        assert!(matches!(guard.admit(1), Err(KvError::StorageFull { .. })));
        assert!(guard.is_full());
        std::thread::sleep(std::time::Duration::from_millis(SAMPLE_INTERVAL_MS + 10));
        assert!(guard.admit(1).is_ok());
    }
}
