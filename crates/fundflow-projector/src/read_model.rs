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
//! | `p` | first seq u64 of a batch | the pledges the batch changed, packed: per pledge its partner and id, then its lines (currency u16, per line node u16, pledged, paid) or a tombstone when reversed |
//! | `r` | seq u64 | a rejection: code, event id, partner, message (length-prefixed) |
//! | `o` | first seq u64 of a batch | the batch's outcomes packed: per record seq u64 and code u8 |
//!
//! Why this shape: sled takes roughly 60,000 random and 120,000 sequential inserts a second, far
//! below the log's rate. So a fold batch writes a handful of values, never one per event:
//! direct totals and quantities, whose number is bounded by the reference data (countries ×
//! kinds × currencies; recipients × goods), are rewritten whole as one value each when the batch
//! changed any (a batch of thousands of events changes most of them anyway); rejections are rare;
//! and the
//! outcomes of all the batch's records, and the pledges it changed (one per pledge or payment, an
//! unbounded key space), go into one value each under a sequential key; reading the pledges back
//! replays those values in order, the last word on each pledge winning. The event-id
//! index is not on disk at all: the projector keeps it in memory, rebuilt at start by refolding
//! the log (see `Projector::open`).

use std::path::Path;

use fundflow_domain::{
    Changes, Checkpoint, DirectQuantity, Ledger, ModelState, Node, PledgeLine, PledgeRow,
    RejectCode, Rejection, Total, TotalKey, TotalKind, ledger::RejectedEvent,
};
use rust_decimal::Decimal;

use crate::ProjectorError;

/// Bumped when the layout changes; a read model of another version is rebuilt, not read.
const FORMAT_VERSION: u8 = 1;

const CHECKPOINT: &[u8] = b"c";
const TOTALS: &[u8] = b"t";
const QUANTITIES: &[u8] = b"q";
const PLEDGE: u8 = b'p';
const REJECTION: u8 = b'r';
const OUTCOMES: u8 = b'o';

/// A read model in a sled database of its own.
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

    /// Writes one fold batch atomically (changes, outcomes, checkpoint), then flushes: when this
    /// returns, the batch is on disk, and a crash at any instant leaves the model at either the
    /// previous checkpoint or this one.
    pub fn write_batch(
        &self,
        ledger: &Ledger,
        changes: &Changes,
        outcomes: &[(u64, u8)],
    ) -> Result<(), ProjectorError> {
        let checkpoint = ledger.checkpoint();
        let mut batch = sled::Batch::default();
        if !changes.totals.is_empty() {
            let mut value = Vec::new();
            for (key, total) in ledger.direct_totals() {
                value.extend_from_slice(&total_key(key));
                value.extend_from_slice(&encode_total(total));
            }
            batch.insert(TOTALS, value);
        }
        if !changes.quantities.is_empty() {
            let mut value = Vec::new();
            for quantity in ledger.direct_quantities() {
                value.extend_from_slice(&quantity.node.index().to_be_bytes());
                push_text(&mut value, &quantity.item);
                push_text(&mut value, &quantity.unit);
                value.extend_from_slice(&quantity.quantity.serialize());
            }
            batch.insert(QUANTITIES, value);
        }
        if let (false, Some(&(first, _))) = (changes.pledges.is_empty(), outcomes.first()) {
            let mut packed = Vec::new();
            for ((partner, pledge_id), row) in &changes.pledges {
                push_text(&mut packed, partner);
                push_text(&mut packed, pledge_id);
                match row {
                    Some(row) => push_bytes(&mut packed, &encode_pledge(row)),
                    None => push_bytes(&mut packed, &[]),
                }
            }
            batch.insert(prefixed(PLEDGE, &first.to_be_bytes()), packed);
        }
        for rejected in &changes.rejected {
            batch.insert(
                prefixed(REJECTION, &rejected.seq.to_be_bytes()),
                encode_rejection(rejected),
            );
        }
        if let Some(&(first, _)) = outcomes.first() {
            let mut packed = Vec::with_capacity(outcomes.len() * 9);
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
            for entry in value.chunks(53) {
                let key = decode_total_key(entry.get(..5).ok_or_else(|| bad("total"))?);
                let total = decode_total(entry.get(5..).ok_or_else(|| bad("total"))?);
                state.direct_totals.push((
                    key.ok_or_else(|| bad("total key"))?,
                    total.ok_or_else(|| bad("total"))?,
                ));
            }
        }
        if let Some(value) = get(QUANTITIES)? {
            let mut rest: &[u8] = &value;
            while !rest.is_empty() {
                let quantity = take_quantity(&mut rest).ok_or_else(|| bad("quantity"))?;
                state.direct_quantities.push(quantity);
            }
        }
        let mut pledges = std::collections::BTreeMap::new();
        for entry in read(PLEDGE) {
            let (_, value) = entry?;
            let mut rest: &[u8] = &value;
            while !rest.is_empty() {
                let partner = take_text(&mut rest)
                    .ok_or_else(|| bad("pledge"))?
                    .to_owned();
                let pledge_id = take_text(&mut rest)
                    .ok_or_else(|| bad("pledge"))?
                    .to_owned();
                let lines = take_bytes(&mut rest).ok_or_else(|| bad("pledge"))?;
                let row = if lines.is_empty() {
                    None
                } else {
                    let row = decode_pledge(partner.clone(), pledge_id.clone(), lines);
                    Some(row.ok_or_else(|| bad("pledge"))?)
                };
                pledges.insert((partner, pledge_id), row);
            }
        }
        state.pledges.extend(pledges.into_values().flatten());
        for entry in read(REJECTION) {
            let (key, value) = entry?;
            let seq = key
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| bad("rejection key"))?;
            state
                .rejected_events
                .push(decode_rejection(seq, &value).ok_or_else(|| bad("rejection"))?);
        }
        Ok(state)
    }

    /// The outcome code of every record, in log order (0 = applied, else 1 + the code's position
    /// in `RejectCode::ALL`).
    pub fn outcomes(&self) -> Result<Vec<(u64, u8)>, ProjectorError> {
        let mut outcomes = Vec::new();
        for entry in self.tree.scan_prefix([OUTCOMES]) {
            let (_, value) =
                entry.map_err(|e| ProjectorError::storage("cannot read the outcomes", e))?;
            for record in value.chunks_exact(9) {
                let seq = record[..8].try_into().map(u64::from_be_bytes).unwrap_or(0);
                outcomes.push((seq, record[8]));
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
    let mut bytes = Vec::with_capacity(5);
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
        bytes.get(offset..offset + 16)?.try_into().ok()?,
    ))
}

fn decode_total(bytes: &[u8]) -> Option<Total> {
    (bytes.len() == 48).then_some(())?;
    Some(Total {
        amount: decimal_at(bytes, 0)?,
        usd_equivalent: decimal_at(bytes, 16)?,
        unconverted: decimal_at(bytes, 32)?,
    })
}

fn take_quantity(rest: &mut &[u8]) -> Option<DirectQuantity> {
    let node = Node::from_index(u16::from_be_bytes(rest.get(0..2)?.try_into().ok()?))?;
    *rest = &rest[2..];
    let item = take_text(rest)?.to_owned();
    let unit = take_text(rest)?.to_owned();
    let quantity = decimal_at(rest, 0)?;
    *rest = &rest[16..];
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
    let currency = u16::from_be_bytes(value.get(0..2)?.try_into().ok()?);
    let lines = value[2..]
        .chunks(34)
        .map(|line| {
            (line.len() == 34).then_some(())?;
            Some(PledgeLine {
                node: Node::from_index(u16::from_be_bytes(line[0..2].try_into().ok()?))?,
                pledged: decimal_at(line, 2)?,
                paid: decimal_at(line, 18)?,
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
    // Values here are far below 4 GiB: pledges have at most `limits::ALLOCATIONS_MAX` lines.
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
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
    (bytes.len() == 89 && bytes[0] == FORMAT_VERSION).then_some(())?;
    let u64_at = |i: usize| bytes[i..i + 8].try_into().ok().map(u64::from_be_bytes);
    Some(Checkpoint {
        last_seq: u64_at(1)?,
        log_digest: bytes[9..41].try_into().ok()?,
        applied: u64_at(41)?,
        rejected: u64_at(49)?,
        rejected_digest: bytes[57..89].try_into().ok()?,
    })
}
