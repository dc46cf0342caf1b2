//! The ledger's reportable state, detached from the fold's indexes: what a read model stores,
//! and what the model digest and reports are computed from. A replay in memory and a read model
//! on disk both produce a [`ModelState`], so both give the same digest by the same code.

use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};

use crate::money::{USD_SCALE, at_scale, format_at_scale};
use crate::node::{Node, Scope};
use crate::values::{
    Checkpoint, DayOutcomes, Digest32, PledgeLine, RejectedEvent, Total, TotalKey, TotalKind,
    currency_code,
};
use fundflow_refdata::CurrencyIndex;
use time::Date;

/// An in-kind quantity given directly to a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectQuantity {
    /// The recipient.
    pub node: Node,
    /// Item code or name.
    pub item: String,
    /// Unit.
    pub unit: String,
    /// How many units.
    pub quantity: Decimal,
}

/// An active pledge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PledgeRow {
    /// The partner that recorded it.
    pub partner_id: String,
    /// The partner's identifier.
    pub pledge_id: String,
    /// Its currency, an index into `fundflow_refdata::CURRENCIES`.
    pub currency: CurrencyIndex,
    /// Pledged and paid per recipient.
    pub lines: Vec<PledgeLine>,
    /// Who pledges.
    pub donor: String,
    /// The sector, or empty.
    pub sector: String,
    /// The pledge's `occurred_on`.
    pub occurred_on: Date,
    /// Its USD rate, if it had one.
    pub usd_rate: Option<Decimal>,
    /// The sum of its allocations' USD equivalents, with a rate.
    pub pledged_usd: Option<Decimal>,
    /// The sum of the USD equivalents of its payments that had a rate.
    pub paid_usd: Decimal,
    /// How many of its payments came without a USD rate (then `paid_usd` is not the whole).
    pub payments_unconverted: u32,
}

/// A cell of [`ModelState::cells`]; names are indexes into [`ModelState::labels`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateCell {
    /// The flows' `occurred_on`.
    pub day: Date,
    /// Partner, grant, sector and donor names, by index into the state's labels.
    pub partner: u32,
    /// See `partner`.
    pub grant: u32,
    /// See `partner`.
    pub sector: u32,
    /// See `partner`.
    pub donor: u32,
    /// The recipient as allocated.
    pub node: Node,
    /// What it counts.
    pub kind: TotalKind,
    /// The currency.
    pub currency: CurrencyIndex,
    /// The sum.
    pub total: Total,
}

/// An in-kind quantity cell of [`ModelState::quantity_cells`]; names by index into the labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateQuantityCell {
    /// The donations' `occurred_on`.
    pub day: Date,
    /// Partner, item and unit names, by index into the state's labels.
    pub partner: u32,
    /// The recipient as allocated.
    pub node: Node,
    /// See `partner`.
    pub item: u32,
    /// See `partner`.
    pub unit: u32,
    /// How many units.
    pub quantity: Decimal,
}

/// See the module docs. Collections are in no particular order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelState {
    /// Where the fold stands.
    pub checkpoint: Checkpoint,
    /// Totals per recipient as allocated.
    pub direct_totals: Vec<(TotalKey, Total)>,
    /// Quantities per recipient as allocated.
    pub direct_quantities: Vec<DirectQuantity>,
    /// Active pledges.
    pub pledges: Vec<PledgeRow>,
    /// Every rejected record, in log order.
    pub rejected_events: Vec<RejectedEvent>,
    /// The names cells refer to by index, in no particular order (a name may appear twice).
    pub labels: Vec<String>,
    /// Every cell at the finest grain (day, partner, grant, sector, donor, recipient, kind,
    /// currency), in no particular order.
    pub cells: Vec<StateCell>,
    /// Every in-kind quantity cell (day, partner, recipient, item, unit).
    pub quantity_cells: Vec<StateQuantityCell>,
    /// Records applied and rejected per `occurred_on` day.
    pub day_outcomes: Vec<(Date, DayOutcomes)>,
}

impl ModelState {
    /// Every nonzero total at every level: each direct total added to its recipient and every M49
    /// area above it.
    pub fn totals(&self) -> FxHashMap<TotalKey, Total> {
        roll_up(
            self.direct_totals.iter().copied(),
            |k, node| TotalKey { node, ..k },
            |k| k.node,
            |a, b| a.saturating_add(&b),
        )
    }

    /// Every nonzero quantity at every level, rolled up as [`ModelState::totals`] is.
    pub fn quantities(&self) -> FxHashMap<(Node, &str, &str), Decimal> {
        roll_up(
            self.direct_quantities
                .iter()
                .map(|q| ((q.node, q.item.as_str(), q.unit.as_str()), q.quantity)),
            |(_, item, unit), node| (node, item, unit),
            |(node, _, _)| node,
            Decimal::saturating_add,
        )
    }

    /// SHA-256 of [`ModelState::write_canonical`].
    pub fn model_digest(&self) -> Digest32 {
        // Buffered: the canonical form is millions of short writes, and each through the
        // hasher costs more than a copy.
        let mut out = std::io::BufWriter::with_capacity(1 << 16, HashWriter(Sha256::new()));
        let written = self.write_canonical(&mut out);
        match (written, out.into_inner()) {
            (Ok(()), Ok(hasher)) => hasher.0.finalize().into(),
            _ => unreachable!("writing into a hasher cannot fail"),
        }
    }

    /// Writes the state in its canonical form: sorted, one fact per line, amounts at their
    /// currency's scale, names by their public codes (never internal indices), so the same log
    /// gives the same bytes on every machine. Strings that partners chose are written with their
    /// byte length first (`5:masks`), so no content can forge a line break.
    pub fn write_canonical(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let c = &self.checkpoint;
        writeln!(out, "fundflow-model-v2")?;
        writeln!(out, "last_seq {}", c.last_seq)?;
        writeln!(
            out,
            "outcomes {} {} {}",
            c.applied,
            c.rejected,
            hex::encode(c.rejected_digest)
        )?;
        let rolled = self.totals();
        let mut totals: Vec<_> = rolled
            .iter()
            .map(|(k, t)| {
                (
                    (
                        k.node.scope(),
                        k.node.key(),
                        k.kind,
                        currency_code(k.currency),
                    ),
                    t,
                )
            })
            .collect();
        totals.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for ((scope, key, kind, currency), t) in totals {
            let minor = minor_unit(currency);
            writeln!(
                out,
                "total {} {key} {} {currency} {} {} {}",
                scope.as_str(),
                kind.as_str(),
                at_scale(t.amount, minor),
                at_scale(t.usd_equivalent, USD_SCALE),
                at_scale(t.unconverted, minor),
            )?;
        }
        let rolled = self.quantities();
        let mut quantities: Vec<_> = rolled
            .iter()
            .map(|((node, item, unit), q)| ((node.scope(), node.key(), *item, *unit), q))
            .collect();
        quantities.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for ((scope, key, item, unit), q) in quantities {
            writeln!(
                out,
                "item {} {key} {}:{item} {}:{unit} {}",
                scope.as_str(),
                item.len(),
                unit.len(),
                q.normalize()
            )?;
        }
        let mut pledges: Vec<&PledgeRow> = self.pledges.iter().collect();
        pledges.sort_unstable_by(|a, b| {
            (&a.partner_id, &a.pledge_id).cmp(&(&b.partner_id, &b.pledge_id))
        });
        for p in pledges {
            let currency = currency_code(p.currency);
            let minor = minor_unit(currency);
            let mut lines: Vec<_> = p.lines.iter().map(|l| (l.node.key(), l)).collect();
            lines.sort_unstable_by_key(|(key, _)| *key);
            for (key, line) in lines {
                writeln!(
                    out,
                    "pledge {} {}:{} {currency} {key} {} {}",
                    p.partner_id,
                    p.pledge_id.len(),
                    p.pledge_id,
                    at_scale(line.pledged, minor),
                    at_scale(line.paid, minor),
                )?;
            }
            let optional = |d: Option<Decimal>| d.map_or_else(|| "-".to_owned(), |d| d.to_string());
            writeln!(
                out,
                "pledge-terms {} {}:{} {} {}:{} {}:{} {} {} {} {}",
                p.partner_id,
                p.pledge_id.len(),
                p.pledge_id,
                p.occurred_on,
                p.donor.len(),
                p.donor,
                p.sector.len(),
                p.sector,
                optional(p.usd_rate),
                p.pledged_usd
                    .map_or_else(|| "-".to_owned(), |d| format_at_scale(d, USD_SCALE)),
                at_scale(p.paid_usd, USD_SCALE),
                p.payments_unconverted,
            )?;
        }
        self.write_cells(out)?;
        for (day, outcomes) in &self.day_outcomes {
            writeln!(out, "day {day} {} {}", outcomes.applied, outcomes.rejected)?;
        }
        Ok(())
    }

    /// The cells and quantity cells of the canonical form, sorted by their names' order (the
    /// labels' indexes are the state's own, so they are ranked by name first).
    fn write_cells(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let rank = self.label_ranks();
        let name = |i: u32| self.labels.get(i as usize).map_or("", String::as_str);
        let r = |i: u32| rank.get(i as usize).copied().unwrap_or(u32::MAX);
        let mut cells: Vec<&StateCell> = self.cells.iter().collect();
        cells.sort_unstable_by_key(|c| {
            (
                c.day,
                r(c.partner),
                r(c.grant),
                r(c.sector),
                r(c.donor),
                c.node.scope(),
                c.node.key(),
                c.kind,
                currency_code(c.currency),
            )
        });
        for c in cells {
            let currency = currency_code(c.currency);
            let minor = minor_unit(currency);
            let (partner, grant, sector, donor) = (
                name(c.partner),
                name(c.grant),
                name(c.sector),
                name(c.donor),
            );
            writeln!(
                out,
                "cell {} {}:{partner} {}:{grant} {}:{sector} {}:{donor} {} {} {} {currency} {} {} {}",
                c.day,
                partner.len(),
                grant.len(),
                sector.len(),
                donor.len(),
                c.node.scope().as_str(),
                c.node.key(),
                c.kind.as_str(),
                at_scale(c.total.amount, minor),
                at_scale(c.total.usd_equivalent, USD_SCALE),
                at_scale(c.total.unconverted, minor),
            )?;
        }
        let mut quantities: Vec<&StateQuantityCell> = self.quantity_cells.iter().collect();
        quantities.sort_unstable_by_key(|q| {
            (
                q.day,
                r(q.partner),
                q.node.scope(),
                q.node.key(),
                r(q.item),
                r(q.unit),
            )
        });
        for q in quantities {
            let (partner, item, unit) = (name(q.partner), name(q.item), name(q.unit));
            writeln!(
                out,
                "item-cell {} {}:{partner} {} {} {}:{item} {}:{unit} {}",
                q.day,
                partner.len(),
                q.node.scope().as_str(),
                q.node.key(),
                item.len(),
                unit.len(),
                q.quantity.normalize()
            )?;
        }
        Ok(())
    }

    /// Each label's rank in the sorted set of distinct names: equal names rank equal.
    fn label_ranks(&self) -> Vec<u32> {
        let mut sorted: Vec<&str> = self.labels.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        self.labels
            .iter()
            .map(|label| {
                let at = sorted.binary_search(&label.as_str()).unwrap_or(usize::MAX);
                u32::try_from(at).unwrap_or(u32::MAX)
            })
            .collect()
    }
}

/// Adds every direct value to its node and to every M49 area above it. Direct totals are capped
/// at `limits::total_max()` and an area has at most `limits::ROLLUP_NODES_MAX` nodes under it,
/// so a sum stays far inside Decimal's range: `add` may saturate, and never does.
pub(crate) fn roll_up<K: Copy + Eq + std::hash::Hash, V: Copy + Default>(
    direct: impl Iterator<Item = (K, V)>,
    at: impl Fn(K, Node) -> K,
    node_of: impl Fn(K) -> Node,
    add: impl Fn(V, V) -> V,
) -> FxHashMap<K, V> {
    let mut rolled: FxHashMap<K, V> = FxHashMap::default();
    for (key, value) in direct {
        for node in node_of(key).rollup() {
            let entry = rolled.entry(at(key, node)).or_default();
            *entry = add(*entry, value);
        }
    }
    rolled
}

/// The minor unit of a currency code (0 for an unknown one, which the ledger never holds).
pub fn minor_unit(currency: &str) -> u32 {
    fundflow_refdata::currency_by_code(currency).map_or(0, |i| {
        u32::from(fundflow_refdata::CURRENCIES[usize::from(i)].minor_unit)
    })
}

/// The rows of the totals at `scope` (all scopes when `None`), sorted by scope, key, kind and
/// currency: the order reports and the API use.
pub fn sorted_totals(state: &ModelState, scope: Option<Scope>) -> Vec<(TotalKey, Total)> {
    let mut rows: Vec<_> = state
        .totals()
        .into_iter()
        .filter(|(k, _)| scope.is_none_or(|s| k.node.scope() == s))
        .collect();
    rows.sort_unstable_by(|(a, _), (b, _)| {
        (
            a.node.scope(),
            a.node.key(),
            a.kind,
            currency_code(a.currency),
        )
            .cmp(&(
                b.node.scope(),
                b.node.key(),
                b.kind,
                currency_code(b.currency),
            ))
    });
    rows
}

struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
