//! Interns strings to dense ids, so that the fold's keys stay small and hashing them cheap.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use serde::{Deserialize, Serialize};

/// Names and their ids; an id is the name's position in the list.
///
/// Each name is held once: the names are one string, cut by `ends`, and the lookup table holds
/// ids alone (a name is hashed again when the table grows). Pledge ids and grant labels grow with
/// the log, and a map of boxed names beside a list of them held every name twice, in two
/// allocations each.
///
/// Encoded as its names alone (the ids are their positions), and decoded by interning them
/// again in order.
#[derive(Clone, Default, Deserialize)]
#[serde(try_from = "Vec<Box<str>>")]
pub(crate) struct Interner {
    /// Every name, one after the other.
    text: String,
    /// Where each name ends in `text`, by id.
    ends: Vec<usize>,
    /// Ids, found by their name's hash.
    ids: HashTable<u32>,
}

fn hash(name: &str) -> u64 {
    FxBuildHasher.hash_one(name)
}

impl Interner {
    /// The id of `name`, given a new one if it has none.
    pub(crate) fn intern(&mut self, name: &str) -> u32 {
        let hash = hash(name);
        if let Some(&id) = self.ids.find(hash, |&id| self.name(id) == name) {
            return id;
        }
        let id = crate::ledger::next_index(self.ends.len());
        self.text.push_str(name);
        self.ends.push(self.text.len());
        let Interner { text, ends, ids } = self;
        let name_of = |id: u32| name_in(text, ends, id);
        ids.insert_unique(hash, id, |&id| self::hash(name_of(id)));
        id
    }

    /// The id of `name`, if it has one.
    pub(crate) fn get(&self, name: &str) -> Option<u32> {
        self.ids
            .find(hash(name), |&id| self.name(id) == name)
            .copied()
    }

    /// How many names there are.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Every name, by id.
    pub(crate) fn names(&self) -> impl ExactSizeIterator<Item = &str> + Clone {
        (0..self.ends.len()).map(|id| name_at(&self.text, &self.ends, id))
    }

    /// Bytes held: the text, the ends and the table.
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.text.capacity()
            + self.ends.capacity() * size_of::<usize>()
            + self.ids.allocation_size()
    }

    /// The name of `id`; ids come only from [`Interner::intern`], so it has one.
    pub(crate) fn name(&self, id: u32) -> &str {
        name_in(&self.text, &self.ends, id)
    }
}

fn name_in<'a>(text: &'a str, ends: &[usize], id: u32) -> &'a str {
    debug_assert!((id as usize) < ends.len(), "id {id} was never interned");
    name_at(text, ends, id as usize)
}

fn name_at<'a>(text: &'a str, ends: &[usize], at: usize) -> &'a str {
    let start = match at.checked_sub(1) {
        Some(before) => ends.get(before).copied().unwrap_or(text.len()),
        None => 0,
    };
    let end = ends.get(at).copied().unwrap_or(start);
    text.get(start..end).unwrap_or("")
}

impl std::fmt::Debug for Interner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Serialize for Interner {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.names())
    }
}

/// A decoded list of names in which one is listed twice: its ids would not be positions.
#[derive(Debug, thiserror::Error)]
#[error("the name {0:?} is interned twice")]
pub(crate) struct RepeatedName(Box<str>);

impl TryFrom<Vec<Box<str>>> for Interner {
    type Error = RepeatedName;

    fn try_from(names: Vec<Box<str>>) -> Result<Interner, RepeatedName> {
        let mut interner = Interner {
            text: String::with_capacity(names.iter().map(|n| n.len()).sum()),
            ends: Vec::with_capacity(names.len()),
            ids: HashTable::with_capacity(names.len()),
        };
        for name in names {
            if interner.intern(&name) as usize + 1 != interner.len() {
                return Err(RepeatedName(name));
            }
        }
        Ok(interner)
    }
}

#[cfg(test)]
mod tests {
    use super::Interner;

    #[test]
    fn names_keep_their_ids_through_growth_and_encoding() {
        let mut interner = Interner::default();
        let names: Vec<String> = (0..10_000).map(|i| format!("grant-{i}")).collect();
        for (id, name) in (0u32..).zip(&names) {
            assert_eq!(interner.intern(name), id);
        }
        assert_eq!(interner.intern(""), 10_000, "the empty name is a name too");
        assert_eq!(interner.intern("grant-42"), 42);
        assert_eq!(interner.get("grant-9999"), Some(9_999));
        assert_eq!(interner.get("grant-10000"), None);
        assert_eq!(interner.name(7), "grant-7");
        assert_eq!(interner.name(10_000), "");
        let bytes = postcard::to_allocvec(&interner).unwrap();
        let decoded: Interner = postcard::from_bytes(&bytes).unwrap();
        assert!(decoded.names().eq(interner.names()));
        assert_eq!(decoded.get("grant-123"), Some(123));
        assert_eq!(decoded.len(), 10_001);
        let repeated = postcard::to_allocvec(&vec!["a", "b", "a"]).unwrap();
        assert!(postcard::from_bytes::<Interner>(&repeated).is_err());
        let distinct = postcard::to_allocvec(&vec!["a", "b", "c"]).unwrap();
        assert_eq!(
            postcard::from_bytes::<Interner>(&distinct)
                .unwrap()
                .get("c"),
            Some(2)
        );
    }
}
