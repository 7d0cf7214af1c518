//! A hash table split in shards, for the transaction tables.
//!
//! A transaction outlives its final response by 64·T1 over UDP (timers J and L), so at a
//! few thousand calls per second the tables hold some 100,000 entries. A single `HashMap`
//! doubles all at once: measured on the endpoint, the growth past 57,000 and 114,000 entries
//! stalled it 34 and 73 ms (rehash and fresh pages), long enough to shed calls at nominal load.
//! Here each shard grows on its own, so one growth moves a 64th of the entries.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};

/// How many shards: a growth moves at most this fraction of the entries.
const SHARDS: usize = 64;

/// A map from `K` to `V` in [`SHARDS`] independently growing parts.
#[derive(Debug)]
pub(super) struct Table<K, V> {
    /// Picks the shard; keyed per process, so a peer cannot aim its keys at one shard.
    hasher: RandomState,
    shards: Vec<HashMap<K, V>>,
    len: usize,
}

impl<K: Hash + Eq, V> Default for Table<K, V> {
    fn default() -> Self {
        Self { hasher: RandomState::new(), shards: (0..SHARDS).map(|_| HashMap::new()).collect(), len: 0 }
    }
}

impl<K: Hash + Eq, V> Table<K, V> {
    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        // The top bits: the shard's own map uses another hasher, so its buckets stay spread.
        (self.hasher.hash_one(key) >> 58) as usize % SHARDS
    }

    /// The value of `key`.
    pub(super) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard(key)].get(key)
    }

    /// The value of `key`, to change.
    pub(super) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.shard(key);
        self.shards[shard].get_mut(key)
    }

    /// True when `key` has a value.
    pub(super) fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    /// Sets the value of `key`; returns the one it replaces.
    pub(super) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let shard = self.shard(&key);
        let old = self.shards[shard].insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes `key`; returns its value.
    pub(super) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.shard(key);
        let old = self.shards[shard].remove(key);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// How many entries.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Every entry, shard by shard.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(HashMap::iter)
    }

    /// Gives memory back after a peak: a shard at a quarter of its capacity halves it.
    pub(super) fn shrink(&mut self) {
        for map in &mut self.shards {
            if map.capacity() > 64 && map.len() < map.capacity() / 4 {
                map.shrink_to(map.len() * 2);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_one_map_and_counts_its_entries() {
        let mut t: Table<String, u32> = Table::default();
        for i in 0..10_000u32 {
            assert_eq!(t.insert(format!("k{i}"), i), None);
        }
        assert_eq!(t.insert("k7".into(), 70), Some(7));
        assert_eq!(t.len(), 10_000);
        assert_eq!(t.get("k7"), Some(&70));
        *t.get_mut("k8").unwrap() += 1;
        assert_eq!(t.get("k8"), Some(&9));
        assert!(t.contains_key("k9999") && !t.contains_key("k10000"));
        for i in 0..9_990u32 {
            assert!(t.remove(format!("k{i}").as_str()).is_some());
        }
        assert_eq!(t.remove("k0"), None);
        assert_eq!(t.len(), 10);
        assert_eq!(t.iter().count(), 10);
        t.shrink();
        assert!(t.shards.iter().all(|m| m.capacity() <= 64 || m.len() * 4 >= m.capacity()));
        // Spread: no shard holds most of the entries.
        let mut t: Table<u64, ()> = Table::default();
        for i in 0..64_000 {
            t.insert(i, ());
        }
        assert!(
            t.shards.iter().all(|m| m.len() < 2_000),
            "{:?}",
            t.shards.iter().map(HashMap::len).collect::<Vec<_>>()
        );
    }
}
