//! What a fold batch changed, gathered from what each applied event touched: the read model
//! writes exactly this (see `BatchWrite::take` and `ReadModel::write_taken`).

use std::collections::{BTreeMap, BTreeSet};

use fundflow_domain::{Event, Month, Node, TotalKind, Touched};
use fundflow_proto::v1::envelope::Body;
use fundflow_proto::{Message, v1};
use rust_decimal::Decimal;
use rustc_hash::FxHashMap;

use super::flows::{FlowRecord, POSTING_BYTES, Reversal, posted_nodes, posting, tag};
use super::kind_byte;
use super::runs::{Values, add_values, grouping};
use crate::ProjectorError;

/// A Day cell's key, names interned by [`Names`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct DayCell {
    pub month: u32,
    pub partner: u32,
    pub day: u8,
    pub grant: u32,
    pub sector: u32,
    pub donor: u32,
    pub node: u16,
    pub kind: u8,
    pub currency: u16,
}

/// A Month cell's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct MonthCell {
    pub month: u32,
    pub partner: u32,
    pub grant: u32,
    pub node: u16,
    pub kind: u8,
    pub currency: u16,
}

/// A Year cell's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct YearCell {
    pub year: u16,
    pub partner: u32,
    pub node: u16,
    pub kind: u8,
    pub currency: u16,
}

/// An in-kind quantity cell's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct QuantityCell {
    pub month: u32,
    pub partner: u32,
    pub day: u8,
    pub node: u16,
    pub item: u32,
    pub unit: u32,
}

/// A summary part's key, per year: its grouping (`runs::grouping`), then the fields that
/// grouping keeps, the others the empty name or zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct SummaryCell {
    pub year: u16,
    pub grouping: u8,
    pub partner: u32,
    pub names: [u32; 2],
    pub node: u16,
    pub kind: u8,
    pub currency: u16,
}

/// The batch's names (partners, grants, sectors, donors, items, units), interned so that the
/// batch's sums are keyed by numbers and each name is copied once per batch.
#[derive(Debug, Default)]
pub(super) struct Names {
    names: Vec<String>,
    ids: FxHashMap<String, u32>,
}

impl Names {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        // A batch holds at most a few thousand records' names.
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        id
    }

    pub(super) fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", String::as_str)
    }
}

/// Postings of a batch: per (index, month), per indexed value, the (day, seq) of each flow.
pub(super) type BatchPostings = FxHashMap<(u8, u32), FxHashMap<Vec<u8>, Vec<[u8; POSTING_BYTES]>>>;

/// What a fold batch changed (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Changed {
    /// The first seq the batch folded: the key of its runs.
    pub(super) first_seq: Option<u64>,
    /// Whether any direct total changed: then all are rewritten, as one value.
    pub(super) totals: bool,
    /// Whether any direct quantity changed: likewise.
    pub(super) quantities: bool,
    /// The pledges changed, by partner, then pledge id: each is rewritten from the ledger (or
    /// removed when it is no longer active), so a pledge reversed and recorded again in one
    /// batch is written as it ends up.
    pub(super) pledges: BTreeMap<String, BTreeSet<String>>,
    /// The grants whose parallel funding changed, rewritten from the ledger likewise.
    pub(super) grants: BTreeSet<String>,
    pub(super) names: Names,
    /// The batch's changes to cells at each level (reversals count negative).
    pub(super) day_cells: FxHashMap<DayCell, Values>,
    pub(super) month_cells: FxHashMap<MonthCell, Values>,
    pub(super) year_cells: FxHashMap<YearCell, Values>,
    pub(super) quantity_cells: FxHashMap<QuantityCell, Decimal>,
    /// The batch's changes to the summary parts of each year (items as the first value).
    pub(super) summary_cells: FxHashMap<SummaryCell, Values>,
    /// In-kind flows reversed by the batch, by seq: their items are taken off the quantity
    /// cells once their records are at hand (`Touched` has no item quantities).
    pub(super) in_kind_reversals: Vec<u64>,
    /// The records of the batch's flows, encoded, in seq order.
    pub(super) flows: Vec<(u64, Vec<u8>)>,
    /// The batch's reversals.
    pub(super) reversals: Vec<Reversal>,
    pub(super) postings: BatchPostings,
    /// The first thing that went wrong: reported by the write (the fold itself never fails).
    pub(super) error: Option<ProjectorError>,
    nodes: Vec<Node>,
}

/// What a part adds to its cell: the domain's `Total::of`.
fn part_values(value: Decimal, usd: Option<Decimal>) -> Values {
    match usd {
        Some(usd) => [value, usd, Decimal::ZERO],
        None => [value, Decimal::ZERO, value],
    }
}

/// `-value`, keeping zero unsigned (Decimal has a signed zero, which would print as -0).
fn negate(value: Decimal) -> Decimal {
    if value.is_zero() { value } else { -value }
}

fn add_to<K: std::hash::Hash + Eq>(
    map: &mut FxHashMap<K, Values>,
    key: K,
    values: &Values,
) -> Result<(), ProjectorError> {
    match map.get_mut(&key) {
        Some(sum) => add_values(sum, values),
        None => {
            map.insert(key, *values);
            Ok(())
        }
    }
}

impl Changed {
    /// Adds what the event at `seq` (its record `bytes`) touched when it applied.
    pub(crate) fn add(&mut self, seq: u64, bytes: &[u8], touched: &Touched<'_>) {
        if let Err(err) = self.try_add(seq, bytes, touched)
            && self.error.is_none()
        {
            self.error = Some(err);
        }
    }

    fn try_add(
        &mut self,
        seq: u64,
        bytes: &[u8],
        touched: &Touched<'_>,
    ) -> Result<(), ProjectorError> {
        self.first_seq.get_or_insert(seq);
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
        if let Some(grant) = touched.parallel_grant()
            && !self.grants.contains(grant)
        {
            self.grants.insert(grant.to_owned());
        }
        let Some(block) = touched.block() else {
            return Ok(()); // Nothing allocated: no cell, no flow.
        };
        let dims = touched.dims();
        let reversed = touched.reversed_seq();
        let partner = self.names.id(dims.partner);
        let (grant, sector, donor) = (
            self.names.id(dims.grant),
            self.names.id(dims.sector),
            self.names.id(dims.donor),
        );
        let day = dims.occurred_on.day();
        let month = block.month.0;
        let year = u16::try_from(block.month.year())
            .map_err(|_| ProjectorError::corrupt("a flow dated past year 65535"))?;
        let (kind, currency) = (kind_byte(touched.kind()), touched.currency());
        let empty = self.names.id("");
        let summary_cell = |grouping, partner, grant, node| SummaryCell {
            year,
            grouping,
            partner,
            names: [grant, empty],
            node,
            kind,
            currency,
        };
        for (node, value, usd) in touched.parts() {
            let mut values = part_values(value, usd);
            if reversed.is_some() {
                values = values.map(negate);
            }
            let node = node.index();
            let day_cell = DayCell {
                month,
                partner,
                day,
                grant,
                sector,
                donor,
                node,
                kind,
                currency,
            };
            add_to(&mut self.day_cells, day_cell, &values)?;
            let month_cell = MonthCell {
                month,
                partner,
                grant,
                node,
                kind,
                currency,
            };
            add_to(&mut self.month_cells, month_cell, &values)?;
            let year_cell = YearCell {
                year,
                partner,
                node,
                kind,
                currency,
            };
            add_to(&mut self.year_cells, year_cell, &values)?;
            let by_recipient = summary_cell(grouping::RECIPIENT, empty, empty, node);
            add_to(&mut self.summary_cells, by_recipient, &values)?;
            let by_partner = summary_cell(grouping::PARTNER, partner, empty, 0);
            add_to(&mut self.summary_cells, by_partner, &values)?;
            if !dims.grant.is_empty() {
                let by_grant = summary_cell(grouping::GRANT, empty, grant, 0);
                add_to(&mut self.summary_cells, by_grant, &values)?;
            }
        }
        let in_kind = touched.kind() == TotalKind::InKind;
        let day_posting = posting(day, reversed.unwrap_or(seq));
        match reversed {
            Some(target) => {
                if in_kind {
                    self.in_kind_reversals.push(target);
                }
                let envelope = v1::Envelope::decode(bytes)
                    .map_err(|_| ProjectorError::corrupt("an applied reversal is undecodable"))?;
                let reason = match &envelope.body {
                    Some(Body::EventReversed(r)) => r.reason.clone(),
                    _ => String::new(),
                };
                self.reversals.push(Reversal {
                    target,
                    seq,
                    event_id: envelope.event_id,
                    reason,
                });
                self.post(tag::REVERSED, month, &[], day_posting);
            }
            None => {
                if in_kind {
                    self.add_items(bytes, month, partner, day, 1)?;
                }
                let record = FlowRecord {
                    seq,
                    envelope: bytes.to_vec(),
                    partner: dims.partner.to_owned(),
                    occurred_on_day: dims.occurred_on.to_julian_day(),
                    kind_index: u32::from(kind),
                    currency: u32::from(currency),
                    grant: dims.grant.to_owned(),
                    sector: dims.sector.to_owned(),
                    donor: dims.donor.to_owned(),
                    nodes: touched
                        .parts()
                        .map(|(n, _, _)| u32::from(n.index()))
                        .collect(),
                    usd_equivalents: touched
                        .parts()
                        .map(|(_, _, usd)| usd.map(|u| u.to_string()).unwrap_or_default())
                        .collect(),
                    ..FlowRecord::default()
                };
                self.flows.push((seq, record.encode_to_vec()));
                self.post(tag::KIND, month, &[kind], day_posting);
                self.post(tag::PARTNER, month, dims.partner.as_bytes(), day_posting);
                let mut nodes = std::mem::take(&mut self.nodes);
                posted_nodes(touched.parts().map(|(n, _, _)| n), &mut nodes);
                for node in &nodes {
                    self.post(tag::NODE, month, &node.index().to_be_bytes(), day_posting);
                }
                self.nodes = nodes;
                for (index, value) in [
                    (tag::GRANT, dims.grant),
                    (tag::DONOR, dims.donor),
                    (tag::SECTOR, dims.sector),
                ] {
                    if !value.is_empty() {
                        self.post(index, month, value.as_bytes(), day_posting);
                    }
                }
                self.post(tag::ALL, month, &[], day_posting);
            }
        }
        Ok(())
    }

    fn post(&mut self, index: u8, month: u32, value: &[u8], p: [u8; POSTING_BYTES]) {
        let values = self.postings.entry((index, month)).or_default();
        match values.get_mut(value) {
            Some(list) => list.push(p),
            None => {
                values.insert(value.to_vec(), vec![p]);
            }
        }
    }

    /// Adds (`sign` 1) or takes off (-1) the items of the in-kind event in `envelope`, read
    /// through the domain's own gate, to the quantity cells of (month, partner, day).
    pub(super) fn add_items(
        &mut self,
        envelope: &[u8],
        month: u32,
        partner: u32,
        day: u8,
        sign: i8,
    ) -> Result<(), ProjectorError> {
        let bad = || ProjectorError::corrupt("an applied in-kind donation does not read back");
        let envelope = v1::Envelope::decode(envelope).map_err(|_| bad())?;
        let event = Event::from_envelope(&envelope).map_err(|_| bad())?;
        let flow = event.body.flow().ok_or_else(bad)?;
        let year = u16::try_from(Month(month).year())
            .map_err(|_| ProjectorError::corrupt("a flow dated past year 65535"))?;
        let empty = self.names.id("");
        for allocation in &flow.allocations {
            for item in &allocation.items {
                let key = QuantityCell {
                    month,
                    partner,
                    day,
                    node: allocation.recipient.index(),
                    item: self.names.id(item.item),
                    unit: self.names.id(item.unit),
                };
                let quantity = if sign < 0 {
                    negate(item.quantity)
                } else {
                    item.quantity
                };
                let sum = self.quantity_cells.entry(key).or_default();
                let mut values = [*sum, Decimal::ZERO, Decimal::ZERO];
                let change = [quantity, Decimal::ZERO, Decimal::ZERO];
                add_values(&mut values, &change)?;
                *sum = values[0];
                let by_item = SummaryCell {
                    year,
                    grouping: grouping::ITEM,
                    partner: empty,
                    names: [key.item, key.unit],
                    node: 0,
                    kind: 0,
                    currency: 0,
                };
                add_to(&mut self.summary_cells, by_item, &change)?;
            }
        }
        Ok(())
    }

    /// The id of a name in this batch (for what is resolved at write time).
    pub(super) fn name_id(&mut self, name: &str) -> u32 {
        self.names.id(name)
    }
}
