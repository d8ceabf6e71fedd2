//! Spool files of imports and exports, and the process-wide cap on their bytes.
//!
//! Invariants:
//! - a spool file lives in the storage's scratch folder (the system's temporary folder only
//!   for library use without one), is named `roost-spool-*` (so start-up cleaning removes one
//!   a crash left) and is removed when its [`Spool`] drops;
//! - [`SpoolBudget::bytes`] is the sum of the bytes every live [`Spool`] reserved; a reservation
//!   that would pass `spool_bytes_max` is refused (`overloaded`) and reserves nothing.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::error::ApiError;

const SPOOL_PREFIX: &str = "roost-spool-";

/// Bytes spooled at once, capped.
#[derive(Debug)]
pub struct SpoolBudget {
    bytes: AtomicU64,
    bytes_max: u64,
}

impl SpoolBudget {
    pub fn new(bytes_max: u64) -> Self {
        Self { bytes: AtomicU64::new(0), bytes_max }
    }

    /// Bytes reserved by the spools alive now.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn bytes_max(&self) -> u64 {
        self.bytes_max
    }

    fn reserve(&self, n: u64) -> bool {
        self.bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(n).filter(|total| *total <= self.bytes_max)
            })
            .is_ok()
    }
}

/// A spool file and the bytes it reserved; both go when it drops.
pub struct Spool {
    file: tempfile::NamedTempFile,
    budget: Arc<SpoolBudget>,
    reserved_bytes: u64,
    retry_after_ms: u64,
}

impl Spool {
    /// A new empty spool file in `dir` (or the system's temporary folder).
    pub fn create(
        dir: Option<&Path>,
        budget: Arc<SpoolBudget>,
        retry_after_ms: u64,
    ) -> Result<Self, ApiError> {
        let mut builder = tempfile::Builder::new();
        builder.prefix(SPOOL_PREFIX);
        let file = match dir {
            Some(dir) => builder.tempfile_in(dir),
            None => builder.tempfile(),
        };
        let file = file.map_err(|e| {
            tracing::error!(error = %e, "cannot create a spool file");
            ApiError::internal()
        })?;
        Ok(Self { file, budget, reserved_bytes: 0, retry_after_ms })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Reserves room for `bytes` in total; `overloaded` if the spools would pass their cap.
    pub fn reserve_total(&mut self, bytes: u64) -> Result<(), ApiError> {
        let more = bytes.saturating_sub(self.reserved_bytes);
        if more == 0 {
            return Ok(());
        }
        if !self.budget.reserve(more) {
            let max = self.budget.bytes_max;
            return Err(ApiError::overloaded(
                format!("imports and exports in progress hold the spool limit ({max} bytes); retry later"),
                self.retry_after_ms,
            ));
        }
        self.reserved_bytes = bytes;
        Ok(())
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.budget.bytes.fetch_sub(self.reserved_bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spools_share_the_cap_and_give_bytes_back() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Arc::new(SpoolBudget::new(1000));
        let mut a = Spool::create(Some(dir.path()), budget.clone(), 1000).unwrap();
        assert!(a.path().starts_with(dir.path()));
        a.reserve_total(600).unwrap();
        a.reserve_total(500).unwrap();
        assert_eq!(budget.bytes(), 600, "reservations only grow");
        let mut b = Spool::create(Some(dir.path()), budget.clone(), 1000).unwrap();
        let refused = b.reserve_total(500).unwrap_err();
        assert_eq!((refused.code, refused.retry_after_ms), ("overloaded", Some(1000)));
        assert_eq!(budget.bytes(), 600);
        drop(a);
        assert_eq!(budget.bytes(), 0);
        b.reserve_total(1000).unwrap();
        drop(b);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "spool files are removed");
    }
}
