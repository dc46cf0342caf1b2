//! The sled read model: everything a query reads (totals, quantities, cells by period, partner,
//! grant, sector and donor, outcomes per day, the pledge book, parallel funding per grant, the
//! flows list, rejections and outcomes), with the checkpoint that says how far into the log
//! they are.
//!
//! Layout: one sled tree, `model`, keys prefixed by one byte so that one `sled::Batch` writes a
//! whole fold batch atomically. Names inside values are length-prefixed; decimals are 16 bytes
//! (`Decimal::serialize`), except in the runs of cells, where they are packed (a byte of sign
//! and scale, then the mantissa as LEB128: about 4 bytes for an amount, since cells are most of
//! what the model writes); integers big-endian; dates Julian day numbers (i32) unless a key's
//! period already says the month.
//!
//! | prefix | key after it | value |
//! | --- | --- | --- |
//! | `c` | — | the checkpoint: format version, last seq, log digest, counts, rejection digest |
//! | `t` | piece u16 | every direct total, in pieces of about 6 KiB: per total node u16, kind u8, currency u16, then amount, USD equivalent, unconverted |
//! | `q` | piece u16 | every direct in-kind quantity, in pieces likewise: per quantity node u16, item, unit, quantity |
//! | `p` | partner, 0, pledge id | an active pledge: currency, occurred_on, USD rate and sums, payments unconverted, donor, sector, then per line node, pledged, paid |
//! | `r` | seq u64 | a rejection: code, event id, partner, field, message |
//! | `o` | first seq u64 of the records packed | up to 682 consecutive records' outcomes: per record seq u64 and code u8 |
//! | `D` | month u32, level u8, run seq u64, piece u16 | a piece of a run of Day cells of the month: per cell partner, day of month u8, grant, sector, donor, node u16, kind u8, currency u16, the total |
//! | `M` | month u32, level, run seq, piece | a piece of a run of Month cells: partner, grant, node, kind, currency, the total |
//! | `Y` | year u16, level, run seq, piece | a piece of a run of Year cells: partner, node, kind, currency, the total |
//! | `Q` | month u32, level, run seq, piece | a piece of a run of in-kind quantity cells: partner, day of month, item, unit, node, quantity |
//! | `S` | year u16, level, run seq, piece | a piece of a run of the year's summary parts: per part its grouping u8 (by recipient, partner or grant, or an item), then partner, grant or item and unit, node, kind, currency, the total |
//! | `d` | year u16 | records applied and rejected per `occurred_on` day: per day, day of year u16, applied u64, rejected u64 |
//! | `g` | grant | the parallel funding naming that grant: per currency u16, the total |
//! | `f` | seq / 16, u64 | a pack of flow records (`FlowRecord`, protobuf): count, table of (seq, offset, length), records |
//! | `v` | seq / 4096 of the flows undone, u64; first seq of the batch | the batch's reversals of those flows: target seq, reversal seq, event id, reason |
//! | `x` | index u8, u32::MAX − month, level, run seq, piece | a piece of a run of postings of one index and month: per indexed value (kind, partner, node, grant, donor or sector; none for `all` and `reversed`) its flows' (day, seq), newest first |
//!
//! Why this shape: sled takes roughly 60,000 random and 120,000 sequential inserts a second, far
//! below the log's rate, and a value it rewrites costs its whole length. So a fold batch writes
//! a handful of values, never one per event, and each in proportion to what the batch changed:
//! direct totals and quantities, whose number is bounded by the reference data, are rewritten
//! whole when the batch changed any; the outcomes of all the batch's records go into one value
//! under a sequential key; each pledge the batch changed is one value under its own key (the
//! pledge query is one point read, the pledge book a scan in key order); rejections are rare.
//!
//! Cells (`D`, `M`, `Y`, `Q`) and postings (`x`) are kept as *runs* (see `runs`): a batch adds
//! one run per block it touched, holding only its changes, and full levels are merged into the
//! next in the same batch. A block is a period (a month, or a year), all partners' cells in it:
//! a batch touches a few dozen periods, so it writes a few dozen runs whatever the number of
//! partners (blocks per (period, partner) cost about two sled inserts per event, a fifth of
//! the log's rate). A run is cut into pieces of about 6 KiB (`runs::PIECE_BYTES`), so that no
//! value becomes a sled blob. A block's sum is its runs' sum, read in one range scan; a query's
//! cost follows the periods and cells it reads and the few runs they are spread over, never the
//! log. Rewriting a month whole per batch, the obvious layout, is quadratic in the month's size
//! (one event a second, as in the benchmarks, gives a month hundreds of thousands of cells).
//! Flow records are appended by seq and never rewritten; a reversal is written beside them (`v`)
//! so that status "as of seq S" is a comparison. Outcomes per day are one small value per year,
//! rewritten when a day of that year changed.
//!
//! The event-id index is not on disk at all: the log answers "which seq holds (partner, event
//! id)", and the projector keeps its own index in memory, rebuilt at start by refolding the log
//! (see `Projector::open`).
//!
//! Consistency: sled applies a batch atomically for crash recovery, but a scan running while a
//! batch is applied may see part of it, and sled transactions cannot scan. So the read model has
//! a gate, a process-wide read-write lock: the projector holds it exclusively only while sled
//! applies a batch, and every read of more than one key holds it shared for the whole read
//! ([`ReadModel::read`]), so that it sees one checkpoint and everything written with it. Queries
//! and the projector always share one process: sled locks its directory.

mod changed;
mod codec;
mod flows;
mod pledges;
mod runs;

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use fundflow_domain::{
    CellLevel, CellRef, Checkpoint, DayOutcomes, DirectQuantity, Ledger, ModelState, Month, Node,
    PledgeRow, QuantityCellRef, RejectCode, RejectedEvent, Rejection, StateCell, StateQuantityCell,
    SummaryPart, Total, TotalKey, TotalKind,
};
use fundflow_refdata::CurrencyIndex;
use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use time::Date;

use self::codec::{Reader, put_decimal, put_text, unreadable};
use self::flows::{
    encode_pack, encode_posting_pieces, encode_reversals, merge_posting_runs, pack_entries,
    pack_find, pack_key, postings_block, reversal_group, reversals_key,
};
use self::pledges::{decode_pledge, encode_pledge, pledge_key, split_pledge_key};
use self::runs::{
    Block, DAY, EntryKey, MONTH, QUANTITY, RunEntries, SUMMARY, Shape, SumCache, Values, YEAR,
    encode_run, grouping, merge_cell_runs, put_run, read_blocks,
};
use crate::ProjectorError;

pub(crate) use self::changed::Changed;
pub use self::flows::{FlowCursor, FlowQuery, FlowRecord, FlowStatus};
pub use self::pledges::{PledgeCursor, PledgeFilter, PledgeStatus};

/// Bumped when the layout changes; a read model of another version is rebuilt, not read.
const FORMAT_VERSION: u8 = 5;

/// What sled may cache of the read model (see `ReadModel::open`).
const MODEL_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// sled's segment size for the read model: its default, set because `runs::PIECE_BYTES` was
/// measured against it (sled refuses to open a database with another).
const SEGMENT_BYTES: usize = 512 * 1024;

/// The key prefixes (see the module docs).
mod prefix {
    pub(super) const CHECKPOINT: u8 = b'c';
    pub(super) const TOTALS: u8 = b't';
    pub(super) const QUANTITIES: u8 = b'q';
    pub(super) const PLEDGE: u8 = b'p';
    pub(super) const REJECTION: u8 = b'r';
    pub(super) const OUTCOMES: u8 = b'o';
    pub(super) const DAY_CELLS: u8 = b'D';
    pub(super) const MONTH_CELLS: u8 = b'M';
    pub(super) const YEAR_CELLS: u8 = b'Y';
    pub(super) const QUANTITY_CELLS: u8 = b'Q';
    pub(super) const SUMMARY_PARTS: u8 = b'S';
    pub(super) const DAY_OUTCOMES: u8 = b'd';
    pub(super) const GRANT_FUNDING: u8 = b'g';
    pub(super) const FLOWS: u8 = b'f';
    pub(super) const REVERSALS: u8 = b'v';
    pub(super) const POSTINGS: u8 = b'x';
}

/// The fixed sizes of the value codecs below, in bytes.
const DECIMAL_BYTES: usize = codec::DECIMAL_BYTES;
const SEQ_BYTES: usize = 8; // u64, big-endian
const NODE_BYTES: usize = 2; // a node index, u16 big-endian
const CURRENCY_BYTES: usize = 2; // a currency index, u16 big-endian
const DIGEST_BYTES: usize = 32; // SHA-256
const COUNT_BYTES: usize = 8; // u64, big-endian
/// A total's key: node, kind byte, currency.
const TOTAL_KEY_BYTES: usize = NODE_BYTES + 1 + CURRENCY_BYTES;
/// A total's value: amount, USD equivalent, unconverted.
const TOTAL_BYTES: usize = 3 * DECIMAL_BYTES;
/// One entry of the `t` value.
const TOTAL_ENTRY_BYTES: usize = TOTAL_KEY_BYTES + TOTAL_BYTES;
/// One entry of a `g` value: currency, total.
const FUNDING_ENTRY_BYTES: usize = CURRENCY_BYTES + TOTAL_BYTES;
/// One day of a `d` value: day of the year, applied, rejected.
const DAY_OUTCOME_BYTES: usize = 2 + 2 * COUNT_BYTES;
/// One record of an `o` value: seq, outcome code.
const OUTCOME_BYTES: usize = SEQ_BYTES + 1;
/// Where each field of the checkpoint starts: version, last seq, log digest, applied count,
/// rejected count, rejection digest.
const CHECKPOINT_SEQ_AT: usize = 1;
const CHECKPOINT_LOG_DIGEST_AT: usize = CHECKPOINT_SEQ_AT + SEQ_BYTES;
const CHECKPOINT_APPLIED_AT: usize = CHECKPOINT_LOG_DIGEST_AT + DIGEST_BYTES;
const CHECKPOINT_REJECTED_AT: usize = CHECKPOINT_APPLIED_AT + COUNT_BYTES;
const CHECKPOINT_REJECTED_DIGEST_AT: usize = CHECKPOINT_REJECTED_AT + COUNT_BYTES;
const CHECKPOINT_BYTES: usize = CHECKPOINT_REJECTED_DIGEST_AT + DIGEST_BYTES;

/// How each cell level is stored: prefix, width of the period in the key, entry shape.
fn level_layout(level: CellLevel) -> (u8, usize, Shape) {
    match level {
        CellLevel::Year => (prefix::YEAR_CELLS, 2, YEAR),
        CellLevel::Month => (prefix::MONTH_CELLS, 4, MONTH),
        CellLevel::Day => (prefix::DAY_CELLS, 4, DAY),
    }
}

/// A read model in a sled database of its own. Clones share the database and the gate: the
/// projector writes through one, queries read through others.
#[derive(Clone)]
pub struct ReadModel {
    db: sled::Db,
    tree: sled::Tree,
    /// Held exclusively while a batch is applied, shared by every multi-key read (see the
    /// module docs). It guards no data, so a panic while it is held leaves nothing half-done
    /// behind it, and a poisoned gate is simply taken.
    gate: Arc<RwLock<()>>,
    /// The sums of blocks of several runs that queries read last.
    sums: Arc<Mutex<SumCache>>,
}

impl ReadModel {
    /// Opens or creates the read model in `dir`. sled locks the directory: a second process
    /// gets a clear error instead of a corrupt model.
    pub fn open(dir: &Path) -> Result<ReadModel, ProjectorError> {
        let config = sled::Config::new()
            .path(dir)
            // sled caches 1 GiB by default. A batch writes the newest run of every block it
            // touched, and sled rereads from disk any leaf it has evicted: with 64 MiB it did,
            // for a fifth of the fold's time. Folding 1M generated events took 50 s with 64 MiB,
            // 44 s with 256 MiB (+130 MB peak RSS) and 40 s with 512 MiB (+340 MB).
            .cache_capacity(MODEL_CACHE_BYTES)
            .segment_size(SEGMENT_BYTES)
            // Every batch is flushed explicitly before the projector moves on; a background
            // flusher would add nothing.
            .flush_every_ms(None);
        let db = fundflow_log::embedded::open_sled(&config).map_err(|err| {
            ProjectorError::storage(
                format!("cannot open the read model in {}", dir.display()),
                err,
            )
        })?;
        let tree = db
            .open_tree("model")
            .map_err(|err| ProjectorError::storage("cannot open the model tree", err))?;
        Ok(ReadModel {
            db,
            tree,
            gate: Arc::new(RwLock::new(())),
            sums: Arc::default(),
        })
    }

    /// The checkpoint, or `None` for an empty read model.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, ProjectorError> {
        read_checkpoint(&self.tree)
    }

    /// Runs `f` on one consistent snapshot of the model: no batch is applied while it runs, so
    /// every read through the [`Snapshot`] sees the same checkpoint (read it with
    /// [`Snapshot::checkpoint`]). Keep `f` short: the projector waits for it to end before it
    /// applies its next batch.
    pub fn read<T>(&self, f: impl FnOnce(&Snapshot<'_>) -> T) -> T {
        let _shared = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        f(&self.snapshot())
    }

    fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            tree: &self.tree,
            sums: &self.sums,
        }
    }

    /// Writes one fold batch taken from the ledger ([`BatchWrite::take`]: what it changed, the
    /// records it rejected, its outcomes, the checkpoint) atomically, then flushes: when this
    /// returns, the batch is on disk, and a crash at any instant leaves the model at either the
    /// previous checkpoint or this one. Batches must come in the order they were taken: each
    /// merges its runs with what the previous ones stored.
    pub(crate) fn write_taken(&self, taken: BatchWrite) -> Result<(), ProjectorError> {
        let BatchWrite {
            checkpoint,
            totals,
            quantities,
            values,
            day_outcomes,
            mut changed,
        } = taken;
        let mut batch = sled::Batch::default();
        if let Some(pieces) = totals {
            self.put_pieced(&mut batch, prefix::TOTALS, pieces)?;
        }
        if let Some(pieces) = quantities {
            self.put_pieced(&mut batch, prefix::QUANTITIES, pieces)?;
        }
        for (key, value) in values {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        self.write_day_outcomes(&mut batch, day_outcomes)?;
        if let Some(seq) = changed.first_seq {
            self.take_off_reversed_items(&mut changed)?;
            self.write_cells(&mut batch, &changed, seq)?;
            self.write_flows(&mut batch, &mut changed, seq)?;
        }
        batch.insert(vec![prefix::CHECKPOINT], encode_checkpoint(&checkpoint));
        {
            let _exclusive = self.gate.write().unwrap_or_else(PoisonError::into_inner);
            self.tree.apply_batch(batch).map_err(|e| {
                ProjectorError::storage("cannot write a batch to the read model", e)
            })?;
        }
        self.db
            .flush()
            .map_err(|e| ProjectorError::storage("cannot flush the read model", e))?;
        // Read the checkpoint back: a model that cannot return what it just stored must stop
        // the projector before it moves on.
        match self.checkpoint()? {
            Some(stored) if stored == checkpoint => Ok(()),
            _ => Err(ProjectorError::corrupt(
                "the checkpoint read back differs from the one written",
            )),
        }
    }

    /// Writes a value of many entries as its pieces under `prefix` and a piece number (u16),
    /// removing the pieces past the new last one.
    fn put_pieced(
        &self,
        batch: &mut sled::Batch,
        prefix: u8,
        pieces: Pieced,
    ) -> Result<(), ProjectorError> {
        let pieces = pieces.done();
        for entry in self.tree.scan_prefix([prefix]) {
            let (key, _) =
                entry.map_err(|e| ProjectorError::storage("cannot read the model", e))?;
            let number = key
                .get(1..3)
                .and_then(|b| b.try_into().ok())
                .map(u16::from_be_bytes)
                .ok_or_else(|| unreadable("piece key"))?;
            if usize::from(number) >= pieces.len() {
                batch.remove(key);
            }
        }
        for (number, piece) in pieces.into_iter().enumerate() {
            let number = u16::try_from(number)
                .map_err(|_| ProjectorError::corrupt("a value of more than 65,536 pieces"))?;
            batch.insert(prefixed(prefix, &number.to_be_bytes()), piece);
        }
        Ok(())
    }

    /// The items of the in-kind flows the batch reversed, taken off their quantity cells: read
    /// from their records (of this batch, or of an earlier one on disk).
    fn take_off_reversed_items(&self, changed: &mut Changed) -> Result<(), ProjectorError> {
        for target in std::mem::take(&mut changed.in_kind_reversals) {
            let record = match changed.flows.binary_search_by_key(&target, |(s, _)| *s) {
                Ok(at) => FlowRecord::decode_from(&changed.flows[at].1)?,
                Err(_) => {
                    let pack = self
                        .tree
                        .get(pack_key(target))
                        .map_err(|e| ProjectorError::storage("cannot read a flow", e))?;
                    let bytes = pack
                        .as_deref()
                        .and_then(|p| pack_find(p, target))
                        .ok_or_else(|| {
                            ProjectorError::corrupt(format!(
                                "flow {target} is reversed but has no record"
                            ))
                        })?;
                    FlowRecord::decode_from(bytes)?
                }
            };
            let day = record
                .occurred_on()
                .ok_or_else(|| unreadable("flow record"))?;
            let partner = changed.name_id(&record.partner);
            changed.add_items(&record.envelope, Month::of(day).0, partner, day.day(), -1)?;
        }
        Ok(())
    }

    /// One run per cell block the batch changed, at each level.
    fn write_cells(
        &self,
        batch: &mut sled::Batch,
        changed: &Changed,
        seq: u64,
    ) -> Result<(), ProjectorError> {
        let names = &changed.names;
        let name = |id: u32| names.name(id).as_bytes();
        type Blocks<'a> = BTreeMap<u32, Vec<(EntryKey<'a>, Values)>>;
        let mut day: Blocks<'_> = BTreeMap::new();
        for (c, values) in &changed.day_cells {
            let key = EntryKey {
                partner: name(c.partner),
                day: c.day,
                names: [name(c.grant), name(c.sector), name(c.donor)],
                node: c.node,
                kind: c.kind,
                currency: c.currency,
            };
            day.entry(c.month).or_default().push((key, *values));
        }
        let mut month: Blocks<'_> = BTreeMap::new();
        for (c, values) in &changed.month_cells {
            let key = EntryKey {
                partner: name(c.partner),
                day: 0,
                names: [name(c.grant), &[], &[]],
                node: c.node,
                kind: c.kind,
                currency: c.currency,
            };
            month.entry(c.month).or_default().push((key, *values));
        }
        let mut year: Blocks<'_> = BTreeMap::new();
        for (c, values) in &changed.year_cells {
            let key = EntryKey {
                partner: name(c.partner),
                day: 0,
                names: [&[], &[], &[]],
                node: c.node,
                kind: c.kind,
                currency: c.currency,
            };
            year.entry(u32::from(c.year))
                .or_default()
                .push((key, *values));
        }
        let mut quantity: Blocks<'_> = BTreeMap::new();
        for (c, q) in &changed.quantity_cells {
            let key = EntryKey {
                partner: name(c.partner),
                day: c.day,
                names: [name(c.item), name(c.unit), &[]],
                node: c.node,
                kind: 0,
                currency: 0,
            };
            let values = [*q, Decimal::ZERO, Decimal::ZERO];
            quantity.entry(c.month).or_default().push((key, values));
        }
        let mut summary: Blocks<'_> = BTreeMap::new();
        for (c, values) in &changed.summary_cells {
            let key = EntryKey {
                partner: name(c.partner),
                day: c.grouping,
                names: [name(c.names[0]), name(c.names[1]), &[]],
                node: c.node,
                kind: c.kind,
                currency: c.currency,
            };
            summary
                .entry(u32::from(c.year))
                .or_default()
                .push((key, *values));
        }
        for (prefix, period_bytes, shape, blocks) in [
            (prefix::DAY_CELLS, 4, DAY, day),
            (prefix::MONTH_CELLS, 4, MONTH, month),
            (prefix::YEAR_CELLS, 2, YEAR, year),
            (prefix::QUANTITY_CELLS, 4, QUANTITY, quantity),
            (prefix::SUMMARY_PARTS, 2, SUMMARY, summary),
        ] {
            for (period, mut entries) in blocks {
                // A flow and its reversal in one batch leave nothing to write.
                entries.retain(|(_, v)| !runs::is_zero(v));
                if entries.is_empty() {
                    continue;
                }
                entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                let block = block_key(prefix, period_bytes, period);
                let run = encode_run(shape, &entries)?;
                put_run(&self.tree, batch, &block, seq, run, &|runs| {
                    merge_cell_runs(shape, runs)
                })?;
            }
        }
        Ok(())
    }

    /// The batch's flow records, reversals and postings.
    fn write_flows(
        &self,
        batch: &mut sled::Batch,
        changed: &mut Changed,
        seq: u64,
    ) -> Result<(), ProjectorError> {
        let storage = |e| ProjectorError::storage("cannot read the flows", e);
        let mut packs: BTreeMap<u64, Vec<(u64, &[u8])>> = BTreeMap::new();
        for (seq, record) in &changed.flows {
            packs
                .entry(seq >> flows::PACK_BITS)
                .or_default()
                .push((*seq, record));
        }
        for (index, (pack, mut records)) in packs.into_iter().enumerate() {
            let key = pack_key(pack << flows::PACK_BITS);
            // Only the batch's first pack can have been begun by an earlier batch.
            let earlier = if index == 0 {
                self.tree.get(&key).map_err(storage)?
            } else {
                None
            };
            if let Some(earlier) = &earlier {
                let mut all = pack_entries(earlier).ok_or_else(|| unreadable("flow pack"))?;
                all.append(&mut records);
                records = all;
            }
            batch.insert(key, encode_pack(&records)?);
        }
        let mut groups: BTreeMap<u64, Vec<&flows::Reversal>> = BTreeMap::new();
        for reversal in &changed.reversals {
            groups
                .entry(reversal_group(reversal.target))
                .or_default()
                .push(reversal);
        }
        for (group, reversals) in groups {
            batch.insert(reversals_key(group, seq), encode_reversals(&reversals)?);
        }
        for ((index, month), values) in std::mem::take(&mut changed.postings) {
            let mut values: Vec<(&[u8], Vec<_>)> = values
                .iter()
                .map(|(v, p)| (v.as_slice(), p.clone()))
                .collect();
            let run = encode_posting_pieces(&mut values)?;
            put_run(
                &self.tree,
                batch,
                &postings_block(index, Month(month)),
                seq,
                run,
                &merge_posting_runs,
            )?;
        }
        Ok(())
    }

    /// Rewrites the years whose outcome counts differ from what is stored (counts only grow, so
    /// a changed day changes its year's value).
    fn write_day_outcomes(
        &self,
        batch: &mut sled::Batch,
        years: BTreeMap<u16, Vec<u8>>,
    ) -> Result<(), ProjectorError> {
        let mut stored = BTreeMap::new();
        for entry in self.tree.scan_prefix([prefix::DAY_OUTCOMES]) {
            let (key, value) =
                entry.map_err(|e| ProjectorError::storage("cannot read outcomes per day", e))?;
            stored.insert(key, value);
        }
        for (year, value) in years {
            let key = prefixed(prefix::DAY_OUTCOMES, &year.to_be_bytes());
            if stored.remove(key.as_slice()).as_deref() != Some(value.as_slice()) {
                batch.insert(key, value);
            }
        }
        for key in stored.into_keys() {
            batch.remove(key);
        }
        Ok(())
    }

    /// Everything in the model, as a [`ModelState`] for reports and the model digest: what
    /// [`Ledger::model_state`] gives for the same log up to the same seq.
    pub fn state(&self) -> Result<ModelState, ProjectorError> {
        self.read(|snapshot| snapshot.state())
    }

    /// Checks the coarser cell levels, which the model digest does not cover (it covers the Day
    /// level they are sums of), against `ledger`'s: at start, after the refold.
    pub fn check_levels(&self, ledger: &Ledger) -> Result<(), ProjectorError> {
        for level in [CellLevel::Month, CellLevel::Year] {
            let stored = self.cells(level, None, None)?;
            let mut stored: Vec<CellRef<'_>> = stored.iter().collect::<Result<_, _>>()?;
            let mut folded = ledger.cells(level);
            sort_cells(&mut stored);
            sort_cells(&mut folded);
            if stored != folded {
                return Err(ProjectorError::Mismatch(format!(
                    "the read model's {level:?} cells differ from a refold of the log ({} stored, {} refolded); rebuild it",
                    stored.len(),
                    folded.len()
                )));
            }
        }
        let stored = self.read(|snapshot| snapshot.summary_parts(None))?;
        let mut stored_parts = BTreeMap::new();
        for part in stored.iter() {
            let (year, part) = part?;
            let (key, values) = part_entry(part);
            if stored_parts.insert((year, key), values).is_some() {
                return Err(ProjectorError::corrupt(
                    "a summary part stored twice in its year",
                ));
            }
        }
        let folded_parts = folded_summary_parts(ledger)?;
        if stored_parts != folded_parts {
            return Err(ProjectorError::Mismatch(format!(
                "the read model's summary parts differ from a refold of the log ({} stored, {} refolded); rebuild it",
                stored_parts.len(),
                folded_parts.len()
            )));
        }
        Ok(())
    }

    /// The checkpoint and the direct totals and quantities, read together: what the totals
    /// query needs, in reads bounded by the reference data.
    pub fn totals_snapshot(&self) -> Result<ModelState, ProjectorError> {
        self.read(|snapshot| snapshot.totals())
    }

    /// One pledge of one partner, as of the checkpoint; `None` when there is none (or it was
    /// reversed).
    pub fn pledge(
        &self,
        partner_id: &str,
        pledge_id: &str,
    ) -> Result<Option<PledgeRow>, ProjectorError> {
        self.snapshot().pledge(partner_id, pledge_id)
    }

    /// A pledge and the checkpoint it is at, read as one snapshot.
    pub fn pledge_at_checkpoint(
        &self,
        partner_id: &str,
        pledge_id: &str,
    ) -> Result<(Checkpoint, Option<PledgeRow>), ProjectorError> {
        self.read(|s| Ok((s.checkpoint()?, s.pledge(partner_id, pledge_id)?)))
    }

    /// The cells at `level` for the `periods` (years at the Year level, `Month.0` at the
    /// others; all when `None`) and one `partner` (all when `None`), as one snapshot.
    pub fn cells(
        &self,
        level: CellLevel,
        periods: Option<RangeInclusive<u32>>,
        partner: Option<&str>,
    ) -> Result<CellsSnapshot, ProjectorError> {
        self.read(|s| s.cells(level, periods, partner))
    }

    /// The in-kind quantity cells of the `months` (`Month.0`; all when `None`) and one
    /// `partner` (all when `None`), as one snapshot.
    pub fn quantity_cells(
        &self,
        months: Option<RangeInclusive<u32>>,
        partner: Option<&str>,
    ) -> Result<QuantitySnapshot, ProjectorError> {
        self.read(|s| s.quantity_cells(months, partner))
    }

    /// The records applied and rejected whose `occurred_on` is in `from..=to` (open ends
    /// unbounded), with the checkpoint they are at.
    pub fn day_outcomes(
        &self,
        from: Option<Date>,
        to: Option<Date>,
    ) -> Result<(Checkpoint, DayOutcomes), ProjectorError> {
        self.read(|s| Ok((s.checkpoint()?, s.day_outcomes(from, to)?)))
    }

    /// A page of the pledge book (see [`Snapshot::pledges`]).
    pub fn pledges(
        &self,
        filter: &PledgeFilter,
        after: Option<&PledgeCursor>,
        limit: usize,
    ) -> Result<(Vec<PledgeRow>, Option<PledgeCursor>), ProjectorError> {
        self.read(|s| s.pledges(filter, after, limit))
    }

    /// The parallel funding naming `grant` (see [`Snapshot::grant_funding`]).
    pub fn grant_funding(
        &self,
        grant: &str,
    ) -> Result<Vec<(CurrencyIndex, Total)>, ProjectorError> {
        self.snapshot().grant_funding(grant)
    }

    /// A page of the flows list (see [`Snapshot::flows`]).
    pub fn flows(
        &self,
        query: &FlowQuery,
        as_of_seq: u64,
        after: Option<FlowCursor>,
        limit: usize,
    ) -> Result<(Vec<FlowRecord>, Option<FlowCursor>), ProjectorError> {
        self.read(|s| s.flows(query, as_of_seq, after, limit))
    }

    /// The outcome of the record at `seq` once folded: `Some(Ok(()))` applied,
    /// `Some(Err(rejection))` rejected, `None` not folded yet.
    pub fn outcome(&self, seq: u64) -> Result<Option<Result<(), Rejection>>, ProjectorError> {
        self.read(|s| s.outcome(seq))
    }

    /// The outcome code of every record, in log order (0 = applied, else 1 + the code's position
    /// in `RejectCode::ALL`).
    pub fn outcomes(&self) -> Result<Vec<(u64, u8)>, ProjectorError> {
        self.read(|s| s.outcomes())
    }

    /// Drops everything, for a rebuild from sequence 1.
    pub fn clear(&self) -> Result<(), ProjectorError> {
        {
            let _exclusive = self.gate.write().unwrap_or_else(PoisonError::into_inner);
            self.tree
                .clear()
                .map_err(|e| ProjectorError::storage("cannot clear the read model", e))?;
            runs::lock(&self.sums).clear();
        }
        self.db
            .flush()
            .map_err(|e| ProjectorError::storage("cannot flush the read model", e))?;
        Ok(())
    }

    /// Bytes the model takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

/// One consistent view of the read model, lent by [`ReadModel::read`]: every read through it
/// sees the same checkpoint, so a reply that combines several (cells, quantities, outcomes per
/// day, the checkpoint) is one fold's state.
pub struct Snapshot<'a> {
    tree: &'a sled::Tree,
    sums: &'a Mutex<SumCache>,
}

impl Snapshot<'_> {
    /// The blocks of `periods` under `prefix`, each of several runs with its sum.
    fn summed_blocks(
        &self,
        prefix: u8,
        period_bytes: usize,
        periods: Option<(u32, u32)>,
        shape: Shape,
    ) -> Result<Vec<Block>, ProjectorError> {
        let mut blocks = read_blocks(self.tree, prefix, period_bytes, periods)?;
        SumCache::sum(self.sums, shape, &mut blocks)?;
        Ok(blocks)
    }

    /// The checkpoint the snapshot is at (the default, seq 0, for an empty model).
    pub fn checkpoint(&self) -> Result<Checkpoint, ProjectorError> {
        Ok(read_checkpoint(self.tree)?.unwrap_or_default())
    }

    /// A value written by `ReadModel::put_pieced`, its pieces joined (empty when there is none).
    fn pieced(&self, prefix: u8) -> Result<Vec<u8>, ProjectorError> {
        let mut value = Vec::new();
        for entry in self.tree.scan_prefix([prefix]) {
            let (_, piece) =
                entry.map_err(|e| ProjectorError::storage("cannot read the model", e))?;
            value.extend_from_slice(&piece);
        }
        Ok(value)
    }

    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, ProjectorError> {
        self.tree
            .get(key)
            .map_err(|e| ProjectorError::storage("cannot read the read model", e))
    }

    /// The checkpoint and the direct totals and quantities (the rest of the state empty).
    pub fn totals(&self) -> Result<ModelState, ProjectorError> {
        let mut state = ModelState {
            checkpoint: self.checkpoint()?,
            ..ModelState::default()
        };
        state.direct_totals = decode_totals(&self.pieced(prefix::TOTALS)?)?;
        state.direct_quantities = decode_quantities(&self.pieced(prefix::QUANTITIES)?)?;
        Ok(state)
    }

    /// The cells at `level` for the `periods` (years at the Year level, `Month.0` at the Month
    /// and Day levels; all when `None`) and one `partner` (all when `None`). The reads are of
    /// the blocks asked for only; the cells are decoded by [`CellsSnapshot::iter`].
    pub fn cells(
        &self,
        level: CellLevel,
        periods: Option<RangeInclusive<u32>>,
        partner: Option<&str>,
    ) -> Result<CellsSnapshot, ProjectorError> {
        let (prefix, period_bytes, shape) = level_layout(level);
        let periods = periods.map(|r| (*r.start(), *r.end()));
        Ok(CellsSnapshot {
            checkpoint: self.checkpoint()?,
            level,
            partner: partner.map(str::to_owned),
            blocks: self.summed_blocks(prefix, period_bytes, periods, shape)?,
        })
    }

    /// The in-kind quantity cells of the `months` (`Month.0`; all when `None`) and one
    /// `partner` (all when `None`).
    pub fn quantity_cells(
        &self,
        months: Option<RangeInclusive<u32>>,
        partner: Option<&str>,
    ) -> Result<QuantitySnapshot, ProjectorError> {
        let months = months.map(|r| (*r.start(), *r.end()));
        Ok(QuantitySnapshot {
            checkpoint: self.checkpoint()?,
            partner: partner.map(str::to_owned),
            blocks: self.summed_blocks(prefix::QUANTITY_CELLS, 4, months, QUANTITY)?,
        })
    }

    /// The summary parts of the `years` (all when `None`), with their year: what a summary of a
    /// period on year boundaries reads instead of its cells.
    pub fn summary_parts(
        &self,
        years: Option<RangeInclusive<u32>>,
    ) -> Result<SummaryParts, ProjectorError> {
        let years = years.map(|r| (*r.start(), *r.end()));
        Ok(SummaryParts {
            checkpoint: self.checkpoint()?,
            blocks: self.summed_blocks(prefix::SUMMARY_PARTS, 2, years, SUMMARY)?,
        })
    }

    /// The records applied and rejected whose `occurred_on` is in `from..=to` (open ends
    /// unbounded): one value per year read.
    pub fn day_outcomes(
        &self,
        from: Option<Date>,
        to: Option<Date>,
    ) -> Result<DayOutcomes, ProjectorError> {
        let year =
            |d: Date| u16::try_from(d.year()).unwrap_or(if d.year() < 0 { 0 } else { u16::MAX });
        let start = prefixed(prefix::DAY_OUTCOMES, &from.map_or(0, year).to_be_bytes());
        let end = prefixed(
            prefix::DAY_OUTCOMES,
            &to.map_or(u16::MAX, year).to_be_bytes(),
        );
        let mut sum = DayOutcomes::default();
        for entry in self.tree.range(start..=end) {
            let (key, value) =
                entry.map_err(|e| ProjectorError::storage("cannot read outcomes per day", e))?;
            for (day, outcomes) in decode_day_outcomes(&key, &value)? {
                if from.is_none_or(|f| day >= f) && to.is_none_or(|t| day <= t) {
                    sum.applied += outcomes.applied;
                    sum.rejected += outcomes.rejected;
                }
            }
        }
        Ok(sum)
    }

    /// One pledge of one partner; `None` when there is none (or it was reversed).
    pub fn pledge(
        &self,
        partner_id: &str,
        pledge_id: &str,
    ) -> Result<Option<PledgeRow>, ProjectorError> {
        self.get(&pledge_key(partner_id, pledge_id))?
            .map(|value| {
                decode_pledge(partner_id.to_owned(), pledge_id.to_owned(), &value)
                    .ok_or_else(|| unreadable("pledge"))
            })
            .transpose()
    }

    /// Up to `limit` pledges that `filter` keeps, in (partner, pledge id) order after the
    /// cursor `after`, with the cursor of the next page (`None` when nothing follows). With a
    /// partner the scan is that partner's pledges only; the other filters are applied to the
    /// rows scanned.
    pub fn pledges(
        &self,
        filter: &PledgeFilter,
        after: Option<&PledgeCursor>,
        limit: usize,
    ) -> Result<(Vec<PledgeRow>, Option<PledgeCursor>), ProjectorError> {
        pledges::pledges(self.tree, filter, after, limit)
    }

    /// The parallel funding naming `grant`, per currency, all partners (one point read).
    pub fn grant_funding(
        &self,
        grant: &str,
    ) -> Result<Vec<(CurrencyIndex, Total)>, ProjectorError> {
        let Some(value) = self.get(&prefixed(prefix::GRANT_FUNDING, grant.as_bytes()))? else {
            return Ok(Vec::new());
        };
        if !value.len().is_multiple_of(FUNDING_ENTRY_BYTES) {
            return Err(unreadable("grant's funding"));
        }
        value
            .chunks_exact(FUNDING_ENTRY_BYTES)
            .map(|entry| {
                let currency = u16::from_be_bytes([entry[0], entry[1]]);
                let total = decode_total(&entry[CURRENCY_BYTES..])
                    .ok_or_else(|| unreadable("grant's funding"))?;
                Ok((currency, total))
            })
            .collect()
    }

    /// Up to `limit` flows that `query` keeps, as of `as_of_seq` (flows appended later and
    /// reversals after it are not seen: pass the first page's checkpoint seq to every page of a
    /// listing), newest `occurred_on` first then highest seq first, after the cursor `after`
    /// (the last flow of the previous page), with the next page's cursor (`None` when nothing
    /// follows).
    ///
    /// It walks one index (node if given, else grant, partner, donor, sector, kind, all; the
    /// reversed flows for status reversed), month by month from the newest, and checks the
    /// other filters on each record it reads: the cost follows the flows of that index read
    /// until the page is full.
    pub fn flows(
        &self,
        query: &FlowQuery,
        as_of_seq: u64,
        after: Option<FlowCursor>,
        limit: usize,
    ) -> Result<(Vec<FlowRecord>, Option<FlowCursor>), ProjectorError> {
        flows::flows(self.tree, query, as_of_seq, after, limit)
    }

    /// The outcome of the record at `seq` once folded: `Some(Ok(()))` applied,
    /// `Some(Err(rejection))` rejected, `None` not folded yet.
    pub fn outcome(&self, seq: u64) -> Result<Option<Result<(), Rejection>>, ProjectorError> {
        let storage = |e| ProjectorError::storage("cannot read an outcome", e);
        let key = prefixed(prefix::OUTCOMES, &seq.to_be_bytes());
        let Some(entry) = self
            .tree
            .range([prefix::OUTCOMES].as_slice()..=key.as_slice())
            .next_back()
        else {
            return Ok(None);
        };
        let (_, value) = entry.map_err(storage)?;
        let Some(code) = value
            .chunks_exact(OUTCOME_BYTES)
            .find(|record| record[..SEQ_BYTES] == seq.to_be_bytes())
            .map(|record| record[SEQ_BYTES])
        else {
            return Ok(None);
        };
        if code == 0 {
            return Ok(Some(Ok(())));
        }
        let value = self
            .get(&prefixed(prefix::REJECTION, &seq.to_be_bytes()))?
            .ok_or_else(|| {
                ProjectorError::corrupt(format!(
                    "record {seq} is rejected but its rejection is missing"
                ))
            })?;
        let rejected = decode_rejection(seq, &value).ok_or_else(|| unreadable("rejection"))?;
        Ok(Some(Err(rejected.rejection)))
    }

    /// The outcome code of every record, in log order.
    pub fn outcomes(&self) -> Result<Vec<(u64, u8)>, ProjectorError> {
        let mut outcomes = Vec::new();
        for entry in self.tree.scan_prefix([prefix::OUTCOMES]) {
            let (_, value) =
                entry.map_err(|e| ProjectorError::storage("cannot read the outcomes", e))?;
            if !value.len().is_multiple_of(OUTCOME_BYTES) {
                return Err(ProjectorError::corrupt(
                    "an outcomes value of a length no whole number of records makes",
                ));
            }
            for record in value.chunks_exact(OUTCOME_BYTES) {
                let (seq, code) = record.split_at(SEQ_BYTES);
                let seq = seq
                    .try_into()
                    .map(u64::from_be_bytes)
                    .map_err(|_| ProjectorError::corrupt("an unreadable outcome seq"))?;
                outcomes.push((seq, code[0]));
            }
        }
        Ok(outcomes)
    }

    /// Up to `limit` rejected records, newest first, all of them older than `before` (a seq)
    /// when given: a page of the data-quality list, read backwards over the rejections' keys.
    pub fn rejections(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<RejectedEvent>, ProjectorError> {
        let start = prefixed(prefix::REJECTION, &[]);
        let end = prefixed(prefix::REJECTION, &before.unwrap_or(u64::MAX).to_be_bytes());
        let mut rejections = Vec::new();
        for entry in self.tree.range(start..end).rev().take(limit) {
            let (key, value) =
                entry.map_err(|e| ProjectorError::storage("cannot read the rejections", e))?;
            let seq = key
                .get(1..1 + SEQ_BYTES)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| unreadable("rejection key"))?;
            rejections.push(decode_rejection(seq, &value).ok_or_else(|| unreadable("rejection"))?);
        }
        Ok(rejections)
    }

    /// Everything in the model as a [`ModelState`] (see [`ReadModel::state`]).
    pub fn state(&self) -> Result<ModelState, ProjectorError> {
        let mut state = self.totals()?;
        let scan = |prefix: u8| {
            self.tree.scan_prefix([prefix]).map(|entry| {
                entry.map_err(|e| ProjectorError::storage("cannot read the read model", e))
            })
        };
        for entry in scan(prefix::PLEDGE) {
            let (key, value) = entry?;
            let row = split_pledge_key(&key)
                .and_then(|(partner, pledge_id)| decode_pledge(partner, pledge_id, &value));
            state.pledges.push(row.ok_or_else(|| unreadable("pledge"))?);
        }
        for entry in scan(prefix::REJECTION) {
            let (key, value) = entry?;
            let seq = key
                .get(1..1 + SEQ_BYTES)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| unreadable("rejection key"))?;
            state
                .rejected_events
                .push(decode_rejection(seq, &value).ok_or_else(|| unreadable("rejection"))?);
        }
        let mut labels: FxHashMap<String, u32> = FxHashMap::default();
        let mut label = |name: &str, labels_out: &mut Vec<String>| -> u32 {
            if let Some(id) = labels.get(name) {
                return *id;
            }
            let id = u32::try_from(labels_out.len()).unwrap_or(u32::MAX);
            labels_out.push(name.to_owned());
            labels.insert(name.to_owned(), id);
            id
        };
        let cells = self.cells(CellLevel::Day, None, None)?;
        for cell in cells.iter() {
            let cell = cell?;
            let day = cell.day.ok_or_else(|| unreadable("Day cell"))?;
            let names = [
                cell.partner,
                cell.grant.unwrap_or_default(),
                cell.sector.unwrap_or_default(),
                cell.donor.unwrap_or_default(),
            ];
            let [partner, grant, sector, donor] = names.map(|n| label(n, &mut state.labels));
            state.cells.push(StateCell {
                day,
                partner,
                grant,
                sector,
                donor,
                node: cell.node,
                kind: cell.kind,
                currency: cell.currency,
                total: cell.total,
            });
        }
        let quantities = self.quantity_cells(None, None)?;
        for cell in quantities.iter() {
            let cell = cell?;
            let [partner, item, unit] =
                [cell.partner, cell.item, cell.unit].map(|n| label(n, &mut state.labels));
            state.quantity_cells.push(StateQuantityCell {
                day: cell.day,
                partner,
                node: cell.node,
                item,
                unit,
                quantity: cell.quantity,
            });
        }
        for entry in scan(prefix::DAY_OUTCOMES) {
            let (key, value) = entry?;
            state
                .day_outcomes
                .extend(decode_day_outcomes(&key, &value)?);
        }
        Ok(state)
    }
}

/// Cells read by [`Snapshot::cells`]: the stored runs of the blocks asked for, decoded on
/// iteration, names borrowed from the stored bytes.
pub struct CellsSnapshot {
    /// The checkpoint the cells are at.
    pub checkpoint: Checkpoint,
    level: CellLevel,
    /// Only this partner's cells are given (blocks hold every partner's).
    partner: Option<String>,
    blocks: Vec<Block>,
}

impl CellsSnapshot {
    /// Every cell, block by block (period, then partner, in key order). A block stored as one
    /// run is decoded in place without allocating; one spread over several runs is summed
    /// first (one map per block).
    pub fn iter(&self) -> impl Iterator<Item = Result<CellRef<'_>, ProjectorError>> + '_ {
        let partner = self.partner.as_deref().map(str::as_bytes);
        self.blocks.iter().flat_map(move |block| {
            let (_, period_bytes, shape) = level_layout(self.level);
            let level = self.level;
            BlockEntries::new(block, period_bytes, shape)
                .filter(move |entry| of_partner(entry, partner))
                .map(move |entry| {
                    let (period, key, values) = entry?;
                    cell_ref(level, period, key, values)
                })
        })
    }
}

/// In-kind quantity cells read by [`Snapshot::quantity_cells`], decoded on iteration.
pub struct QuantitySnapshot {
    /// The checkpoint the cells are at.
    pub checkpoint: Checkpoint,
    /// Only this partner's cells are given.
    partner: Option<String>,
    blocks: Vec<Block>,
}

impl QuantitySnapshot {
    /// Every quantity cell, block by block, as [`CellsSnapshot::iter`].
    pub fn iter(&self) -> impl Iterator<Item = Result<QuantityCellRef<'_>, ProjectorError>> + '_ {
        let partner = self.partner.as_deref().map(str::as_bytes);
        self.blocks.iter().flat_map(move |block| {
            BlockEntries::new(block, 4, QUANTITY)
                .filter(move |entry| of_partner(entry, partner))
                .map(|entry| {
                    let (period, key, values) = entry?;
                    let bad = || unreadable("quantity cell");
                    Ok(QuantityCellRef {
                        day: day_of(Month(period), key.day).ok_or_else(bad)?,
                        partner: std::str::from_utf8(key.partner).map_err(|_| bad())?,
                        node: Node::from_index(key.node).ok_or_else(bad)?,
                        item: std::str::from_utf8(key.names[0]).map_err(|_| bad())?,
                        unit: std::str::from_utf8(key.names[1]).map_err(|_| bad())?,
                        quantity: values[0],
                    })
                })
        })
    }
}

/// Summary parts read by [`Snapshot::summary_parts`], decoded on iteration.
pub struct SummaryParts {
    /// The checkpoint the parts are at.
    pub checkpoint: Checkpoint,
    blocks: Vec<Block>,
}

impl SummaryParts {
    /// Every part with its year, year by year.
    pub fn iter(
        &self,
    ) -> impl Iterator<Item = Result<(i32, SummaryPart<'_>), ProjectorError>> + '_ {
        self.blocks.iter().flat_map(|block| {
            BlockEntries::new(block, 2, SUMMARY).map(|entry| {
                let (year, key, values) = entry?;
                let year = i32::try_from(year).map_err(|_| unreadable("summary part"))?;
                Ok((year, summary_part(key, values)?))
            })
        })
    }
}

fn summary_part(key: EntryKey<'_>, values: Values) -> Result<SummaryPart<'_>, ProjectorError> {
    let bad = || unreadable("summary part");
    let text = |b| std::str::from_utf8(b).map_err(|_| bad());
    let kind = || kind_of(key.kind).ok_or_else(bad);
    let currency = (usize::from(key.currency) < fundflow_refdata::CURRENCIES.len())
        .then_some(key.currency)
        .ok_or_else(bad);
    let total = Total {
        amount: values[0],
        usd_equivalent: values[1],
        unconverted: values[2],
    };
    Ok(match key.day {
        grouping::RECIPIENT => SummaryPart::Recipient {
            node: Node::from_index(key.node).ok_or_else(bad)?,
            kind: kind()?,
            currency: currency?,
            total,
        },
        grouping::PARTNER => SummaryPart::Partner {
            partner: text(key.partner)?,
            kind: kind()?,
            currency: currency?,
            total,
        },
        grouping::GRANT => SummaryPart::Grant {
            grant: text(key.names[0])?,
            kind: kind()?,
            currency: currency?,
            total,
        },
        grouping::ITEM => SummaryPart::Item {
            item: text(key.names[0])?,
            unit: text(key.names[1])?,
            quantity: values[0],
        },
        _ => return Err(bad()),
    })
}

/// A summary part's fields as one ordered key (grouping, partner, grant or item, unit, node,
/// kind, currency) and its sums: how stored and refolded parts are compared.
type PartKey<'a> = (u8, &'a str, &'a str, u16, u8, u16);

fn part_entry(part: SummaryPart<'_>) -> (PartKey<'_>, Values) {
    let sums = |t: Total| [t.amount, t.usd_equivalent, t.unconverted];
    match part {
        SummaryPart::Recipient {
            node,
            kind,
            currency,
            total,
        } => (
            (
                grouping::RECIPIENT,
                "",
                "",
                node.index(),
                kind_byte(kind),
                currency,
            ),
            sums(total),
        ),
        SummaryPart::Partner {
            partner,
            kind,
            currency,
            total,
        } => (
            (grouping::PARTNER, partner, "", 0, kind_byte(kind), currency),
            sums(total),
        ),
        SummaryPart::Grant {
            grant,
            kind,
            currency,
            total,
        } => (
            (grouping::GRANT, grant, "", 0, kind_byte(kind), currency),
            sums(total),
        ),
        SummaryPart::Item {
            item,
            unit,
            quantity,
        } => (
            (grouping::ITEM, item, unit, 0, 0, 0),
            [quantity, Decimal::ZERO, Decimal::ZERO],
        ),
    }
}

/// The summary parts of every year as a read model should hold them: the ledger's cells and
/// quantity cells summed per year and part, zero sums left out.
fn folded_summary_parts(
    ledger: &Ledger,
) -> Result<BTreeMap<(i32, PartKey<'_>), Values>, ProjectorError> {
    let mut sums: BTreeMap<(i32, PartKey<'_>), Values> = BTreeMap::new();
    let cells = ledger.cells(CellLevel::Day);
    let parts = cells
        .iter()
        .flat_map(|cell| cell.summary_parts().map(|part| (cell.year, part)));
    let quantities = ledger.quantity_cells();
    let items = quantities
        .iter()
        .map(|cell| (cell.day.year(), cell.summary_part()));
    for (year, part) in parts.chain(items) {
        let (key, values) = part_entry(part);
        match sums.get_mut(&(year, key)) {
            Some(sum) => runs::add_values(sum, &values)?,
            None => {
                sums.insert((year, key), values);
            }
        }
    }
    sums.retain(|_, values| !runs::is_zero(values));
    Ok(sums)
}

/// Whether a block's entry is of `partner` (every entry when `None`; errors are kept).
fn of_partner(
    entry: &Result<(u32, EntryKey<'_>, Values), ProjectorError>,
    partner: Option<&[u8]>,
) -> bool {
    match (entry, partner) {
        (Ok((_, key, _)), Some(partner)) => key.partner == partner,
        _ => true,
    }
}

/// The entries of one block (period, entry), decoded in place or summed.
enum BlockEntries<'a> {
    /// The pieces of one run (or a block's sum): disjoint, in key order, each decoded in place.
    One {
        period: u32,
        pieces: std::slice::Iter<'a, sled::IVec>,
        entries: RunEntries<'a>,
        shape: Shape,
    },
    Failed(Option<ProjectorError>),
}

impl<'a> BlockEntries<'a> {
    fn new(block: &'a Block, period_bytes: usize, shape: Shape) -> Self {
        let key = block.key();
        let period = key
            .get(1..1 + period_bytes)
            .filter(|_| runs::block_len(key) == Some(1 + period_bytes))
            .map(|bytes| bytes.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)));
        let Some(period) = period else {
            return BlockEntries::Failed(Some(unreadable("cell key")));
        };
        match (&block.summed, block.one_run) {
            (Some(summed), _) => BlockEntries::One {
                period,
                pieces: [].iter(),
                entries: RunEntries::new(shape, summed),
                shape,
            },
            (None, true) => BlockEntries::One {
                period,
                pieces: block.pieces.iter(),
                entries: RunEntries::new(shape, &[0; 4]),
                shape,
            },
            (None, false) => BlockEntries::Failed(Some(ProjectorError::corrupt(
                "a block of several runs was read without its sum",
            ))),
        }
    }
}

impl<'a> Iterator for BlockEntries<'a> {
    type Item = Result<(u32, EntryKey<'a>, Values), ProjectorError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            BlockEntries::One {
                period,
                pieces,
                entries,
                shape,
            } => loop {
                if let Some(entry) = entries.next() {
                    return Some(entry.map(|(k, v)| (*period, k, v)));
                }
                *entries = RunEntries::new(*shape, pieces.next()?);
            },
            BlockEntries::Failed(err) => err.take().map(Err),
        }
    }
}

fn day_of(month: Month, day: u8) -> Option<Date> {
    let calendar = time::Month::try_from(month.month()).ok()?;
    Date::from_calendar_date(month.year(), calendar, day).ok()
}

fn cell_ref<'a>(
    level: CellLevel,
    period: u32,
    key: EntryKey<'a>,
    values: Values,
) -> Result<CellRef<'a>, ProjectorError> {
    let bad = || unreadable("cell");
    let text = |b: &'a [u8]| std::str::from_utf8(b).map_err(|_| bad());
    let (year, month) = match level {
        CellLevel::Year => (i32::try_from(period).map_err(|_| bad())?, None),
        CellLevel::Month | CellLevel::Day => (Month(period).year(), Some(Month(period))),
    };
    let day = match (level, month) {
        (CellLevel::Day, Some(month)) => Some(day_of(month, key.day).ok_or_else(bad)?),
        _ => None,
    };
    let grant = match level {
        CellLevel::Year => None,
        CellLevel::Month | CellLevel::Day => Some(text(key.names[0])?),
    };
    let (sector, donor) = match level {
        CellLevel::Day => (Some(text(key.names[1])?), Some(text(key.names[2])?)),
        CellLevel::Year | CellLevel::Month => (None, None),
    };
    Ok(CellRef {
        year,
        month,
        day,
        partner: text(key.partner)?,
        grant,
        sector,
        donor,
        node: Node::from_index(key.node).ok_or_else(bad)?,
        kind: kind_of(key.kind).ok_or_else(bad)?,
        currency: (usize::from(key.currency) < fundflow_refdata::CURRENCIES.len())
            .then_some(key.currency)
            .ok_or_else(bad)?,
        total: Total {
            amount: values[0],
            usd_equivalent: values[1],
            unconverted: values[2],
        },
    })
}

/// Orders cells by every key field, for comparing sets of cells.
fn sort_cells(cells: &mut [CellRef<'_>]) {
    #[expect(clippy::type_complexity, reason = "a cell's key fields, in order")]
    fn key<'a>(
        c: &CellRef<'a>,
    ) -> (
        i32,
        Option<Month>,
        Option<Date>,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        Node,
        TotalKind,
        CurrencyIndex,
    ) {
        (
            c.year, c.month, c.day, c.partner, c.grant, c.sector, c.donor, c.node, c.kind,
            c.currency,
        )
    }
    cells.sort_unstable_by(|a, b| key(a).cmp(&key(b)));
}

/// The key of a block of cells: level prefix, period (every partner's cells of a period are in
/// one block, so a batch writes one run per period it touched, however many partners).
fn block_key(prefix: u8, period_bytes: usize, period: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + period_bytes);
    key.push(prefix);
    key.extend_from_slice(&period.to_be_bytes()[4 - period_bytes..]);
    key
}

/// What a batch writes that is read from the ledger, taken as the batch ends (on the fold
/// thread), so that the ledger can fold the next batch while this one is written: the new
/// checkpoint, the direct totals and quantities when they changed, the changed pledges, grants'
/// funding, rejections and outcomes as keys and values, the outcomes per day by year, and the
/// batch's own [`Changed`] (cells and flows, which need no ledger).
pub(crate) struct BatchWrite {
    checkpoint: Checkpoint,
    totals: Option<Pieced>,
    quantities: Option<Pieced>,
    /// Keys to write (`Some`) or remove (`None`), whatever the model holds.
    values: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    day_outcomes: BTreeMap<u16, Vec<u8>>,
    changed: Changed,
}

impl BatchWrite {
    /// Takes what the batch `changed` as the ledger now has it, the records it `rejected` and
    /// its outcomes.
    pub(crate) fn take(
        ledger: &Ledger,
        mut changed: Changed,
        rejected: &[RejectedEvent],
        outcomes: &[(u64, u8)],
    ) -> Result<BatchWrite, ProjectorError> {
        if let Some(err) = changed.error.take() {
            return Err(err);
        }
        let totals = changed.totals.then(|| {
            let mut pieces = Pieced::default();
            for (key, total) in ledger.direct_totals() {
                let value = pieces.entry();
                value.extend_from_slice(&total_key(key));
                value.extend_from_slice(&encode_total(total));
            }
            pieces
        });
        let quantities = if changed.quantities {
            let mut pieces = Pieced::default();
            for quantity in ledger.direct_quantities() {
                let value = pieces.entry();
                value.extend_from_slice(&quantity.node.index().to_be_bytes());
                put_text(value, &quantity.item)?;
                put_text(value, &quantity.unit)?;
                value.extend_from_slice(&quantity.quantity.serialize());
            }
            Some(pieces)
        } else {
            None
        };
        let mut values = Vec::new();
        for (partner, pledge_ids) in &changed.pledges {
            for pledge_id in pledge_ids {
                let row = ledger.pledge_row(partner, pledge_id);
                let value = row.map(|row| encode_pledge(&row)).transpose()?;
                values.push((pledge_key(partner, pledge_id), value));
            }
        }
        for grant in &changed.grants {
            let key = prefixed(prefix::GRANT_FUNDING, grant.as_bytes());
            let funding = ledger.grant_funding(grant);
            let value = (!funding.is_empty()).then(|| {
                let mut value = Vec::with_capacity(funding.len() * FUNDING_ENTRY_BYTES);
                for (currency, total) in funding {
                    value.extend_from_slice(&currency.to_be_bytes());
                    value.extend_from_slice(&encode_total(&total));
                }
                value
            });
            values.push((key, value));
        }
        for rejected in rejected {
            values.push((
                prefixed(prefix::REJECTION, &rejected.seq.to_be_bytes()),
                Some(encode_rejection(rejected)?),
            ));
        }
        // Packed by seq, each value under its first seq (see `Snapshot::outcome`).
        for chunk in outcomes.chunks(runs::PIECE_BYTES / OUTCOME_BYTES) {
            let mut packed = Vec::with_capacity(chunk.len() * OUTCOME_BYTES);
            for (seq, code) in chunk {
                packed.extend_from_slice(&seq.to_be_bytes());
                packed.push(*code);
            }
            values.push((
                prefixed(prefix::OUTCOMES, &chunk[0].0.to_be_bytes()),
                Some(packed),
            ));
        }
        let mut day_outcomes: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
        for (day, outcomes) in ledger.day_outcomes() {
            let year = u16::try_from(day.year())
                .map_err(|_| ProjectorError::corrupt("a day outside years 0 to 65535"))?;
            let value = day_outcomes.entry(year).or_default();
            value.extend_from_slice(&day.ordinal().to_be_bytes());
            value.extend_from_slice(&outcomes.applied.to_be_bytes());
            value.extend_from_slice(&outcomes.rejected.to_be_bytes());
        }
        Ok(BatchWrite {
            checkpoint: ledger.checkpoint(),
            totals,
            quantities,
            values,
            day_outcomes,
            changed,
        })
    }

    /// The checkpoint the batch moves the model to.
    pub(crate) fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }
}

/// A value of many entries being cut into pieces of about `runs::PIECE_BYTES`, between entries.
#[derive(Default)]
struct Pieced {
    pieces: Vec<Vec<u8>>,
}

impl Pieced {
    /// The buffer to append the next entry to.
    fn entry(&mut self) -> &mut Vec<u8> {
        if self
            .pieces
            .last()
            .is_none_or(|p| p.len() >= runs::PIECE_BYTES)
        {
            self.pieces
                .push(Vec::with_capacity(runs::PIECE_BYTES + 256));
        }
        let last = self.pieces.len() - 1;
        &mut self.pieces[last]
    }

    fn done(self) -> Vec<Vec<u8>> {
        self.pieces
    }
}

fn read_checkpoint(tree: &sled::Tree) -> Result<Option<Checkpoint>, ProjectorError> {
    let Some(value) = tree
        .get([prefix::CHECKPOINT])
        .map_err(|e| ProjectorError::storage("cannot read the checkpoint", e))?
    else {
        return Ok(None);
    };
    decode_checkpoint(&value).map(Some).ok_or_else(|| {
        ProjectorError::corrupt(
            "the checkpoint is unreadable or of another format version; rebuild the read model",
        )
    })
}

fn decode_day_outcomes(
    key: &[u8],
    value: &[u8],
) -> Result<Vec<(Date, DayOutcomes)>, ProjectorError> {
    let bad = || unreadable("outcomes per day");
    let year = key
        .get(1..3)
        .map(|b| i32::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or_else(bad)?;
    if !value.len().is_multiple_of(DAY_OUTCOME_BYTES) {
        return Err(bad());
    }
    value
        .chunks_exact(DAY_OUTCOME_BYTES)
        .map(|entry| {
            let mut r = Reader::new(entry);
            let ordinal = r.u16().ok_or_else(bad)?;
            let day = Date::from_ordinal_date(year, ordinal).map_err(|_| bad())?;
            let applied = r.u64().ok_or_else(bad)?;
            let rejected = r.u64().ok_or_else(bad)?;
            Ok((day, DayOutcomes { applied, rejected }))
        })
        .collect()
}

fn decode_totals(value: &[u8]) -> Result<Vec<(TotalKey, Total)>, ProjectorError> {
    let bad = || unreadable("total");
    value
        .chunks(TOTAL_ENTRY_BYTES)
        .map(|entry| {
            let key =
                decode_total_key(entry.get(..TOTAL_KEY_BYTES).ok_or_else(bad)?).ok_or_else(bad)?;
            let total =
                decode_total(entry.get(TOTAL_KEY_BYTES..).ok_or_else(bad)?).ok_or_else(bad)?;
            Ok((key, total))
        })
        .collect()
}

fn decode_quantities(value: &[u8]) -> Result<Vec<DirectQuantity>, ProjectorError> {
    let mut r = Reader::new(value);
    let mut quantities = Vec::new();
    while !r.is_empty() {
        let quantity = (|| {
            Some(DirectQuantity {
                node: Node::from_index(r.u16()?)?,
                item: r.text()?.to_owned(),
                unit: r.text()?.to_owned(),
                quantity: r.decimal()?,
            })
        })();
        quantities.push(quantity.ok_or_else(|| unreadable("quantity"))?);
    }
    Ok(quantities)
}

fn prefixed(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + rest.len());
    key.push(prefix);
    key.extend_from_slice(rest);
    key
}

/// A kind's byte: its position in `TotalKind::ALL`.
fn kind_byte(kind: TotalKind) -> u8 {
    match kind {
        TotalKind::Pledged => 0,
        TotalKind::Paid => 1,
        TotalKind::ParallelFunding => 2,
        TotalKind::InKind => 3,
    }
}

fn kind_of(byte: u8) -> Option<TotalKind> {
    TotalKind::ALL.into_iter().find(|k| kind_byte(*k) == byte)
}

fn total_key(key: &TotalKey) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(TOTAL_KEY_BYTES);
    bytes.extend_from_slice(&key.node.index().to_be_bytes());
    bytes.push(kind_byte(key.kind));
    bytes.extend_from_slice(&key.currency.to_be_bytes());
    bytes
}

fn decode_total_key(bytes: &[u8]) -> Option<TotalKey> {
    let mut r = Reader::new(bytes);
    let node = Node::from_index(r.u16()?)?;
    let kind = kind_of(r.u8()?)?;
    let currency = r.u16()?;
    (usize::from(currency) < fundflow_refdata::CURRENCIES.len()).then_some(TotalKey {
        node,
        kind,
        currency,
    })
}

fn encode_total(total: &Total) -> Vec<u8> {
    let mut out = Vec::with_capacity(TOTAL_BYTES);
    for value in [total.amount, total.usd_equivalent, total.unconverted] {
        put_decimal(&mut out, value);
    }
    out
}

fn decode_total(bytes: &[u8]) -> Option<Total> {
    (bytes.len() == TOTAL_BYTES).then_some(())?;
    let mut r = Reader::new(bytes);
    Some(Total {
        amount: r.decimal()?,
        usd_equivalent: r.decimal()?,
        unconverted: r.decimal()?,
    })
}

fn encode_rejection(r: &RejectedEvent) -> Result<Vec<u8>, ProjectorError> {
    let mut value = Vec::new();
    for text in [
        r.rejection.code.as_str(),
        &r.event_id,
        &r.partner_id,
        &r.rejection.field,
        &r.rejection.message,
    ] {
        put_text(&mut value, text)?;
    }
    Ok(value)
}

fn decode_rejection(seq: u64, bytes: &[u8]) -> Option<RejectedEvent> {
    let mut r = Reader::new(bytes);
    let code = RejectCode::from_str_code(r.text()?)?;
    let event_id = r.text()?.to_owned();
    let partner_id = r.text()?.to_owned();
    let field = r.text()?.to_owned();
    let message = r.text()?.to_owned();
    Some(RejectedEvent {
        seq,
        event_id,
        partner_id,
        rejection: Rejection {
            code,
            field,
            message,
        },
    })
}

fn encode_checkpoint(c: &Checkpoint) -> Vec<u8> {
    let mut value = vec![FORMAT_VERSION];
    value.extend_from_slice(&c.last_seq.to_be_bytes());
    value.extend_from_slice(&c.log_digest);
    value.extend_from_slice(&c.applied.to_be_bytes());
    value.extend_from_slice(&c.rejected.to_be_bytes());
    value.extend_from_slice(&c.rejected_digest);
    value
}

fn decode_checkpoint(bytes: &[u8]) -> Option<Checkpoint> {
    (bytes.len() == CHECKPOINT_BYTES && bytes[0] == FORMAT_VERSION).then_some(())?;
    let u64_at = |i: usize| bytes[i..i + 8].try_into().ok().map(u64::from_be_bytes);
    let digest_at = |i: usize| bytes[i..i + DIGEST_BYTES].try_into().ok();
    Some(Checkpoint {
        last_seq: u64_at(CHECKPOINT_SEQ_AT)?,
        log_digest: digest_at(CHECKPOINT_LOG_DIGEST_AT)?,
        applied: u64_at(CHECKPOINT_APPLIED_AT)?,
        rejected: u64_at(CHECKPOINT_REJECTED_AT)?,
        rejected_digest: digest_at(CHECKPOINT_REJECTED_DIGEST_AT)?,
    })
}

impl FlowRecord {
    fn decode_from(bytes: &[u8]) -> Result<FlowRecord, ProjectorError> {
        use fundflow_proto::Message;
        FlowRecord::decode(bytes).map_err(|_| unreadable("flow record"))
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn decimal(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    fn nodes() -> [Node; 2] {
        [
            Node::from_index(0).unwrap(),
            Node::from_index(u16::try_from(fundflow_refdata::COUNTRIES.len()).unwrap()).unwrap(),
        ]
    }

    #[test]
    fn the_sizes_are_the_layouts() {
        assert_eq!(TOTAL_ENTRY_BYTES, 53);
        assert_eq!(OUTCOME_BYTES, 9);
        assert_eq!(CHECKPOINT_BYTES, 89);
        assert_eq!(FUNDING_ENTRY_BYTES, 50);
        assert_eq!(DAY_OUTCOME_BYTES, 18);
    }

    #[test]
    fn totals_round_trip() {
        let mut value = Vec::new();
        let mut expected = Vec::new();
        for (i, node) in nodes().into_iter().enumerate() {
            let key = TotalKey {
                node,
                kind: TotalKind::ALL[i],
                currency: u16::try_from(i).unwrap(),
            };
            let total = Total {
                amount: decimal("79228162514264337593543950335"),
                usd_equivalent: decimal("0.01"),
                unconverted: decimal(&format!("-{i}.5")),
            };
            value.extend(total_key(&key));
            value.extend(encode_total(&total));
            expected.push((key, total));
        }
        assert_eq!(value.len(), 2 * TOTAL_ENTRY_BYTES);
        assert_eq!(decode_totals(&value).unwrap(), expected);
        assert!(
            decode_totals(&value[..value.len() - 1]).is_err(),
            "a cut-off entry"
        );
    }

    #[test]
    fn quantities_rejections_outcomes_per_day_and_checkpoints_round_trip() {
        let [_, area] = nodes();
        let quantity = DirectQuantity {
            node: area,
            item: "disposable surgical mask".into(),
            unit: "piece".into(),
            quantity: decimal("210000.5"),
        };
        let mut value = area.index().to_be_bytes().to_vec();
        put_text(&mut value, &quantity.item).unwrap();
        put_text(&mut value, &quantity.unit).unwrap();
        value.extend_from_slice(&quantity.quantity.serialize());
        assert_eq!(decode_quantities(&value).unwrap(), vec![quantity]);
        assert!(decode_quantities(&value[..value.len() - 1]).is_err());

        let rejected = RejectedEvent {
            seq: 7,
            event_id: "e".into(),
            partner_id: "icshp".into(),
            rejection: Rejection {
                code: RejectCode::Overpaid,
                field: "allocations[0].value".into(),
                message: "too much".into(),
            },
        };
        assert_eq!(
            decode_rejection(7, &encode_rejection(&rejected).unwrap()).unwrap(),
            rejected
        );

        let day = Date::from_ordinal_date(2020, 366).unwrap();
        let mut value = 366u16.to_be_bytes().to_vec();
        value.extend_from_slice(&3u64.to_be_bytes());
        value.extend_from_slice(&u64::MAX.to_be_bytes());
        let key = prefixed(prefix::DAY_OUTCOMES, &2020u16.to_be_bytes());
        assert_eq!(
            decode_day_outcomes(&key, &value).unwrap(),
            vec![(
                day,
                DayOutcomes {
                    applied: 3,
                    rejected: u64::MAX
                }
            )]
        );
        assert!(decode_day_outcomes(&key, &value[1..]).is_err());

        let checkpoint = Checkpoint {
            last_seq: u64::MAX,
            log_digest: [1; 32],
            applied: 3,
            rejected: 4,
            rejected_digest: [2; 32],
        };
        let value = encode_checkpoint(&checkpoint);
        assert_eq!(value.len(), CHECKPOINT_BYTES);
        assert_eq!(decode_checkpoint(&value).unwrap(), checkpoint);
        let mut other_version = value.clone();
        other_version[0] = FORMAT_VERSION + 1;
        assert!(decode_checkpoint(&other_version).is_none());
    }

    #[test]
    fn block_keys_and_cell_refs() {
        let key = runs::run_key(&block_key(prefix::DAY_CELLS, 4, 2020 * 12 + 8), 2, 99, 0);
        let run = encode_run(
            DAY,
            &[(
                EntryKey {
                    partner: b"icshp",
                    day: 30,
                    names: [b"g", b"", b"d"],
                    node: 3,
                    kind: 2,
                    currency: 1,
                },
                [decimal("1"), decimal("0"), decimal("1")],
            )],
        )
        .unwrap();
        let snapshot = CellsSnapshot {
            checkpoint: Checkpoint::default(),
            level: CellLevel::Day,
            partner: None,
            blocks: vec![Block {
                keys: vec![key.into()],
                pieces: run.into_iter().map(Into::into).collect(),
                one_run: true,
                summed: None,
            }],
        };
        let cells: Vec<_> = snapshot.iter().map(Result::unwrap).collect();
        assert_eq!(cells.len(), 1);
        let cell = cells[0];
        assert_eq!(
            cell.month.map(|m| m.to_string()),
            Some("2020-09".to_owned())
        );
        assert_eq!(
            cell.day,
            Date::from_calendar_date(2020, time::Month::September, 30).ok()
        );
        assert_eq!(
            (cell.partner, cell.grant, cell.sector, cell.donor),
            ("icshp", Some("g"), Some(""), Some("d"))
        );
        assert_eq!(cell.kind, TotalKind::ParallelFunding);
    }
}
