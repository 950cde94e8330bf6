//! The bookkeeping both caches share: what each entry costs and which was
//! used least recently, so the bound is kept by evicting from that end.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default)]
pub(super) struct LruIndex {
    /// Key → (last use, cost).
    entries: HashMap<String, (u64, u64)>,
    /// Last use → key, oldest first.
    order: BTreeMap<u64, String>,
    used: u64,
    clock: u64,
}

impl LruIndex {
    /// Records `key` with `cost` as used now, replacing what it cost before.
    pub(super) fn insert(&mut self, key: &str, cost: u64) {
        self.remove(key);
        self.clock += 1;
        self.entries.insert(key.to_owned(), (self.clock, cost));
        self.order.insert(self.clock, key.to_owned());
        self.used += cost;
    }

    /// Marks `key` as used now; false when it is not indexed.
    pub(super) fn touch(&mut self, key: &str) -> bool {
        let Some((last, _)) = self.entries.get_mut(key) else {
            return false;
        };
        self.order.remove(last);
        self.clock += 1;
        *last = self.clock;
        self.order.insert(self.clock, key.to_owned());
        true
    }

    /// Forgets `key`; its cost, when it was indexed.
    pub(super) fn remove(&mut self, key: &str) -> Option<u64> {
        let (last, cost) = self.entries.remove(key)?;
        self.order.remove(&last);
        self.used -= cost;
        Some(cost)
    }

    /// The least recently used key past which the index holds more than
    /// `bound`, removed from the index; `None` once within the bound.
    pub(super) fn pop_over(&mut self, bound: u64) -> Option<String> {
        if self.used <= bound {
            return None;
        }
        let (_, key) = self.order.pop_first()?;
        if let Some((_, cost)) = self.entries.remove(&key) {
            self.used -= cost;
        }
        Some(key)
    }

    /// The total cost indexed.
    pub(super) fn used(&self) -> u64 {
        self.used
    }

    /// Whether `key` is indexed.
    #[cfg(test)]
    pub(super) fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Forgets everything.
    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
        self.used = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_first() {
        let mut l = LruIndex::default();
        l.insert("a", 10);
        l.insert("b", 10);
        l.insert("c", 10);
        assert!(l.touch("a"));
        assert_eq!(l.used(), 30);
        assert_eq!(l.pop_over(25).as_deref(), Some("b"));
        assert_eq!(l.pop_over(25), None);
        assert_eq!(l.pop_over(5).as_deref(), Some("c"));
        assert_eq!(l.pop_over(5).as_deref(), Some("a"));
        assert_eq!(l.used(), 0);
        assert!(!l.touch("a"));
    }

    #[test]
    fn reinsert_replaces_cost() {
        let mut l = LruIndex::default();
        l.insert("a", 10);
        l.insert("a", 4);
        assert_eq!(l.used(), 4);
        assert_eq!(l.remove("a"), Some(4));
        assert_eq!(l.remove("a"), None);
        assert!(!l.contains("a"));
    }
}
