//! Runs: how a block of sums (a partner's cells of one period, a month's postings of one index)
//! is kept so that a fold batch writes only what it changed.
//!
//! A block is stored as a few *runs* under the block's key prefix, each a partial sum: the
//! changes of one batch (level 0), or the merge of `LEVEL_FANOUT` runs of the level below. The
//! block is the sum of its runs. When a batch adds a run to a level that already holds
//! `LEVEL_FANOUT - 1`, they are merged into one run a level up (and so on), in the same atomic
//! batch. So a batch writes one run per block it touched (plus, now and then, a merge), a block
//! never holds more than `LEVEL_FANOUT - 1` runs per level (levels grow with the logarithm of
//! the batches that touched it), and each change is rewritten once per level: the cost of a
//! batch follows what it changed, not how large the block has grown. (Rewriting a whole block
//! per batch is quadratic when one partner's month holds hundreds of thousands of cells, as the
//! generated benchmark logs do.)
//!
//! Cell runs hold entries of a [`Shape`]; merging sums entries with equal keys (checked: every
//! cell is a part of a direct total the fold caps at 10^26) and drops those that sum to zero.

use rust_decimal::Decimal;
use rustc_hash::FxHashMap;

use super::codec::{DECIMAL_BYTES, Reader, put_decimal, put_name, u32_of, unreadable};
use crate::ProjectorError;

/// Sums runs into one; `None` when nothing is left.
pub(super) type Merge<'m> = &'m dyn Fn(&[&[u8]]) -> Result<Option<Vec<u8>>, ProjectorError>;

/// How many runs of one level are merged into one of the next.
pub(super) const LEVEL_FANOUT: usize = 4;

/// Which fields an entry of a kind of run holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shape {
    /// The day of the month.
    pub day: bool,
    /// How many names (0 to 3).
    pub names: usize,
    /// Kind byte and currency.
    pub kind_currency: bool,
    /// How many decimals (3: amount, USD equivalent, unconverted; 1: a quantity).
    pub values: usize,
}

/// A Day cell: day, grant, sector, donor, node, kind, currency, total.
pub(super) const DAY: Shape = Shape {
    day: true,
    names: 3,
    kind_currency: true,
    values: 3,
};
/// A Month cell: grant, node, kind, currency, total.
pub(super) const MONTH: Shape = Shape {
    day: false,
    names: 1,
    kind_currency: true,
    values: 3,
};
/// A Year cell: node, kind, currency, total.
pub(super) const YEAR: Shape = Shape {
    day: false,
    names: 0,
    kind_currency: true,
    values: 3,
};
/// An in-kind quantity cell: day, item, unit, node, quantity.
pub(super) const QUANTITY: Shape = Shape {
    day: true,
    names: 2,
    kind_currency: false,
    values: 1,
};

/// The key of an entry within its block, names borrowed from the stored bytes (fields the
/// shape does not hold are zero or empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct EntryKey<'a> {
    pub day: u8,
    pub names: [&'a [u8]; 3],
    pub node: u16,
    pub kind: u8,
    pub currency: u16,
}

/// An entry's sums (only the first is used by quantities).
pub(super) type Values = [Decimal; 3];

/// Appends one entry.
pub(super) fn put_entry(
    out: &mut Vec<u8>,
    shape: Shape,
    key: &EntryKey<'_>,
    values: &Values,
) -> Result<(), ProjectorError> {
    if shape.day {
        out.push(key.day);
    }
    for name in &key.names[..shape.names] {
        put_name(out, name)?;
    }
    out.extend_from_slice(&key.node.to_be_bytes());
    if shape.kind_currency {
        out.push(key.kind);
        out.extend_from_slice(&key.currency.to_be_bytes());
    }
    for value in &values[..shape.values] {
        put_decimal(out, *value);
    }
    Ok(())
}

fn take_entry<'a>(r: &mut Reader<'a>, shape: Shape) -> Option<(EntryKey<'a>, Values)> {
    let day = if shape.day { r.u8()? } else { 0 };
    let mut names: [&[u8]; 3] = [&[], &[], &[]];
    for name in names.iter_mut().take(shape.names) {
        *name = r.name()?;
    }
    let node = r.u16()?;
    let (kind, currency) = if shape.kind_currency {
        (r.u8()?, r.u16()?)
    } else {
        (0, 0)
    };
    let mut values = [Decimal::ZERO; 3];
    for value in values.iter_mut().take(shape.values) {
        *value = r.decimal()?;
    }
    let key = EntryKey {
        day,
        names,
        node,
        kind,
        currency,
    };
    Some((key, values))
}

/// Encodes a run: the entry count (u32), then the entries.
pub(super) fn encode_run(
    shape: Shape,
    entries: &[(EntryKey<'_>, Values)],
) -> Result<Vec<u8>, ProjectorError> {
    let mut out = Vec::with_capacity(4 + entries.len() * (16 + shape.values * DECIMAL_BYTES));
    out.extend_from_slice(&u32_of(entries.len())?.to_be_bytes());
    for (key, values) in entries {
        put_entry(&mut out, shape, key, values)?;
    }
    Ok(out)
}

/// The entries of a run, decoded in place.
pub(super) struct RunEntries<'a> {
    reader: Reader<'a>,
    left: u32,
    shape: Shape,
    failed: bool,
}

impl<'a> RunEntries<'a> {
    pub(super) fn new(shape: Shape, run: &'a [u8]) -> RunEntries<'a> {
        let mut reader = Reader::new(run);
        match reader.u32() {
            Some(left) => RunEntries {
                reader,
                left,
                shape,
                failed: false,
            },
            None => RunEntries {
                reader,
                left: 0,
                shape,
                failed: true,
            },
        }
    }
}

impl<'a> Iterator for RunEntries<'a> {
    type Item = Result<(EntryKey<'a>, Values), ProjectorError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            self.failed = false;
            self.left = 0;
            return Some(Err(unreadable("run of cells")));
        }
        if self.left == 0 {
            return (!self.reader.is_empty()).then(|| {
                self.reader = Reader::new(&[]);
                Err(unreadable("run of cells (trailing bytes)"))
            });
        }
        self.left -= 1;
        match take_entry(&mut self.reader, self.shape) {
            Some(entry) => Some(Ok(entry)),
            None => {
                self.left = 0;
                self.reader = Reader::new(&[]);
                Some(Err(unreadable("run of cells")))
            }
        }
    }
}

/// Adds `b` to `a`, failing rather than clamping: sums of parts of direct totals cannot
/// overflow, so an overflow means the model is not what the fold wrote.
pub(super) fn add_values(a: &mut Values, b: &Values) -> Result<(), ProjectorError> {
    for (a, b) in a.iter_mut().zip(b) {
        // As the fold does: adding zero changes nothing, not even the scale or the sign.
        if b.is_zero() {
            continue;
        }
        *a = a
            .checked_add(*b)
            .ok_or_else(|| ProjectorError::corrupt("a sum of cells overflows"))?;
        // Decimal has a signed zero; a cell taken back to zero is zero, not -0.
        if a.is_zero() {
            a.set_sign_positive(true);
        }
    }
    Ok(())
}

pub(super) fn is_zero(values: &Values) -> bool {
    values.iter().all(Decimal::is_zero)
}

/// The sum of runs: entries with equal keys added, zero sums dropped, sorted by key.
pub(super) fn sum_runs<'a>(
    shape: Shape,
    runs: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<(EntryKey<'a>, Values)>, ProjectorError> {
    let mut sums: FxHashMap<EntryKey<'a>, Values> = FxHashMap::default();
    for run in runs {
        for entry in RunEntries::new(shape, run) {
            let (key, values) = entry?;
            match sums.get_mut(&key) {
                Some(sum) => add_values(sum, &values)?,
                None => {
                    sums.insert(key, values);
                }
            }
        }
    }
    let mut entries: Vec<_> = sums.into_iter().filter(|(_, v)| !is_zero(v)).collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

/// The merge of cell runs as one run; `None` when everything cancelled out.
pub(super) fn merge_cell_runs(
    shape: Shape,
    runs: &[&[u8]],
) -> Result<Option<Vec<u8>>, ProjectorError> {
    let entries = sum_runs(shape, runs.iter().copied())?;
    if entries.is_empty() {
        return Ok(None);
    }
    encode_run(shape, &entries).map(Some)
}

/// The key of a run: its block's prefix (which ends the block's key), its level, the first seq
/// of the batch that wrote it (or of the oldest run merged into it).
pub(super) fn run_key(block: &[u8], level: u8, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(block.len() + 9);
    key.extend_from_slice(block);
    key.push(level);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The length of a run key's block prefix (what precedes level and seq).
pub(super) fn block_len(key: &[u8]) -> Option<usize> {
    key.len().checked_sub(9)
}

/// Adds `run`, the run a batch wrote for the block whose key prefix is `block`, to `batch`:
/// at level 0, or merged with the level's runs into one a level up (and so on) when the level
/// is full. `merge` sums runs into one (`None`: nothing left). The reads are of what earlier
/// batches wrote: the projector is the only writer.
pub(super) fn put_run(
    tree: &sled::Tree,
    batch: &mut sled::Batch,
    block: &[u8],
    seq: u64,
    run: Vec<u8>,
    merge: Merge<'_>,
) -> Result<(), ProjectorError> {
    let storage = |e| ProjectorError::storage("cannot read a run of the read model", e);
    let mut level = 0u8;
    let mut pending = (seq, run);
    loop {
        let mut prefix = block.to_vec();
        prefix.push(level);
        let existing = tree
            .scan_prefix(&prefix)
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage)?;
        if existing.len() + 1 < LEVEL_FANOUT {
            batch.insert(run_key(block, level, pending.0), pending.1);
            return Ok(());
        }
        let oldest = existing
            .first()
            .and_then(|(key, _)| key.get(key.len() - 8..))
            .and_then(|seq| seq.try_into().ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| unreadable("run key"))?;
        let mut inputs: Vec<&[u8]> = existing.iter().map(|(_, v)| v.as_ref()).collect();
        inputs.push(&pending.1);
        let merged = merge(&inputs)?;
        for (key, _) in existing {
            batch.remove(key);
        }
        let Some(merged) = merged else {
            return Ok(());
        };
        pending = (oldest, merged);
        level = level
            .checked_add(1)
            .ok_or_else(|| ProjectorError::corrupt("a block with runs past level 255"))?;
    }
}

/// The runs of the blocks under `prefix` (one byte, then a period of `period_bytes`, then the
/// partner and a 0) for the periods in `periods` (all when `None`) and one partner (all when
/// `None`), grouped by block in key order. With a partner, each period is reached by a seek, so
/// the scan reads that partner's blocks, not every partner's.
pub(super) fn read_blocks(
    tree: &sled::Tree,
    prefix: u8,
    period_bytes: usize,
    periods: Option<(u32, u32)>,
    partner: Option<&str>,
) -> Result<Vec<(sled::IVec, Vec<sled::IVec>)>, ProjectorError> {
    let storage = |e| ProjectorError::storage("cannot read cells", e);
    let period_max = if period_bytes == 2 {
        u32::from(u16::MAX)
    } else {
        u32::MAX
    };
    let (lo, hi) = periods.unwrap_or((0, period_max));
    let hi = hi.min(period_max);
    let encode = |period: u32| {
        let bytes = period.to_be_bytes();
        let mut key = vec![prefix];
        key.extend_from_slice(&bytes[4 - period_bytes..]);
        key
    };
    let decode_period = |key: &[u8]| -> Option<u32> {
        let bytes = key.get(1..1 + period_bytes)?;
        Some(bytes.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)))
    };
    let mut blocks: Vec<(sled::IVec, Vec<sled::IVec>)> = Vec::new();
    let mut push = |key: sled::IVec, value: sled::IVec| -> Result<(), ProjectorError> {
        let len = block_len(&key).ok_or_else(|| unreadable("cell key"))?;
        match blocks.last_mut() {
            Some((first, runs)) if first.get(..len) == key.get(..len) => runs.push(value),
            _ => blocks.push((key, vec![value])),
        }
        Ok(())
    };
    if lo > hi {
        return Ok(Vec::new());
    }
    let Some(partner) = partner else {
        let start = encode(lo);
        let entries = match hi.checked_add(1).filter(|end| *end <= period_max) {
            Some(end) => tree.range(start..encode(end)),
            None => tree.range(start..vec![prefix + 1]),
        };
        for entry in entries {
            let (key, value) = entry.map_err(storage)?;
            push(key, value)?;
        }
        return Ok(blocks);
    };
    let mut period = lo;
    while period <= hi {
        let mut block = encode(period);
        block.extend_from_slice(partner.as_bytes());
        block.push(0);
        let mut next = None;
        for entry in tree.range(block.as_slice()..) {
            let (key, value) = entry.map_err(storage)?;
            if key.starts_with(&block) {
                push(key, value)?;
                continue;
            }
            if key.first() == Some(&prefix) {
                next = decode_period(&key);
            }
            break;
        }
        // Jump to the next period that holds any block: empty periods cost nothing.
        period = match next {
            Some(p) if p > period => p,
            Some(_) => match period.checked_add(1) {
                Some(p) => p,
                None => break,
            },
            None => break,
        };
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        text.parse().unwrap_or_default()
    }

    #[test]
    fn runs_round_trip_and_sum() {
        let key = |day, grant: &'static str, node| EntryKey {
            day,
            names: [grant.as_bytes(), b"health", "Fondation \u{e9}".as_bytes()],
            node,
            kind: 1,
            currency: 3,
        };
        let a = vec![
            (key(1, "g-1", 7), [d("10.00"), d("12.00"), d("0")]),
            (key(2, "", 300), [d("5"), d("0"), d("5")]),
        ];
        let b = vec![
            (key(1, "g-1", 7), [d("-10.00"), d("-12.00"), d("0")]),
            (
                key(3, "g-2", 7),
                [d("79228162514264337593543950335"), d("0"), d("0")],
            ),
        ];
        let (ra, rb) = (encode_run(DAY, &a).unwrap(), encode_run(DAY, &b).unwrap());
        let back: Vec<_> = RunEntries::new(DAY, &ra).map(Result::unwrap).collect();
        assert_eq!(back, a);
        let sum = sum_runs(DAY, [ra.as_slice(), rb.as_slice()]).unwrap();
        assert_eq!(sum, vec![a[1], b[1]], "cancelled entries are gone");
        assert!(RunEntries::new(DAY, &ra[..ra.len() - 1]).any(|e| e.is_err()));
        let mut longer = ra.clone();
        longer.push(0);
        assert!(RunEntries::new(DAY, &longer).any(|e| e.is_err()));
        assert!(
            sum_runs(DAY, [rb.as_slice(), rb.as_slice()]).is_err(),
            "overflow"
        );
        for shape in [MONTH, YEAR, QUANTITY] {
            let mut entry = a[0];
            entry.0.names[shape.names..].fill(&[]);
            if !shape.day {
                entry.0.day = 0;
            }
            if !shape.kind_currency {
                (entry.0.kind, entry.0.currency) = (0, 0);
            }
            entry.1[shape.values..].fill(Decimal::ZERO);
            let run = encode_run(shape, &[entry]).unwrap();
            let back: Vec<_> = RunEntries::new(shape, &run).map(Result::unwrap).collect();
            assert_eq!(back, vec![entry]);
        }
    }
}
