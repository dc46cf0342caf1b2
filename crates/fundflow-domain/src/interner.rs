//! Interns strings to dense ids, so that the fold's keys stay small and hashing them cheap.

use rustc_hash::FxHashMap;

/// Names and their ids; an id is the name's position in `names`.
#[derive(Debug, Clone, Default)]
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

    /// The name of `id`; ids come only from [`Interner::intern`], so it has one.
    pub(crate) fn name(&self, id: u32) -> &str {
        let name = self.names.get(id as usize);
        debug_assert!(name.is_some(), "id {id} was never interned");
        name.map_or("", |n| n)
    }
}
