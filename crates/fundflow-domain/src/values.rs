//! The values the fold and its readers share: totals and their keys, pledge lines, checkpoints,
//! outcomes and rejected records. They live apart from the fold ([`crate::ledger`]) so that the
//! model, the reports and the fold all depend on them, and none on another.

use fundflow_refdata::{CURRENCIES, CurrencyIndex};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::Date;

use crate::node::Node;
use crate::reject::{RejectCode, Rejection};

/// A SHA-256 digest.
pub type Digest32 = [u8; 32];

/// What became of one record of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The event changed the ledger.
    Applied,
    /// The event changed nothing but its own outcome; the rejection says why.
    Rejected(Rejection),
}

impl Outcome {
    /// The rejection code, or `None` when applied.
    pub fn code(&self) -> Option<RejectCode> {
        match self {
            Outcome::Applied => None,
            Outcome::Rejected(r) => Some(r.code),
        }
    }
}

/// The four kinds of total a flow can count towards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TotalKind {
    /// Promised (`PledgeRecorded`).
    Pledged,
    /// Paid (`ContributionPaid`).
    Paid,
    /// Mobilized alongside grants (`ParallelFundingMobilized`).
    ParallelFunding,
    /// Value of goods donated (`InKindDonationRecorded`).
    InKind,
}

impl TotalKind {
    /// Every kind, in report order.
    pub const ALL: [TotalKind; 4] = [
        TotalKind::Pledged,
        TotalKind::Paid,
        TotalKind::ParallelFunding,
        TotalKind::InKind,
    ];

    /// The name used in the API, reports and the model digest.
    pub fn as_str(self) -> &'static str {
        match self {
            TotalKind::Pledged => "pledged",
            TotalKind::Paid => "paid",
            TotalKind::ParallelFunding => "parallel_funding",
            TotalKind::InKind => "in_kind",
        }
    }

    /// The kind named `name`, the inverse of [`TotalKind::as_str`].
    pub fn parse(name: &str) -> Option<TotalKind> {
        TotalKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// One total: the amount in its currency, split into what was converted to USD and what was not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Total {
    /// Everything, in the row's currency.
    #[serde(with = "crate::snapshot::decimal")]
    pub amount: Decimal,
    /// The USD equivalent of the converted part (the sum of per-allocation conversions).
    #[serde(with = "crate::snapshot::decimal")]
    pub usd_equivalent: Decimal,
    /// The part of `amount` that came without a USD rate, in the row's currency.
    #[serde(with = "crate::snapshot::decimal")]
    pub unconverted: Decimal,
}

impl Total {
    pub(crate) fn of(value: Decimal, usd: Option<Decimal>) -> Total {
        match usd {
            Some(usd) => Total {
                amount: value,
                usd_equivalent: usd,
                unconverted: Decimal::ZERO,
            },
            None => Total {
                amount: value,
                usd_equivalent: Decimal::ZERO,
                unconverted: value,
            },
        }
    }

    pub(crate) fn checked(self, other: Total, sign: Sign) -> Option<Total> {
        let op = |a: Decimal, b: Decimal| match sign {
            _ if b.is_zero() => Some(a),
            Sign::Add => a.checked_add(b),
            Sign::Subtract => a.checked_sub(b),
        };
        Some(Total {
            amount: op(self.amount, other.amount)?,
            usd_equivalent: op(self.usd_equivalent, other.usd_equivalent)?,
            unconverted: op(self.unconverted, other.unconverted)?,
        })
    }

    pub(crate) fn within(&self, max: Decimal) -> bool {
        self.amount <= max && self.usd_equivalent <= max
    }

    pub(crate) fn saturating_add(self, other: &Total) -> Total {
        Total {
            amount: self.amount.saturating_add(other.amount),
            usd_equivalent: self.usd_equivalent.saturating_add(other.usd_equivalent),
            unconverted: self.unconverted.saturating_add(other.unconverted),
        }
    }

    /// Whether every part is zero.
    pub fn is_zero(&self) -> bool {
        self.amount.is_zero() && self.usd_equivalent.is_zero() && self.unconverted.is_zero()
    }

    /// The sum of two parts of one direct total. Every direct total is capped by
    /// [`crate::limits::total_max`], far inside `Decimal`'s range, so the sum of parts of one
    /// cannot overflow; an overflow here is a bug, asserted in debug builds.
    pub fn plus(&self, other: &Total) -> Total {
        let sum = self.checked(*other, Sign::Add);
        debug_assert!(sum.is_some(), "{self:?} + {other:?} overflows");
        sum.unwrap_or_else(|| self.saturating_add(other))
    }
}

/// The key of a total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TotalKey {
    /// The country or area.
    pub node: Node,
    /// What the total counts.
    pub kind: TotalKind,
    /// The currency, an index into `fundflow_refdata::CURRENCIES`.
    #[serde(with = "crate::snapshot::currency")]
    pub currency: CurrencyIndex,
}

/// The key of an in-kind quantity: interned item and unit names, see [`crate::Ledger::item_name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuantityKey {
    /// The country or area.
    pub node: Node,
    /// Interned item name.
    pub item: u32,
    /// Interned unit name.
    pub unit: u32,
}

/// Whether an effect is being applied or undone (by a reversal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sign {
    Add,
    Subtract,
}

/// What was pledged to, and paid to, one recipient of a pledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PledgeLine {
    /// The recipient.
    pub node: Node,
    /// Promised.
    #[serde(with = "crate::snapshot::decimal")]
    pub pledged: Decimal,
    /// Paid so far.
    #[serde(with = "crate::snapshot::decimal")]
    pub paid: Decimal,
}

impl PledgeLine {
    /// What is still to be paid.
    pub fn outstanding(&self) -> Decimal {
        self.pledged - self.paid
    }
}

/// A rejected record, as reports list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedEvent {
    /// Where it is in the log.
    pub seq: u64,
    /// The event id as given (empty when the record could not be decoded).
    pub event_id: String,
    /// The partner as given (empty when the record could not be decoded).
    pub partner_id: String,
    /// Why it was rejected.
    pub rejection: Rejection,
}

/// Where a fold stands after its last record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last sequence number applied.
    pub last_seq: u64,
    /// The log digest after it.
    pub log_digest: Digest32,
    /// How many records were applied.
    pub applied: u64,
    /// How many records were rejected.
    pub rejected: u64,
    /// The SHA-256 chain over (seq, code) of the rejections.
    pub rejected_digest: Digest32,
}

/// What a direct total or quantity needs for its new value to be worked out before it is
/// written.
pub(crate) trait Amount: Copy + Default {
    fn checked(self, delta: Self, sign: Sign) -> Option<Self>;
    fn within(&self, max: Decimal) -> bool;
    fn is_zero(&self) -> bool;
}

impl Amount for Total {
    fn checked(self, delta: Total, sign: Sign) -> Option<Total> {
        Total::checked(self, delta, sign)
    }

    fn within(&self, max: Decimal) -> bool {
        Total::within(self, max)
    }

    fn is_zero(&self) -> bool {
        Total::is_zero(self)
    }
}

impl Amount for Decimal {
    fn checked(self, delta: Decimal, sign: Sign) -> Option<Decimal> {
        match sign {
            Sign::Add => self.checked_add(delta),
            Sign::Subtract => self.checked_sub(delta),
        }
    }

    fn within(&self, max: Decimal) -> bool {
        *self <= max
    }

    fn is_zero(&self) -> bool {
        Decimal::is_zero(self)
    }
}

/// The ISO code of a currency index.
pub fn currency_code(currency: CurrencyIndex) -> &'static str {
    CURRENCIES.get(usize::from(currency)).map_or("", |c| c.code)
}

/// A calendar month, counted as `year * 12 + (month - 1)`, so that months order and subtract as
/// numbers and fit a `u32` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Month(pub u32);

impl Month {
    /// The month of `date`. Dates before year 0 do not pass the wire format's `YYYY-MM-DD`.
    pub fn of(date: Date) -> Month {
        let year = u32::try_from(date.year()).unwrap_or(0);
        Month(year * 12 + u32::from(u8::from(date.month())) - 1)
    }

    /// The month `year`-`month` (1 to 12); `None` for a month that does not exist.
    pub fn new(year: i32, month: u8) -> Option<Month> {
        let year = u32::try_from(year).ok()?;
        (1..=12)
            .contains(&month)
            .then(|| Month(year * 12 + u32::from(month) - 1))
    }

    /// Its year.
    pub fn year(self) -> i32 {
        // At most u32::MAX / 12, which fits.
        i32::try_from(self.0 / 12).unwrap_or(i32::MAX)
    }

    /// Its month of the year, 1 to 12.
    pub fn month(self) -> u8 {
        // Always below 12.
        u8::try_from(self.0 % 12).unwrap_or(0) + 1
    }

    /// Its quarter of the year, 1 to 4.
    pub fn quarter(self) -> u8 {
        (self.month() - 1) / 3 + 1
    }

    /// The first day of the month.
    pub fn first_day(self) -> Option<Date> {
        let month = time::Month::try_from(self.month()).ok()?;
        Date::from_calendar_date(self.year(), month, 1).ok()
    }

    /// The last day of the month.
    pub fn last_day(self) -> Option<Date> {
        Month(self.0 + 1).first_day()?.previous_day()
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year(), self.month())
    }
}

/// One partner's month of cells: the unit in which the fold keeps cells and the read model
/// stores and rewrites them, so that a batch rewrites the blocks it touched and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CellBlock {
    /// The month of the flows' `occurred_on`.
    pub month: Month,
    /// The partner, interned (see [`crate::Ledger::partner_name`]).
    pub partner: u32,
}

/// The key of a cell within its [`CellBlock`]: the finest grain the fold sums at. Grant, sector
/// and donor are interned labels ([`crate::Ledger::label`]); the empty label is a value of its
/// own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CellKey {
    /// The flow's `occurred_on`.
    pub day: Date,
    /// The grant: a pledge's id, a payment's pledge, parallel funding's grant; else empty.
    pub grant: u32,
    /// A pledge's sector, inherited by its payments; else empty.
    pub sector: u32,
    /// The donor (parallel funding's source), a payment inheriting its pledge's; else empty.
    pub donor: u32,
    /// The recipient as allocated.
    pub node: Node,
    /// What the cell counts.
    pub kind: TotalKind,
    /// The currency.
    #[serde(with = "crate::snapshot::currency")]
    pub currency: CurrencyIndex,
}

/// The key of an in-kind quantity cell within its [`CellBlock`]; item and unit interned as in
/// [`QuantityKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuantityCellKey {
    /// The donation's `occurred_on`.
    pub day: Date,
    /// The recipient as allocated.
    pub node: Node,
    /// Interned item name.
    pub item: u32,
    /// Interned unit name.
    pub unit: u32,
}

/// How fine a set of cells is. Coarser levels are sums of the finer ones, kept so that a query
/// reads as few cells as its dimensions allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CellLevel {
    /// (year, partner, recipient, kind, currency).
    Year,
    /// (month, partner, grant, recipient, kind, currency).
    Month,
    /// (day, partner, grant, sector, donor, recipient, kind, currency): the fold's own cells.
    Day,
}

/// One cell as every reader sees it, names borrowed; a dimension the level does not keep is
/// `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellRef<'a> {
    /// The year.
    pub year: i32,
    /// The month, at the Month and Day levels.
    pub month: Option<Month>,
    /// The day, at the Day level.
    pub day: Option<Date>,
    /// The partner id.
    pub partner: &'a str,
    /// The grant, at the Month and Day levels.
    pub grant: Option<&'a str>,
    /// The sector, at the Day level.
    pub sector: Option<&'a str>,
    /// The donor, at the Day level.
    pub donor: Option<&'a str>,
    /// The recipient as allocated.
    pub node: Node,
    /// What it counts.
    pub kind: TotalKind,
    /// The currency.
    pub currency: CurrencyIndex,
    /// The sum.
    pub total: Total,
}

impl<'a> CellRef<'a> {
    /// The level this cell is at.
    pub fn level(&self) -> CellLevel {
        match (self.month, self.day) {
            (None, _) => CellLevel::Year,
            (Some(_), None) => CellLevel::Month,
            (Some(_), Some(_)) => CellLevel::Day,
        }
    }

    /// What this cell adds to the programme summary's sums: its total by recipient, by partner
    /// and, when it has a non-empty grant, by grant.
    pub fn summary_parts(&self) -> impl Iterator<Item = SummaryPart<'a>> + use<'a> {
        let (kind, currency, total) = (self.kind, self.currency, self.total);
        let grant = self.grant.filter(|grant| !grant.is_empty());
        [
            Some(SummaryPart::Recipient {
                node: self.node,
                kind,
                currency,
                total,
            }),
            Some(SummaryPart::Partner {
                partner: self.partner,
                kind,
                currency,
                total,
            }),
            grant.map(|grant| SummaryPart::Grant {
                grant,
                kind,
                currency,
                total,
            }),
        ]
        .into_iter()
        .flatten()
    }
}

/// One of the sums the programme summary of a period is read from: the period's flows summed
/// by one grouping (recipient, partner or grant, each with kind and currency), or its in-kind
/// quantities by item. They are sums over cells, so a read model can keep them per year and a
/// summary of whole years reads a few thousand of them instead of every cell of the period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummaryPart<'a> {
    /// By recipient as allocated.
    Recipient {
        /// The recipient.
        node: Node,
        /// What it counts.
        kind: TotalKind,
        /// The currency.
        currency: CurrencyIndex,
        /// The sum.
        total: Total,
    },
    /// By submitting partner.
    Partner {
        /// The partner id.
        partner: &'a str,
        /// What it counts.
        kind: TotalKind,
        /// The currency.
        currency: CurrencyIndex,
        /// The sum.
        total: Total,
    },
    /// By grant (never the empty grant).
    Grant {
        /// The grant.
        grant: &'a str,
        /// What it counts.
        kind: TotalKind,
        /// The currency.
        currency: CurrencyIndex,
        /// The sum.
        total: Total,
    },
    /// In-kind goods by item and unit.
    Item {
        /// Item code or name.
        item: &'a str,
        /// Unit.
        unit: &'a str,
        /// How many units.
        quantity: Decimal,
    },
}

/// One in-kind quantity cell, names borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantityCellRef<'a> {
    /// The donation's `occurred_on`.
    pub day: Date,
    /// The partner id.
    pub partner: &'a str,
    /// The recipient as allocated.
    pub node: Node,
    /// Item code or name.
    pub item: &'a str,
    /// Unit.
    pub unit: &'a str,
    /// How many units.
    pub quantity: Decimal,
}

impl<'a> QuantityCellRef<'a> {
    /// What this cell adds to the programme summary's in-kind items.
    pub fn summary_part(&self) -> SummaryPart<'a> {
        SummaryPart::Item {
            item: self.item,
            unit: self.unit,
            quantity: self.quantity,
        }
    }
}

/// How many records whose `occurred_on` is one day were applied and rejected. A record whose
/// date cannot be read counts in no day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayOutcomes {
    /// Applied records (reversals included).
    pub applied: u64,
    /// Rejected records.
    pub rejected: u64,
}

/// The dimensions an applied flow counts under, names resolved: what a read model indexes it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowDims<'a> {
    /// The submitting partner.
    pub partner: &'a str,
    /// The flow's `occurred_on`.
    pub occurred_on: Date,
    /// As in [`CellKey::grant`].
    pub grant: &'a str,
    /// As in [`CellKey::sector`].
    pub sector: &'a str,
    /// As in [`CellKey::donor`].
    pub donor: &'a str,
}

/// Sums cells into `level` (which must not be finer than theirs): Month drops day, sector and
/// donor; Year drops month and grant too. The result is sorted by its keys and holds no zero
/// cell. Cells are parts of direct totals, which the fold caps far below `Decimal`'s range, so a
/// sum cannot overflow.
pub fn coarsen<'a>(cells: impl Iterator<Item = CellRef<'a>>, level: CellLevel) -> Vec<CellRef<'a>> {
    type Key<'a> = (
        i32,
        Option<Month>,
        Option<Date>,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        Node,
        TotalKind,
        CurrencyIndex,
    );
    let mut sums: std::collections::BTreeMap<Key<'a>, Total> = std::collections::BTreeMap::new();
    for cell in cells {
        debug_assert!(cell.level() >= level, "cells are coarsened, never refined");
        let keep_month = level >= CellLevel::Month;
        let keep_day = level == CellLevel::Day;
        let key = (
            cell.year,
            cell.month.filter(|_| keep_month),
            cell.day.filter(|_| keep_day),
            cell.partner,
            cell.grant.filter(|_| keep_month),
            cell.sector.filter(|_| keep_day),
            cell.donor.filter(|_| keep_day),
            cell.node,
            cell.kind,
            cell.currency,
        );
        let sum = sums.entry(key).or_default();
        *sum = sum.plus(&cell.total);
    }
    sums.into_iter()
        .filter(|(_, total)| !total.is_zero())
        .map(
            |((year, month, day, partner, grant, sector, donor, node, kind, currency), total)| {
                CellRef {
                    year,
                    month,
                    day,
                    partner,
                    grant,
                    sector,
                    donor,
                    node,
                    kind,
                    currency,
                    total,
                }
            },
        )
        .collect()
}
