//! A hash map that keeps its entries dense: one vector of (key, value) and a table of
//! positions into it, for the maps the fold keeps an entry per event or per flow in (the event
//! index, the cells).
//!
//! A `HashMap` keeps each entry in its bucket, and its buckets are a power of two at most
//! seven-eighths full, so a map holds between 1.14 and 2.3 entries' worth of memory per entry
//! (at 5 million generated events the cells' tables were about half full). Here the buckets
//! hold four-byte positions, and the vector grows by a quarter.

use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use serde::{Deserialize, Serialize};

/// Entries by key. Iteration is in an order fixed by the history of inserts and removals (a
/// removal moves the last entry into the gap), the same on every machine.
#[derive(Debug, Clone)]
pub(crate) struct DenseMap<K, V> {
    entries: Vec<(K, V)>,
    positions: HashTable<u32>,
}

impl<K, V> Default for DenseMap<K, V> {
    fn default() -> DenseMap<K, V> {
        DenseMap {
            entries: Vec::new(),
            positions: HashTable::new(),
        }
    }
}

fn hash<K: Hash>(key: &K) -> u64 {
    FxBuildHasher.hash_one(key)
}

impl<K: Hash + Eq, V> DenseMap<K, V> {
    fn position(&self, key: &K) -> Option<usize> {
        let entries = &self.entries;
        self.positions
            .find(hash(key), |&at| entries[at as usize].0 == *key)
            .map(|&at| at as usize)
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.position(key).map(|at| &self.entries[at].1)
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.position(key).map(|at| &mut self.entries[at].1)
    }

    /// Room for `additional` more entries without growing.
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.entries.reserve_exact(additional);
        let entries = &self.entries;
        self.positions
            .reserve(additional, |&at| hash(&entries[at as usize].0));
    }

    /// Sets `key` to `value`.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        if let Some(at) = self.position(&key) {
            self.entries[at].1 = value;
            return;
        }
        self.insert_new(key, value);
    }

    /// Adds `key`, which the caller knows is not there (one probe of the table, not two); a
    /// key that is there is a bug.
    pub(crate) fn insert_new(&mut self, key: K, value: V) {
        debug_assert!(self.position(&key).is_none(), "a new key is already there");
        let at = super::next_index(self.entries.len());
        if self.entries.len() == self.entries.capacity() {
            // A quarter, not double: still geometric, so inserts stay amortized O(1).
            self.entries.reserve_exact((self.entries.len() / 4).max(4));
        }
        let hash = hash(&key);
        self.entries.push((key, value));
        let entries = &self.entries;
        self.positions
            .insert_unique(hash, at, |&at| self::hash(&entries[at as usize].0));
    }

    /// Removes `key`, if it is there; the last entry moves into its place.
    pub(crate) fn remove(&mut self, key: &K) {
        let entries = &self.entries;
        let Ok(found) = self
            .positions
            .find_entry(hash(key), |&at| entries[at as usize].0 == *key)
        else {
            return;
        };
        let (at, _) = found.remove();
        let at = at as usize;
        let last = self.entries.len() - 1;
        if at != last {
            let moved = hash(&self.entries[last].0);
            let slot = self.positions.find_mut(moved, |&p| p as usize == last);
            debug_assert!(slot.is_some(), "every entry has a position");
            if let Some(slot) = slot {
                *slot = super::next_index(at);
            }
        }
        self.entries.swap_remove(at);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = (&K, &V)> + Clone {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub(crate) fn values(&self) -> impl ExactSizeIterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }

    pub(crate) fn allocated_bytes(&self) -> usize {
        self.entries.capacity() * size_of::<(K, V)>() + self.positions.allocation_size()
    }
}

impl<'a, K: Hash + Eq, V> IntoIterator for &'a DenseMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

/// Encoded as its entries, in order; the table is rebuilt from them.
impl<K: Serialize, V: Serialize> Serialize for DenseMap<K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.entries.serialize(s)
    }
}

impl<'de, K: Deserialize<'de> + Hash + Eq, V: Deserialize<'de>> Deserialize<'de>
    for DenseMap<K, V>
{
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DenseMap<K, V>, D::Error> {
        let entries: Vec<(K, V)> = crate::snapshot::presized_vec::deserialize(d)?;
        let mut positions = HashTable::with_capacity(entries.len());
        for (at, (key, _)) in entries.iter().enumerate() {
            let hash = hash(key);
            if positions
                .find(hash, |&other: &u32| entries[other as usize].0 == *key)
                .is_some()
            {
                return Err(serde::de::Error::custom("a key is listed twice"));
            }
            positions.insert_unique(hash, super::next_index(at), |&p| {
                self::hash(&entries[p as usize].0)
            });
        }
        Ok(DenseMap { entries, positions })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::DenseMap;

    proptest! {
        /// Any sequence of inserts and removals leaves the same entries as a BTreeMap, and
        /// survives encoding.
        #[test]
        fn behaves_as_a_map(ops in proptest::collection::vec((any::<bool>(), 0u16..64, any::<u32>()), 0..400)) {
            let mut dense = DenseMap::default();
            let mut model = BTreeMap::new();
            for (insert, key, value) in ops {
                if insert {
                    dense.insert(key, value);
                    model.insert(key, value);
                } else {
                    dense.remove(&key);
                    model.remove(&key);
                }
                prop_assert_eq!(dense.len(), model.len());
            }
            for (key, value) in &model {
                prop_assert_eq!(dense.get(key), Some(value));
            }
            let mut entries: Vec<(u16, u32)> = dense.iter().map(|(k, v)| (*k, *v)).collect();
            entries.sort_unstable();
            prop_assert_eq!(entries, model.into_iter().collect::<Vec<_>>());
            let decoded: DenseMap<u16, u32> =
                postcard::from_bytes(&postcard::to_allocvec(&dense).unwrap()).unwrap();
            prop_assert!(decoded.iter().eq(dense.iter()));
        }
    }

    #[test]
    fn finds_every_key_past_its_reserve_and_after_encoding() {
        let mut map = DenseMap::default();
        map.reserve(100);
        let key = |i: u64| (i % 7, u128::from(i) << 64 | 5);
        for i in 0..10_000 {
            map.insert_new(key(i), i);
        }
        assert_eq!(map.len(), 10_000);
        assert_eq!(map.get(&key(9_999)), Some(&9_999));
        assert_eq!(map.get(&(0, 1)), None);
        if let Some(value) = map.get_mut(&key(42)) {
            *value = 1;
        }
        let bytes = postcard::to_allocvec(&map).unwrap();
        let decoded: DenseMap<(u64, u128), u64> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(decoded.len(), 10_000);
        assert_eq!(decoded.get(&key(42)), Some(&1));
        assert_eq!(decoded.get(&key(7_000)), Some(&7_000));
    }

    #[test]
    fn a_repeated_key_does_not_decode() {
        let bytes = postcard::to_allocvec(&vec![(1u16, 2u32), (1, 3)]).unwrap();
        assert!(postcard::from_bytes::<DenseMap<u16, u32>>(&bytes).is_err());
        let distinct = postcard::to_allocvec(&vec![(1u16, 2u32), (2, 3)]).unwrap();
        let decoded = postcard::from_bytes::<DenseMap<u16, u32>>(&distinct).unwrap();
        assert_eq!(decoded.get(&2), Some(&3));
    }
}
