//! The ledger's reportable state, detached from the fold's indexes: what a read model stores,
//! and what the model digest and reports are computed from. A replay in memory and a read model
//! on disk both produce a [`ModelState`], so both give the same digest by the same code.

use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};

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
        digest_of(|out| self.write_canonical(out))
    }

    /// Writes the state in its canonical form (see [`canonical`]). The fold writes the same
    /// form from its own indexes ([`crate::Ledger::model_digest`]) without this copy.
    pub fn write_canonical(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        canonical::head(out, &self.checkpoint)?;
        canonical::totals(out, &self.totals())?;
        canonical::quantities(out, &self.quantities())?;
        let mut pledges: Vec<&PledgeRow> = self.pledges.iter().collect();
        pledges.sort_unstable_by(|a, b| {
            (&a.partner_id, &a.pledge_id).cmp(&(&b.partner_id, &b.pledge_id))
        });
        for p in pledges {
            canonical::pledge(
                out,
                &canonical::PledgeFacts {
                    partner_id: &p.partner_id,
                    pledge_id: &p.pledge_id,
                    currency: p.currency,
                    lines: &p.lines,
                    donor: &p.donor,
                    sector: &p.sector,
                    occurred_on: p.occurred_on,
                    usd_rate: p.usd_rate,
                    pledged_usd: p.pledged_usd,
                    paid_usd: p.paid_usd,
                    payments_unconverted: p.payments_unconverted,
                },
            )?;
        }
        self.write_cells(out)?;
        canonical::days(out, self.day_outcomes.iter().copied())
    }

    /// The cells and quantity cells of the canonical form, sorted by their names' order (the
    /// labels' indexes are the state's own, so they are ranked by name first).
    fn write_cells(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let rank = canonical::ranks(self.labels.iter().map(String::as_str));
        let name = |i: u32| self.labels.get(i as usize).map_or("", String::as_str);
        let r = |i: u32| rank.get(i as usize).copied().unwrap_or(u32::MAX);
        let tables = canonical::TableRanks::new();
        let mut cells: Vec<&StateCell> = self.cells.iter().collect();
        cells.sort_unstable_by_key(|c| {
            (
                c.day,
                r(c.partner),
                r(c.grant),
                r(c.sector),
                r(c.donor),
                tables.node(c.node),
                c.kind,
                tables.currency(c.currency),
            )
        });
        for c in cells {
            canonical::cell(
                out,
                &canonical::CellFacts {
                    day: c.day,
                    partner: name(c.partner),
                    grant: name(c.grant),
                    sector: name(c.sector),
                    donor: name(c.donor),
                    node: c.node,
                    kind: c.kind,
                    currency: c.currency,
                    total: &c.total,
                },
            )?;
        }
        let mut quantities: Vec<&StateQuantityCell> = self.quantity_cells.iter().collect();
        quantities.sort_unstable_by_key(|q| {
            (
                q.day,
                r(q.partner),
                tables.node(q.node),
                r(q.item),
                r(q.unit),
            )
        });
        for q in quantities {
            canonical::item_cell(
                out,
                &canonical::ItemCellFacts {
                    day: q.day,
                    partner: name(q.partner),
                    node: q.node,
                    item: name(q.item),
                    unit: name(q.unit),
                    quantity: q.quantity,
                },
            )?;
        }
        Ok(())
    }
}

/// SHA-256 of what `write` writes. Buffered: the canonical form is millions of short writes,
/// and each through the hasher costs more than a copy.
pub(crate) fn digest_of(
    write: impl FnOnce(&mut std::io::BufWriter<HashWriter>) -> std::io::Result<()>,
) -> Digest32 {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, HashWriter(Sha256::new()));
    let written = write(&mut out);
    match (written, out.into_inner()) {
        (Ok(()), Ok(hasher)) => hasher.0.finalize().into(),
        _ => unreachable!("writing into a hasher cannot fail"),
    }
}

/// The canonical form of a model, line by line: sorted, one fact per line, amounts at their
/// currency's scale, names by their public codes (never internal indices), so the same log
/// gives the same bytes on every machine. Strings that partners chose are written with their
/// byte length first (`5:masks`), so no content can forge a line break.
///
/// Two writers share these lines: [`ModelState::write_canonical`] (a read model's state) and the
/// fold's own ([`crate::Ledger::model_digest`]), which sorts references into its indexes rather
/// than copying them; each sorts, these only write. Facts are borrowed for that reason.
pub(crate) mod canonical {
    use std::io::{self, Write};

    use rust_decimal::Decimal;
    use rustc_hash::FxHashMap;
    use time::Date;

    use super::minor_unit;
    use crate::money::{USD_SCALE, at_scale, write_decimal};
    use crate::node::Node;
    use crate::values::{
        Checkpoint, DayOutcomes, PledgeLine, Total, TotalKey, TotalKind, currency_code,
    };
    use fundflow_refdata::CurrencyIndex;

    // The pieces of a line, written without `fmt`: the canonical form is millions of lines, and
    // the formatting machinery was most of the model digest's time. Each writes exactly what
    // `Display` writes (the pinned digests in the tests, and `money`'s tests, say so).

    fn text(out: &mut impl Write, s: &str) -> io::Result<()> {
        out.write_all(s.as_bytes())
    }

    fn number(out: &mut impl Write, n: impl itoa::Integer) -> io::Result<()> {
        out.write_all(itoa::Buffer::new().format(n).as_bytes())
    }

    /// A partner's string, length first (`5:masks`), so that no content can forge a line.
    fn sized(out: &mut impl Write, s: &str) -> io::Result<()> {
        number(out, s.len())?;
        out.write_all(b":")?;
        text(out, s)
    }

    fn amount(out: &mut impl Write, value: Decimal, scale: u32) -> io::Result<()> {
        write_decimal(out, at_scale(value, scale))
    }

    /// `YYYY-MM-DD`, as `Date`'s `Display` writes a year of four digits.
    fn date(out: &mut impl Write, day: Date) -> io::Result<()> {
        let year = day.year();
        if !(0..=9999).contains(&year) {
            return write!(out, "{day}");
        }
        let (month, day) = (u8::from(day.month()), day.day());
        let two = |n: u8| [b'0' + n / 10, b'0' + n % 10];
        let [y0, y1] = two(u8::try_from(year / 100).unwrap_or(0));
        let [y2, y3] = two(u8::try_from(year % 100).unwrap_or(0));
        let [m0, m1] = two(month);
        let [d0, d1] = two(day);
        out.write_all(&[y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1])
    }

    /// A pledge's facts.
    pub(crate) struct PledgeFacts<'a> {
        pub(crate) partner_id: &'a str,
        pub(crate) pledge_id: &'a str,
        pub(crate) currency: CurrencyIndex,
        pub(crate) lines: &'a [PledgeLine],
        pub(crate) donor: &'a str,
        pub(crate) sector: &'a str,
        pub(crate) occurred_on: Date,
        pub(crate) usd_rate: Option<Decimal>,
        pub(crate) pledged_usd: Option<Decimal>,
        pub(crate) paid_usd: Decimal,
        pub(crate) payments_unconverted: u32,
    }

    /// A cell's facts, names resolved.
    pub(crate) struct CellFacts<'a> {
        pub(crate) day: Date,
        pub(crate) partner: &'a str,
        pub(crate) grant: &'a str,
        pub(crate) sector: &'a str,
        pub(crate) donor: &'a str,
        pub(crate) node: Node,
        pub(crate) kind: TotalKind,
        pub(crate) currency: CurrencyIndex,
        pub(crate) total: &'a Total,
    }

    /// An in-kind quantity cell's facts, names resolved.
    pub(crate) struct ItemCellFacts<'a> {
        pub(crate) day: Date,
        pub(crate) partner: &'a str,
        pub(crate) node: Node,
        pub(crate) item: &'a str,
        pub(crate) unit: &'a str,
        pub(crate) quantity: Decimal,
    }

    /// Each node's rank in (scope, key) order, by node index, and each currency's in code
    /// order, by currency index: what the cells are sorted by, as integers, so that a sort of
    /// millions of cells compares no strings.
    pub(crate) struct TableRanks {
        nodes: Vec<u16>,
        currencies: Vec<u16>,
    }

    impl TableRanks {
        pub(crate) fn new() -> TableRanks {
            let nodes: Vec<Node> = (0..=u16::MAX).map_while(Node::from_index).collect();
            let mut by_key = nodes.clone();
            by_key.sort_unstable_by_key(|n| (n.scope(), n.key()));
            let mut node_ranks = vec![0; nodes.len()];
            for (rank, node) in (0u16..).zip(&by_key) {
                node_ranks[usize::from(node.index())] = rank;
            }
            let currencies = fundflow_refdata::CURRENCIES.len();
            let mut codes: Vec<u16> = (0..).take(currencies).collect();
            codes.sort_unstable_by_key(|&c| currency_code(c));
            let mut currency_ranks = vec![0; currencies];
            for (rank, &currency) in (0u16..).zip(&codes) {
                currency_ranks[usize::from(currency)] = rank;
            }
            TableRanks {
                nodes: node_ranks,
                currencies: currency_ranks,
            }
        }

        /// The node's rank: its (scope, key) order.
        pub(crate) fn node(&self, node: Node) -> u16 {
            self.nodes
                .get(usize::from(node.index()))
                .copied()
                .unwrap_or(u16::MAX)
        }

        /// The currency's rank: its code's order.
        pub(crate) fn currency(&self, currency: CurrencyIndex) -> u16 {
            self.currencies
                .get(usize::from(currency))
                .copied()
                .unwrap_or(u16::MAX)
        }
    }

    /// Each name's rank in the sorted set of distinct names (equal names rank equal), so that
    /// sorting by ranks sorts by names without comparing strings.
    pub(crate) fn ranks<'a>(names: impl Iterator<Item = &'a str> + Clone) -> Vec<u32> {
        let mut sorted: Vec<&str> = names.clone().collect();
        sorted.sort_unstable();
        sorted.dedup();
        names
            .map(|name| {
                let at = sorted.binary_search(&name);
                debug_assert!(at.is_ok(), "every name is in the sorted set");
                u32::try_from(at.unwrap_or(usize::MAX)).unwrap_or(u32::MAX)
            })
            .collect()
    }

    pub(crate) fn head(out: &mut impl Write, c: &Checkpoint) -> io::Result<()> {
        writeln!(out, "fundflow-model-v2")?;
        writeln!(out, "last_seq {}", c.last_seq)?;
        writeln!(
            out,
            "outcomes {} {} {}",
            c.applied,
            c.rejected,
            hex::encode(c.rejected_digest)
        )
    }

    /// Every rolled-up total, sorted by scope, key, kind and currency code.
    pub(crate) fn totals(
        out: &mut impl Write,
        rolled: &FxHashMap<TotalKey, Total>,
    ) -> io::Result<()> {
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
            for word in ["total ", scope.as_str(), " ", key, " ", kind.as_str(), " "] {
                text(out, word)?;
            }
            text(out, currency)?;
            text(out, " ")?;
            amount(out, t.amount, minor)?;
            text(out, " ")?;
            amount(out, t.usd_equivalent, USD_SCALE)?;
            text(out, " ")?;
            amount(out, t.unconverted, minor)?;
            text(out, "\n")?;
        }
        Ok(())
    }

    /// Every rolled-up quantity, sorted by scope, key, item and unit.
    pub(crate) fn quantities(
        out: &mut impl Write,
        rolled: &FxHashMap<(Node, &str, &str), Decimal>,
    ) -> io::Result<()> {
        let mut quantities: Vec<_> = rolled
            .iter()
            .map(|((node, item, unit), q)| ((node.scope(), node.key(), *item, *unit), q))
            .collect();
        quantities.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for ((scope, key, item, unit), q) in quantities {
            for word in ["item ", scope.as_str(), " ", key, " "] {
                text(out, word)?;
            }
            sized(out, item)?;
            text(out, " ")?;
            sized(out, unit)?;
            text(out, " ")?;
            write_decimal(out, q.normalize())?;
            text(out, "\n")?;
        }
        Ok(())
    }

    /// One pledge's lines; callers write pledges in (partner id, pledge id) order.
    pub(crate) fn pledge(out: &mut impl Write, p: &PledgeFacts<'_>) -> io::Result<()> {
        let currency = currency_code(p.currency);
        let minor = minor_unit(currency);
        let mut lines: Vec<_> = p.lines.iter().map(|l| (l.node.key(), l)).collect();
        lines.sort_unstable_by_key(|(key, _)| *key);
        let partner_and_pledge = |out: &mut _| -> io::Result<()> {
            text(out, p.partner_id)?;
            text(out, " ")?;
            sized(out, p.pledge_id)
        };
        for (key, line) in lines {
            text(out, "pledge ")?;
            partner_and_pledge(out)?;
            for word in [" ", currency, " ", key, " "] {
                text(out, word)?;
            }
            amount(out, line.pledged, minor)?;
            text(out, " ")?;
            amount(out, line.paid, minor)?;
            text(out, "\n")?;
        }
        text(out, "pledge-terms ")?;
        partner_and_pledge(out)?;
        text(out, " ")?;
        date(out, p.occurred_on)?;
        text(out, " ")?;
        sized(out, p.donor)?;
        text(out, " ")?;
        sized(out, p.sector)?;
        text(out, " ")?;
        match p.usd_rate {
            Some(rate) => write_decimal(out, rate)?,
            None => text(out, "-")?,
        }
        text(out, " ")?;
        match p.pledged_usd {
            Some(usd) => amount(out, usd, USD_SCALE)?,
            None => text(out, "-")?,
        }
        text(out, " ")?;
        amount(out, p.paid_usd, USD_SCALE)?;
        text(out, " ")?;
        number(out, p.payments_unconverted)?;
        text(out, "\n")
    }

    /// One cell; callers write cells in (day, partner, grant, sector, donor, scope, key, kind,
    /// currency code) order, names compared as strings.
    pub(crate) fn cell(out: &mut impl Write, c: &CellFacts<'_>) -> io::Result<()> {
        let currency = currency_code(c.currency);
        let minor = minor_unit(currency);
        text(out, "cell ")?;
        date(out, c.day)?;
        for name in [c.partner, c.grant, c.sector, c.donor] {
            text(out, " ")?;
            sized(out, name)?;
        }
        for word in [
            " ",
            c.node.scope().as_str(),
            " ",
            c.node.key(),
            " ",
            c.kind.as_str(),
            " ",
            currency,
            " ",
        ] {
            text(out, word)?;
        }
        amount(out, c.total.amount, minor)?;
        text(out, " ")?;
        amount(out, c.total.usd_equivalent, USD_SCALE)?;
        text(out, " ")?;
        amount(out, c.total.unconverted, minor)?;
        text(out, "\n")
    }

    /// One in-kind quantity cell; callers write them after every cell, in (day, partner, scope,
    /// key, item, unit) order.
    pub(crate) fn item_cell(out: &mut impl Write, q: &ItemCellFacts<'_>) -> io::Result<()> {
        text(out, "item-cell ")?;
        date(out, q.day)?;
        text(out, " ")?;
        sized(out, q.partner)?;
        for word in [" ", q.node.scope().as_str(), " ", q.node.key(), " "] {
            text(out, word)?;
        }
        sized(out, q.item)?;
        text(out, " ")?;
        sized(out, q.unit)?;
        text(out, " ")?;
        write_decimal(out, q.quantity.normalize())?;
        text(out, "\n")
    }

    /// The outcomes per day, in date order.
    pub(crate) fn days(
        out: &mut impl Write,
        days: impl Iterator<Item = (Date, DayOutcomes)>,
    ) -> io::Result<()> {
        for (day, outcomes) in days {
            text(out, "day ")?;
            date(out, day)?;
            text(out, " ")?;
            number(out, outcomes.applied)?;
            text(out, " ")?;
            number(out, outcomes.rejected)?;
            text(out, "\n")?;
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use time::{Date, Month};

        #[test]
        fn date_writes_what_display_writes() {
            let days = [
                Date::from_calendar_date(2020, Month::September, 7),
                Date::from_calendar_date(1999, Month::December, 31),
                Date::from_calendar_date(0, Month::January, 1),
                Date::from_calendar_date(999, Month::March, 10),
                Date::from_calendar_date(9999, Month::December, 31),
                Date::from_calendar_date(-1, Month::June, 15),
            ];
            for day in days
                .map(Result::unwrap)
                .into_iter()
                .chain([Date::MIN, Date::MAX])
            {
                let mut written = Vec::new();
                super::date(&mut written, day).unwrap();
                assert_eq!(String::from_utf8(written).unwrap(), day.to_string());
            }
        }
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

pub(crate) struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
