//! Reservations of the awake budget: at most `awake_max` actors have a database open or
//! opening.
//!
//! Invariants:
//! - a wake takes a [`Reservation`] before its open starts, and the reservation lives with the
//!   opened database, released only after that database is closed: the count never exceeds
//!   the maximum, even with many opens in flight;
//! - `peak` is the highest count ever reached (for tests and metrics);
//! - the maximum may change while reservations are held ([`AwakeBudget::set_max`]): a lower one
//!   refuses new reservations until enough are given back, it never takes one away.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug)]
struct Counts {
    now: AtomicUsize,
    peak: AtomicUsize,
    max: AtomicUsize,
}

#[derive(Debug, Clone)]
pub(crate) struct AwakeBudget {
    counts: Arc<Counts>,
}

/// One awake (or waking) actor's share of the budget; dropping it gives the share back.
#[derive(Debug)]
pub(crate) struct Reservation {
    counts: Arc<Counts>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.counts.now.fetch_sub(1, Ordering::SeqCst);
    }
}

impl AwakeBudget {
    pub fn new(max: usize) -> Self {
        let counts =
            Counts { now: AtomicUsize::new(0), peak: AtomicUsize::new(0), max: AtomicUsize::new(max) };
        Self { counts: Arc::new(counts) }
    }

    /// A reservation, unless `max` are taken.
    pub fn try_reserve(&self) -> Option<Reservation> {
        let counts = &self.counts;
        let before = counts
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < self.max()).then_some(n + 1))
            .ok()?;
        counts.peak.fetch_max(before + 1, Ordering::SeqCst);
        Some(Reservation { counts: counts.clone() })
    }

    /// Reservations held now.
    pub fn count(&self) -> usize {
        self.counts.now.load(Ordering::SeqCst)
    }

    pub fn peak(&self) -> usize {
        self.counts.peak.load(Ordering::SeqCst)
    }

    /// Reservations that may be held at once.
    pub fn max(&self) -> usize {
        self.counts.max.load(Ordering::SeqCst)
    }

    pub fn set_max(&self, max: usize) {
        assert!(max > 0, "an awake budget of zero actors serves nothing");
        self.counts.max.store(max, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::AwakeBudget;

    #[test]
    fn reservations_stop_at_the_maximum_and_come_back_when_dropped() {
        let budget = AwakeBudget::new(2);
        let (a, b) = (budget.try_reserve().unwrap(), budget.try_reserve().unwrap());
        assert!(budget.try_reserve().is_none());
        drop(a);
        assert_eq!(budget.count(), 1);
        let c = budget.try_reserve().unwrap();
        assert!(budget.try_reserve().is_none());
        drop((b, c));
        assert_eq!((budget.count(), budget.peak()), (0, 2));
    }

    #[test]
    fn a_lower_maximum_refuses_new_reservations_and_keeps_the_held_ones() {
        let budget = AwakeBudget::new(3);
        let held: Vec<_> = (0..3).map(|_| budget.try_reserve().unwrap()).collect();
        budget.set_max(1);
        assert!(budget.try_reserve().is_none());
        assert_eq!(budget.count(), 3, "nothing is taken away");
        drop(held);
        let one = budget.try_reserve().unwrap();
        assert!(budget.try_reserve().is_none());
        budget.set_max(2);
        let two = budget.try_reserve().unwrap();
        drop((one, two));
    }

    #[test]
    fn concurrent_reservations_never_overshoot() {
        let budget = AwakeBudget::new(8);
        std::thread::scope(|scope| {
            for _ in 0..16 {
                scope.spawn(|| {
                    for _ in 0..2_000 {
                        let held = budget.try_reserve();
                        assert!(budget.count() <= 8);
                        drop(held);
                    }
                });
            }
        });
        assert!(budget.peak() <= 8);
        assert_eq!(budget.count(), 0);
    }
}
