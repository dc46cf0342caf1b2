//! The fold: a pure, deterministic state machine from the log's records to exact totals.
//!
//! [`Ledger::apply`] takes a sequence number and the bytes of one log record and returns an
//! [`Outcome`]: `Applied`, or `Rejected` with a code. It never panics, never reads the clock, and
//! either applies an event completely or changes nothing but the rejection's own bookkeeping (the
//! counts, the rejection chain, the list of rejections and, for an event with a valid identity,
//! that identity, so that a resend is told from a new event). Replaying the same records
//! therefore gives the same state, totals and digests on every machine.
//!
//! Each record goes through three steps, each in its own file:
//! - [`identity`]: decode the envelope, check its identity, and refuse a repeat of a known one
//!   (`duplicate` or `event_id_conflict`, told apart by the content fingerprint);
//! - [`decide`] (`&self`): every rule, the overflow check included, gives a verdict and, for an
//!   event that applies, a [`decide::Change`] with the new values of every key it touches;
//! - [`evolve`] (`&mut self`): writes the change, which cannot fail, and says what it touched.
//!
//! What is kept, and why:
//! - totals per (recipient, kind, currency) as allocated, where a recipient is a country or an
//!   M49 area; every roll-up to the areas above is summed on read ([`Ledger::totals`]), so an
//!   allocation costs one map update, not one per level;
//! - in-kind quantities per (recipient, item, unit), kept and rolled up the same way;
//! - pledges with pledged and paid amounts per recipient, to refuse over-payments;
//! - every event's identity, content fingerprint and state, to refuse repeats and to reverse;
//! - the effect of every applied event, so a reversal undoes exactly what the event did.

mod canonical;
mod decide;
mod dense_map;
mod effects;
mod evolve;
mod identity;

use std::collections::BTreeMap;

use fundflow_refdata::CurrencyIndex;
use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use time::Date;

use crate::digest::{chain_log, chain_outcome, outcome_code};
use crate::event::Event;
use crate::interner::Interner;
use crate::limits;
use crate::model::{DirectQuantity, ModelState, PledgeRow, StateCell, StateQuantityCell};
use crate::node::Node;
use crate::reject::{RejectCode, Rejection};
use crate::values::{
    CellBlock, CellKey, CellLevel, CellRef, Checkpoint, DayOutcomes, Digest32, Month, Outcome,
    PledgeLine, QuantityCellKey, QuantityCellRef, QuantityKey, RejectedEvent, Total, TotalKey,
    TotalKind, coarsen, currency_code,
};

pub use evolve::Touched;
use identity::{EntryState, EventEntry, EventKey};

/// What an applied event did, kept so that its reversal can undo exactly that.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Effect {
    kind: TotalKind,
    #[serde(with = "crate::snapshot::currency")]
    currency: CurrencyIndex,
    /// One per allocation, in the event's order.
    parts: Box<[Part]>,
    /// One per in-kind item, in the event's order.
    items: Box<[ItemPart]>,
    pledge: Option<PledgeLink>,
    /// The cells it counts in.
    dims: EffectDims,
}

/// Where an effect counts besides its recipients: its cell block and the cell's other keys.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct EffectDims {
    block: CellBlock,
    day: Date,
    grant: u32,
    sector: u32,
    donor: u32,
}

/// One allocation's share of a total.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Part {
    node: Node,
    #[serde(with = "crate::snapshot::packed_decimal")]
    value: Decimal,
    #[serde(with = "crate::snapshot::packed_decimal_option")]
    usd: Option<Decimal>,
}

/// One in-kind item of an allocation, with interned names.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct ItemPart {
    node: Node,
    item: u32,
    unit: u32,
    #[serde(with = "crate::snapshot::packed_decimal")]
    quantity: Decimal,
}

/// How an effect is tied to a pledge, by its index in `Ledger::pledges`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum PledgeLink {
    Recorded(u32),
    Paid(u32),
}

/// A pledge's state: what was pledged and paid per recipient.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PledgeState {
    partner: u32,
    /// The pledge id, an interned label: it is the grant its flows count under, too.
    pledge_id: u32,
    #[serde(with = "crate::snapshot::currency")]
    currency: CurrencyIndex,
    lines: Vec<PledgeLine>,
    /// Applied, unreversed payments against the pledge; a pledge with any cannot be reversed.
    payments_open: u32,
    /// False once reversed; the id may then be pledged again.
    active: bool,
    /// Interned labels.
    donor: u32,
    sector: u32,
    occurred_on: Date,
    /// The pledge's USD rate, if it had one (always 1 for USD).
    #[serde(with = "crate::snapshot::decimal_option")]
    usd_rate: Option<Decimal>,
    /// The sum of its allocations' USD equivalents, with a rate.
    #[serde(with = "crate::snapshot::decimal_option")]
    pledged_usd: Option<Decimal>,
    /// The sum of the USD equivalents of its converted payments.
    #[serde(with = "crate::snapshot::decimal")]
    paid_usd: Decimal,
    /// Its applied payments that came without a USD rate.
    payments_unconverted: u32,
}

/// A pledge as the read side sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PledgeView<'a> {
    /// The partner that recorded it.
    pub partner_id: &'a str,
    /// The partner's identifier.
    pub pledge_id: &'a str,
    /// Its currency code.
    pub currency: &'static str,
    /// Per recipient.
    pub lines: &'a [PledgeLine],
}

/// Where a record came from, for checks that need more than its bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Source<'a> {
    /// The partner token of the log subject the record was read from, if the log has subjects:
    /// an envelope naming another partner is rejected (`partner_mismatch`).
    pub subject_partner: Option<&'a str>,
}

/// The ledger's state and its fold. See the module documentation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ledger {
    last_seq: u64,
    /// SHA-256 chain over (seq, bytes) of every record, in order: the log digest.
    log_digest: Digest32,
    /// SHA-256 chain over (seq, code) of every rejected record: with the counts, it binds every
    /// record's outcome into the model digest (a record not in the chain was applied) without a
    /// hash per applied event.
    rejected_digest: Digest32,
    applied_count: u64,
    rejected_count: u64,
    /// Totals per recipient as allocated; every roll-up is derived from these on read, so an
    /// allocation costs one map update, not one per level.
    direct_totals: FxHashMap<TotalKey, Total>,
    /// In-kind quantities per recipient as allocated, rolled up on read likewise.
    #[serde(with = "crate::snapshot::decimal_map")]
    direct_quantities: FxHashMap<QuantityKey, Decimal>,
    /// Every event with a valid identity, applied or not: what tells a repeat from a new event,
    /// and what a reversal finds its target by.
    events: dense_map::DenseMap<EventKey, EventEntry>,
    /// The effect of every applied event, packed, by the index in its `EntryState::Applied`
    /// (a reversed event's stays, unread).
    effects: effects::Effects,
    /// Every pledge ever recorded, by index; a reversed one stays, inactive, so that indexes in
    /// effects stay valid.
    #[serde(with = "crate::snapshot::presized_vec")]
    pledges: Vec<PledgeState>,
    /// Active pledges by (partner, pledge id as an interned label) into `pledges`.
    #[serde(with = "crate::snapshot::presized_map")]
    pledge_index: FxHashMap<(u32, u32), u32>,
    /// Partner ids, interned so that an event key is 24 bytes.
    partners: Interner,
    /// In-kind item and unit names, interned so that a quantity key is small.
    item_names: Interner,
    unit_names: Interner,
    /// Grant, sector and donor names of cells (one namespace; "" is a label too).
    labels: Interner,
    /// Every applied flow summed at the finest grain, by the block of its partner and month:
    /// what every total by partner, period, grant, sector and donor is read from.
    cells: FxHashMap<CellBlock, dense_map::DenseMap<CellKey, Total>>,
    /// In-kind quantities at the finest grain, likewise.
    #[serde(with = "crate::snapshot::nested_decimal_map")]
    quantity_cells: FxHashMap<CellBlock, FxHashMap<QuantityCellKey, Decimal>>,
    /// Records applied and rejected by their `occurred_on`.
    day_outcomes: BTreeMap<Date, DayOutcomes>,
    /// Parallel funding by the grant it names (interned label) and currency, for the pledge
    /// book's leverage.
    #[serde(with = "crate::snapshot::by_id_and_currency")]
    grant_funding: FxHashMap<(u32, CurrencyIndex), Total>,
    rejected: Vec<RejectedEvent>,
    /// Reused buffer for the content fingerprint's encoding.
    #[serde(skip)]
    scratch: Vec<u8>,
}

/// The index the next element of a collection of `len` gets. Indexes are `u32` to keep the
/// fold's keys and effects small: 2^32 events would need terabytes of memory before this is
/// reached, so a longer collection is a bug, not an input.
pub(crate) fn next_index(len: usize) -> u32 {
    #[expect(
        clippy::expect_used,
        reason = "the fold runs out of memory long before 2^32 events, pledges or names"
    )]
    u32::try_from(len).expect("fewer than 2^32 elements")
}

impl Ledger {
    /// An empty ledger, the state before sequence 1.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// An empty ledger with room for about `events` events, for callers that know the log's
    /// length (a replay, a projector at start): the event index and the effects never rehash or
    /// move while it fills. A hint only: more events just grow the maps as usual.
    pub fn with_capacity(events: usize) -> Ledger {
        let events = events.min(limits::CAPACITY_HINT_MAX);
        let mut ledger = Ledger::default();
        ledger.events.reserve(events);
        ledger.effects.reserve(events);
        ledger
    }

    /// Applies the record at `seq`. See [`Ledger::apply_from`].
    pub fn apply(&mut self, seq: u64, bytes: &[u8]) -> Outcome {
        self.apply_from(seq, bytes, Source::default())
    }

    /// Applies the record at `seq` read from `source`. Sequence numbers must increase (gaps are
    /// allowed); a record whose `seq` does not is refused with `sequence_not_increasing` and
    /// changes nothing, not even the digests, since it is a caller's mistake, not log content.
    pub fn apply_from(&mut self, seq: u64, bytes: &[u8], source: Source<'_>) -> Outcome {
        self.apply_tracked(seq, bytes, source).0
    }

    /// [`Ledger::apply_from`], and for an applied event what it touched: the keys of the direct
    /// totals and quantities and the pledge it changed, for a read model that writes only what
    /// changed.
    pub fn apply_tracked(
        &mut self,
        seq: u64,
        bytes: &[u8],
        source: Source<'_>,
    ) -> (Outcome, Option<Touched<'_>>) {
        if seq <= self.last_seq {
            let rejection = Rejection::new(
                RejectCode::SequenceNotIncreasing,
                "",
                format_args!(
                    "seq {seq} is not after the last applied seq {}",
                    self.last_seq
                ),
            );
            return (Outcome::Rejected(rejection), None);
        }
        let seen = self.applied_count + self.rejected_count;
        self.last_seq = seq;
        self.log_digest = chain_log(&self.log_digest, seq, bytes);
        let mut envelope = match identity::read(seq, bytes, source) {
            Ok(envelope) => envelope,
            Err((rejected, day)) => return (self.reject(rejected, day), None),
        };
        let day = crate::event::parse_date(&envelope.occurred_on);
        let identity = match self.identify(&mut envelope) {
            Ok(identity) => identity,
            Err(rejection) => {
                let rejected = identity::rejected(seq, &envelope, rejection);
                return (self.reject(rejected, day), None);
            }
        };
        let decided =
            Event::from_envelope(&envelope).and_then(|event| self.decide(identity.partner, &event));
        match decided {
            Err(rejection) => {
                self.remember(seq, &envelope.partner_id, &identity, EntryState::Rejected);
                let rejected = identity::rejected(seq, &envelope, rejection);
                let outcome = self.reject(rejected, day);
                debug_assert_eq!(self.applied_count + self.rejected_count, seen + 1);
                (outcome, None)
            }
            Ok(change) => {
                self.applied_count += 1;
                debug_assert_eq!(self.applied_count + self.rejected_count, seen + 1);
                // An applied event's date passed the gate.
                debug_assert!(day.is_some());
                if let Some(day) = day {
                    self.day_outcomes.entry(day).or_default().applied += 1;
                }
                let touched = self.evolve(seq, &envelope.partner_id, &identity, change);
                (Outcome::Applied, Some(touched))
            }
        }
    }

    /// Counts and chains a rejected record (under its day, when it has a readable one) and
    /// keeps it for reports.
    fn reject(&mut self, rejected: RejectedEvent, day: Option<Date>) -> Outcome {
        if let Some(day) = day {
            self.day_outcomes.entry(day).or_default().rejected += 1;
        }
        self.rejected_count += 1;
        let code = outcome_code(rejected.rejection.code);
        self.rejected_digest = chain_outcome(&self.rejected_digest, rejected.seq, code);
        let outcome = Outcome::Rejected(rejected.rejection.clone());
        self.rejected.push(rejected);
        outcome
    }

    /// The sequence number of the last record applied (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The log digest: a SHA-256 chain over (seq, bytes) of every record applied.
    pub fn log_digest(&self) -> Digest32 {
        self.log_digest
    }

    /// How many records were applied and rejected.
    pub fn counts(&self) -> (u64, u64) {
        (self.applied_count, self.rejected_count)
    }

    /// What was allocated directly to each recipient, before any roll-up; in no particular order.
    pub fn direct_totals(&self) -> impl Iterator<Item = (&TotalKey, &Total)> {
        self.direct_totals.iter()
    }

    /// What was given directly to each recipient in kind, with item and unit names.
    pub fn direct_quantities(&self) -> impl Iterator<Item = DirectQuantity> + '_ {
        self.direct_quantities.iter().map(|(k, q)| DirectQuantity {
            node: k.node,
            item: self.item_name(k.item).to_owned(),
            unit: self.unit_name(k.unit).to_owned(),
            quantity: *q,
        })
    }

    /// Every nonzero total at every level: each recipient's direct totals added to the recipient
    /// and to every M49 area above it. The cost is bounded by the reference data (countries ×
    /// kinds × currencies), never by the number of events.
    pub fn totals(&self) -> FxHashMap<TotalKey, Total> {
        crate::model::roll_up(
            self.direct_totals.iter().map(|(k, t)| (*k, *t)),
            |k, node| TotalKey { node, ..k },
            |k| k.node,
            |a, b| a.saturating_add(&b),
        )
    }

    /// One total at any level, if nonzero.
    pub fn total(&self, key: &TotalKey) -> Option<Total> {
        let mut sum: Option<Total> = None;
        for (direct, total) in &self.direct_totals {
            if direct.kind == key.kind
                && direct.currency == key.currency
                && direct.node.rollup().any(|n| n == key.node)
            {
                sum = Some(sum.unwrap_or_default().saturating_add(total));
            }
        }
        sum
    }

    /// Every nonzero in-kind quantity at every level, rolled up as [`Ledger::totals`] is.
    pub fn quantities(&self) -> FxHashMap<QuantityKey, Decimal> {
        crate::model::roll_up(
            self.direct_quantities.iter().map(|(k, q)| (*k, *q)),
            |k, node| QuantityKey { node, ..k },
            |k| k.node,
            Decimal::saturating_add,
        )
    }

    /// The name of an interned item id.
    pub fn item_name(&self, id: u32) -> &str {
        self.item_names.name(id)
    }

    /// The name of an interned unit id.
    pub fn unit_name(&self, id: u32) -> &str {
        self.unit_names.name(id)
    }

    /// The quantity of `item` in `unit` at `node` (any level), if any.
    pub fn quantity(&self, node: Node, item: &str, unit: &str) -> Option<Decimal> {
        let (item, unit) = (self.item_names.get(item)?, self.unit_names.get(unit)?);
        let key = QuantityKey { node, item, unit };
        self.quantities().get(&key).copied()
    }

    /// Every active pledge, in no particular order.
    pub fn pledges(&self) -> impl Iterator<Item = PledgeView<'_>> {
        self.pledges
            .iter()
            .filter(|p| p.active)
            .map(|p| self.pledge_view(p))
    }

    /// A partner's active pledge.
    pub fn pledge(&self, partner_id: &str, pledge_id: &str) -> Option<PledgeView<'_>> {
        let index = self.active_pledge(self.partners.get(partner_id), pledge_id)?;
        self.pledges
            .get(index as usize)
            .map(|p| self.pledge_view(p))
    }

    /// A partner's active pledge row, as the model and read models store it.
    pub fn pledge_row(&self, partner_id: &str, pledge_id: &str) -> Option<PledgeRow> {
        let index = self.active_pledge(self.partners.get(partner_id), pledge_id)?;
        self.pledges.get(index as usize).map(|p| self.row_of(p))
    }

    /// The index of a partner's active pledge; `None` for a partner never seen.
    fn active_pledge(&self, partner: Option<u32>, pledge_id: &str) -> Option<u32> {
        let key = (partner?, self.labels.get(pledge_id)?);
        self.pledge_index.get(&key).copied()
    }

    fn pledge_view<'a>(&'a self, p: &'a PledgeState) -> PledgeView<'a> {
        PledgeView {
            partner_id: self.partners.name(p.partner),
            pledge_id: self.labels.name(p.pledge_id),
            currency: currency_code(p.currency),
            lines: &p.lines,
        }
    }

    /// Every rejected record since [`Ledger::forget_rejected`] (or since the start), in log
    /// order.
    pub fn rejected(&self) -> &[RejectedEvent] {
        &self.rejected
    }

    /// Drops the rejected records kept for [`Ledger::rejected`]; their counts and the rejection
    /// chain stay, so no digest moves. A projector that has stored a batch's rejections calls
    /// it, so that the list, which grows with every rejected record (a record resent a million
    /// times is a million rejections), does not grow with the log.
    pub fn forget_rejected(&mut self) {
        self.rejected = Vec::new();
    }

    /// Where the fold stands: what a read model stores with its totals, so that a restart can
    /// check it against a refold of the log.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            last_seq: self.last_seq,
            log_digest: self.log_digest,
            applied: self.applied_count,
            rejected: self.rejected_count,
            rejected_digest: self.rejected_digest,
        }
    }

    /// The reportable state, detached from the fold's indexes (copies everything).
    pub fn model_state(&self) -> ModelState {
        ModelState {
            checkpoint: self.checkpoint(),
            direct_totals: self.direct_totals.iter().map(|(k, t)| (*k, *t)).collect(),
            direct_quantities: self.direct_quantities().collect(),
            pledges: self
                .pledges
                .iter()
                .filter(|p| p.active)
                .map(|p| self.row_of(p))
                .collect(),
            rejected_events: self.rejected.clone(),
            labels: self.state_labels(),
            cells: self.state_cells(),
            quantity_cells: self.state_quantity_cells(),
            day_outcomes: self.day_outcomes().collect(),
        }
    }

    /// The dictionary of [`ModelState::labels`]: partners, then labels, items and units, so that
    /// an interned id plus its namespace's offset is its index.
    fn state_labels(&self) -> Vec<String> {
        [
            &self.partners,
            &self.labels,
            &self.item_names,
            &self.unit_names,
        ]
        .into_iter()
        .flat_map(|interner| interner.names().map(str::to_owned))
        .collect()
    }

    fn label_offsets(&self) -> [u32; 4] {
        let partners = next_index(self.partners.len());
        let labels = partners + next_index(self.labels.len());
        let items = labels + next_index(self.item_names.len());
        [0, partners, labels, items]
    }

    fn state_cells(&self) -> Vec<StateCell> {
        let [_, labels, _, _] = self.label_offsets();
        self.cells
            .iter()
            .flat_map(|(block, cells)| {
                cells.iter().map(move |(key, total)| StateCell {
                    day: key.day,
                    partner: block.partner,
                    grant: labels + key.grant,
                    sector: labels + key.sector,
                    donor: labels + key.donor,
                    node: key.node,
                    kind: key.kind,
                    currency: key.currency,
                    total: *total,
                })
            })
            .collect()
    }

    fn state_quantity_cells(&self) -> Vec<StateQuantityCell> {
        let [_, _, items, units] = self.label_offsets();
        self.quantity_cells
            .iter()
            .flat_map(|(block, cells)| {
                cells.iter().map(move |(key, quantity)| StateQuantityCell {
                    day: key.day,
                    partner: block.partner,
                    node: key.node,
                    item: items + key.item,
                    unit: units + key.unit,
                    quantity: *quantity,
                })
            })
            .collect()
    }

    fn row_of(&self, p: &PledgeState) -> PledgeRow {
        PledgeRow {
            partner_id: self.partners.name(p.partner).to_owned(),
            pledge_id: self.labels.name(p.pledge_id).to_owned(),
            currency: p.currency,
            lines: p.lines.clone(),
            donor: self.labels.name(p.donor).to_owned(),
            sector: self.labels.name(p.sector).to_owned(),
            occurred_on: p.occurred_on,
            usd_rate: p.usd_rate,
            pledged_usd: p.pledged_usd,
            paid_usd: p.paid_usd,
            payments_unconverted: p.payments_unconverted,
        }
    }

    /// The id of an interned partner.
    pub fn partner_name(&self, id: u32) -> &str {
        self.partners.name(id)
    }

    /// The name of a grant, sector or donor label.
    pub fn label(&self, id: u32) -> &str {
        self.labels.name(id)
    }

    /// Every cell block that holds a cell, in no particular order.
    pub fn cell_blocks(&self) -> impl Iterator<Item = CellBlock> + '_ {
        self.cells.keys().copied()
    }

    /// The cells of one block, in no particular order (none when the block is empty).
    pub fn cell_block(&self, block: CellBlock) -> impl Iterator<Item = (&CellKey, &Total)> {
        self.cells.get(&block).into_iter().flatten()
    }

    /// The cells of one block with their names, at the Day level.
    pub fn cell_refs(&self, block: CellBlock) -> impl Iterator<Item = CellRef<'_>> {
        let partner = self.partners.name(block.partner);
        self.cell_block(block)
            .map(move |(key, total)| self.cell_ref(block.month, partner, key, *total))
    }

    fn cell_ref<'a>(
        &'a self,
        month: Month,
        partner: &'a str,
        key: &CellKey,
        total: Total,
    ) -> CellRef<'a> {
        CellRef {
            year: month.year(),
            month: Some(month),
            day: Some(key.day),
            partner,
            grant: Some(self.labels.name(key.grant)),
            sector: Some(self.labels.name(key.sector)),
            donor: Some(self.labels.name(key.donor)),
            node: key.node,
            kind: key.kind,
            currency: key.currency,
            total,
        }
    }

    /// Every cell at `level`: the fold's own at the Day level, summed at the coarser ones
    /// (see [`coarsen`]). In no particular order at the Day level, sorted at the others.
    pub fn cells(&self, level: CellLevel) -> Vec<CellRef<'_>> {
        let day = self.cells.keys().flat_map(|block| self.cell_refs(*block));
        match level {
            CellLevel::Day => day.collect(),
            coarser => coarsen(day, coarser),
        }
    }

    /// The in-kind quantity cells of one block, in no particular order.
    pub fn quantity_block(
        &self,
        block: CellBlock,
    ) -> impl Iterator<Item = (&QuantityCellKey, &Decimal)> {
        self.quantity_cells.get(&block).into_iter().flatten()
    }

    /// The in-kind quantity cells of one block with their names.
    pub fn quantity_refs(&self, block: CellBlock) -> impl Iterator<Item = QuantityCellRef<'_>> {
        let partner = self.partners.name(block.partner);
        self.quantity_block(block)
            .map(move |(key, quantity)| QuantityCellRef {
                day: key.day,
                partner,
                node: key.node,
                item: self.item_names.name(key.item),
                unit: self.unit_names.name(key.unit),
                quantity: *quantity,
            })
    }

    /// Every in-kind quantity cell, in no particular order.
    pub fn quantity_cells(&self) -> Vec<QuantityCellRef<'_>> {
        self.quantity_cells
            .keys()
            .flat_map(|block| self.quantity_refs(*block))
            .collect()
    }

    /// Records applied and rejected per `occurred_on` day, in date order.
    pub fn day_outcomes(&self) -> impl Iterator<Item = (Date, DayOutcomes)> + '_ {
        self.day_outcomes.iter().map(|(d, o)| (*d, *o))
    }

    /// The parallel funding naming `grant`, per currency in code order, over all partners.
    pub fn grant_funding(&self, grant: &str) -> Vec<(CurrencyIndex, Total)> {
        let Some(label) = self.labels.get(grant) else {
            return Vec::new();
        };
        let mut funding: Vec<(CurrencyIndex, Total)> = self
            .grant_funding
            .iter()
            .filter(|((g, _), _)| *g == label)
            .map(|((_, currency), total)| (*currency, *total))
            .collect();
        funding.sort_unstable_by_key(|(currency, _)| currency_code(*currency));
        funding
    }
}

impl Ledger {
    /// Checks that every index the decoded state holds points into it: each applied event's
    /// effect is in the arena and decodes, and each effect's pledge, partner and names exist.
    /// A snapshot's bytes are checked by a digest before they are decoded; this makes sure
    /// that no decoded ledger can index past its own tables either, whatever its bytes.
    pub(crate) fn check_references(&self) -> Result<(), String> {
        let effects = self.effects.len();
        if let Some(entry) = self
            .events
            .values()
            .find(|entry| matches!(entry.state, EntryState::Applied(i) if i as usize >= effects))
        {
            return Err(format!("the event at seq {} has no effect", entry.seq));
        }
        let (pledges, partners, labels) =
            (self.pledges.len(), self.partners.len(), self.labels.len());
        let (items, units) = (self.item_names.len(), self.unit_names.len());
        for effect in self.effects.decode_all() {
            let effect = effect.map_err(|i| format!("effect {i} does not decode"))?;
            let dims = &effect.dims;
            let pledge_ok = match effect.pledge {
                Some(PledgeLink::Recorded(p) | PledgeLink::Paid(p)) => (p as usize) < pledges,
                None => true,
            };
            let names_ok = (dims.block.partner as usize) < partners
                && [dims.grant, dims.sector, dims.donor]
                    .iter()
                    .all(|&label| (label as usize) < labels)
                && effect
                    .items
                    .iter()
                    .all(|i| (i.item as usize) < items && (i.unit as usize) < units);
            if !(pledge_ok && names_ok) {
                return Err("an effect names a pledge or a name the state does not hold".into());
            }
        }
        if self.pledge_index.values().any(|&p| p as usize >= pledges)
            || self.pledges.iter().any(|p| {
                p.partner as usize >= partners
                    || p.donor as usize >= labels
                    || p.sector as usize >= labels
                    || p.pledge_id as usize >= labels
            })
        {
            return Err("a pledge index or a pledge's name is out of range".into());
        }
        Ok(())
    }
}

/// What the fold's state holds in memory, by part, in bytes as allocated (hash tables by their
/// bucket count, names by their lengths): an estimate from capacities, not the allocator's
/// count, good to a few percent. See the architecture doc for what each part is and how it
/// grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FoldMemory {
    /// The event index: every event with a valid identity.
    pub events: usize,
    /// The packed effects of applied events.
    pub effects: usize,
    /// The cells and quantity cells (the finest grain the totals are summed at).
    pub cells: usize,
    /// Pledges and their index.
    pub pledges: usize,
    /// Interned names (partners, grants, sectors, donors, pledge ids, items, units).
    pub names: usize,
    /// Direct totals, day outcomes, parallel funding by grant, rejections not yet stored.
    pub other: usize,
}

impl FoldMemory {
    /// Every part together.
    pub fn total(&self) -> usize {
        self.events + self.effects + self.cells + self.pledges + self.names + self.other
    }
}

/// The bytes of a hash table of `capacity` entries of `entry` bytes: hashbrown keeps a power of
/// two of buckets at most 7/8 full, each with a control byte.
pub(crate) fn table_bytes(capacity: usize, entry: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity.saturating_mul(8) / 7).next_power_of_two();
    buckets.saturating_mul(entry + 1)
}

fn map_bytes<K, V, S>(map: &std::collections::HashMap<K, V, S>) -> usize {
    table_bytes(map.capacity(), size_of::<(K, V)>())
}

impl Ledger {
    /// What the state holds in memory, by part (see [`FoldMemory`]).
    pub fn memory(&self) -> FoldMemory {
        let cells = map_bytes(&self.cells)
            + self
                .cells
                .values()
                .map(dense_map::DenseMap::allocated_bytes)
                .sum::<usize>()
            + map_bytes(&self.quantity_cells)
            + self.quantity_cells.values().map(map_bytes).sum::<usize>();
        let pledges = self.pledges.capacity() * size_of::<PledgeState>()
            + self
                .pledges
                .iter()
                .map(|p| p.lines.capacity() * size_of::<PledgeLine>())
                .sum::<usize>()
            + map_bytes(&self.pledge_index);
        let names = [
            &self.partners,
            &self.labels,
            &self.item_names,
            &self.unit_names,
        ]
        .into_iter()
        .map(Interner::allocated_bytes)
        .sum();
        let other = map_bytes(&self.direct_totals)
            + map_bytes(&self.direct_quantities)
            + map_bytes(&self.grant_funding)
            + self.day_outcomes.len() * size_of::<(Date, DayOutcomes)>()
            + self.rejected.capacity() * size_of::<RejectedEvent>()
            + self.scratch.capacity();
        FoldMemory {
            events: self.events.allocated_bytes(),
            effects: self.effects.allocated_bytes(),
            cells,
            pledges,
            names,
            other,
        }
    }
}
