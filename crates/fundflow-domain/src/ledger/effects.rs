//! Every applied event's effect, packed back to back in one byte arena.
//!
//! An effect is kept only so that a reversal, which is rare, can undo exactly what its target
//! did; the fold never reads one otherwise. Kept as structs, an effect cost ~150 bytes (a
//! 72-byte struct, a boxed slice of 40-byte parts and the allocator's header): a third of a
//! replay's memory at a million events. Packed with postcard (varints, decimals as a sign and
//! scale byte and a varint mantissa), one is ~45 bytes plus its 8-byte offset, in two
//! allocations for the whole log, and a snapshot writes and reads the arena as two blocks.
//!
//! Invariant: `starts` is strictly increasing, every effect decodes from exactly the bytes
//! between its start and the next (the arena's end for the last). [`Effects::push`] keeps it,
//! and a decoded arena (from a snapshot) is checked effect by effect before it is used
//! (`Ledger::check_references`), so [`Effects::get`] cannot fail on a ledger's own arena.

use serde::{Deserialize, Serialize};

use super::{Effect, next_index};

/// See the module documentation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(try_from = "Arena")]
pub(crate) struct Effects {
    arena: Arena,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Arena {
    /// The effects' encodings, back to back.
    #[serde(with = "crate::snapshot::presized_vec")]
    bytes: Vec<u8>,
    /// Where each effect starts in `bytes`, by index.
    #[serde(with = "crate::snapshot::presized_vec")]
    starts: Vec<u64>,
}

impl Effects {
    /// Room for about `effects` more without moving (a hint, as for the event index).
    pub(crate) fn reserve(&mut self, effects: usize) {
        self.arena.starts.reserve(effects);
        self.arena
            .bytes
            .reserve(effects.saturating_mul(BYTES_PER_EFFECT));
    }

    /// How many effects it holds.
    pub(crate) fn len(&self) -> usize {
        self.arena.starts.len()
    }

    /// Appends an effect; returns its index.
    pub(crate) fn push(&mut self, effect: &Effect) -> u32 {
        let index = next_index(self.arena.starts.len());
        let start = self.arena.bytes.len() as u64;
        // Encoding into a Vec fails only when the allocator does.
        let encoded = postcard::to_io(effect, &mut self.arena.bytes);
        debug_assert!(encoded.is_ok(), "encoding into a Vec cannot fail");
        self.arena.starts.push(start);
        index
    }

    /// The effect at `index`, decoded. Indexes come from [`Effects::push`] (through an
    /// `EntryState::Applied`), and the arena is checked when decoded, so it is there.
    pub(crate) fn get(&self, index: u32) -> Effect {
        #[expect(
            clippy::expect_used,
            reason = "the arena holds what push wrote, or was checked effect by effect on load"
        )]
        self.arena
            .decode(index as usize)
            .expect("an effect index from EntryState::Applied is in the arena")
    }

    /// Every effect, decoded, in order; the index of the first that does not decode from
    /// exactly its own bytes (decoding checks countries, areas and currencies against the
    /// tables).
    pub(crate) fn decode_all(&self) -> impl Iterator<Item = Result<Effect, usize>> + '_ {
        (0..self.len()).map(|i| self.arena.decode(i).ok_or(i))
    }

    /// Bytes held: the arena and the offsets, as allocated.
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.arena.bytes.capacity() + self.arena.starts.capacity() * size_of::<u64>()
    }
}

/// A first guess at an effect's size, for [`Effects::reserve`]: one allocation with one
/// recipient packs to a few tens of bytes.
const BYTES_PER_EFFECT: usize = 48;

impl Arena {
    fn range(&self, index: usize) -> Option<std::ops::Range<usize>> {
        let start = usize::try_from(*self.starts.get(index)?).ok()?;
        let end = match self.starts.get(index + 1) {
            Some(next) => usize::try_from(*next).ok()?,
            None => self.bytes.len(),
        };
        (start <= end).then_some(start..end)
    }

    fn decode(&self, index: usize) -> Option<Effect> {
        let bytes = self.bytes.get(self.range(index)?)?;
        match postcard::take_from_bytes::<Effect>(bytes) {
            Ok((effect, [])) => Some(effect),
            _ => None,
        }
    }
}

impl TryFrom<Arena> for Effects {
    type Error = String;

    /// Checks a decoded arena's offsets; [`Effects::decode_all`] checks the effects, with the
    /// ledger they index into.
    fn try_from(arena: Arena) -> Result<Effects, String> {
        if arena.starts.first().is_some_and(|&start| start != 0)
            || arena.starts.windows(2).any(|pair| pair[0] >= pair[1])
        {
            return Err("the effects' offsets are not increasing from 0".to_owned());
        }
        if arena.starts.is_empty() && !arena.bytes.is_empty() {
            return Err("effect bytes without effects".to_owned());
        }
        Ok(Effects { arena })
    }
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a failed test, with its location.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::str::FromStr;

    use rust_decimal::Decimal;
    use time::macros::date;

    use super::*;
    use crate::ledger::{EffectDims, ItemPart, Part, PledgeLink};
    use crate::node::Node;
    use crate::values::{CellBlock, Month, TotalKind};

    fn effect(values: &[Decimal]) -> Effect {
        let node = Node::country("NPL").unwrap();
        let day = date!(2020 - 09 - 30);
        Effect {
            kind: TotalKind::Paid,
            currency: 7,
            parts: values
                .iter()
                .map(|&value| Part {
                    node,
                    value,
                    usd: Some(-value),
                })
                .collect(),
            items: vec![ItemPart {
                node,
                item: 3,
                unit: u32::MAX,
                quantity: values[0],
            }]
            .into(),
            pledge: Some(PledgeLink::Paid(u32::MAX)),
            dims: EffectDims {
                block: CellBlock {
                    month: Month::of(day),
                    partner: 1,
                },
                day,
                grant: 0,
                sector: 2,
                donor: u32::MAX,
            },
        }
    }

    #[test]
    fn every_effect_comes_back_exactly_as_pushed() {
        let extremes = [
            Decimal::ZERO,
            Decimal::MAX,
            Decimal::MIN,
            Decimal::new(1, 28),
            Decimal::new(-1, 28),
            Decimal::from_str("250.00").unwrap(),
            Decimal::from_str("79228162514264337593543950335").unwrap(),
        ];
        let mut effects = Effects::default();
        let pushed: Vec<Effect> = (0..extremes.len())
            .map(|n| effect(&extremes[..=n]))
            .collect();
        for (i, e) in pushed.iter().enumerate() {
            assert_eq!(effects.push(e) as usize, i);
        }
        for (i, e) in pushed.iter().enumerate() {
            let back = effects.get(u32::try_from(i).unwrap());
            // Scale and sign survive, not only the value: `250.00` stays at two decimals.
            let parts = |e: &Effect| -> Vec<_> {
                e.parts
                    .iter()
                    .map(|p| (p.value.serialize(), p.usd.map(|u| u.serialize())))
                    .collect()
            };
            assert_eq!(parts(&back), parts(e), "effect {i}");
            assert_eq!(
                back.items[0].quantity.serialize(),
                e.items[0].quantity.serialize()
            );
            assert_eq!((back.items[0].item, back.items[0].unit), (3, u32::MAX));
            assert_eq!(back.pledge, e.pledge);
            assert_eq!(
                (back.dims.day, back.dims.block, back.dims.donor),
                (e.dims.day, e.dims.block, e.dims.donor)
            );
        }
        assert!(effects.decode_all().all(|e| e.is_ok()));
    }

    #[test]
    fn an_arena_whose_offsets_do_not_increase_is_refused() {
        let mut effects = Effects::default();
        effects.push(&effect(&[Decimal::ONE]));
        effects.push(&effect(&[Decimal::TWO]));
        let mut arena = effects.arena.clone();
        arena.starts.swap(0, 1);
        assert!(Effects::try_from(arena).is_err());
        let mut arena = effects.arena.clone();
        arena.bytes.truncate(3);
        let truncated = Effects::try_from(arena).unwrap();
        assert!(truncated.decode_all().any(|e| e.is_err()));
    }
}
