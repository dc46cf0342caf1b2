//! The ledger's reportable state, detached from the fold's indexes: what a read model stores,
//! and what the model digest and reports are computed from. A replay in memory and a read model
//! on disk both produce a [`ModelState`], so both give the same digest by the same code.

use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};

use crate::money::{USD_SCALE, format_at_scale, format_quantity};
use crate::node::{Node, Scope};
use crate::values::{
    Checkpoint, Digest32, PledgeLine, RejectedEvent, Total, TotalKey, currency_code,
};

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
    pub currency: fundflow_refdata::CurrencyIndex,
    /// Pledged and paid per recipient.
    pub lines: Vec<PledgeLine>,
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
        let mut hasher = HashWriter(Sha256::new());
        // Writing into a hasher cannot fail.
        let _ = self.write_canonical(&mut hasher);
        hasher.0.finalize().into()
    }

    /// Writes the state in its canonical form: sorted, one fact per line, amounts at their
    /// currency's scale, names by their public codes (never internal indices), so the same log
    /// gives the same bytes on every machine. Strings that partners chose are written with their
    /// byte length first (`5:masks`), so no content can forge a line break.
    pub fn write_canonical(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let c = &self.checkpoint;
        writeln!(out, "fundflow-model-v1")?;
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
                format_at_scale(t.amount, minor),
                format_at_scale(t.usd_equivalent, USD_SCALE),
                format_at_scale(t.unconverted, minor),
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
                format_quantity(*q)
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
                    format_at_scale(line.pledged, minor),
                    format_at_scale(line.paid, minor),
                )?;
            }
        }
        Ok(())
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
