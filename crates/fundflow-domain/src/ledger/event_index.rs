//! The index of every event the fold has seen with a valid identity: the largest part of its
//! state, one entry per event.
//!
//! Entries sit in one vector, in the order the fold met them, and a hash table holds only their
//! positions (four bytes and a control byte a bucket). A map of keys to entries kept each entry
//! in its bucket, and a table is at most seven-eighths full and grows by doubling, so the map
//! held between one and a half and three entries' worth of memory per event; the table of
//! positions holds about ten bytes per event beside the dense entries.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use serde::{Deserialize, Serialize};

use super::identity::{EventEntry, EventKey};

/// Events by (partner, event id). See the module documentation.
#[derive(Debug, Clone, Default)]
pub(super) struct EventIndex {
    /// Every event, in the order it was inserted.
    entries: Vec<(EventKey, EventEntry)>,
    /// Positions in `entries`, by the hash of their key.
    positions: HashTable<u32>,
}

fn hash(key: &EventKey) -> u64 {
    FxBuildHasher.hash_one(key)
}

impl EventIndex {
    pub(super) fn reserve(&mut self, events: usize) {
        self.entries.reserve(events);
        let entries = &self.entries;
        self.positions
            .reserve(events, |&at| hash(&entries[at as usize].0));
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    fn position(&self, key: &EventKey) -> Option<usize> {
        let entries = &self.entries;
        self.positions
            .find(hash(key), |&at| entries[at as usize].0 == *key)
            .map(|&at| at as usize)
    }

    pub(super) fn get(&self, key: &EventKey) -> Option<&EventEntry> {
        self.position(key).map(|at| &self.entries[at].1)
    }

    pub(super) fn get_mut(&mut self, key: &EventKey) -> Option<&mut EventEntry> {
        self.position(key).map(|at| &mut self.entries[at].1)
    }

    /// Remembers a new event; the caller has checked that its key is not known (a repeat is
    /// refused before it is remembered), and a known key is a bug.
    pub(super) fn insert_new(&mut self, key: EventKey, entry: EventEntry) {
        debug_assert!(self.position(&key).is_none(), "{key:?} is remembered twice");
        let at = super::next_index(self.entries.len());
        if self.entries.len() == self.entries.capacity() {
            // Grow by a quarter, not double: past a capacity hint, doubling would leave up to
            // half of the largest vector the fold keeps unused. Still geometric, so pushing
            // stays amortized O(1).
            self.entries
                .reserve_exact((self.entries.len() / 4).max(1024));
        }
        self.entries.push((key, entry));
        let entries = &self.entries;
        self.positions
            .insert_unique(hash(&key), at, |&at| hash(&entries[at as usize].0));
    }

    pub(super) fn entries(&self) -> impl Iterator<Item = &EventEntry> {
        self.entries.iter().map(|(_, entry)| entry)
    }

    pub(super) fn allocated_bytes(&self) -> usize {
        self.entries.capacity() * size_of::<(EventKey, EventEntry)>()
            + self.positions.allocation_size()
    }
}

/// Encoded as its entries, in order: the table is rebuilt from them.
impl Serialize for EventIndex {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.entries.serialize(s)
    }
}

/// A decoded list of entries in which a key is listed twice.
#[derive(Debug, thiserror::Error)]
#[error("the event {0:?} is remembered twice")]
pub(super) struct RepeatedEvent(EventKey);

impl<'de> Deserialize<'de> for EventIndex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EventIndex, D::Error> {
        let entries = crate::snapshot::presized_vec::deserialize(d)?;
        EventIndex::try_from(entries).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<Vec<(EventKey, EventEntry)>> for EventIndex {
    type Error = RepeatedEvent;

    fn try_from(entries: Vec<(EventKey, EventEntry)>) -> Result<EventIndex, RepeatedEvent> {
        let mut positions = HashTable::with_capacity(entries.len());
        for (at, (key, _)) in entries.iter().enumerate() {
            let at = super::next_index(at);
            let hash = hash(key);
            if positions
                .find(hash, |&other: &u32| entries[other as usize].0 == *key)
                .is_some()
            {
                return Err(RepeatedEvent(*key));
            }
            positions.insert_unique(hash, at, |&at| self::hash(&entries[at as usize].0));
        }
        Ok(EventIndex { entries, positions })
    }
}

#[cfg(test)]
mod tests {
    use super::super::identity::{EntryState, EventEntry, EventKey};
    use super::EventIndex;

    fn entry(seq: u64) -> EventEntry {
        EventEntry {
            seq,
            fingerprint: seq.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            state: EntryState::Applied(u32::try_from(seq).unwrap()),
        }
    }

    #[test]
    fn finds_every_event_past_its_hint_and_after_encoding() {
        let mut index = EventIndex::default();
        index.reserve(100);
        let key = |i: u64| EventKey::new(u32::try_from(i % 7).unwrap(), u128::from(i) << 64 | 5);
        for i in 0..10_000 {
            index.insert_new(key(i), entry(i));
        }
        assert_eq!(index.len(), 10_000);
        assert_eq!(index.get(&key(9_999)).map(|e| e.seq), Some(9_999));
        assert!(index.get(&EventKey::new(0, 1)).is_none());
        if let Some(found) = index.get_mut(&key(42)) {
            found.state = EntryState::Reversed;
        }
        let bytes = postcard::to_allocvec(&index).unwrap();
        let decoded: EventIndex = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(decoded.len(), 10_000);
        assert_eq!(
            decoded.get(&key(42)).map(|e| e.state),
            Some(EntryState::Reversed)
        );
        assert_eq!(decoded.get(&key(7_000)).map(|e| e.seq), Some(7_000));
    }

    #[test]
    fn an_event_listed_twice_does_not_decode() {
        let key = EventKey::new(1, 2);
        let twice = postcard::to_allocvec(&vec![(key, entry(1)), (key, entry(2))]).unwrap();
        assert!(postcard::from_bytes::<EventIndex>(&twice).is_err());
        let once = postcard::to_allocvec(&vec![(key, entry(1))]).unwrap();
        assert_eq!(
            postcard::from_bytes::<EventIndex>(&once)
                .unwrap()
                .get(&key)
                .map(|e| e.seq),
            Some(1)
        );
    }
}
