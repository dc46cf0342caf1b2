//! Per-kind sums of the API's total rows, for the pages' tables: USD equivalents (which may be
//! summed over currencies, and say so) and what came without a rate, kept per currency (which
//! is never summed across currencies). All in checked decimal arithmetic.

use std::collections::BTreeMap;

use fundflow_api::TotalRow;
use rust_decimal::Decimal;

use crate::page::KINDS;
use crate::{DashboardError, decimal};

/// The sums of one row of a page (an area, a country, a partner's year).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindSums {
    /// The USD equivalent per kind, in [`KINDS`] order.
    usd: [Decimal; 4],
    /// The amount without a USD rate per (kind index, currency).
    unconverted: BTreeMap<(usize, String), Decimal>,
}

fn kind_index(kind: &str) -> Result<usize, DashboardError> {
    KINDS
        .iter()
        .position(|(k, _)| *k == kind)
        .ok_or_else(|| DashboardError::Unexpected(format!("a total of the kind {kind:?}")))
}

fn overflow(what: &'static str) -> DashboardError {
    DashboardError::Overflow { what }
}

impl KindSums {
    /// Adds a total row.
    pub fn add_row(&mut self, row: &TotalRow) -> Result<(), DashboardError> {
        let kind = kind_index(&row.kind)?;
        let usd = decimal("a USD equivalent", &row.usd_equivalent)?;
        self.usd[kind] = self.usd[kind]
            .checked_add(usd)
            .ok_or(overflow("a USD equivalent"))?;
        let unconverted = decimal("an unconverted amount", &row.unconverted)?;
        if !unconverted.is_zero() {
            let sum = self
                .unconverted
                .entry((kind, row.currency.clone()))
                .or_default();
            *sum = sum
                .checked_add(unconverted)
                .ok_or(overflow("an unconverted amount"))?;
        }
        Ok(())
    }

    /// Takes `other` from these sums: an area's total less its parts is what went to the area
    /// itself.
    pub fn subtract(&mut self, other: &KindSums) -> Result<(), DashboardError> {
        self.combine(other, Decimal::checked_sub)
    }

    fn combine(
        &mut self,
        other: &KindSums,
        op: fn(Decimal, Decimal) -> Option<Decimal>,
    ) -> Result<(), DashboardError> {
        for (mine, theirs) in self.usd.iter_mut().zip(other.usd) {
            *mine = op(*mine, theirs).ok_or(overflow("a USD equivalent"))?;
        }
        for (key, theirs) in &other.unconverted {
            let mine = self.unconverted.entry(key.clone()).or_default();
            *mine = op(*mine, *theirs).ok_or(overflow("an unconverted amount"))?;
        }
        self.unconverted.retain(|_, amount| !amount.is_zero());
        Ok(())
    }

    /// Whether nothing was counted.
    pub fn is_zero(&self) -> bool {
        self.usd.iter().all(Decimal::is_zero) && self.unconverted.is_empty()
    }

    /// The USD equivalent of the kind at `index` of [`KINDS`] (an index past them is a bug,
    /// and panics).
    pub fn usd(&self, index: usize) -> Decimal {
        self.usd[index]
    }

    /// The USD equivalents per kind as cents text, in [`KINDS`] order.
    pub fn usd_texts(&self) -> Vec<String> {
        self.usd.iter().map(|d| format!("{d:.2}")).collect()
    }

    /// What came without a rate: `KES 150000.00 paid; …`, empty when all was converted.
    pub fn unconverted_text(&self) -> String {
        self.unconverted
            .iter()
            .map(|((kind, currency), amount)| format!("{currency} {amount} {}", KINDS[*kind].1))
            .collect::<Vec<_>>()
            .join("; ")
    }
}
