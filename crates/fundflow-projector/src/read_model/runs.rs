//! Runs: how a block of sums (every partner's cells of one period, a month's postings of one index)
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
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use rustc_hash::FxHashMap;

use super::codec::{Reader, put_name, put_packed_decimal, u32_of, unreadable};
use crate::ProjectorError;

/// Sums runs into one, as its pieces; none when nothing is left.
pub(super) type Merge<'m> = &'m dyn Fn(&[&[u8]]) -> Result<Pieces, ProjectorError>;

/// A run as stored: one or more pieces, each a run of its own holding a stretch of the run's
/// entries in key order, and each at most about [`PIECE_BYTES`].
pub(super) type Pieces = Vec<Vec<u8>>;

/// How many runs of one level are merged into one of the next.
pub(super) const LEVEL_FANOUT: usize = 16;

/// The size a piece of a run (and of any other value of many entries) is cut at, so that no
/// value grows with the log and sled never writes a blob. sled writes a node past a quarter of
/// its 512 KiB segment as a blob file of its own, and splits a leaf past 16 entries, so values of
/// at most ~7.5 KiB keep every node in its log. Its recovery of blobs is what failed: with the
/// disk full mid-batch, a model that held 32 KiB pieces reopened (after "removing 2 blobs that
/// have a higher lsn than our stable log") with a state that differed from a refold, in 1 of 8
/// runs of the disk fault test.
pub(super) const PIECE_BYTES: usize = 6 * 1024;

/// The bytes of a run key past its block: level, seq, piece.
const RUN_KEY_TAIL: usize = 1 + 8 + 2;

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

/// A Day cell: partner, day, grant, sector, donor, node, kind, currency, total.
pub(super) const DAY: Shape = Shape {
    day: true,
    names: 3,
    kind_currency: true,
    values: 3,
};
/// A Month cell: partner, grant, node, kind, currency, total.
pub(super) const MONTH: Shape = Shape {
    day: false,
    names: 1,
    kind_currency: true,
    values: 3,
};
/// A Year cell: partner, node, kind, currency, total.
pub(super) const YEAR: Shape = Shape {
    day: false,
    names: 0,
    kind_currency: true,
    values: 3,
};
/// A summary part (see `fundflow_domain::SummaryPart`): its grouping in the day byte
/// ([`grouping`]), then the partner (by partner), the grant (by grant) or the item and unit (in
/// kind), the node (by recipient), kind, currency and total (a quantity for items). Fields its
/// grouping does not use are empty or zero.
pub(super) const SUMMARY: Shape = Shape {
    day: true,
    names: 2,
    kind_currency: true,
    values: 3,
};

/// The groupings of summary parts, as stored in their entries' day byte.
pub(super) mod grouping {
    pub(in super::super) const RECIPIENT: u8 = 0;
    pub(in super::super) const PARTNER: u8 = 1;
    pub(in super::super) const GRANT: u8 = 2;
    pub(in super::super) const ITEM: u8 = 3;
}

/// An in-kind quantity cell: partner, day, item, unit, node, quantity.
pub(super) const QUANTITY: Shape = Shape {
    day: true,
    names: 2,
    kind_currency: false,
    values: 1,
};

/// The key of an entry within its block (a period), names borrowed from the stored bytes
/// (fields the shape does not hold are zero or empty). Every shape holds the partner, first,
/// so that a run's entries are in partner order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct EntryKey<'a> {
    pub partner: &'a [u8],
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
    put_name(out, key.partner)?;
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
        put_packed_decimal(out, *value);
    }
    Ok(())
}

fn take_entry<'a>(r: &mut Reader<'a>, shape: Shape) -> Option<(EntryKey<'a>, Values)> {
    let partner = r.name()?;
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
        *value = r.packed_decimal()?;
    }
    let key = EntryKey {
        partner,
        day,
        names,
        node,
        kind,
        currency,
    };
    Some((key, values))
}

/// Encodes entries in key order as one run, uncut (kept in memory, never stored).
pub(super) fn encode_entries(
    shape: Shape,
    entries: &[(EntryKey<'_>, Values)],
) -> Result<Vec<u8>, ProjectorError> {
    let mut out = Vec::with_capacity(4 + entries.len() * 64);
    out.extend_from_slice(&u32_of(entries.len())?.to_be_bytes());
    for (key, values) in entries {
        put_entry(&mut out, shape, key, values)?;
    }
    Ok(out)
}

/// Encodes a run of entries in key order as its pieces, each the entry count (u32), then the
/// entries, cut after the entry that takes it to [`PIECE_BYTES`].
pub(super) fn encode_run(
    shape: Shape,
    entries: &[(EntryKey<'_>, Values)],
) -> Result<Pieces, ProjectorError> {
    let mut pieces = Vec::new();
    let mut piece = Vec::new();
    let mut count = 0usize;
    for (key, values) in entries {
        if piece.is_empty() {
            piece.reserve(PIECE_BYTES + 256);
            piece.extend_from_slice(&[0; 4]);
        }
        put_entry(&mut piece, shape, key, values)?;
        count += 1;
        if piece.len() >= PIECE_BYTES {
            piece[..4].copy_from_slice(&u32_of(count)?.to_be_bytes());
            pieces.push(std::mem::take(&mut piece));
            count = 0;
        }
    }
    if !piece.is_empty() {
        piece[..4].copy_from_slice(&u32_of(count)?.to_be_bytes());
        pieces.push(piece);
    }
    Ok(pieces)
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

/// The sum of runs: entries with equal keys added, zero sums dropped, sorted by key. Each run
/// (each piece) is in key order, so this is a merge of sorted lists: no map, no sort, and a run
/// out of order is refused rather than summed wrong.
pub(super) fn sum_runs<'a>(
    shape: Shape,
    runs: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<(EntryKey<'a>, Values)>, ProjectorError> {
    let mut sources: Vec<RunEntries<'a>> = runs
        .into_iter()
        .map(|r| RunEntries::new(shape, r))
        .collect();
    let mut heads = BinaryHeap::with_capacity(sources.len());
    for (source, entries) in sources.iter_mut().enumerate() {
        if let Some(entry) = entries.next() {
            let (key, values) = entry?;
            heads.push(Reverse((key, source, values)));
        }
    }
    let mut sums: Vec<(EntryKey<'a>, Values)> = Vec::new();
    while let Some(Reverse((key, source, values))) = heads.pop() {
        match sums.last_mut() {
            Some((last, sum)) if *last == key => add_values(sum, &values)?,
            _ => {
                if sums.last().is_some_and(|(_, sum)| is_zero(sum)) {
                    sums.pop();
                }
                sums.push((key, values));
            }
        }
        if let Some(entry) = sources[source].next() {
            let (next, values) = entry?;
            if next <= key {
                return Err(unreadable("run of cells (entries out of order)"));
            }
            heads.push(Reverse((next, source, values)));
        }
    }
    if sums.last().is_some_and(|(_, sum)| is_zero(sum)) {
        sums.pop();
    }
    Ok(sums)
}

/// The merge of cell runs (or pieces) as one run's pieces; none when everything cancelled out.
pub(super) fn merge_cell_runs(shape: Shape, runs: &[&[u8]]) -> Result<Pieces, ProjectorError> {
    encode_run(shape, &sum_runs(shape, runs.iter().copied())?)
}

/// The key of a piece of a run: its block's key (fixed length per kind of block), its level,
/// the first seq of the batch that wrote it (or of the oldest run merged into it), the piece's
/// place in the run.
pub(super) fn run_key(block: &[u8], level: u8, seq: u64, piece: u16) -> Vec<u8> {
    let mut key = Vec::with_capacity(block.len() + RUN_KEY_TAIL);
    key.extend_from_slice(block);
    key.push(level);
    key.extend_from_slice(&seq.to_be_bytes());
    key.extend_from_slice(&piece.to_be_bytes());
    key
}

/// The length of a run key's block (what precedes level, seq and piece).
pub(super) fn block_len(key: &[u8]) -> Option<usize> {
    key.len().checked_sub(RUN_KEY_TAIL)
}

/// A run key without its piece: the pieces of one run share it.
pub(super) fn run_of(key: &[u8]) -> Option<&[u8]> {
    key.get(..key.len().checked_sub(2)?)
}

fn run_seq(key: &[u8]) -> Option<u64> {
    let at = key.len().checked_sub(10)?;
    Some(u64::from_be_bytes(key.get(at..at + 8)?.try_into().ok()?))
}

/// Adds `run`, the pieces of the run a batch wrote for the block whose key is `block`, to
/// `batch`: at level 0, or merged with the level's runs into one a level up (and so on) when the
/// level is full. `merge` sums runs into one (no pieces: nothing left). The reads are of what
/// earlier batches wrote: the projector is the only writer.
pub(super) fn put_run(
    tree: &sled::Tree,
    batch: &mut sled::Batch,
    block: &[u8],
    seq: u64,
    run: Pieces,
    merge: Merge<'_>,
) -> Result<(), ProjectorError> {
    let storage = |e| ProjectorError::storage("cannot read a run of the read model", e);
    let mut level = 0u8;
    let mut pending = (seq, run);
    loop {
        if pending.1.is_empty() {
            return Ok(());
        }
        let mut prefix = block.to_vec();
        prefix.push(level);
        let existing = tree
            .scan_prefix(&prefix)
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage)?;
        let mut runs = 0;
        let mut last: Option<&[u8]> = None;
        for (key, _) in &existing {
            let run = run_of(key).ok_or_else(|| unreadable("run key"))?;
            if last != Some(run) {
                runs += 1;
                last = Some(run);
            }
        }
        if runs + 1 < LEVEL_FANOUT {
            for (piece, bytes) in pending.1.into_iter().enumerate() {
                let piece = u16::try_from(piece)
                    .map_err(|_| ProjectorError::corrupt("a run of more than 65,536 pieces"))?;
                batch.insert(run_key(block, level, pending.0, piece), bytes);
            }
            return Ok(());
        }
        // Keys sort by seq within a level: the first is the oldest run's.
        let oldest = existing
            .first()
            .and_then(|(key, _)| run_seq(key))
            .ok_or_else(|| unreadable("run key"))?;
        let mut inputs: Vec<&[u8]> = existing.iter().map(|(_, v)| v.as_ref()).collect();
        inputs.extend(pending.1.iter().map(Vec::as_slice));
        let merged = merge(&inputs)?;
        for (key, _) in existing {
            batch.remove(key);
        }
        pending = (oldest, merged);
        level = level
            .checked_add(1)
            .ok_or_else(|| ProjectorError::corrupt("a block with runs past level 255"))?;
    }
}

/// A block as read: its keys, the pieces of all its runs, and whether they are all of one run
/// (then their entries are disjoint and in key order, one piece after the other). A block of
/// several runs is given `summed`, their sum as one run, by [`SumCache::sum`].
pub(super) struct Block {
    pub keys: Vec<sled::IVec>,
    pub pieces: Vec<sled::IVec>,
    pub one_run: bool,
    pub summed: Option<Arc<[u8]>>,
}

impl Block {
    /// Its first key (every key begins with the block's).
    pub fn key(&self) -> &[u8] {
        self.keys.first().map_or(&[], |k| k.as_ref())
    }
}

/// The sums of blocks of several runs, as one run each, kept for the next query: a run's key
/// names its content for good (runs are written once, under a key no other run takes, and only
/// removed), so a block's list of keys names its sum. Bounded by the bytes kept; the oldest sum
/// goes first. Cleared with the model.
#[derive(Default)]
pub(super) struct SumCache {
    sums: FxHashMap<Vec<sled::IVec>, Arc<[u8]>>,
    order: VecDeque<Vec<sled::IVec>>,
    bytes: usize,
}

/// What a [`SumCache`] keeps at most.
const SUM_CACHE_BYTES: usize = 64 * 1024 * 1024;

impl SumCache {
    /// Gives each block of several runs its sum, from the cache or summed now (and kept).
    pub(super) fn sum(
        cache: &Mutex<SumCache>,
        shape: Shape,
        blocks: &mut [Block],
    ) -> Result<(), ProjectorError> {
        for block in blocks.iter_mut().filter(|b| !b.one_run) {
            let cached = lock(cache).sums.get(&block.keys).cloned();
            let summed = match cached {
                Some(summed) => summed,
                None => {
                    let entries = sum_runs(shape, block.pieces.iter().map(|p| p.as_ref()))?;
                    let summed: Arc<[u8]> = encode_entries(shape, &entries)?.into();
                    lock(cache).keep(block.keys.clone(), Arc::clone(&summed));
                    summed
                }
            };
            block.summed = Some(summed);
        }
        Ok(())
    }

    fn keep(&mut self, keys: Vec<sled::IVec>, summed: Arc<[u8]>) {
        if summed.len() > SUM_CACHE_BYTES / 4 || self.sums.contains_key(&keys) {
            return;
        }
        self.bytes += summed.len();
        self.order.push_back(keys.clone());
        self.sums.insert(keys, summed);
        while self.bytes > SUM_CACHE_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.sums.remove(&oldest) {
                self.bytes -= gone.len();
            }
        }
    }

    pub(super) fn clear(&mut self) {
        *self = SumCache::default();
    }
}

/// The cache's lock: it guards no invariant a panic could break (a sum is inserted whole or
/// not at all), so a poisoned one is taken.
pub(super) fn lock(cache: &Mutex<SumCache>) -> std::sync::MutexGuard<'_, SumCache> {
    cache.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The blocks under `prefix` (one byte, then a period of `period_bytes`) for the periods in
/// `periods` (all when `None`), in key order: one range read.
pub(super) fn read_blocks(
    tree: &sled::Tree,
    prefix: u8,
    period_bytes: usize,
    periods: Option<(u32, u32)>,
) -> Result<Vec<Block>, ProjectorError> {
    let storage = |e| ProjectorError::storage("cannot read cells", e);
    let period_max = if period_bytes == 2 {
        u32::from(u16::MAX)
    } else {
        u32::MAX
    };
    let (lo, hi) = periods.unwrap_or((0, period_max));
    let hi = hi.min(period_max);
    if lo > hi {
        return Ok(Vec::new());
    }
    let encode = |period: u32| {
        let bytes = period.to_be_bytes();
        let mut key = vec![prefix];
        key.extend_from_slice(&bytes[4 - period_bytes..]);
        key
    };
    let start = encode(lo);
    let entries = match hi.checked_add(1).filter(|end| *end <= period_max) {
        Some(end) => tree.range(start..encode(end)),
        None => tree.range(start..vec![prefix + 1]),
    };
    let mut blocks: Vec<Block> = Vec::new();
    for entry in entries {
        let (key, value) = entry.map_err(storage)?;
        let len = block_len(&key).ok_or_else(|| unreadable("cell key"))?;
        match blocks.last_mut() {
            Some(block) if block.key().get(..len) == key.get(..len) => {
                block.one_run &= run_of(block.key()) == run_of(&key);
                block.keys.push(key);
                block.pieces.push(value);
            }
            _ => blocks.push(Block {
                keys: vec![key],
                pieces: vec![value],
                one_run: true,
                summed: None,
            }),
        }
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
            partner: b"icshp",
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
        let one = |entries: &[(EntryKey<'_>, Values)]| {
            let mut pieces = encode_run(DAY, entries).unwrap();
            assert_eq!(pieces.len(), 1);
            pieces.remove(0)
        };
        let (ra, rb) = (one(&a), one(&b));
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
        let backwards = encode_run(DAY, &[a[1], a[0]]).unwrap().remove(0);
        assert!(
            sum_runs(DAY, [ra.as_slice(), backwards.as_slice()]).is_err(),
            "a run out of key order is refused"
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
            let back: Vec<_> = RunEntries::new(shape, &run[0])
                .map(Result::unwrap)
                .collect();
            assert_eq!(back, vec![entry]);
        }
        assert!(encode_run(DAY, &[]).unwrap().is_empty());
    }

    #[test]
    fn a_long_run_is_cut_into_pieces_that_read_back_in_order() {
        let grants: Vec<String> = (0..5_000).map(|i| format!("grant-{i:05}")).collect();
        let entries: Vec<_> = grants
            .iter()
            .map(|grant| {
                let key = EntryKey {
                    partner: b"icshp",
                    day: 0,
                    names: [grant.as_bytes(), b"", b""],
                    node: 7,
                    kind: 1,
                    currency: 2,
                };
                (key, [d("1.25"), d("0"), d("1.25")])
            })
            .collect();
        let pieces = encode_run(MONTH, &entries).unwrap();
        assert!(pieces.len() > 3, "{} pieces", pieces.len());
        let largest_entry = 4 + 6 + 11 + 2 + 3 + 3 * super::super::codec::DECIMAL_BYTES;
        for piece in &pieces {
            assert!(piece.len() < PIECE_BYTES + largest_entry, "{}", piece.len());
        }
        let back: Vec<_> = pieces
            .iter()
            .flat_map(|piece| RunEntries::new(MONTH, piece))
            .map(Result::unwrap)
            .collect();
        assert_eq!(back, entries);
        let doubled = sum_runs(MONTH, pieces.iter().chain(&pieces).map(Vec::as_slice)).unwrap();
        assert_eq!(doubled.len(), entries.len());
        assert!(doubled.iter().all(|(_, v)| v[0] == d("2.50")));
    }

    #[test]
    fn run_keys_name_their_block_run_and_piece() {
        let key = run_key(b"M\x00\x00\x5e\x88", 2, 4097, 3);
        assert_eq!(block_len(&key), Some(5));
        assert_eq!(run_of(&key), Some(&key[..key.len() - 2]));
        assert_eq!(run_seq(&key), Some(4097));
        assert_eq!(&key[5..], &[2, 0, 0, 0, 0, 0, 0, 0x10, 0x01, 0, 3]);
    }
}
