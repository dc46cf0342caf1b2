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
use crate::values::{CellBlock, CellKey, Digest32, QuantityCellKey, Total};

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
            (self.partners.name(a.partner), &a.pledge_id)
                .cmp(&(self.partners.name(b.partner), &b.pledge_id))
        });
        for p in pledges {
            canonical::pledge(
                out,
                &canonical::PledgeFacts {
                    partner_id: self.partners.name(p.partner),
                    pledge_id: &p.pledge_id,
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

    fn write_canonical_cells(&self, out: &mut impl Write) -> io::Result<()> {
        let partners = ranks(&self.partners);
        let labels = ranks(&self.labels);
        let rank = |ranks: &[u32], id: u32| ranks.get(id as usize).copied();
        let mut cells: Vec<(&CellBlock, &CellKey, &Total)> =
            Vec::with_capacity(self.cells.values().map(FxHashMap::len).sum());
        for (block, block_cells) in &self.cells {
            cells.extend(block_cells.iter().map(|(key, total)| (block, key, total)));
        }
        let tables = canonical::TableRanks::new();
        cells.sort_unstable_by_key(|(block, c, _)| {
            (
                c.day,
                rank(&partners, block.partner),
                rank(&labels, c.grant),
                rank(&labels, c.sector),
                rank(&labels, c.donor),
                tables.node(c.node),
                c.kind,
                tables.currency(c.currency),
            )
        });
        for (block, c, total) in cells {
            canonical::cell(
                out,
                &canonical::CellFacts {
                    day: c.day,
                    partner: self.partners.name(block.partner),
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
        let (items, units) = (ranks(&self.item_names), ranks(&self.unit_names));
        let mut quantities: Vec<(&CellBlock, &QuantityCellKey, &Decimal)> =
            Vec::with_capacity(self.quantity_cells.values().map(FxHashMap::len).sum());
        for (block, block_cells) in &self.quantity_cells {
            quantities.extend(block_cells.iter().map(|(key, q)| (block, key, q)));
        }
        quantities.sort_unstable_by_key(|(block, q, _)| {
            (
                q.day,
                rank(&partners, block.partner),
                tables.node(q.node),
                rank(&items, q.item),
                rank(&units, q.unit),
            )
        });
        for (block, q, quantity) in quantities {
            canonical::item_cell(
                out,
                &canonical::ItemCellFacts {
                    day: q.day,
                    partner: self.partners.name(block.partner),
                    node: q.node,
                    item: self.item_name(q.item),
                    unit: self.unit_name(q.unit),
                    quantity: *quantity,
                },
            )?;
        }
        Ok(())
    }
}

/// The rank of every name of an interner, by id.
fn ranks(interner: &Interner) -> Vec<u32> {
    canonical::ranks(interner.names().iter().map(|name| &**name))
}
