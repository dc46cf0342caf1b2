//! The model digest written from the fold's own indexes: the same canonical form as
//! [`ModelState::write_canonical`](crate::ModelState::write_canonical), line for line, without
//! the copy of every cell and pledge a [`ModelState`](crate::ModelState) would take (at a
//! million events, that copy was more than a third of a replay's peak memory). What is sorted
//! is references into the ledger's maps, and names are ranked per interner: a rank is monotone
//! in its name, so sorting by ranks gives the order the canonical form fixes by names.

use std::io::{self, Write};

use rust_decimal::Decimal;
use rustc_hash::FxHashMap;

use super::{Ledger, PledgeState};
use crate::interner::Interner;
use crate::model::{canonical, digest_of, roll_up};
use crate::node::Node;
use crate::values::{CellBlock, Digest32, Month};

impl Ledger {
    /// The model digest: SHA-256 of the canonical form of [`Ledger::model_state`], which the
    /// read model's [`ModelState::model_digest`](crate::ModelState::model_digest) also gives
    /// for the same log.
    pub fn model_digest(&self) -> Digest32 {
        digest_of(|out| self.write_canonical(out))
    }

    fn write_canonical(&self, out: &mut impl Write) -> io::Result<()> {
        canonical::head(out, &self.checkpoint())?;
        canonical::totals(out, &self.totals())?;
        let quantities: FxHashMap<(Node, &str, &str), Decimal> = roll_up(
            self.direct_quantities
                .iter()
                .map(|(k, q)| ((k.node, self.item_name(k.item), self.unit_name(k.unit)), *q)),
            |(_, item, unit), node| (node, item, unit),
            |(node, _, _)| node,
            Decimal::saturating_add,
        );
        canonical::quantities(out, &quantities)?;
        self.write_canonical_pledges(out)?;
        self.write_canonical_cells(out)?;
        canonical::days(out, self.day_outcomes())
    }

    fn write_canonical_pledges(&self, out: &mut impl Write) -> io::Result<()> {
        let mut pledges: Vec<&PledgeState> = self.pledges.iter().filter(|p| p.active).collect();
        pledges.sort_unstable_by(|a, b| {
            (self.partners.name(a.partner), self.labels.name(a.pledge_id))
                .cmp(&(self.partners.name(b.partner), self.labels.name(b.pledge_id)))
        });
        for p in pledges {
            canonical::pledge(
                out,
                &canonical::PledgeFacts {
                    partner_id: self.partners.name(p.partner),
                    pledge_id: self.labels.name(p.pledge_id),
                    currency: p.currency,
                    lines: &p.lines,
                    donor: self.labels.name(p.donor),
                    sector: self.labels.name(p.sector),
                    occurred_on: p.occurred_on,
                    usd_rate: p.usd_rate,
                    pledged_usd: p.pledged_usd,
                    paid_usd: p.paid_usd,
                    payments_unconverted: p.payments_unconverted,
                },
            )?;
        }
        Ok(())
    }

    /// Cells go out month by month: the canonical order is by day first, and a block holds one
    /// month of one partner, so sorting each month's blocks on their own gives the same order
    /// as one sort of every cell, with a month's worth of sort keys in memory instead of a
    /// reference to every cell, and keys computed once per cell rather than per comparison.
    fn write_canonical_cells(&self, out: &mut impl Write) -> io::Result<()> {
        let partners = ranks(&self.partners);
        let labels = ranks(&self.labels);
        let rank = |ranks: &[u32], id: u32| ranks.get(id as usize).copied();
        let tables = canonical::TableRanks::new();
        let mut month_cells = Vec::new();
        for same_month in by_month(&self.cells).chunk_by(|a, b| a.0.month == b.0.month) {
            month_cells.clear();
            for (block, block_cells) in same_month {
                month_cells.extend(block_cells.iter().map(|(c, total)| {
                    debug_assert_eq!(
                        Month::of(c.day),
                        block.month,
                        "a cell is in its month's block"
                    );
                    let key = (
                        c.day,
                        rank(&partners, block.partner),
                        rank(&labels, c.grant),
                        rank(&labels, c.sector),
                        rank(&labels, c.donor),
                        tables.node(c.node),
                        c.kind,
                        tables.currency(c.currency),
                    );
                    (key, block.partner, c, total)
                }));
            }
            // Keys are distinct (names rank distinctly), so the unstable sort's order is fixed.
            month_cells.sort_unstable_by_key(|cell| cell.0);
            for &(_, partner, c, total) in &month_cells {
                canonical::cell(
                    out,
                    &canonical::CellFacts {
                        day: c.day,
                        partner: self.partners.name(partner),
                        grant: self.labels.name(c.grant),
                        sector: self.labels.name(c.sector),
                        donor: self.labels.name(c.donor),
                        node: c.node,
                        kind: c.kind,
                        currency: c.currency,
                        total,
                    },
                )?;
            }
        }
        let (items, units) = (ranks(&self.item_names), ranks(&self.unit_names));
        let mut month_quantities = Vec::new();
        for same_month in by_month(&self.quantity_cells).chunk_by(|a, b| a.0.month == b.0.month) {
            month_quantities.clear();
            for (block, block_cells) in same_month {
                month_quantities.extend(block_cells.iter().map(|(q, quantity)| {
                    let key = (
                        q.day,
                        rank(&partners, block.partner),
                        tables.node(q.node),
                        rank(&items, q.item),
                        rank(&units, q.unit),
                    );
                    (key, block.partner, q, *quantity)
                }));
            }
            month_quantities.sort_unstable_by_key(|cell| cell.0);
            for &(_, partner, q, quantity) in &month_quantities {
                canonical::item_cell(
                    out,
                    &canonical::ItemCellFacts {
                        day: q.day,
                        partner: self.partners.name(partner),
                        node: q.node,
                        item: self.item_name(q.item),
                        unit: self.unit_name(q.unit),
                        quantity,
                    },
                )?;
            }
        }
        Ok(())
    }
}

/// The blocks, by month (blocks of one month in no particular order).
fn by_month<V>(blocks: &FxHashMap<CellBlock, V>) -> Vec<(&CellBlock, &V)> {
    let mut sorted: Vec<_> = blocks.iter().collect();
    sorted.sort_unstable_by_key(|(block, _)| block.month);
    sorted
}

/// The rank of every name of an interner, by id.
fn ranks(interner: &Interner) -> Vec<u32> {
    canonical::ranks(interner.names())
}
