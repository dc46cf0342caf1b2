//! Evolving: writing what [`super::decide`] decided. Infallible by construction (every new value
//! was worked out and checked before), so there is no rollback; it asserts the fold's invariants
//! in debug builds, and says what it touched so that a read model can write only that.

use std::hash::Hash;

use rust_decimal::Decimal;
use rustc_hash::FxHashMap;

use fundflow_refdata::CurrencyIndex;

use super::decide::{Change, Label, PledgeChange, Record, Reverse};
use super::dense_map::DenseMap;
use super::identity::{EntryState, Identity};
use super::{Effect, EffectDims, ItemPart, Ledger, Part, PledgeLink, PledgeState, next_index};
use crate::limits;
use crate::node::Node;
use crate::values::{
    Amount, CellBlock, CellKey, FlowDims, Month, QuantityCellKey, QuantityKey, Sign, Total,
    TotalKey, TotalKind,
};

/// What one applied event touched: the direct totals and quantities it changed (some may have
/// gone back to zero, and so be gone) and the pledge it recorded, paid or undid.
#[derive(Debug, Clone)]
pub struct Touched<'a> {
    /// The effect applied or undone: its keys are the keys touched.
    effect: Effect,
    /// (partner id, pledge id) of the pledge changed, if any.
    pledge: Option<(&'a str, &'a str)>,
    /// The effect's dimensions, names resolved.
    dims: FlowDims<'a>,
    /// For a reversal, the seq of the event undone.
    reversed_seq: Option<u64>,
}

impl<'a> Touched<'a> {
    /// What the flow counts as.
    pub fn kind(&self) -> TotalKind {
        self.effect.kind
    }

    /// Its currency.
    pub fn currency(&self) -> CurrencyIndex {
        self.effect.currency
    }

    /// One (recipient, value, USD equivalent) per allocation, in the event's order.
    pub fn parts(&self) -> impl Iterator<Item = (Node, Decimal, Option<Decimal>)> + '_ {
        self.effect.parts.iter().map(|p| (p.node, p.value, p.usd))
    }

    /// The dimensions it counts under: a payment's inherited from its pledge.
    pub fn dims(&self) -> FlowDims<'a> {
        self.dims
    }

    /// The cell block changed; `None` when nothing was allocated.
    pub fn block(&self) -> Option<CellBlock> {
        (!self.effect.parts.is_empty()).then_some(self.effect.dims.block)
    }

    /// For parallel funding, applied or undone, the grant it names.
    pub fn parallel_grant(&self) -> Option<&'a str> {
        (self.effect.kind == TotalKind::ParallelFunding && !self.effect.parts.is_empty())
            .then_some(self.dims.grant)
    }

    /// For a reversal, the seq of the event it undid (whose effect this describes).
    pub fn reversed_seq(&self) -> Option<u64> {
        self.reversed_seq
    }

    /// The keys of the direct totals changed (a key may come more than once).
    pub fn totals(&self) -> impl Iterator<Item = TotalKey> + '_ {
        let (kind, currency) = (self.effect.kind, self.effect.currency);
        self.effect.parts.iter().map(move |part| TotalKey {
            node: part.node,
            kind,
            currency,
        })
    }

    /// The keys of the direct quantities changed (a key may come more than once); names by
    /// [`Ledger::item_name`] and [`Ledger::unit_name`].
    pub fn quantities(&self) -> impl Iterator<Item = QuantityKey> + '_ {
        self.effect.items.iter().map(|i| QuantityKey {
            node: i.node,
            item: i.item,
            unit: i.unit,
        })
    }

    /// The (partner id, pledge id) of the pledge recorded, paid against or reversed, if any.
    /// [`Ledger::pledge_row`] then gives its state: `None` once reversed.
    pub fn pledge(&self) -> Option<(&str, &str)> {
        self.pledge
    }
}

impl Ledger {
    /// Writes a decided change of the event at `seq` and remembers the event as applied.
    pub(super) fn evolve(
        &mut self,
        seq: u64,
        partner_id: &str,
        identity: &Identity,
        change: Change<'_>,
    ) -> Touched<'_> {
        match change {
            Change::Record(record) => self.evolve_record(seq, partner_id, identity, record),
            Change::Reverse(reverse) => self.evolve_reversal(seq, partner_id, identity, reverse),
        }
    }

    fn evolve_record(
        &mut self,
        seq: u64,
        partner_id: &str,
        identity: &Identity,
        record: Record<'_>,
    ) -> Touched<'_> {
        let index = next_index(self.effects.len());
        let partner = self.remember(seq, partner_id, identity, EntryState::Applied(index));
        let mut label = |label: Label<'_>| match label {
            Label::Name(name) => self.labels.intern(name),
            Label::Interned(id) => id,
        };
        let dims = EffectDims {
            block: CellBlock {
                month: Month::of(record.day),
                partner,
            },
            day: record.day,
            grant: label(record.grant),
            sector: label(record.sector),
            donor: label(record.donor),
        };
        write_values(&mut self.direct_totals, record.totals);
        let items: Box<[ItemPart]> = record
            .items
            .iter()
            .map(|&((node, item, unit), quantity)| ItemPart {
                node,
                item: self.item_names.intern(item),
                unit: self.unit_names.intern(unit),
                quantity,
            })
            .collect();
        let quantities = record
            .quantities
            .into_iter()
            .map(|((node, item, unit), q)| {
                let key = QuantityKey {
                    node,
                    item: self.item_names.intern(item),
                    unit: self.unit_names.intern(unit),
                };
                (key, q)
            });
        let quantities: Vec<_> = quantities.collect();
        write_values(&mut self.direct_quantities, quantities);
        let pledge = match record.pledge {
            PledgeChange::None => None,
            PledgeChange::Record { pledge_id, lines } => {
                let pledge = next_index(self.pledges.len());
                self.pledges.push(PledgeState {
                    partner,
                    pledge_id: dims.grant,
                    currency: record.currency,
                    lines,
                    payments_open: 0,
                    active: true,
                    donor: dims.donor,
                    sector: dims.sector,
                    occurred_on: record.day,
                    usd_rate: record.usd_rate,
                    pledged_usd: usd_sum(&record.parts),
                    paid_usd: Decimal::ZERO,
                    payments_unconverted: 0,
                });
                debug_assert_eq!(
                    self.labels.get(pledge_id),
                    Some(dims.grant),
                    "a pledge is its own grant"
                );
                let earlier = self.pledge_index.insert((partner, dims.grant), pledge);
                debug_assert!(earlier.is_none(), "decide refuses a pledge id in use");
                Some(PledgeLink::Recorded(pledge))
            }
            PledgeChange::Pay(pledge) => {
                self.pay_pledge(pledge, &record.parts, Sign::Add);
                Some(PledgeLink::Paid(pledge))
            }
        };
        let effect = Effect {
            kind: record.kind,
            currency: record.currency,
            parts: record.parts,
            items,
            pledge,
            dims,
        };
        self.write_cells(&effect, Sign::Add);
        let pushed = self.effects.push(&effect);
        debug_assert_eq!(pushed, index);
        let this: &Ledger = self;
        this.check_invariants(&effect);
        Touched {
            effect,
            pledge: pledge.map(|link| this.pledge_names(link)),
            dims: this.flow_dims(&dims),
            reversed_seq: None,
        }
    }

    /// The names of an effect's dimensions.
    fn flow_dims(&self, dims: &EffectDims) -> FlowDims<'_> {
        FlowDims {
            partner: self.partners.name(dims.block.partner),
            occurred_on: dims.day,
            grant: self.labels.name(dims.grant),
            sector: self.labels.name(dims.sector),
            donor: self.labels.name(dims.donor),
        }
    }

    /// Adds an effect to (or takes it from) its cells, its quantity cells and, for parallel
    /// funding, its grant's funding. Each cell is a part of a direct total that `decide`
    /// checked, so this cannot overflow or go below zero.
    fn write_cells(&mut self, effect: &Effect, sign: Sign) {
        let dims = &effect.dims;
        if !effect.parts.is_empty() {
            let cells = self.cells.entry(dims.block).or_default();
            for part in &effect.parts {
                let key = CellKey {
                    day: dims.day,
                    grant: dims.grant,
                    sector: dims.sector,
                    donor: dims.donor,
                    node: part.node,
                    kind: effect.kind,
                    currency: effect.currency,
                };
                step(cells, key, Total::of(part.value, part.usd), sign);
                if effect.kind == TotalKind::ParallelFunding {
                    let key = (dims.grant, effect.currency);
                    step(
                        &mut self.grant_funding,
                        key,
                        Total::of(part.value, part.usd),
                        sign,
                    );
                }
            }
            if cells.is_empty() {
                self.cells.remove(&dims.block);
            }
        }
        if !effect.items.is_empty() {
            let cells = self.quantity_cells.entry(dims.block).or_default();
            for item in &effect.items {
                let key = QuantityCellKey {
                    day: dims.day,
                    node: item.node,
                    item: item.item,
                    unit: item.unit,
                };
                step(cells, key, item.quantity, sign);
            }
            if cells.is_empty() {
                self.quantity_cells.remove(&dims.block);
            }
        }
    }

    fn evolve_reversal(
        &mut self,
        seq: u64,
        partner_id: &str,
        identity: &Identity,
        reverse: Reverse,
    ) -> Touched<'_> {
        self.remember(seq, partner_id, identity, EntryState::Reversal);
        let effect = reverse.effect;
        self.write_cells(&effect, Sign::Subtract);
        write_values(&mut self.direct_totals, reverse.totals);
        write_values(&mut self.direct_quantities, reverse.quantities);
        match effect.pledge {
            Some(PledgeLink::Recorded(index)) => {
                let pledge = &mut self.pledges[index as usize];
                debug_assert_eq!(pledge.payments_open, 0, "decide refuses a paid pledge");
                pledge.active = false;
                self.pledge_index
                    .remove(&(pledge.partner, pledge.pledge_id));
            }
            Some(PledgeLink::Paid(index)) => self.pay_pledge(index, &effect.parts, Sign::Subtract),
            None => {}
        }
        let mut reversed_seq = None;
        if let Some(target) = self.events.get_mut(&reverse.target) {
            target.state = EntryState::Reversed;
            reversed_seq = Some(target.seq);
        }
        debug_assert!(reversed_seq.is_some(), "decide found the target");
        let this: &Ledger = self;
        this.check_invariants(&effect);
        let pledge = effect.pledge.map(|link| this.pledge_names(link));
        Touched {
            dims: this.flow_dims(&effect.dims),
            effect,
            pledge,
            reversed_seq,
        }
    }

    /// Adds (or, for a reversal, removes) a payment's parts to its pledge. The amounts were
    /// checked against the pledge before, so this cannot fail.
    fn pay_pledge(&mut self, index: u32, parts: &[Part], sign: Sign) {
        debug_assert!((index as usize) < self.pledges.len());
        let Some(pledge) = self.pledges.get_mut(index as usize) else {
            return;
        };
        for part in parts {
            if let Some(line) = pledge.lines.iter_mut().find(|l| l.node == part.node) {
                match sign {
                    Sign::Add => line.paid += part.value,
                    Sign::Subtract => line.paid -= part.value,
                }
            }
        }
        match usd_sum(parts) {
            Some(usd) => match sign {
                Sign::Add => pledge.paid_usd += usd,
                Sign::Subtract => pledge.paid_usd -= usd,
            },
            None => match sign {
                Sign::Add => pledge.payments_unconverted += 1,
                Sign::Subtract => {
                    pledge.payments_unconverted = pledge.payments_unconverted.saturating_sub(1);
                }
            },
        }
        match sign {
            Sign::Add => pledge.payments_open += 1,
            Sign::Subtract => {
                debug_assert!(
                    pledge.payments_open > 0,
                    "only an applied payment is reversed"
                );
                pledge.payments_open = pledge.payments_open.saturating_sub(1);
            }
        }
    }

    /// (partner id, pledge id) of a pledge.
    fn pledge_names(&self, link: PledgeLink) -> (&str, &str) {
        let (PledgeLink::Recorded(index) | PledgeLink::Paid(index)) = link;
        let pledge = &self.pledges[index as usize];
        (
            self.partners.name(pledge.partner),
            self.labels.name(pledge.pledge_id),
        )
    }

    /// The fold's invariants where `effect` touched the state: every direct total and quantity
    /// within [`limits::total_max`], and nothing paid beyond what was pledged. Debug builds only
    /// (the proptests run them on every event); release builds compile this to nothing.
    fn check_invariants(&self, effect: &Effect) {
        if !cfg!(debug_assertions) {
            return;
        }
        let max = limits::total_max();
        for part in &effect.parts {
            let key = TotalKey {
                node: part.node,
                kind: effect.kind,
                currency: effect.currency,
            };
            let total = self.direct_totals.get(&key).copied().unwrap_or_default();
            debug_assert!(
                total.within(max),
                "{key:?} at {total:?} is past the maximum"
            );
            debug_assert!(!total.amount.is_sign_negative(), "{key:?} went negative");
        }
        for item in &effect.items {
            let key = QuantityKey {
                node: item.node,
                item: item.item,
                unit: item.unit,
            };
            let quantity = self.direct_quantities.get(&key).copied();
            debug_assert!(quantity.is_none_or(|q| q <= max && q > Decimal::ZERO));
        }
        if let Some(PledgeLink::Recorded(index) | PledgeLink::Paid(index)) = effect.pledge {
            for line in &self.pledges[index as usize].lines {
                debug_assert!(
                    Decimal::ZERO <= line.paid && line.paid <= line.pledged,
                    "pledge line {line:?} is paid beyond what was pledged"
                );
            }
        }
    }
}

/// The sum of the parts' USD equivalents, when every part has one (a flow's rate is the whole
/// flow's, so all or none do). Bounded by the direct totals' cap.
fn usd_sum(parts: &[Part]) -> Option<Decimal> {
    parts
        .iter()
        .try_fold(Decimal::ZERO, |sum, part| Some(sum + part.usd?))
}

/// Adds `delta` to (or takes it from) the value at `key`, keeping no zero entry. The callers'
/// values are parts of checked direct totals, so the step cannot fail: asserted, not clamped.
fn step<K: Eq + Hash, V: Amount>(map: &mut impl CellMap<K, V>, key: K, delta: V, sign: Sign) {
    let now = map.value(&key).unwrap_or_default();
    let Some(next) = now.checked(delta, sign) else {
        debug_assert!(false, "a cell step overflowed");
        return;
    };
    if next.is_zero() {
        map.clear(&key);
    } else {
        map.set(key, next);
    }
}

/// The maps a cell [`step`] writes into.
trait CellMap<K, V> {
    fn value(&self, key: &K) -> Option<V>;
    fn set(&mut self, key: K, value: V);
    fn clear(&mut self, key: &K);
}

impl<K: Eq + Hash, V: Copy> CellMap<K, V> for FxHashMap<K, V> {
    fn value(&self, key: &K) -> Option<V> {
        self.get(key).copied()
    }
    fn set(&mut self, key: K, value: V) {
        self.insert(key, value);
    }
    fn clear(&mut self, key: &K) {
        self.remove(key);
    }
}

impl<K: Eq + Hash, V: Copy> CellMap<K, V> for DenseMap<K, V> {
    fn value(&self, key: &K) -> Option<V> {
        self.get(key).copied()
    }
    fn set(&mut self, key: K, value: V) {
        self.insert(key, value);
    }
    fn clear(&mut self, key: &K) {
        self.remove(key);
    }
}

/// Writes new values, keeping no zero entries (a total that went back to zero is gone, as if it
/// had never been).
fn write_values<K: Eq + Hash, V: Amount>(map: &mut FxHashMap<K, V>, values: Vec<(K, V)>) {
    for (key, value) in values {
        if value.is_zero() {
            map.remove(&key);
        } else {
            map.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a failed test, with its location.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use fundflow_gen::{envelope, flow, in_kind, payment, pledge, reversal};
    use fundflow_proto::Message;

    use super::*;
    use crate::ledger::Source;
    use crate::node::Node;
    use crate::values::{Outcome, TotalKind};

    /// What an event touched, owned: total keys, how many quantity keys, the pledge's names.
    type Seen = (Vec<TotalKey>, usize, Option<(String, String)>);

    /// Applies `body` as event `id` at seq `id`; returns what it touched.
    fn touched(
        ledger: &mut Ledger,
        id: u128,
        body: fundflow_proto::v1::envelope::Body,
    ) -> Option<Seen> {
        let bytes = envelope("icshp", id, body).encode_to_vec();
        let seq = u64::try_from(id).unwrap();
        let (outcome, touched) = ledger.apply_tracked(seq, &bytes, Source::default());
        let touched = touched.map(|t| {
            let pledge = t.pledge().map(|(a, b)| (a.to_owned(), b.to_owned()));
            (t.totals().collect(), t.quantities().count(), pledge)
        });
        assert_eq!(touched.is_some(), outcome == Outcome::Applied);
        touched
    }

    #[test]
    fn an_applied_event_says_what_it_touched_and_a_rejected_one_touches_nothing() {
        let mut ledger = Ledger::new();
        let npl = TotalKey {
            node: Node::country("NPL").unwrap(),
            kind: TotalKind::Pledged,
            currency: fundflow_refdata::currency_by_code("USD").unwrap(),
        };
        let paid = TotalKey {
            kind: TotalKind::Paid,
            ..npl
        };
        let names = Some(("icshp".to_owned(), "pl-1".to_owned()));
        let ten = || flow("10.00", "USD", &[("NPL", "10.00")]);
        assert_eq!(
            touched(&mut ledger, 1, pledge("pl-1", ten())),
            Some((vec![npl], 0, names.clone()))
        );
        assert_eq!(
            touched(&mut ledger, 2, payment("p-1", "pl-1", ten())),
            Some((vec![paid], 0, names.clone()))
        );
        assert_eq!(touched(&mut ledger, 3, payment("p-2", "pl-1", ten())), None);
        assert_eq!(
            touched(&mut ledger, 4, reversal(2)),
            Some((vec![paid], 0, names.clone()))
        );
        assert_eq!(
            touched(&mut ledger, 5, reversal(1)),
            Some((vec![npl], 0, names))
        );
        assert_eq!(ledger.pledge_row("icshp", "pl-1"), None, "reversed");
        let gift = in_kind(
            "d-1",
            ten(),
            &[("rice", "kg", "3"), ("masks", "piece", "9")],
        );
        let in_kind_npl = TotalKey {
            kind: TotalKind::InKind,
            ..npl
        };
        assert_eq!(
            touched(&mut ledger, 6, gift),
            Some((vec![in_kind_npl], 2, None))
        );
    }
}
