//! The values the fold and its readers share: totals and their keys, pledge lines, checkpoints,
//! outcomes and rejected records. They live apart from the fold ([`crate::ledger`]) so that the
//! model, the reports and the fold all depend on them, and none on another.

use fundflow_refdata::{CURRENCIES, CurrencyIndex};
use rust_decimal::Decimal;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Total {
    /// Everything, in the row's currency.
    pub amount: Decimal,
    /// The USD equivalent of the converted part (the sum of per-allocation conversions).
    pub usd_equivalent: Decimal,
    /// The part of `amount` that came without a USD rate, in the row's currency.
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

    pub(crate) fn is_zero(&self) -> bool {
        self.amount.is_zero() && self.usd_equivalent.is_zero() && self.unconverted.is_zero()
    }
}

/// The key of a total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TotalKey {
    /// The country or area.
    pub node: Node,
    /// What the total counts.
    pub kind: TotalKind,
    /// The currency, an index into `fundflow_refdata::CURRENCIES`.
    pub currency: CurrencyIndex,
}

/// The key of an in-kind quantity: interned item and unit names, see [`crate::Ledger::item_name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PledgeLine {
    /// The recipient.
    pub node: Node,
    /// Promised.
    pub pledged: Decimal,
    /// Paid so far.
    pub paid: Decimal,
}

impl PledgeLine {
    /// What is still to be paid.
    pub fn outstanding(&self) -> Decimal {
        self.pledged - self.paid
    }
}

/// A rejected record, as reports list it.
#[derive(Debug, Clone, PartialEq, Eq)]
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
