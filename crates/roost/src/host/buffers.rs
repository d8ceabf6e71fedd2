//! The `request_buffers` pool of the memory budget: request bodies, answers being built and
//! sent, and Hrana stream state are charged here before they are allocated.
//!
//! Invariants:
//! - `used` is the sum of every live [`RequestMemory`]'s `reserved` (each releases its bytes
//!   when its last clone drops), and never exceeds `bytes_max`: a charge that does not fit fails
//!   and changes nothing;
//! - one request's answer charges never exceed `answer_bytes_max`, so a single query cannot
//!   take the whole pool.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::vfs::{self, AnswerMeter};

/// Why a charge was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BufferError {
    /// More than the whole pool (or one answer's share) would ever allow: retrying cannot help.
    #[error("needs more than the {bytes_max}-byte limit")]
    TooLarge { bytes_max: u64 },
    /// The pool is taken by other requests for now.
    #[error("request memory is in use by other requests; retry after {retry_after_ms} ms")]
    Full { retry_after_ms: u64 },
}

/// The pool. Shared by the host and every request.
#[derive(Debug)]
pub struct RequestBuffers {
    bytes_max: u64,
    answer_bytes_max: u64,
    retry_after_ms: u64,
    used: AtomicU64,
    peak: AtomicU64,
    refused: AtomicU64,
}

/// Figures of the pool for memory reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferStats {
    pub bytes_max: u64,
    pub bytes_used: u64,
    pub bytes_peak: u64,
    pub answer_bytes_max: u64,
    pub refused_total: u64,
}

impl RequestBuffers {
    pub fn new(bytes_max: u64, answer_bytes_max: u64, retry_after_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            bytes_max,
            answer_bytes_max: answer_bytes_max.min(bytes_max),
            retry_after_ms,
            used: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// A new, empty account for one request (or one Hrana stream).
    pub fn memory(self: &Arc<Self>) -> RequestMemory {
        RequestMemory {
            inner: Arc::new(Account {
                pool: self.clone(),
                reserved: AtomicU64::new(0),
                answer: AtomicU64::new(0),
            }),
        }
    }

    pub fn stats(&self) -> BufferStats {
        BufferStats {
            bytes_max: self.bytes_max,
            bytes_used: self.used.load(Ordering::Relaxed),
            bytes_peak: self.peak.load(Ordering::Relaxed),
            answer_bytes_max: self.answer_bytes_max,
            refused_total: self.refused.load(Ordering::Relaxed),
        }
    }

    /// Takes `bytes` for an account that would then hold `account_bytes`.
    fn take(&self, account_bytes: u64, bytes: u64) -> Result<(), BufferError> {
        if account_bytes > self.bytes_max {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(BufferError::TooLarge { bytes_max: self.bytes_max });
        }
        let taken = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            used.checked_add(bytes).filter(|total| *total <= self.bytes_max)
        });
        match taken {
            Ok(before) => {
                self.peak.fetch_max(before + bytes, Ordering::Relaxed);
                Ok(())
            }
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(BufferError::Full { retry_after_ms: self.retry_after_ms })
            }
        }
    }

    fn give_back(&self, bytes: u64) {
        let before = self.used.fetch_sub(bytes, Ordering::AcqRel);
        debug_assert!(before >= bytes, "request buffers released more than they held");
    }
}

/// The bytes one request (or stream) holds in the pool; cheap to clone, released when the last
/// clone drops (for an answer: once its body has been sent).
#[derive(Debug, Clone)]
pub struct RequestMemory {
    inner: Arc<Account>,
}

#[derive(Debug)]
struct Account {
    pool: Arc<RequestBuffers>,
    reserved: AtomicU64,
    /// Of `reserved`: bytes charged for answers.
    answer: AtomicU64,
}

impl Drop for Account {
    fn drop(&mut self) {
        self.pool.give_back(*self.reserved.get_mut());
    }
}

impl RequestMemory {
    /// Charges `bytes` to the pool. An account charged bit by bit (a body or a message as it
    /// arrives) learns it can never fit, rather than that the pool is busy, once it alone would
    /// need more than the whole pool.
    pub fn charge(&self, bytes: u64) -> Result<(), BufferError> {
        let own = self.inner.reserved.load(Ordering::Acquire);
        self.inner.pool.take(own.saturating_add(bytes), bytes)?;
        self.inner.reserved.fetch_add(bytes, Ordering::AcqRel);
        Ok(())
    }

    /// Gives back `bytes` charged earlier (memory freed before the request ends).
    pub fn release(&self, bytes: u64) {
        let taken =
            self.inner.reserved.fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(bytes));
        assert!(taken.is_ok(), "released more request memory than was charged");
        self.inner.pool.give_back(bytes);
    }

    /// Bytes this account holds.
    pub fn reserved_bytes(&self) -> u64 {
        self.inner.reserved.load(Ordering::Acquire)
    }

    /// Charges answer bytes: within the per-answer limit, then the pool.
    pub fn charge_answer(&self, bytes: u64) -> Result<(), BufferError> {
        let answer_max = self.inner.pool.answer_bytes_max;
        let grown = self.inner.answer.fetch_update(Ordering::AcqRel, Ordering::Acquire, |answer| {
            answer.checked_add(bytes).filter(|total| *total <= answer_max)
        });
        if grown.is_err() {
            self.inner.pool.refused.fetch_add(1, Ordering::Relaxed);
            return Err(BufferError::TooLarge { bytes_max: answer_max });
        }
        self.charge(bytes).inspect_err(|_| {
            self.inner.answer.fetch_sub(bytes, Ordering::AcqRel);
        })
    }
}

impl AnswerMeter for RequestMemory {
    fn charge(&self, bytes: u64) -> Result<(), vfs::Error> {
        self.charge_answer(bytes).map_err(|e| match e {
            BufferError::TooLarge { bytes_max } => vfs::Error::AnswerTooLarge { bytes_max },
            BufferError::Full { retry_after_ms } => vfs::Error::AnswerMemoryFull { retry_after_ms },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_stay_inside_the_pool_and_go_back_on_drop() {
        let pool = RequestBuffers::new(1000, 600, 5);
        let a = pool.memory();
        a.charge(700).unwrap();
        assert_eq!(
            a.charge(400),
            Err(BufferError::TooLarge { bytes_max: 1000 }),
            "a alone would outgrow the pool"
        );
        let b = pool.memory();
        assert_eq!(b.charge(400), Err(BufferError::Full { retry_after_ms: 5 }));
        assert_eq!(b.charge(2000), Err(BufferError::TooLarge { bytes_max: 1000 }));
        b.charge(300).unwrap();
        assert_eq!(pool.stats().bytes_used, 1000);
        let a2 = a.clone();
        drop(a);
        assert_eq!(pool.stats().bytes_used, 1000, "a clone still holds the account");
        drop(a2);
        assert_eq!(pool.stats().bytes_used, 300);
        b.release(100);
        assert_eq!(pool.stats().bytes_used, 200);
        assert_eq!(pool.stats().bytes_peak, 1000);
        drop(b);
        assert_eq!(pool.stats().bytes_used, 0);
    }

    #[test]
    fn one_answer_cannot_take_more_than_its_share() {
        let pool = RequestBuffers::new(1000, 600, 5);
        let a = pool.memory();
        a.charge_answer(500).unwrap();
        assert_eq!(a.charge_answer(200), Err(BufferError::TooLarge { bytes_max: 600 }));
        assert_eq!(pool.stats().bytes_used, 500, "a refused charge changes nothing");
        let b = pool.memory();
        assert_eq!(b.charge_answer(600), Err(BufferError::Full { retry_after_ms: 5 }));
        assert_eq!(pool.stats().bytes_used, 500);
    }
}
