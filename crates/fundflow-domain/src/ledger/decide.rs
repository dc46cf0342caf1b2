//! Deciding: every rule an event must pass against the ledger's state, read-only. An event that
//! passes gets a [`Change`] holding the new value of every direct total and quantity it touches,
//! worked out with checked arithmetic, so that the overflow check is a rule like any other and
//! writing the change ([`super::evolve`]) cannot fail half-way.

use std::hash::Hash;

use fundflow_refdata::{CURRENCIES, CurrencyIndex};
use rust_decimal::Decimal;
use rustc_hash::FxHashMap;

use super::identity::{EntryState, EventKey};
use super::{Effect, Ledger, Part, PledgeLink};
use crate::event::{Event, EventBody, Flow};
use crate::limits;
use crate::node::Node;
use crate::reject::{RejectCode, Rejection};
use crate::values::{
    Amount, PledgeLine, QuantityKey, Sign, Total, TotalKey, TotalKind, currency_code,
};

/// What an event that passed every rule will change. `'e` is the envelope's lifetime: names not
/// yet interned are borrowed from it, and interned only once the event applies.
#[derive(Debug)]
pub(super) enum Change<'e> {
    /// A new flow (pledge, payment, parallel funding, in-kind donation).
    Record(Record<'e>),
    /// An earlier event undone.
    Reverse(Reverse),
}

/// A new flow, decided.
#[derive(Debug)]
pub(super) struct Record<'e> {
    pub(super) kind: TotalKind,
    pub(super) currency: CurrencyIndex,
    pub(super) parts: Box<[Part]>,
    /// Every in-kind item in the event's order, by name.
    pub(super) items: Vec<(ItemName<'e>, Decimal)>,
    /// The new direct totals, one per key touched.
    pub(super) totals: Vec<(TotalKey, Total)>,
    /// The new direct quantities, one per key touched.
    pub(super) quantities: Vec<(ItemName<'e>, Decimal)>,
    pub(super) pledge: PledgeChange<'e>,
    /// The flow's `occurred_on`.
    pub(super) day: time::Date,
    /// The cell labels it counts under, before interning.
    pub(super) grant: Label<'e>,
    pub(super) sector: Label<'e>,
    pub(super) donor: Label<'e>,
    /// The flow's USD rate, kept with a pledge.
    pub(super) usd_rate: Option<Decimal>,
}

/// A cell label: a name from the event, interned once the event applies, or one already
/// interned (a payment's pledge's sector and donor).
#[derive(Debug, Clone, Copy)]
pub(super) enum Label<'e> {
    Name(&'e str),
    Interned(u32),
}

/// A quantity's key before its names are interned: recipient, item, unit.
pub(super) type ItemName<'e> = (Node, &'e str, &'e str);

/// What a new flow does to a pledge.
#[derive(Debug)]
pub(super) enum PledgeChange<'e> {
    None,
    /// A new pledge with these lines (paid zero).
    Record {
        pledge_id: &'e str,
        lines: Vec<PledgeLine>,
    },
    /// A payment against the pledge at this index in `Ledger::pledges`.
    Pay(u32),
}

/// A reversal, decided.
#[derive(Debug)]
pub(super) struct Reverse {
    pub(super) target: EventKey,
    /// The target's effect, to undo.
    pub(super) effect: Effect,
    /// The new direct totals, one per key the target's effect touched.
    pub(super) totals: Vec<(TotalKey, Total)>,
    /// The new direct quantities, likewise.
    pub(super) quantities: Vec<(QuantityKey, Decimal)>,
}

impl Ledger {
    /// Decides a valid event of `partner` (`None`: a partner never seen): its [`Change`], or why
    /// it is rejected. Changes nothing.
    pub(super) fn decide<'e>(
        &self,
        partner: Option<u32>,
        event: &Event<'e>,
    ) -> Result<Change<'e>, Rejection> {
        let none = Label::Name("");
        let (kind, flow, pledge, (grant, sector, donor)) = match &event.body {
            EventBody::EventReversed { reverses_event_id } => {
                return self
                    .decide_reversal(partner, *reverses_event_id)
                    .map(Change::Reverse);
            }
            EventBody::PledgeRecorded {
                flow,
                pledge_id,
                donor,
                sector,
            } => {
                if self.active_pledge(partner, pledge_id).is_some() {
                    return Err(Rejection::new(
                        RejectCode::PledgeExists,
                        "pledge_id",
                        format_args!("pledge {pledge_id:?} is already recorded"),
                    ));
                }
                let lines = pledge_lines(flow);
                (
                    TotalKind::Pledged,
                    flow,
                    PledgeChange::Record { pledge_id, lines },
                    (
                        Label::Name(pledge_id),
                        Label::Name(sector),
                        Label::Name(donor),
                    ),
                )
            }
            EventBody::ContributionPaid {
                flow,
                pledge_id: Some(pledge_id),
                donor,
            } => {
                let index = self.check_payment(partner, pledge_id, flow)?;
                // A payment counts under its pledge: its grant, its sector, and its donor unless
                // the payment names its own.
                let pledge = &self.pledges[index as usize];
                let donor = donor.map_or(Label::Interned(pledge.donor), Label::Name);
                (
                    TotalKind::Paid,
                    flow,
                    PledgeChange::Pay(index),
                    (
                        Label::Name(pledge_id),
                        Label::Interned(pledge.sector),
                        donor,
                    ),
                )
            }
            EventBody::ContributionPaid {
                flow,
                pledge_id: None,
                donor,
            } => (
                TotalKind::Paid,
                flow,
                PledgeChange::None,
                (none, none, Label::Name(donor.unwrap_or(""))),
            ),
            EventBody::ParallelFundingMobilized {
                flow,
                grant_id,
                source,
            } => (
                TotalKind::ParallelFunding,
                flow,
                PledgeChange::None,
                (Label::Name(grant_id), none, Label::Name(source)),
            ),
            EventBody::InKindDonationRecorded { flow, donor } => (
                TotalKind::InKind,
                flow,
                PledgeChange::None,
                (none, none, Label::Name(donor)),
            ),
        };
        let parts: Box<[Part]> = flow
            .allocations
            .iter()
            .map(|a| Part {
                node: a.recipient,
                value: a.value,
                usd: a.usd,
            })
            .collect();
        let items: Vec<(ItemName<'e>, Decimal)> = flow
            .allocations
            .iter()
            .flat_map(|a| {
                a.items
                    .iter()
                    .map(move |item| ((a.recipient, item.item, item.unit), item.quantity))
            })
            .collect();
        let totals = self
            .new_totals(kind, flow.currency, &parts, Sign::Add)
            .ok_or_else(overflow)?;
        let quantities = new_values(
            |&(node, item, unit): &ItemName<'e>| {
                let key = QuantityKey {
                    node,
                    item: self.item_names.get(item)?,
                    unit: self.unit_names.get(unit)?,
                };
                self.direct_quantities.get(&key).copied()
            },
            items.iter().copied(),
            Sign::Add,
        )
        .ok_or_else(overflow)?;
        Ok(Change::Record(Record {
            kind,
            currency: flow.currency,
            parts,
            items,
            totals,
            quantities,
            pledge,
            day: event.occurred_on,
            grant,
            sector,
            donor,
            usd_rate: flow.usd_rate,
        }))
    }

    /// The new direct totals of `parts` added to or taken from `kind` in `currency`; `None` when
    /// one would pass [`limits::total_max`].
    fn new_totals(
        &self,
        kind: TotalKind,
        currency: CurrencyIndex,
        parts: &[Part],
        sign: Sign,
    ) -> Option<Vec<(TotalKey, Total)>> {
        let steps = parts.iter().map(|part| {
            let key = TotalKey {
                node: part.node,
                kind,
                currency,
            };
            (key, Total::of(part.value, part.usd))
        });
        new_values(|key| self.direct_totals.get(key).copied(), steps, sign)
    }

    /// Checks a payment against its pledge; returns the pledge's index.
    fn check_payment(
        &self,
        partner: Option<u32>,
        pledge_id: &str,
        flow: &Flow<'_>,
    ) -> Result<u32, Rejection> {
        let Some(index) = self.active_pledge(partner, pledge_id) else {
            return Err(Rejection::new(
                RejectCode::UnknownPledge,
                "pledge_id",
                format_args!("this partner has no pledge {pledge_id:?}"),
            ));
        };
        let pledge = &self.pledges[index as usize];
        if pledge.currency != flow.currency {
            return Err(Rejection::new(
                RejectCode::CurrencyMismatch,
                "amount.currency",
                format_args!(
                    "the payment is in {} but pledge {pledge_id:?} is in {}",
                    currency_code(flow.currency),
                    currency_code(pledge.currency)
                ),
            ));
        }
        // Several allocations may pay the same recipient: check what they add up to.
        let mut due: Vec<Decimal> = vec![Decimal::ZERO; pledge.lines.len()];
        for (i, allocation) in flow.allocations.iter().enumerate() {
            let Some(line) = pledge
                .lines
                .iter()
                .position(|l| l.node == allocation.recipient)
            else {
                return Err(Rejection::new(
                    RejectCode::RecipientNotPledged,
                    format!("allocations[{i}]"),
                    format_args!(
                        "pledge {pledge_id:?} has nothing for {}",
                        allocation.recipient.key()
                    ),
                ));
            };
            due[line] += allocation.value; // Bounded by the event's own checked sum.
            let l = &pledge.lines[line];
            if due[line] > l.outstanding() {
                let minor = u32::from(CURRENCIES[usize::from(pledge.currency)].minor_unit);
                return Err(Rejection::new(
                    RejectCode::Overpaid,
                    format!("allocations[{i}].value"),
                    format_args!(
                        "paying {} to {} exceeds the {} outstanding on pledge {pledge_id:?}",
                        crate::money::format_at_scale(due[line], minor),
                        allocation.recipient.key(),
                        crate::money::format_at_scale(l.outstanding(), minor)
                    ),
                ));
            }
        }
        Ok(index)
    }

    /// Decides the reversal of the event `target_id` of `partner`.
    fn decide_reversal(&self, partner: Option<u32>, target_id: u128) -> Result<Reverse, Rejection> {
        let field = "reverses_event_id";
        let target = partner.map(|p| EventKey::new(p, target_id));
        let Some((target, entry)) = target.and_then(|t| Some((t, *self.events.get(&t)?))) else {
            return Err(Rejection::new(
                RejectCode::ReversalTargetUnknown,
                field,
                "this partner has no event with that id",
            ));
        };
        let effect_index = match entry.state {
            EntryState::Applied(index) => index,
            EntryState::Rejected => {
                return Err(Rejection::new(
                    RejectCode::ReversalTargetRejected,
                    field,
                    format_args!(
                        "the event at seq {} was rejected: nothing to undo",
                        entry.seq
                    ),
                ));
            }
            EntryState::Reversed => {
                return Err(Rejection::new(
                    RejectCode::ReversalTargetReversed,
                    field,
                    format_args!("the event at seq {} is already reversed", entry.seq),
                ));
            }
            EntryState::Reversal => {
                return Err(Rejection::new(
                    RejectCode::ReversalOfReversal,
                    field,
                    format_args!(
                        "the event at seq {} is itself a reversal; record the event anew instead",
                        entry.seq
                    ),
                ));
            }
        };
        debug_assert!((effect_index as usize) < self.effects.len());
        let effect = self.effects.get(effect_index);
        if let Some(PledgeLink::Recorded(pledge)) = effect.pledge {
            let open = self.pledges[pledge as usize].payments_open;
            if open > 0 {
                return Err(Rejection::new(
                    RejectCode::PledgeHasPayments,
                    field,
                    format_args!(
                        "the pledge at seq {} still has {open} applied payment(s); reverse them first",
                        entry.seq
                    ),
                ));
            }
        }
        let totals = self
            .new_totals(effect.kind, effect.currency, &effect.parts, Sign::Subtract)
            .ok_or_else(overflow)?;
        let steps = effect.items.iter().map(|i| {
            let key = QuantityKey {
                node: i.node,
                item: i.item,
                unit: i.unit,
            };
            (key, i.quantity)
        });
        let quantities = new_values(
            |key| self.direct_quantities.get(key).copied(),
            steps,
            Sign::Subtract,
        )
        .ok_or_else(overflow)?;
        Ok(Reverse {
            target,
            effect,
            totals,
            quantities,
        })
    }
}

/// A new pledge's lines: what each recipient is pledged, over all its allocations.
fn pledge_lines(flow: &Flow<'_>) -> Vec<PledgeLine> {
    let mut lines: Vec<PledgeLine> = Vec::new();
    for allocation in &flow.allocations {
        match lines.iter_mut().find(|l| l.node == allocation.recipient) {
            // Bounded by the event's own checked sum of allocations.
            Some(line) => line.pledged += allocation.value,
            None => lines.push(PledgeLine {
                node: allocation.recipient,
                pledged: allocation.value,
                paid: Decimal::ZERO,
            }),
        }
    }
    lines
}

/// Up to this many keys, the keys an event touched are found by a linear search; beyond it
/// (an event with hundreds of allocations or thousands of items), by a map.
const LINEAR_KEYS_MAX: usize = 16;

/// The values at each key after adding (or subtracting) every step in order, starting from
/// `current` (absent: zero), one entry per key in the order first touched; `None` when a step
/// overflows or passes [`limits::total_max`]. Steps are taken one by one, as writing them would
/// be, since `Decimal` rounds at the edge of its range and a sum in another order could differ.
fn new_values<K: Copy + Eq + Hash, V: Amount>(
    current: impl Fn(&K) -> Option<V>,
    steps: impl Iterator<Item = (K, V)>,
    sign: Sign,
) -> Option<Vec<(K, V)>> {
    let max = limits::total_max();
    let mut values: Vec<(K, V)> = Vec::new();
    let mut positions: FxHashMap<K, usize> = FxHashMap::default();
    for (key, delta) in steps {
        let position = if values.len() <= LINEAR_KEYS_MAX {
            values.iter().position(|(k, _)| *k == key)
        } else {
            if positions.is_empty() {
                positions.extend(values.iter().enumerate().map(|(i, (k, _))| (*k, i)));
            }
            positions.get(&key).copied()
        };
        let now = match position {
            Some(i) => values[i].1,
            None => current(&key).unwrap_or_default(),
        };
        let next = now.checked(delta, sign).filter(|next| next.within(max))?;
        match position {
            Some(i) => values[i].1 = next,
            None => {
                if !positions.is_empty() {
                    positions.insert(key, values.len());
                }
                values.push((key, next));
            }
        }
    }
    Some(values)
}

fn overflow() -> Rejection {
    Rejection::new(
        RejectCode::Overflow,
        "amount.value",
        "adding this event would take a total past the largest amount fundflow keeps (10^26)",
    )
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a failed test, with its location.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use fundflow_gen::{envelope, flow, in_kind, payment, reversal};
    use fundflow_proto::Message;

    use super::*;
    use crate::values::Outcome;

    #[test]
    fn an_event_rejected_as_an_overflow_interns_no_name() {
        let big = "90000000000000000000000000"; // 9 × 10^25: twice is past the limit.
        let donation = envelope(
            "icshp",
            1,
            in_kind(
                "d-1",
                flow("2", "USD", &[("NPL", "1"), ("NPL", "1")]),
                &[("rice", "kg", big)],
            ),
        );
        let mut ledger = Ledger::new();
        let outcome = ledger.apply(1, &donation.encode_to_vec());
        assert_eq!(outcome.code(), Some(RejectCode::Overflow), "{outcome:?}");
        assert_eq!(ledger.item_names.get("rice"), None);
        assert_eq!(ledger.unit_names.get("kg"), None);
        assert!(ledger.direct_totals.is_empty() && ledger.direct_quantities.is_empty());
        assert_eq!(ledger.effects.len(), 0);
        assert_eq!(
            ledger.events.len(),
            1,
            "the identity is remembered, rejected"
        );
    }

    #[test]
    fn an_event_with_many_allocations_adds_each_in_turn() {
        // More keys than the linear search covers, each paid twice, in an interleaved order.
        let countries: Vec<&str> = fundflow_refdata::COUNTRIES
            .iter()
            .filter(|c| c.region.is_some())
            .map(|c| c.alpha3)
            .take(3 * LINEAR_KEYS_MAX)
            .collect();
        let allocations: Vec<(&str, &str)> = countries
            .iter()
            .chain(countries.iter())
            .map(|c| (*c, "1.25"))
            .collect();
        let amount = format!(
            "{}",
            Decimal::new(125, 2) * Decimal::from(allocations.len())
        );
        let paid = envelope(
            "icshp",
            1,
            payment("p-1", "", flow(&amount, "EUR", &allocations)),
        );
        let mut ledger = Ledger::new();
        assert_eq!(ledger.apply(1, &paid.encode_to_vec()), Outcome::Applied);
        assert_eq!(ledger.direct_totals.len(), countries.len());
        assert!(
            ledger
                .direct_totals
                .values()
                .all(|t| t.amount == Decimal::new(250, 2) && t.unconverted == t.amount)
        );
        assert_eq!(
            ledger.apply(2, &envelope("icshp", 2, reversal(1)).encode_to_vec()),
            Outcome::Applied
        );
        assert!(ledger.direct_totals.is_empty(), "undone exactly");
    }
}
