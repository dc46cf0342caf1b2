//! Rejections: why the fold refused an event, as data. Every code is stable (it is stored in read
//! models and shown to partners), so codes are only ever added, never renamed.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an event was rejected. The string form ([`RejectCode::as_str`]) is the public code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RejectCode {
    /// The bytes are not a protobuf `Envelope`.
    Undecodable,
    /// The envelope is larger than [`crate::limits::ENVELOPE_BYTES_MAX`].
    TooLarge,
    /// `schema_version` is missing (0) or newer than this build understands.
    UnsupportedSchemaVersion,
    /// The envelope has no body, or a body kind this build does not know.
    UnknownKind,
    /// `partner_id` does not match `[a-z0-9][a-z0-9-]{0,63}`.
    InvalidPartnerId,
    /// The envelope's `partner_id` differs from the partner its log subject names.
    PartnerMismatch,
    /// `event_id` (or `reverses_event_id`) is not a UUID.
    InvalidEventId,
    /// `recorded_at` is not an RFC 3339 UTC timestamp.
    InvalidTimestamp,
    /// A date field is not an ISO 8601 calendar date.
    InvalidDate,
    /// `occurred_on` is later than the day after `recorded_at`: the flow has not happened yet.
    OccurredAfterRecorded,
    /// A required field is empty.
    MissingField,
    /// A text field is longer than its limit.
    FieldTooLong,
    /// An amount, rate or quantity is not a plain decimal string.
    InvalidDecimal,
    /// An amount or allocation value is zero or negative.
    NonPositiveAmount,
    /// An amount has more decimals than its currency's minor unit allows.
    TooManyDecimals,
    /// The currency is not an ISO 4217 code in the reference data.
    UnknownCurrency,
    /// The country is not an ISO 3166-1 alpha-3 code in the reference data.
    UnknownCountry,
    /// The region is not a UN M49 area code in the reference data.
    UnknownRegion,
    /// An allocation names neither a country nor a region.
    MissingRecipient,
    /// A monetary event has no allocations.
    NoAllocations,
    /// More allocations, or items, than the limits allow.
    TooManyAllocations,
    /// The allocations do not add up exactly to the amount.
    AllocationsMismatch,
    /// The USD rate is malformed, not positive, not 1 on a USD amount, or lacks date or source.
    InvalidUsdRate,
    /// An in-kind allocation lists no items.
    MissingItems,
    /// Items are listed on an allocation of an event that is not an in-kind donation.
    UnexpectedItems,
    /// An in-kind quantity is not a positive decimal.
    InvalidQuantity,
    /// An in-kind donation has no valuation basis.
    InvalidValuationBasis,
    /// The same partner sent this `event_id` before with the same content: it counts once.
    Duplicate,
    /// The same partner sent this `event_id` before with different content.
    EventIdConflict,
    /// The partner already has an applied pledge with this `pledge_id`.
    PledgeExists,
    /// A payment names a pledge the partner does not have (or that was reversed).
    UnknownPledge,
    /// A payment against a pledge is in another currency than the pledge.
    CurrencyMismatch,
    /// A payment against a pledge goes to a recipient the pledge does not name.
    RecipientNotPledged,
    /// A payment exceeds what is still outstanding on the pledge for a recipient.
    Overpaid,
    /// A reversal names an event this partner never sent (other partners' events included).
    ReversalTargetUnknown,
    /// A reversal names an event that was rejected, so there is nothing to undo.
    ReversalTargetRejected,
    /// A reversal names an event that was already reversed.
    ReversalTargetReversed,
    /// A reversal names another reversal; correct with a new event instead.
    ReversalOfReversal,
    /// A reversal names a pledge that still has applied payments against it.
    PledgeHasPayments,
    /// A sum or conversion would exceed the range of exact decimals.
    Overflow,
    /// The sequence number is not greater than the last applied one (a caller's bug).
    SequenceNotIncreasing,
}

impl RejectCode {
    /// Every code, in declaration order: for documentation, metrics and exhaustive tests.
    pub const ALL: [RejectCode; 41] = [
        RejectCode::Undecodable,
        RejectCode::TooLarge,
        RejectCode::UnsupportedSchemaVersion,
        RejectCode::UnknownKind,
        RejectCode::InvalidPartnerId,
        RejectCode::PartnerMismatch,
        RejectCode::InvalidEventId,
        RejectCode::InvalidTimestamp,
        RejectCode::InvalidDate,
        RejectCode::OccurredAfterRecorded,
        RejectCode::MissingField,
        RejectCode::FieldTooLong,
        RejectCode::InvalidDecimal,
        RejectCode::NonPositiveAmount,
        RejectCode::TooManyDecimals,
        RejectCode::UnknownCurrency,
        RejectCode::UnknownCountry,
        RejectCode::UnknownRegion,
        RejectCode::MissingRecipient,
        RejectCode::NoAllocations,
        RejectCode::TooManyAllocations,
        RejectCode::AllocationsMismatch,
        RejectCode::InvalidUsdRate,
        RejectCode::MissingItems,
        RejectCode::UnexpectedItems,
        RejectCode::InvalidQuantity,
        RejectCode::InvalidValuationBasis,
        RejectCode::Duplicate,
        RejectCode::EventIdConflict,
        RejectCode::PledgeExists,
        RejectCode::UnknownPledge,
        RejectCode::CurrencyMismatch,
        RejectCode::RecipientNotPledged,
        RejectCode::Overpaid,
        RejectCode::ReversalTargetUnknown,
        RejectCode::ReversalTargetRejected,
        RejectCode::ReversalTargetReversed,
        RejectCode::ReversalOfReversal,
        RejectCode::PledgeHasPayments,
        RejectCode::Overflow,
        RejectCode::SequenceNotIncreasing,
    ];

    /// The stable public code, snake_case.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::Undecodable => "undecodable",
            RejectCode::TooLarge => "too_large",
            RejectCode::UnsupportedSchemaVersion => "unsupported_schema_version",
            RejectCode::UnknownKind => "unknown_kind",
            RejectCode::InvalidPartnerId => "invalid_partner_id",
            RejectCode::PartnerMismatch => "partner_mismatch",
            RejectCode::InvalidEventId => "invalid_event_id",
            RejectCode::InvalidTimestamp => "invalid_timestamp",
            RejectCode::InvalidDate => "invalid_date",
            RejectCode::OccurredAfterRecorded => "occurred_after_recorded",
            RejectCode::MissingField => "missing_field",
            RejectCode::FieldTooLong => "field_too_long",
            RejectCode::InvalidDecimal => "invalid_decimal",
            RejectCode::NonPositiveAmount => "non_positive_amount",
            RejectCode::TooManyDecimals => "too_many_decimals",
            RejectCode::UnknownCurrency => "unknown_currency",
            RejectCode::UnknownCountry => "unknown_country",
            RejectCode::UnknownRegion => "unknown_region",
            RejectCode::MissingRecipient => "missing_recipient",
            RejectCode::NoAllocations => "no_allocations",
            RejectCode::TooManyAllocations => "too_many_allocations",
            RejectCode::AllocationsMismatch => "allocations_mismatch",
            RejectCode::InvalidUsdRate => "invalid_usd_rate",
            RejectCode::MissingItems => "missing_items",
            RejectCode::UnexpectedItems => "unexpected_items",
            RejectCode::InvalidQuantity => "invalid_quantity",
            RejectCode::InvalidValuationBasis => "invalid_valuation_basis",
            RejectCode::Duplicate => "duplicate",
            RejectCode::EventIdConflict => "event_id_conflict",
            RejectCode::PledgeExists => "pledge_exists",
            RejectCode::UnknownPledge => "unknown_pledge",
            RejectCode::CurrencyMismatch => "currency_mismatch",
            RejectCode::RecipientNotPledged => "recipient_not_pledged",
            RejectCode::Overpaid => "overpaid",
            RejectCode::ReversalTargetUnknown => "reversal_target_unknown",
            RejectCode::ReversalTargetRejected => "reversal_target_rejected",
            RejectCode::ReversalTargetReversed => "reversal_target_reversed",
            RejectCode::ReversalOfReversal => "reversal_of_reversal",
            RejectCode::PledgeHasPayments => "pledge_has_payments",
            RejectCode::Overflow => "overflow",
            RejectCode::SequenceNotIncreasing => "sequence_not_increasing",
        }
    }

    /// The code for a public string, the inverse of [`RejectCode::as_str`].
    pub fn from_str_code(code: &str) -> Option<RejectCode> {
        RejectCode::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// Whether the rejection depends only on the event itself, not on the ledger's state. The
    /// gateway refuses such events before they reach the log (HTTP 400).
    pub fn is_stateless(self) -> bool {
        !matches!(
            self,
            RejectCode::Duplicate
                | RejectCode::EventIdConflict
                | RejectCode::PledgeExists
                | RejectCode::UnknownPledge
                | RejectCode::CurrencyMismatch
                | RejectCode::RecipientNotPledged
                | RejectCode::Overpaid
                | RejectCode::ReversalTargetUnknown
                | RejectCode::ReversalTargetRejected
                | RejectCode::ReversalTargetReversed
                | RejectCode::ReversalOfReversal
                | RejectCode::PledgeHasPayments
                | RejectCode::Overflow
                | RejectCode::SequenceNotIncreasing
                | RejectCode::PartnerMismatch
        )
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused event: the code, the field it concerns and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// What rule was broken.
    pub code: RejectCode,
    /// The offending field as the JSON API names it (`allocations[1].value`), or empty when the
    /// rejection concerns the event as a whole.
    pub field: String,
    /// One sentence naming the field and the rule, e.g.
    /// `allocations[1].value: "12.345" has more decimals than USD allows (2)`.
    pub message: String,
}

impl Rejection {
    /// A rejection of `field` (may be empty) for `code`, described by `detail`.
    pub fn new(code: RejectCode, field: impl Into<String>, detail: impl fmt::Display) -> Self {
        let field = field.into();
        let message = if field.is_empty() {
            detail.to_string()
        } else {
            format!("{field}: {detail}")
        };
        Rejection {
            code,
            field,
            message,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::BTreeSet::new();
        for code in RejectCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert_eq!(RejectCode::from_str_code(code.as_str()), Some(code));
        }
        assert_eq!(RejectCode::from_str_code("nope"), None);
    }

    #[test]
    fn message_names_the_field() {
        let r = Rejection::new(
            RejectCode::TooManyDecimals,
            "allocations[1].value",
            "too precise",
        );
        assert_eq!(r.message, "allocations[1].value: too precise");
        assert_eq!(
            r.to_string(),
            "allocations[1].value: too precise (too_many_decimals)"
        );
    }
}
