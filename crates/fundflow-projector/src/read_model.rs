//! The sled read model: the ledger's totals, quantities, pledges, rejections and outcomes, with
//! the checkpoint that says how far into the log they are.
//!
//! Layout: one sled tree, `model`, keys prefixed by one byte so that one `sled::Batch` writes a
//! whole fold batch atomically:
//!
//! | prefix | key after it | value |
//! | --- | --- | --- |
//! | `c` | — | the checkpoint: format version, last seq, log digest, counts, rejection digest |
//! | `t` | — | every direct total: per total node u16, kind u8, currency u16, then amount, USD equivalent, unconverted (3 × 16-byte decimals) |
//! | `q` | — | every direct in-kind quantity: per quantity node u16, item, unit, quantity |
//! | `p` | partner, 0, pledge id | a pledge: currency u16, then per line node u16, pledged, paid (removed when the pledge is reversed) |
//! | `r` | seq u64 | a rejection: code, event id, partner, message (length-prefixed) |
//! | `o` | first seq u64 of a batch | the batch's outcomes packed: per record seq u64 and code u8 |
//!
//! Why this shape: sled takes roughly 60,000 random and 120,000 sequential inserts a second, far
//! below the log's rate. So a fold batch writes a handful of values, never one per event:
//! direct totals and quantities, whose number is bounded by the reference data (countries ×
//! kinds × currencies; recipients × goods), are rewritten whole as one value each when the batch
//! changed any (a batch of thousands of events changes most of them anyway); rejections are rare;
//! the outcomes of all the batch's records go into one value under a sequential key (a lookup by
//! seq is one range step back from it); and each pledge the batch changed is one value under its
//! own key, so that the pledge query is one point read. The event-id index is not on disk at
//! all: the log answers "which seq holds (partner, event id)", and the projector keeps its own
//! index in memory, rebuilt at start by refolding the log (see `Projector::open`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use fundflow_domain::{
    Checkpoint, DirectQuantity, Ledger, ModelState, Node, PledgeLine, PledgeRow, RejectCode,
    RejectedEvent, Rejection, Total, TotalKey, TotalKind, Touched,
};
use rust_decimal::Decimal;

use crate::ProjectorError;

/// Bumped when the layout changes; a read model of another version is rebuilt, not read.
const FORMAT_VERSION: u8 = 2;

/// The fixed sizes of the value codecs below, in bytes.
const DECIMAL_BYTES: usize = 16; // `Decimal::serialize`
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
/// One line of a pledge: node, pledged, paid.
const PLEDGE_LINE_BYTES: usize = NODE_BYTES + 2 * DECIMAL_BYTES;
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

const CHECKPOINT: &[u8] = b"c";
const TOTALS: &[u8] = b"t";
const QUANTITIES: &[u8] = b"q";
const PLEDGE: u8 = b'p';
const REJECTION: u8 = b'r';
const OUTCOMES: u8 = b'o';

/// What a fold batch changed, gathered from what each applied event touched: what the read
/// model must rewrite.
#[derive(Debug, Default)]
pub(crate) struct Changed {
    /// Whether any direct total changed: then all are rewritten, as one value.
    totals: bool,
    /// Whether any direct quantity changed: likewise.
    quantities: bool,
    /// The pledges changed, by partner, then pledge id: each is rewritten from the ledger (or
    /// removed when it is no longer active), so a pledge reversed and recorded again in one
    /// batch is written as it ends up.
    pledges: BTreeMap<String, BTreeSet<String>>,
}

impl Changed {
    /// Adds what one applied event touched.
    pub(crate) fn add(&mut self, touched: &Touched<'_>) {
        self.totals |= touched.totals().next().is_some();
        self.quantities |= touched.quantities().next().is_some();
        if let Some((partner_id, pledge_id)) = touched.pledge() {
            let pledges = match self.pledges.get_mut(partner_id) {
                Some(pledges) => pledges,
                None => self.pledges.entry(partner_id.to_owned()).or_default(),
            };
            if !pledges.contains(pledge_id) {
                pledges.insert(pledge_id.to_owned());
            }
        }
    }
}

/// A read model in a sled database of its own. Clones share the database: the projector writes
/// through one, queries read through others.
#[derive(Clone)]
pub struct ReadModel {
    db: sled::Db,
    tree: sled::Tree,
}

impl ReadModel {
    /// Opens or creates the read model in `dir`. sled locks the directory: a second process
    /// gets a clear error instead of a corrupt model.
    pub fn open(dir: &Path) -> Result<ReadModel, ProjectorError> {
        let config = sled::Config::new()
            .path(dir)
            // sled caches 1 GiB by default; the model's working set (the checkpoint, the
            // snapshots of totals, the latest batches) is small, and the projector's memory
            // belongs to the fold's index.
            .cache_capacity(64 * 1024 * 1024)
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
        Ok(ReadModel { db, tree })
    }

    /// The checkpoint, or `None` for an empty read model.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, ProjectorError> {
        let Some(value) = self
            .tree
            .get(CHECKPOINT)
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

    /// Writes one fold batch atomically (what it `changed` as the ledger now has it, the records
    /// it `rejected`, its outcomes, the checkpoint), then flushes: when this returns, the batch
    /// is on disk, and a crash at any instant leaves the model at either the previous
    /// checkpoint or this one.
    pub(crate) fn write_batch(
        &self,
        ledger: &Ledger,
        changed: &Changed,
        rejected: &[RejectedEvent],
        outcomes: &[(u64, u8)],
    ) -> Result<(), ProjectorError> {
        let checkpoint = ledger.checkpoint();
        let mut batch = sled::Batch::default();
        if changed.totals {
            let mut value = Vec::new();
            for (key, total) in ledger.direct_totals() {
                value.extend_from_slice(&total_key(key));
                value.extend_from_slice(&encode_total(total));
            }
            batch.insert(TOTALS, value);
        }
        if changed.quantities {
            let mut value = Vec::new();
            for quantity in ledger.direct_quantities() {
                value.extend_from_slice(&quantity.node.index().to_be_bytes());
                push_text(&mut value, &quantity.item);
                push_text(&mut value, &quantity.unit);
                value.extend_from_slice(&quantity.quantity.serialize());
            }
            batch.insert(QUANTITIES, value);
        }
        for (partner, pledge_ids) in &changed.pledges {
            for pledge_id in pledge_ids {
                let key = pledge_key(partner, pledge_id);
                match ledger.pledge_row(partner, pledge_id) {
                    Some(row) => batch.insert(key, encode_pledge(&row)),
                    None => batch.remove(key),
                }
            }
        }
        for rejected in rejected {
            batch.insert(
                prefixed(REJECTION, &rejected.seq.to_be_bytes()),
                encode_rejection(rejected),
            );
        }
        if let Some(&(first, _)) = outcomes.first() {
            let mut packed = Vec::with_capacity(outcomes.len() * OUTCOME_BYTES);
            for (seq, code) in outcomes {
                packed.extend_from_slice(&seq.to_be_bytes());
                packed.push(*code);
            }
            batch.insert(prefixed(OUTCOMES, &first.to_be_bytes()), packed);
        }
        batch.insert(CHECKPOINT, encode_checkpoint(&checkpoint));
        self.tree
            .apply_batch(batch)
            .map_err(|e| ProjectorError::storage("cannot write a batch to the read model", e))?;
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

    /// Everything in the model, as a [`ModelState`] for reports and the model digest.
    pub fn state(&self) -> Result<ModelState, ProjectorError> {
        let checkpoint = self.checkpoint()?.unwrap_or_default();
        let read = |prefix: u8| {
            self.tree.scan_prefix([prefix]).map(|entry| {
                entry.map_err(|e| ProjectorError::storage("cannot read the read model", e))
            })
        };
        let bad =
            |what: &str| ProjectorError::corrupt(format!("an unreadable {what} in the read model"));
        let mut state = ModelState {
            checkpoint,
            ..ModelState::default()
        };
        let get = |key: &[u8]| {
            self.tree
                .get(key)
                .map_err(|e| ProjectorError::storage("cannot read the read model", e))
        };
        if let Some(value) = get(TOTALS)? {
            state.direct_totals = decode_totals(&value)?;
        }
        if let Some(value) = get(QUANTITIES)? {
            state.direct_quantities = decode_quantities(&value)?;
        }
        for entry in read(PLEDGE) {
            let (key, value) = entry?;
            let row = split_pledge_key(&key)
                .and_then(|(partner, pledge_id)| decode_pledge(partner, pledge_id, &value));
            state.pledges.push(row.ok_or_else(|| bad("pledge"))?);
        }
        for entry in read(REJECTION) {
            let (key, value) = entry?;
            let seq = key
                .get(1..1 + SEQ_BYTES)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| bad("rejection key"))?;
            state
                .rejected_events
                .push(decode_rejection(seq, &value).ok_or_else(|| bad("rejection"))?);
        }
        Ok(state)
    }

    /// The checkpoint and the direct totals, read together (one consistent snapshot, whatever
    /// the projector writes meanwhile): what the totals query needs, in reads bounded by the
    /// reference data.
    pub fn totals_snapshot(&self) -> Result<ModelState, ProjectorError> {
        let read = self
            .tree
            .transaction(|tx| Ok((tx.get(CHECKPOINT)?, tx.get(TOTALS)?, tx.get(QUANTITIES)?)));
        let (checkpoint, totals, quantities) =
            read.map_err(|e: sled::transaction::TransactionError<()>| match e {
                sled::transaction::TransactionError::Storage(e) => {
                    ProjectorError::storage("cannot read the read model", e)
                }
                sled::transaction::TransactionError::Abort(()) => {
                    ProjectorError::corrupt("the totals read was aborted")
                }
            })?;
        let mut state = ModelState::default();
        if let Some(value) = checkpoint {
            state.checkpoint = decode_checkpoint(&value).ok_or_else(|| {
                ProjectorError::corrupt("the checkpoint is unreadable; rebuild the read model")
            })?;
        }
        if let Some(value) = totals {
            state.direct_totals = decode_totals(&value)?;
        }
        if let Some(value) = quantities {
            state.direct_quantities = decode_quantities(&value)?;
        }
        Ok(state)
    }

    /// One pledge of one partner, as of the checkpoint; `None` when there is none (or it was
    /// reversed).
    pub fn pledge(
        &self,
        partner_id: &str,
        pledge_id: &str,
    ) -> Result<Option<PledgeRow>, ProjectorError> {
        let value = self
            .tree
            .get(pledge_key(partner_id, pledge_id))
            .map_err(|e| ProjectorError::storage("cannot read a pledge", e))?;
        value
            .map(|value| {
                decode_pledge(partner_id.to_owned(), pledge_id.to_owned(), &value).ok_or_else(
                    || ProjectorError::corrupt("an unreadable pledge in the read model"),
                )
            })
            .transpose()
    }

    /// A pledge and the checkpoint it is at, read as one snapshot (a batch written between two
    /// reads would otherwise pair one batch's pledge with another's seq).
    pub fn pledge_at_checkpoint(
        &self,
        partner_id: &str,
        pledge_id: &str,
    ) -> Result<(Checkpoint, Option<PledgeRow>), ProjectorError> {
        let key = pledge_key(partner_id, pledge_id);
        let (checkpoint, value) = self
            .tree
            .transaction(|tx| Ok((tx.get(CHECKPOINT)?, tx.get(&key)?)))
            .map_err(|err: sled::transaction::TransactionError<()>| match err {
                sled::transaction::TransactionError::Storage(e) => {
                    ProjectorError::storage("cannot read a pledge", e)
                }
                sled::transaction::TransactionError::Abort(()) => {
                    ProjectorError::corrupt("a read-only transaction aborted")
                }
            })?;
        let checkpoint = match checkpoint {
            Some(bytes) => decode_checkpoint(&bytes)
                .ok_or_else(|| ProjectorError::corrupt("an unreadable checkpoint"))?,
            None => Checkpoint::default(),
        };
        let row = value
            .map(|value| {
                decode_pledge(partner_id.to_owned(), pledge_id.to_owned(), &value).ok_or_else(
                    || ProjectorError::corrupt("an unreadable pledge in the read model"),
                )
            })
            .transpose()?;
        Ok((checkpoint, row))
    }

    /// The outcome of the record at `seq` once folded: `Some(Ok(()))` applied,
    /// `Some(Err(rejection))` rejected, `None` not folded yet.
    pub fn outcome(&self, seq: u64) -> Result<Option<Result<(), Rejection>>, ProjectorError> {
        let storage = |e| ProjectorError::storage("cannot read an outcome", e);
        let key = prefixed(OUTCOMES, &seq.to_be_bytes());
        let Some(entry) = self
            .tree
            .range([OUTCOMES].as_slice()..=key.as_slice())
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
            .tree
            .get(prefixed(REJECTION, &seq.to_be_bytes()))
            .map_err(storage)?
            .ok_or_else(|| {
                ProjectorError::corrupt(format!(
                    "record {seq} is rejected but its rejection is missing"
                ))
            })?;
        let rejected = decode_rejection(seq, &value)
            .ok_or_else(|| ProjectorError::corrupt("an unreadable rejection in the read model"))?;
        Ok(Some(Err(rejected.rejection)))
    }

    /// The outcome code of every record, in log order (0 = applied, else 1 + the code's position
    /// in `RejectCode::ALL`).
    pub fn outcomes(&self) -> Result<Vec<(u64, u8)>, ProjectorError> {
        let mut outcomes = Vec::new();
        for entry in self.tree.scan_prefix([OUTCOMES]) {
            let (_, value) =
                entry.map_err(|e| ProjectorError::storage("cannot read the outcomes", e))?;
            if value.len() % OUTCOME_BYTES != 0 {
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

    /// Drops everything, for a rebuild from sequence 1.
    pub fn clear(&self) -> Result<(), ProjectorError> {
        self.tree
            .clear()
            .map_err(|e| ProjectorError::storage("cannot clear the read model", e))?;
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

fn decode_totals(value: &[u8]) -> Result<Vec<(TotalKey, Total)>, ProjectorError> {
    let bad = || ProjectorError::corrupt("an unreadable total in the read model");
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
    let mut rest = value;
    let mut quantities = Vec::new();
    while !rest.is_empty() {
        quantities.push(
            take_quantity(&mut rest).ok_or_else(|| {
                ProjectorError::corrupt("an unreadable quantity in the read model")
            })?,
        );
    }
    Ok(quantities)
}

fn pledge_key(partner_id: &str, pledge_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + partner_id.len() + pledge_id.len());
    key.push(PLEDGE);
    key.extend_from_slice(partner_id.as_bytes());
    // Partner ids never hold a NUL, so the first one ends the partner.
    key.push(0);
    key.extend_from_slice(pledge_id.as_bytes());
    key
}

fn split_pledge_key(key: &[u8]) -> Option<(String, String)> {
    let rest = key.strip_prefix(&[PLEDGE])?;
    let nul = rest.iter().position(|b| *b == 0)?;
    let partner = std::str::from_utf8(&rest[..nul]).ok()?;
    let pledge = std::str::from_utf8(&rest[nul + 1..]).ok()?;
    Some((partner.to_owned(), pledge.to_owned()))
}

fn prefixed(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + rest.len());
    key.push(prefix);
    key.extend_from_slice(rest);
    key
}

fn kind_byte(kind: TotalKind) -> u8 {
    match kind {
        TotalKind::Pledged => 0,
        TotalKind::Paid => 1,
        TotalKind::ParallelFunding => 2,
        TotalKind::InKind => 3,
    }
}

fn total_key(key: &TotalKey) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(TOTAL_KEY_BYTES);
    bytes.extend_from_slice(&key.node.index().to_be_bytes());
    bytes.push(kind_byte(key.kind));
    bytes.extend_from_slice(&key.currency.to_be_bytes());
    bytes
}

fn decode_total_key(bytes: &[u8]) -> Option<TotalKey> {
    let node = Node::from_index(u16::from_be_bytes(bytes.get(0..2)?.try_into().ok()?))?;
    let kind_stored = *bytes.get(2)?;
    let kind = TotalKind::ALL
        .into_iter()
        .find(|k| kind_byte(*k) == kind_stored)?;
    let currency = u16::from_be_bytes(bytes.get(3..5)?.try_into().ok()?);
    (usize::from(currency) < fundflow_refdata::CURRENCIES.len()).then_some(TotalKey {
        node,
        kind,
        currency,
    })
}

fn encode_total(total: &Total) -> Vec<u8> {
    [total.amount, total.usd_equivalent, total.unconverted]
        .iter()
        .flat_map(Decimal::serialize)
        .collect()
}

fn decimal_at(bytes: &[u8], offset: usize) -> Option<Decimal> {
    Some(Decimal::deserialize(
        bytes.get(offset..offset + DECIMAL_BYTES)?.try_into().ok()?,
    ))
}

fn decode_total(bytes: &[u8]) -> Option<Total> {
    (bytes.len() == TOTAL_BYTES).then_some(())?;
    Some(Total {
        amount: decimal_at(bytes, 0)?,
        usd_equivalent: decimal_at(bytes, DECIMAL_BYTES)?,
        unconverted: decimal_at(bytes, 2 * DECIMAL_BYTES)?,
    })
}

fn take_quantity(rest: &mut &[u8]) -> Option<DirectQuantity> {
    let node = Node::from_index(u16::from_be_bytes(
        rest.get(0..NODE_BYTES)?.try_into().ok()?,
    ))?;
    *rest = &rest[NODE_BYTES..];
    let item = take_text(rest)?.to_owned();
    let unit = take_text(rest)?.to_owned();
    let quantity = decimal_at(rest, 0)?;
    *rest = &rest[DECIMAL_BYTES..];
    Some(DirectQuantity {
        node,
        item,
        unit,
        quantity,
    })
}

fn encode_pledge(row: &PledgeRow) -> Vec<u8> {
    let mut value = row.currency.to_be_bytes().to_vec();
    for line in &row.lines {
        value.extend_from_slice(&line.node.index().to_be_bytes());
        value.extend_from_slice(&line.pledged.serialize());
        value.extend_from_slice(&line.paid.serialize());
    }
    value
}

fn decode_pledge(partner_id: String, pledge_id: String, value: &[u8]) -> Option<PledgeRow> {
    let currency = u16::from_be_bytes(value.get(0..CURRENCY_BYTES)?.try_into().ok()?);
    let lines = value[CURRENCY_BYTES..]
        .chunks(PLEDGE_LINE_BYTES)
        .map(|line| {
            (line.len() == PLEDGE_LINE_BYTES).then_some(())?;
            Some(PledgeLine {
                node: Node::from_index(u16::from_be_bytes(line[0..NODE_BYTES].try_into().ok()?))?,
                pledged: decimal_at(line, NODE_BYTES)?,
                paid: decimal_at(line, NODE_BYTES + DECIMAL_BYTES)?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(PledgeRow {
        partner_id,
        pledge_id,
        currency,
        lines,
    })
}

fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Texts here are bounded far below 4 GiB (`limits::TEXT_LEN_MAX` and the like); a longer
    // one is a bug, not input.
    #[expect(
        clippy::expect_used,
        reason = "texts are bounded by the domain's limits"
    )]
    let len = u32::try_from(bytes.len()).expect("a read model text is shorter than 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn take_bytes<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(u32::from_be_bytes(bytes.get(0..4)?.try_into().ok()?)).ok()?;
    let taken = bytes.get(4..4 + len)?;
    *bytes = &bytes[4 + len..];
    Some(taken)
}

fn push_text(out: &mut Vec<u8>, text: &str) {
    push_bytes(out, text.as_bytes());
}

fn take_text<'a>(bytes: &mut &'a [u8]) -> Option<&'a str> {
    std::str::from_utf8(take_bytes(bytes)?).ok()
}

fn encode_rejection(r: &RejectedEvent) -> Vec<u8> {
    let mut value = Vec::new();
    for text in [
        r.rejection.code.as_str(),
        &r.event_id,
        &r.partner_id,
        &r.rejection.field,
        &r.rejection.message,
    ] {
        push_text(&mut value, text);
    }
    value
}

fn decode_rejection(seq: u64, mut bytes: &[u8]) -> Option<RejectedEvent> {
    let code = RejectCode::from_str_code(take_text(&mut bytes)?)?;
    let event_id = take_text(&mut bytes)?.to_owned();
    let partner_id = take_text(&mut bytes)?.to_owned();
    let field = take_text(&mut bytes)?.to_owned();
    let message = take_text(&mut bytes)?.to_owned();
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
        assert_eq!(PLEDGE_LINE_BYTES, 34);
        assert_eq!(OUTCOME_BYTES, 9);
        assert_eq!(CHECKPOINT_BYTES, 89);
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
    fn quantities_pledges_rejections_and_checkpoints_round_trip() {
        let [country, area] = nodes();
        let quantity = DirectQuantity {
            node: area,
            item: "disposable surgical mask".into(),
            unit: "piece".into(),
            quantity: decimal("210000.5"),
        };
        let mut value = country.index().to_be_bytes().to_vec();
        push_text(&mut value, &quantity.item);
        push_text(&mut value, &quantity.unit);
        value.extend_from_slice(&quantity.quantity.serialize());
        let mut rest = value.as_slice();
        let decoded = take_quantity(&mut rest).unwrap();
        assert_eq!(
            (decoded.node, decoded.quantity),
            (country, quantity.quantity)
        );
        assert_eq!(
            (decoded.item.as_str(), decoded.unit.as_str()),
            ("disposable surgical mask", "piece")
        );
        assert!(rest.is_empty());

        let pledge = PledgeRow {
            partner_id: "icshp".into(),
            pledge_id: "sg-2020-01".into(),
            currency: 3,
            lines: vec![
                PledgeLine {
                    node: country,
                    pledged: decimal("100.00"),
                    paid: decimal("40.00"),
                },
                PledgeLine {
                    node: area,
                    pledged: decimal("5"),
                    paid: decimal("0"),
                },
            ],
        };
        let key = pledge_key(&pledge.partner_id, &pledge.pledge_id);
        let (partner, id) = split_pledge_key(&key).unwrap();
        let value = encode_pledge(&pledge);
        assert_eq!(value.len(), CURRENCY_BYTES + 2 * PLEDGE_LINE_BYTES);
        assert_eq!(decode_pledge(partner, id, &value).unwrap(), pledge);
        assert!(decode_pledge("a".into(), "b".into(), &value[..value.len() - 1]).is_none());

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
            decode_rejection(7, &encode_rejection(&rejected)).unwrap(),
            rejected
        );

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
}
