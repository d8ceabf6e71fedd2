//! Idle awake actors, least recently used first.
//!
//! Invariants:
//! - each key is in the list at most once, ordered by (idle since, insertion sequence), so
//!   actors that went idle in the same millisecond still leave in the order they went idle;
//! - picking the oldest entry costs O(log n) and visits no other entry.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// Position in the list: when the entry went idle, then the order of insertion.
type Position = (u64, u64);

pub(crate) struct IdleList<K, V> {
    order: BTreeMap<Position, (K, V)>,
    positions: HashMap<K, Position>,
    inserted: u64,
}

impl<K: Hash + Eq + Clone, V> IdleList<K, V> {
    pub fn new() -> Self {
        Self { order: BTreeMap::new(), positions: HashMap::new(), inserted: 0 }
    }

    /// Adds `key` as the most recently used entry (replacing where it was).
    pub fn insert(&mut self, key: K, idle_since_ms: u64, value: V) {
        self.remove(&key);
        self.inserted += 1;
        let position = (idle_since_ms, self.inserted);
        self.positions.insert(key.clone(), position);
        self.order.insert(position, (key, value));
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let position = self.positions.remove(key)?;
        self.order.remove(&position).map(|(_, value)| value)
    }

    /// Takes the least recently used entry, if it went idle at or before `idle_before_ms`
    /// (when given).
    pub fn pop_oldest(&mut self, idle_before_ms: Option<u64>) -> Option<(K, V)> {
        let (&(since_ms, _), _) = self.order.first_key_value()?;
        if idle_before_ms.is_some_and(|cutoff| since_ms > cutoff) {
            return None;
        }
        let (_, (key, value)) = self.order.pop_first()?;
        self.positions.remove(&key);
        Some((key, value))
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::IdleList;

    fn drain(list: &mut IdleList<&'static str, u32>, idle_before_ms: Option<u64>) -> Vec<&'static str> {
        std::iter::from_fn(|| list.pop_oldest(idle_before_ms).map(|(k, _)| k)).collect()
    }

    #[test]
    fn oldest_first_and_ties_in_insertion_order() {
        let mut list = IdleList::new();
        for (key, ms) in [("c", 5), ("a", 5), ("b", 3), ("d", 5)] {
            list.insert(key, ms, 0);
        }
        assert_eq!(drain(&mut list, None), ["b", "c", "a", "d"]);
        assert_eq!(list.len(), 0);
    }

    #[test]
    fn reinsertion_moves_to_the_back_and_removal_forgets() {
        let mut list = IdleList::new();
        for key in ["a", "b", "c"] {
            list.insert(key, 1, 0);
        }
        list.insert("a", 1, 7);
        assert_eq!(list.remove(&"b"), Some(0));
        assert_eq!(list.remove(&"b"), None);
        assert_eq!(list.len(), 2);
        assert_eq!(list.pop_oldest(None), Some(("c", 0)));
        assert_eq!(list.pop_oldest(None), Some(("a", 7)));
        assert_eq!(list.pop_oldest(None), None);
    }

    #[test]
    fn a_cutoff_stops_at_the_first_younger_entry() {
        let mut list = IdleList::new();
        for (key, ms) in [("old", 10), ("older", 4), ("young", 30)] {
            list.insert(key, ms, 0);
        }
        assert_eq!(drain(&mut list, Some(10)), ["older", "old"]);
        assert_eq!(list.len(), 1);
        assert_eq!(drain(&mut list, Some(29)), Vec::<&str>::new());
    }

    #[test]
    fn the_oldest_of_many_come_first() {
        let mut list = IdleList::new();
        for i in 0..100_000u32 {
            list.insert(i, u64::from(i % 1000), i);
        }
        let oldest: Vec<u32> = (0..10).filter_map(|_| list.pop_oldest(None).map(|(k, _)| k)).collect();
        assert_eq!(oldest, [0, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000]);
        assert_eq!(list.len(), 99_990);
    }
}
