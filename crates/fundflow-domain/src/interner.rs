//! Interns strings to dense ids, so that the fold's keys stay small and hashing them cheap.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// Names and their ids; an id is the name's position in `names`.
///
/// Encoded as its names alone (the ids are their positions), and decoded by interning them
/// again in order.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "Vec<Box<str>>")]
pub(crate) struct Interner {
    /// Id by name, for interning and lookups.
    ids: FxHashMap<Box<str>, u32>,
    /// Name by id, for reading keys back.
    names: Vec<Box<str>>,
}

impl Interner {
    /// The id of `name`, given a new one if it has none.
    pub(crate) fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = crate::ledger::next_index(self.names.len());
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }

    /// The id of `name`, if it has one.
    pub(crate) fn get(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    /// Every name, by id.
    pub(crate) fn names(&self) -> &[Box<str>] {
        &self.names
    }

    /// Bytes held: each name twice (the map's key and the list's entry) and both tables.
    pub(crate) fn allocated_bytes(&self) -> usize {
        let text: usize = self.names.iter().map(|n| n.len()).sum();
        2 * text
            + self.names.capacity() * size_of::<Box<str>>()
            + crate::ledger::table_bytes(self.ids.capacity(), size_of::<(Box<str>, u32)>())
    }

    /// The name of `id`; ids come only from [`Interner::intern`], so it has one.
    pub(crate) fn name(&self, id: u32) -> &str {
        let name = self.names.get(id as usize);
        debug_assert!(name.is_some(), "id {id} was never interned");
        name.map_or("", |n| n)
    }
}

impl Serialize for Interner {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.names.serialize(s)
    }
}

impl From<Vec<Box<str>>> for Interner {
    fn from(names: Vec<Box<str>>) -> Interner {
        let ids = names
            .iter()
            .enumerate()
            .map(|(id, name)| (name.clone(), crate::ledger::next_index(id)))
            .collect();
        Interner { ids, names }
    }
}
