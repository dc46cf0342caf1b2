//! The flows list on disk: a record per applied flow, packed by seq; the reversals, grouped by
//! the seq range of the flows they undid; and postings, the inverted indexes a query walks.
//!
//! Records are append-only (a batch writes the packs its seqs fall in, reading back only the
//! one an earlier batch began). A reversal does not rewrite its target's record: it is written
//! beside it, under the target's seq group, so that a record read "as of seq S" counts as
//! reversed exactly when its reversal's seq is at most S.
//!
//! Postings: per index (kind, partner, node, grant, donor, sector, all, reversed) and month, a
//! block of runs (see `runs`) whose values list, per indexed value (a partner, a node, ...),
//! the flows' (day, seq), newest first. One run per (index, month) per batch, whatever the
//! number of values: keying postings by value as well would write one value per grant or node a
//! batch touched (thousands per batch with one grant per pledge, far past sled's insert rate).
//! Postings are never removed, only merged, so a page pinned at seq S finds exactly the flows
//! with seq ≤ S, whatever was appended since.

use std::collections::BTreeMap;

use fundflow_domain::{Month, Node, TotalKind};
use fundflow_proto::Message;
use fundflow_proto::v1;
use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use time::Date;

use super::codec::{Reader, date_of, put_name, put_text, u32_of, unreadable};
use super::kind_byte;
use super::runs::{PIECE_BYTES, Pieces};
use crate::ProjectorError;

/// Seqs per pack of records: 2^4, so that a pack stays within `runs::PIECE_BYTES` or so.
pub(super) const PACK_BITS: u32 = 4;
/// Seqs per group of reversals: 2^12, so that a page of flows reads few groups.
pub(super) const REVERSAL_GROUP_BITS: u32 = 12;
/// One posting: day of the month, seq.
pub(super) const POSTING_BYTES: usize = 9;
/// A posting run's directory entry: value offset u32, value length u16, postings offset u32,
/// postings count u32.
const DIRECTORY_ENTRY_BYTES: usize = 14;
/// A pack's table entry: seq u64, offset u32, length u32.
const PACK_ENTRY_BYTES: usize = 16;

/// The indexes flows are posted under (the byte after the postings prefix).
pub(super) mod tag {
    pub(crate) const KIND: u8 = b'k';
    pub(crate) const PARTNER: u8 = b'p';
    pub(crate) const NODE: u8 = b'n';
    pub(crate) const GRANT: u8 = b'g';
    pub(crate) const DONOR: u8 = b'd';
    pub(crate) const SECTOR: u8 = b's';
    pub(crate) const ALL: u8 = b'a';
    pub(crate) const REVERSED: u8 = b'r';
}

/// One applied flow as the read model keeps it: the envelope as the log had it (the server
/// decodes it for the texts: ids, description, rate source, items) and what the fold decided
/// that the envelope does not say (a payment's inherited grant, sector and donor; the USD
/// equivalent of each allocation). Read back through [`crate::Snapshot::flows`], the reversal
/// fields say whether it was reversed as of the page's seq.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FlowRecord {
    /// Its seq in the log.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// The encoded `fundflow.v1.Envelope`, byte for byte.
    #[prost(bytes = "vec", tag = "2")]
    pub envelope: Vec<u8>,
    /// The submitting partner.
    #[prost(string, tag = "3")]
    pub partner: String,
    /// `occurred_on` as a Julian day number (see [`FlowRecord::occurred_on`]).
    #[prost(int32, tag = "4")]
    pub occurred_on_day: i32,
    /// What it counts as: the position of its kind in `TotalKind::ALL` (see [`FlowRecord::kind`]).
    #[prost(uint32, tag = "5")]
    pub kind_index: u32,
    /// Its currency, an index into `fundflow_refdata::CURRENCIES`.
    #[prost(uint32, tag = "6")]
    pub currency: u32,
    /// The effective grant (a payment's is its pledge's id), or empty.
    #[prost(string, tag = "7")]
    pub grant: String,
    /// The effective sector (a payment inherits its pledge's), or empty.
    #[prost(string, tag = "8")]
    pub sector: String,
    /// The effective donor (a payment inherits its pledge's unless it names one), or empty.
    #[prost(string, tag = "9")]
    pub donor: String,
    /// Each allocation's recipient, a node index, in the event's order.
    #[prost(uint32, repeated, tag = "10")]
    pub nodes: Vec<u32>,
    /// Each allocation's USD equivalent as a decimal text, empty without a rate.
    #[prost(string, repeated, tag = "11")]
    pub usd_equivalents: Vec<String>,
    /// The seq of the reversal that undid it, 0 when not reversed (as of the read).
    #[prost(uint64, tag = "12")]
    pub reversed_seq: u64,
    /// The reversal's event id, when reversed.
    #[prost(string, tag = "13")]
    pub reversed_by: String,
    /// The reversal's reason, when reversed.
    #[prost(string, tag = "14")]
    pub reason: String,
}

impl FlowRecord {
    /// Its `occurred_on`.
    pub fn occurred_on(&self) -> Option<Date> {
        date_of(self.occurred_on_day)
    }

    /// What it counts as.
    pub fn kind(&self) -> Option<TotalKind> {
        TotalKind::ALL
            .get(usize::try_from(self.kind_index).ok()?)
            .copied()
    }

    /// Each allocation's recipient (`None` for an index this build does not know).
    pub fn recipients(&self) -> impl Iterator<Item = Option<Node>> + '_ {
        self.nodes
            .iter()
            .map(|n| u16::try_from(*n).ok().and_then(Node::from_index))
    }

    /// Each allocation's USD equivalent, `None` without a rate.
    pub fn allocation_usd(&self) -> impl Iterator<Item = Option<Decimal>> + '_ {
        self.usd_equivalents.iter().map(|text| text.parse().ok())
    }

    /// The sum of the allocations' USD equivalents; `None` when the flow had no rate.
    pub fn usd_equivalent(&self) -> Option<Decimal> {
        self.allocation_usd()
            .try_fold(Decimal::ZERO, |sum, usd| sum.checked_add(usd?))
    }

    /// Whether it was reversed (as of the read that returned it).
    pub fn is_reversed(&self) -> bool {
        self.reversed_seq != 0
    }

    /// The envelope, decoded.
    pub fn decode_envelope(&self) -> Result<v1::Envelope, ProjectorError> {
        v1::Envelope::decode(self.envelope.as_slice())
            .map_err(|_| unreadable("flow record's envelope"))
    }
}

/// Which flows a query returns by status, as of the page's seq.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FlowStatus {
    /// Not reversed.
    #[default]
    Applied,
    /// Reversed.
    Reversed,
    /// Both.
    All,
}

/// The filters of a flows query; `None` (or an empty filter) keeps everything. `node` keeps the
/// flows to that node or to any node inside it (a country: itself; an M49 area: itself and every
/// country and area in it); `from` and `to` are inclusive `occurred_on` dates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowQuery {
    /// What the flows count as.
    pub kind: Option<TotalKind>,
    /// The submitting partner.
    pub partner: Option<String>,
    /// A recipient, rolled up.
    pub node: Option<Node>,
    /// The effective grant.
    pub grant: Option<String>,
    /// The effective donor.
    pub donor: Option<String>,
    /// The effective sector.
    pub sector: Option<String>,
    /// The first day.
    pub from: Option<Date>,
    /// The last day.
    pub to: Option<Date>,
    /// Applied (the default), reversed, or both.
    pub status: FlowStatus,
}

/// A page cursor: the last flow returned, as (occurred_on, seq).
pub type FlowCursor = (Date, u64);

pub(super) fn pack_key(seq: u64) -> Vec<u8> {
    let mut key = vec![super::prefix::FLOWS];
    key.extend_from_slice(&(seq >> PACK_BITS).to_be_bytes());
    key
}

/// A pack: count u16, a table (seq, offset, length) sorted by seq, the encoded records.
pub(super) fn encode_pack(records: &[(u64, &[u8])]) -> Result<Vec<u8>, ProjectorError> {
    let count = u16::try_from(records.len())
        .map_err(|_| ProjectorError::corrupt("a pack of more records than seqs"))?;
    let body: usize = records.iter().map(|(_, r)| r.len()).sum();
    let mut out = Vec::with_capacity(2 + records.len() * PACK_ENTRY_BYTES + body);
    out.extend_from_slice(&count.to_be_bytes());
    let mut offset = 0usize;
    for (seq, record) in records {
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&u32_of(offset)?.to_be_bytes());
        out.extend_from_slice(&u32_of(record.len())?.to_be_bytes());
        offset += record.len();
    }
    for (_, record) in records {
        out.extend_from_slice(record);
    }
    Ok(out)
}

/// The (seq, encoded record) of a pack, in seq order.
pub(super) fn pack_entries(pack: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    let mut r = Reader::new(pack);
    let count = usize::from(r.u16()?);
    let mut table = Reader::new(r.take(count * PACK_ENTRY_BYTES)?);
    let body = r.take(pack.len() - 2 - count * PACK_ENTRY_BYTES)?;
    (0..count)
        .map(|_| {
            let seq = table.u64()?;
            let offset = usize::try_from(table.u32()?).ok()?;
            let len = usize::try_from(table.u32()?).ok()?;
            Some((seq, body.get(offset..offset.checked_add(len)?)?))
        })
        .collect()
}

/// The encoded record of `seq` in a pack.
pub(super) fn pack_find(pack: &[u8], seq: u64) -> Option<&[u8]> {
    let entries = pack_entries(pack)?;
    let at = entries.binary_search_by_key(&seq, |(s, _)| *s).ok()?;
    entries.get(at).map(|(_, r)| *r)
}

/// A reversal as stored beside its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reversal {
    pub target: u64,
    pub seq: u64,
    pub event_id: String,
    pub reason: String,
}

pub(super) fn reversal_group(target: u64) -> u64 {
    target >> REVERSAL_GROUP_BITS
}

pub(super) fn reversals_key(group: u64, batch_seq: u64) -> Vec<u8> {
    let mut key = vec![super::prefix::REVERSALS];
    key.extend_from_slice(&group.to_be_bytes());
    key.extend_from_slice(&batch_seq.to_be_bytes());
    key
}

pub(super) fn encode_reversals(reversals: &[&Reversal]) -> Result<Vec<u8>, ProjectorError> {
    let mut out = Vec::new();
    for r in reversals {
        out.extend_from_slice(&r.target.to_be_bytes());
        out.extend_from_slice(&r.seq.to_be_bytes());
        put_name(&mut out, r.event_id.as_bytes())?;
        put_text(&mut out, &r.reason)?;
    }
    Ok(out)
}

pub(super) fn decode_reversals(value: &[u8]) -> Option<Vec<Reversal>> {
    let mut r = Reader::new(value);
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(Reversal {
            target: r.u64()?,
            seq: r.u64()?,
            event_id: r.name_str()?.to_owned(),
            reason: r.text()?.to_owned(),
        });
    }
    Some(out)
}

/// The key prefix of an index's postings for one month (newest months first in key order).
pub(super) fn postings_block(tag: u8, month: Month) -> Vec<u8> {
    let mut key = vec![super::prefix::POSTINGS, tag];
    key.extend_from_slice(&(u32::MAX - month.0).to_be_bytes());
    key
}

/// One posting: day of the month, then seq, so that byte order is (day, seq) order.
pub(super) fn posting(day: u8, seq: u64) -> [u8; POSTING_BYTES] {
    let mut bytes = [0; POSTING_BYTES];
    bytes[0] = day;
    bytes[1..].copy_from_slice(&seq.to_be_bytes());
    bytes
}

fn posting_seq(p: &[u8]) -> u64 {
    p.get(1..POSTING_BYTES)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// Encodes a run of postings: per value (sorted by its bytes) its postings, newest first.
/// Layout: count u32; a directory of (value offset u32, value length u16, postings offset u32,
/// postings count u32); the values' bytes; the postings, 9 bytes each.
pub(super) fn encode_postings(
    values: &mut [(&[u8], Vec<[u8; POSTING_BYTES]>)],
) -> Result<Vec<u8>, ProjectorError> {
    values.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let names: usize = values.iter().map(|(v, _)| v.len()).sum();
    let postings: usize = values.iter().map(|(_, p)| p.len()).sum();
    let mut out = Vec::with_capacity(
        4 + values.len() * DIRECTORY_ENTRY_BYTES + names + postings * POSTING_BYTES,
    );
    out.extend_from_slice(&u32_of(values.len())?.to_be_bytes());
    let (mut name_at, mut posting_at) = (0usize, 0usize);
    for (value, list) in values.iter_mut() {
        list.sort_unstable_by(|a, b| b.cmp(a));
        out.extend_from_slice(&u32_of(name_at)?.to_be_bytes());
        let len = u16::try_from(value.len())
            .map_err(|_| ProjectorError::corrupt("an indexed value past 64 KiB"))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&u32_of(posting_at)?.to_be_bytes());
        out.extend_from_slice(&u32_of(list.len())?.to_be_bytes());
        name_at += value.len();
        posting_at += list.len();
    }
    for (value, _) in values.iter() {
        out.extend_from_slice(value);
    }
    for (_, list) in values.iter() {
        for p in list {
            out.extend_from_slice(p);
        }
    }
    Ok(out)
}

/// A posting run, read in place.
pub(super) struct PostingRun<'a> {
    directory: &'a [u8],
    names: &'a [u8],
    postings: &'a [u8],
}

impl<'a> PostingRun<'a> {
    pub(super) fn parse(run: &'a [u8]) -> Option<PostingRun<'a>> {
        let mut r = Reader::new(run);
        let count = usize::try_from(r.u32()?).ok()?;
        let directory = r.take(count.checked_mul(DIRECTORY_ENTRY_BYTES)?)?;
        let mut this = PostingRun {
            directory,
            names: &[],
            postings: &[],
        };
        let (names, postings) = (0..count).try_fold((0usize, 0usize), |(n, p), i| {
            let e = this.entry(i)?;
            Some((n + e.1.len(), p + e.3))
        })?;
        this.names = r.take(names)?;
        this.postings = r.take(postings.checked_mul(POSTING_BYTES)?)?;
        r.is_empty().then_some(this)
    }

    /// Directory entry `i`: (value offset, value length as a range, postings offset, count).
    fn entry(&self, i: usize) -> Option<(usize, std::ops::Range<usize>, usize, usize)> {
        let at = i * DIRECTORY_ENTRY_BYTES;
        let mut r = Reader::new(self.directory.get(at..at + DIRECTORY_ENTRY_BYTES)?);
        let offset = usize::try_from(r.u32()?).ok()?;
        let len = usize::from(r.u16()?);
        let postings = usize::try_from(r.u32()?).ok()?;
        let count = usize::try_from(r.u32()?).ok()?;
        Some((offset, offset..offset + len, postings, count))
    }

    fn len(&self) -> usize {
        self.directory.len() / DIRECTORY_ENTRY_BYTES
    }

    fn value(&self, i: usize) -> Option<(&'a [u8], &'a [u8])> {
        let (_, name, at, count) = self.entry(i)?;
        let name = self.names.get(name)?;
        let postings = self
            .postings
            .get(at * POSTING_BYTES..(at + count) * POSTING_BYTES)?;
        Some((name, postings))
    }

    /// The postings of `value` (9 bytes each, newest first); empty when it has none here.
    pub(super) fn lookup(&self, value: &[u8]) -> Option<&'a [u8]> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (name, postings) = self.value(mid)?;
            match name.cmp(value) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(postings),
            }
        }
        Some(&[])
    }

    /// Every (value, postings).
    pub(super) fn values(&self) -> impl Iterator<Item = Option<(&'a [u8], &'a [u8])>> + '_ {
        (0..self.len()).map(|i| self.value(i))
    }
}

/// Encodes postings as the pieces of one run: each a posting run of its own of about
/// `PIECE_BYTES` at most (a value whose list is longer is split over pieces; a reader merges
/// the lists of all runs of a month anyway).
pub(super) fn encode_posting_pieces(
    values: &mut [(&[u8], Vec<[u8; POSTING_BYTES]>)],
) -> Result<Pieces, ProjectorError> {
    values.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut pieces = Vec::new();
    let mut piece: Vec<(&[u8], Vec<[u8; POSTING_BYTES]>)> = Vec::new();
    let mut size = 4;
    for (value, list) in values.iter_mut() {
        list.sort_unstable_by(|a, b| b.cmp(a));
        let mut rest: &[[u8; POSTING_BYTES]] = list;
        while !rest.is_empty() {
            let overhead = DIRECTORY_ENTRY_BYTES + value.len();
            let room = PIECE_BYTES.saturating_sub(size + overhead) / POSTING_BYTES;
            let take = room.clamp(1, rest.len());
            let (now, later) = rest.split_at(take);
            piece.push((value, now.to_vec()));
            size += overhead + take * POSTING_BYTES;
            rest = later;
            if size >= PIECE_BYTES - DIRECTORY_ENTRY_BYTES - POSTING_BYTES {
                pieces.push(encode_postings(&mut piece)?);
                piece.clear();
                size = 4;
            }
        }
    }
    if !piece.is_empty() {
        pieces.push(encode_postings(&mut piece)?);
    }
    Ok(pieces)
}

/// Merges posting runs into one, as its pieces (postings are only ever added, so nothing
/// cancels).
pub(super) fn merge_posting_runs(runs: &[&[u8]]) -> Result<Pieces, ProjectorError> {
    let mut merged: BTreeMap<&[u8], Vec<[u8; POSTING_BYTES]>> = BTreeMap::new();
    for run in runs {
        let run = PostingRun::parse(run).ok_or_else(|| unreadable("posting run"))?;
        for value in run.values() {
            let (name, postings) = value.ok_or_else(|| unreadable("posting run"))?;
            let list = merged.entry(name).or_default();
            for p in postings.chunks_exact(POSTING_BYTES) {
                let mut bytes = [0; POSTING_BYTES];
                bytes.copy_from_slice(p);
                list.push(bytes);
            }
        }
    }
    let mut values: Vec<_> = merged.into_iter().collect();
    encode_posting_pieces(&mut values)
}

/// The index a query walks and the value it looks up there: the most selective filter given.
fn chosen_index(query: &FlowQuery) -> (u8, Vec<u8>) {
    fn given(filter: &Option<String>) -> Option<&[u8]> {
        filter
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(str::as_bytes)
    }
    if query.status == FlowStatus::Reversed {
        return (tag::REVERSED, Vec::new());
    }
    if let Some(node) = query.node {
        // Every flow rolls up to World: its postings are the `all` index's.
        if node == Node::world() {
            return (tag::ALL, Vec::new());
        }
        return (tag::NODE, node.index().to_be_bytes().to_vec());
    }
    if let Some(grant) = given(&query.grant) {
        return (tag::GRANT, grant.to_vec());
    }
    if let Some(partner) = given(&query.partner) {
        return (tag::PARTNER, partner.to_vec());
    }
    if let Some(donor) = given(&query.donor) {
        return (tag::DONOR, donor.to_vec());
    }
    if let Some(sector) = given(&query.sector) {
        return (tag::SECTOR, sector.to_vec());
    }
    if let Some(kind) = query.kind {
        return (tag::KIND, vec![kind_byte(kind)]);
    }
    (tag::ALL, Vec::new())
}

/// The nodes a flow is posted under: every node of every allocation's roll-up chain, once,
/// except World (whose postings would repeat the `all` index).
pub(super) fn posted_nodes(nodes: impl Iterator<Item = Node>, out: &mut Vec<Node>) {
    out.clear();
    let world = Node::world();
    for node in nodes {
        for up in node.rollup() {
            if up != world && !out.contains(&up) {
                out.push(up);
            }
        }
    }
}

/// Reads records and reversals for one query, each pack and group once.
struct Fetcher<'t> {
    tree: &'t sled::Tree,
    as_of: u64,
    packs: FxHashMap<u64, Option<sled::IVec>>,
    reversals: FxHashMap<u64, FxHashMap<u64, Reversal>>,
}

impl Fetcher<'_> {
    fn record(&mut self, seq: u64) -> Result<FlowRecord, ProjectorError> {
        let storage = |e| ProjectorError::storage("cannot read the flows", e);
        let pack = match self.packs.get(&(seq >> PACK_BITS)) {
            Some(pack) => pack.clone(),
            None => {
                let pack = self.tree.get(pack_key(seq)).map_err(storage)?;
                self.packs.insert(seq >> PACK_BITS, pack.clone());
                pack
            }
        };
        let bytes = pack
            .as_deref()
            .and_then(|pack| pack_find(pack, seq))
            .ok_or_else(|| {
                ProjectorError::corrupt(format!("flow {seq} is posted but has no record"))
            })?;
        let mut record = FlowRecord::decode(bytes).map_err(|_| unreadable("flow record"))?;
        let group = reversal_group(seq);
        if !self.reversals.contains_key(&group) {
            let mut found = FxHashMap::default();
            let mut prefix = vec![super::prefix::REVERSALS];
            prefix.extend_from_slice(&group.to_be_bytes());
            for entry in self.tree.scan_prefix(prefix) {
                let (_, value) = entry.map_err(storage)?;
                for r in decode_reversals(&value).ok_or_else(|| unreadable("reversal"))? {
                    if r.seq <= self.as_of {
                        found.insert(r.target, r);
                    }
                }
            }
            self.reversals.insert(group, found);
        }
        if let Some(r) = self.reversals.get(&group).and_then(|g| g.get(&seq)) {
            record.reversed_seq = r.seq;
            record.reversed_by.clone_from(&r.event_id);
            record.reason.clone_from(&r.reason);
        }
        Ok(record)
    }
}

fn keeps(query: &FlowQuery, index: u8, record: &FlowRecord) -> bool {
    let same = |filter: &Option<String>, value: &str| filter.as_deref().is_none_or(|f| f == value);
    let status = match query.status {
        FlowStatus::Applied => !record.is_reversed(),
        FlowStatus::Reversed => record.is_reversed(),
        FlowStatus::All => true,
    };
    let node = match query.node {
        Some(node) if index != tag::NODE => record
            .recipients()
            .flatten()
            .any(|r| r.rollup().any(|up| up == node)),
        _ => true,
    };
    let day = record.occurred_on();
    status
        && node
        && query.kind.is_none_or(|k| record.kind() == Some(k))
        && same(&query.partner, &record.partner)
        && same(&query.grant, &record.grant)
        && same(&query.donor, &record.donor)
        && same(&query.sector, &record.sector)
        && query.from.is_none_or(|from| day.is_some_and(|d| d >= from))
        && query.to.is_none_or(|to| day.is_some_and(|d| d <= to))
}

/// A page of flows (see [`crate::Snapshot::flows`]).
pub(super) fn flows(
    tree: &sled::Tree,
    query: &FlowQuery,
    as_of: u64,
    after: Option<FlowCursor>,
    limit: usize,
) -> Result<(Vec<FlowRecord>, Option<FlowCursor>), ProjectorError> {
    let storage = |e| ProjectorError::storage("cannot read the flows", e);
    let (index, value) = chosen_index(query);
    let mut newest = query.to.map(Month::of);
    if let Some((day, _)) = after {
        newest = Some(newest.map_or(Month::of(day), |m| m.min(Month::of(day))));
    }
    let oldest = query.from.map(Month::of);
    let start = match newest {
        Some(month) => postings_block(index, month),
        None => vec![super::prefix::POSTINGS, index],
    };
    let end = match oldest {
        Some(month) if month.0 > 0 => postings_block(index, Month(month.0 - 1)),
        _ => vec![super::prefix::POSTINGS, index + 1],
    };
    let mut fetcher = Fetcher {
        tree,
        as_of,
        packs: FxHashMap::default(),
        reversals: FxHashMap::default(),
    };
    let mut found: Vec<FlowRecord> = Vec::new();
    let mut month_runs: Vec<sled::IVec> = Vec::new();
    let mut month_key: Option<sled::IVec> = None;
    let mut entries = tree.range(start..end);
    loop {
        let entry = entries.next().transpose().map_err(storage)?;
        let same_month = match (&entry, &month_key) {
            (Some((key, _)), Some(current)) => key.get(..6) == current.get(..6),
            _ => false,
        };
        if !same_month {
            if let Some(key) = month_key.take() {
                let month = key
                    .get(2..6)
                    .and_then(|b| b.try_into().ok())
                    .map(|b| Month(u32::MAX - u32::from_be_bytes(b)))
                    .ok_or_else(|| unreadable("posting key"))?;
                let runs: Vec<&[u8]> = month_runs.iter().map(|r| r.as_ref()).collect();
                let done = walk_month(
                    month,
                    &runs,
                    &value,
                    query,
                    index,
                    after,
                    limit,
                    &mut fetcher,
                    &mut found,
                )?;
                month_runs.clear();
                if done {
                    break;
                }
            }
            match &entry {
                Some((key, _)) => month_key = Some(key.clone()),
                None => break,
            }
        }
        if let Some((_, run)) = entry {
            month_runs.push(run);
        }
    }
    let next = if found.len() > limit {
        found.truncate(limit);
        found.last().and_then(|r| Some((r.occurred_on()?, r.seq)))
    } else {
        None
    };
    Ok((found, next))
}

/// Walks one month's postings of `value`, newest first, keeping the flows the query keeps, until
/// `limit + 1` are found (the one past the page says that more follow). Returns whether the
/// walk is done.
#[expect(
    clippy::too_many_arguments,
    reason = "one step of `flows`, sharing its state"
)]
fn walk_month(
    month: Month,
    runs: &[&[u8]],
    value: &[u8],
    query: &FlowQuery,
    index: u8,
    after: Option<FlowCursor>,
    limit: usize,
    fetcher: &mut Fetcher<'_>,
    found: &mut Vec<FlowRecord>,
) -> Result<bool, ProjectorError> {
    let in_month = |d: Date| Month::of(d) == month;
    // Postings below `upper` (exclusive) and from day `lowest` on.
    let mut upper: Option<[u8; POSTING_BYTES]> = None;
    if let Some(to) = query.to.filter(|d| in_month(*d)) {
        upper = Some(posting(to.day() + 1, 0));
    }
    if let Some((day, seq)) = after.filter(|(d, _)| in_month(*d)) {
        let cursor = posting(day.day(), seq);
        upper = Some(upper.map_or(cursor, |u| u.min(cursor)));
    }
    let lowest = query.from.filter(|d| in_month(*d)).map_or(0, |d| d.day());
    let mut heads: Vec<&[u8]> = Vec::with_capacity(runs.len());
    for run in runs {
        let run = PostingRun::parse(run).ok_or_else(|| unreadable("posting run"))?;
        let list = run.lookup(value).ok_or_else(|| unreadable("posting run"))?;
        let count = list.len() / POSTING_BYTES;
        // Lists are newest first: skip what is not below `upper`.
        let skip = match &upper {
            Some(upper) => partition(count, |i| {
                &list[i * POSTING_BYTES..(i + 1) * POSTING_BYTES] >= upper.as_slice()
            }),
            None => 0,
        };
        heads.push(&list[skip * POSTING_BYTES..]);
    }
    loop {
        // The newest head of all lists (a handful: one per run of the month).
        let Some((at, _)) = heads
            .iter()
            .enumerate()
            .filter(|(_, h)| h.len() >= POSTING_BYTES)
            .max_by(|a, b| a.1[..POSTING_BYTES].cmp(&b.1[..POSTING_BYTES]))
        else {
            return Ok(false);
        };
        let head = heads[at];
        let (p, rest) = head.split_at(POSTING_BYTES);
        heads[at] = rest;
        if p[0] < lowest {
            return Ok(true); // Older than `from`: nothing further back counts.
        }
        let seq = posting_seq(p);
        if seq > fetcher.as_of {
            continue;
        }
        let record = fetcher.record(seq)?;
        if keeps(query, index, &record) {
            found.push(record);
            if found.len() > limit {
                return Ok(true);
            }
        }
    }
}

/// The number of leading items for which `pred` holds (it holds for a prefix).
fn partition(len: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_reversals_and_postings_round_trip() {
        let records: Vec<(u64, Vec<u8>)> = (0..5u64)
            .map(|i| {
                (
                    64 + i * 3,
                    vec![u8::try_from(i).unwrap_or(0); usize::try_from(i).unwrap_or(0) * 7],
                )
            })
            .collect();
        let refs: Vec<(u64, &[u8])> = records.iter().map(|(s, r)| (*s, r.as_slice())).collect();
        let pack = encode_pack(&refs).unwrap();
        assert_eq!(pack_entries(&pack).unwrap(), refs);
        assert_eq!(pack_find(&pack, 70), Some(records[2].1.as_slice()));
        assert_eq!(pack_find(&pack, 71), None);
        assert!(pack_entries(&pack[..pack.len() - 1]).is_none());

        let reversal = Reversal {
            target: 9,
            seq: 12,
            event_id: "0190-...".into(),
            reason: "entered twice".into(),
        };
        let value = encode_reversals(&[&reversal, &reversal]).unwrap();
        assert_eq!(
            decode_reversals(&value).unwrap(),
            vec![reversal.clone(), reversal]
        );
        assert!(decode_reversals(&value[..value.len() - 1]).is_none());

        let mut values = vec![
            (
                b"kes".as_slice(),
                vec![posting(3, 10), posting(9, 2), posting(3, 11)],
            ),
            (b"".as_slice(), vec![posting(1, 1)]),
            (b"\x00\x07".as_slice(), vec![posting(31, u64::MAX)]),
        ];
        let run = encode_postings(&mut values).unwrap();
        let parsed = PostingRun::parse(&run).unwrap();
        assert_eq!(
            parsed.lookup(b"kes").unwrap(),
            [posting(9, 2), posting(3, 11), posting(3, 10)]
                .concat()
                .as_slice()
        );
        assert_eq!(
            parsed.lookup(b"\x00\x07").unwrap(),
            posting(31, u64::MAX).as_slice()
        );
        assert_eq!(parsed.lookup(b"ke").unwrap(), b"");
        assert!(PostingRun::parse(&run[..run.len() - 1]).is_none());
        let other = encode_postings(&mut [(b"kes".as_slice(), vec![posting(5, 20)])]).unwrap();
        let merged = merge_posting_runs(&[&run, &other]).unwrap();
        assert_eq!(merged.len(), 1);
        let merged = PostingRun::parse(&merged[0]).unwrap();
        assert_eq!(
            merged.lookup(b"kes").unwrap(),
            [
                posting(9, 2),
                posting(5, 20),
                posting(3, 11),
                posting(3, 10)
            ]
            .concat()
            .as_slice()
        );
        assert_eq!(merged.lookup(b"").unwrap(), posting(1, 1).as_slice());
    }

    #[test]
    fn long_posting_lists_are_cut_into_pieces_that_hold_every_posting() {
        let all: Vec<_> = (0..10_000u64)
            .map(|seq| posting(1 + (seq % 28) as u8, seq))
            .collect();
        let few = vec![posting(2, 5), posting(7, 9)];
        let mut values = vec![
            (b"a".as_slice(), all.clone()),
            (b"b".as_slice(), few.clone()),
        ];
        let pieces = encode_posting_pieces(&mut values).unwrap();
        assert!(pieces.len() >= 3, "{} pieces", pieces.len());
        let mut found: BTreeMap<&[u8], Vec<[u8; POSTING_BYTES]>> = BTreeMap::new();
        for piece in &pieces {
            assert!(piece.len() <= PIECE_BYTES, "{}", piece.len());
            let run = PostingRun::parse(piece).unwrap();
            for name in [b"a".as_slice(), b"b"] {
                let list = run.lookup(name).unwrap();
                let chunks = list.chunks_exact(POSTING_BYTES);
                let entry = found.entry(name).or_default();
                entry.extend(chunks.map(|p| <[u8; POSTING_BYTES]>::try_from(p).unwrap()));
            }
        }
        let (mut want_all, mut want_few) = (all, few);
        want_all.sort_unstable_by(|a, b| b.cmp(a));
        want_few.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(
            found[b"a".as_slice()],
            want_all,
            "newest first, across pieces"
        );
        assert_eq!(found[b"b".as_slice()], want_few);
    }

    #[test]
    fn flow_records_round_trip() {
        let record = FlowRecord {
            seq: 7,
            envelope: vec![1, 2, 3],
            partner: "icshp".into(),
            occurred_on_day: 2_459_000,
            kind_index: 3,
            currency: 4,
            grant: "g".into(),
            sector: "health".into(),
            donor: "d".into(),
            nodes: vec![1, 300],
            usd_equivalents: vec!["1.50".into(), String::new()],
            reversed_seq: 0,
            reversed_by: String::new(),
            reason: String::new(),
        };
        let bytes = record.encode_to_vec();
        assert_eq!(FlowRecord::decode(bytes.as_slice()).unwrap(), record);
        assert_eq!(record.kind(), Some(TotalKind::InKind));
        assert_eq!(record.usd_equivalent(), None);
        assert!(record.occurred_on().is_some());
    }
}
