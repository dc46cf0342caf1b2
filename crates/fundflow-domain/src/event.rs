//! Domain events and the single gate from the wire: [`Event::from_envelope`] turns a decoded
//! protobuf `Envelope` into a validated [`Event`] or a [`Rejection`] naming the field and the
//! rule. The fold and the gateway both call it, so there is one definition of "valid".
//!
//! Everything checked here depends on the event alone; rules that need the ledger's state
//! (duplicates, pledges, reversals) live in [`crate::ledger`].

use fundflow_proto::SCHEMA_VERSION;
use fundflow_proto::v1::{self, allocation::Recipient as WireRecipient, envelope::Body};
use fundflow_refdata::{CURRENCIES, CurrencyIndex};
use rust_decimal::Decimal;
use time::{Date, OffsetDateTime, format_description::well_known::Rfc3339};

use std::fmt;

use crate::limits;
use crate::money::{self, DecimalError};
use crate::node::Node;
use crate::reject::{RejectCode, Rejection};

/// A validated event, ready to be applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    /// The partner's idempotency key, as a number so that spellings of one UUID are one key.
    pub event_id: u128,
    /// The submitting institution (validated token syntax).
    pub partner_id: &'a str,
    /// The date the flow happened.
    pub occurred_on: Date,
    /// What happened.
    pub body: EventBody<'a>,
}

/// The five kinds of event, past tense: each records something that already happened.
#[derive(Debug, Clone, PartialEq)]
pub enum EventBody<'a> {
    /// Funds were promised.
    PledgeRecorded {
        /// Who receives what.
        flow: Flow<'a>,
        /// The partner's identifier of the pledge.
        pledge_id: &'a str,
        /// Who pledges.
        donor: &'a str,
        /// The sector, or empty.
        sector: &'a str,
    },
    /// Funds were paid, against a pledge when `pledge_id` is given.
    ContributionPaid {
        /// Who receives what.
        flow: Flow<'a>,
        /// The pledge paid against, if any.
        pledge_id: Option<&'a str>,
        /// Who paid, if named; else a payment against a pledge counts under the pledge's donor.
        donor: Option<&'a str>,
    },
    /// Funds were mobilized alongside a grant.
    ParallelFundingMobilized {
        /// Who receives what.
        flow: Flow<'a>,
        /// The small grant or project the funds back.
        grant_id: &'a str,
        /// Who provided the funds.
        source: &'a str,
    },
    /// Goods were donated; the flow's amount is their value.
    InKindDonationRecorded {
        /// Who receives what, with the goods per allocation.
        flow: Flow<'a>,
        /// Who donated.
        donor: &'a str,
    },
    /// An earlier event of the same partner is undone.
    EventReversed {
        /// The event undone.
        reverses_event_id: u128,
    },
}

/// How much of which currency goes to whom, with USD equivalents worked out per allocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Flow<'a> {
    /// The currency of the amount and of every allocation.
    pub currency: CurrencyIndex,
    /// The total, equal to the sum of the allocation values.
    pub amount: Decimal,
    /// USD per unit of the currency, when known (always 1 for USD).
    pub usd_rate: Option<Decimal>,
    /// The recipients' shares.
    pub allocations: Vec<Allocation<'a>>,
}

/// One recipient's share.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation<'a> {
    /// The country or M49 area that receives.
    pub recipient: Node,
    /// The share, in the flow's currency.
    pub value: Decimal,
    /// The share in USD (value × rate, rounded half-even to cents); `None` when no rate was given.
    pub usd: Option<Decimal>,
    /// In-kind goods; empty for monetary kinds.
    pub items: Vec<Item<'a>>,
}

/// A quantity of donated goods.
#[derive(Debug, Clone, PartialEq)]
pub struct Item<'a> {
    /// Item code or name.
    pub item: &'a str,
    /// Unit of count or measure.
    pub unit: &'a str,
    /// How many units; greater than zero.
    pub quantity: Decimal,
}

impl EventBody<'_> {
    /// The flow of a monetary event; `None` for a reversal.
    pub fn flow(&self) -> Option<&Flow<'_>> {
        match self {
            EventBody::PledgeRecorded { flow, .. }
            | EventBody::ContributionPaid { flow, .. }
            | EventBody::ParallelFundingMobilized { flow, .. }
            | EventBody::InKindDonationRecorded { flow, .. } => Some(flow),
            EventBody::EventReversed { .. } => None,
        }
    }
}

/// Checks `partner_id` against `[a-z0-9][a-z0-9-]{0,63}`, the form that is safe as a NATS subject
/// token.
pub fn is_valid_partner_id(partner_id: &str) -> bool {
    let bytes = partner_id.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    matches!(bytes.first(), Some(b) if allowed(b))
        && bytes.len() <= limits::PARTNER_ID_LEN_MAX
        && bytes.iter().all(|b| allowed(b) || *b == b'-')
}

/// Parses a UUID in its hyphenated text form, the only form the wire format uses.
pub fn parse_event_id(text: &str) -> Option<u128> {
    (text.len() == 36)
        .then(|| uuid::Uuid::try_parse(text).ok())
        .flatten()
        .map(|u| u.as_u128())
}

/// Parses an ISO 8601 calendar date (`2020-12-15`).
pub fn parse_date(text: &str) -> Option<Date> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    (text.len() == 10)
        .then(|| Date::parse(text, format).ok())
        .flatten()
}

/// The identity of an envelope: its partner and event id, validated. Checked first, because a
/// rejection of an event with a valid identity is remembered under that identity.
pub fn identity(envelope: &v1::Envelope) -> Result<(&str, u128), Rejection> {
    if !is_valid_partner_id(&envelope.partner_id) {
        return Err(Rejection::new(
            RejectCode::InvalidPartnerId,
            "partner_id",
            format_args!(
                "{:?} does not match [a-z0-9][a-z0-9-]{{0,63}}",
                clip(&envelope.partner_id)
            ),
        ));
    }
    let event_id = parse_event_id(&envelope.event_id).ok_or_else(|| {
        Rejection::new(
            RejectCode::InvalidEventId,
            "event_id",
            format_args!("{:?} is not a hyphenated UUID", clip(&envelope.event_id)),
        )
    })?;
    Ok((&envelope.partner_id, event_id))
}

impl<'a> Event<'a> {
    /// Validates everything about `envelope` that does not depend on the ledger's state.
    pub fn from_envelope(envelope: &'a v1::Envelope) -> Result<Event<'a>, Rejection> {
        let (partner_id, event_id) = identity(envelope)?;
        match envelope.schema_version {
            SCHEMA_VERSION => {}
            other => {
                return Err(Rejection::new(
                    RejectCode::UnsupportedSchemaVersion,
                    "schema_version",
                    format_args!("version {other} is not supported (this build reads 1)"),
                ));
            }
        }
        let recorded_at = OffsetDateTime::parse(&envelope.recorded_at, &Rfc3339)
            .ok()
            .filter(|t| t.offset().is_utc())
            .ok_or_else(|| {
                Rejection::new(
                    RejectCode::InvalidTimestamp,
                    "recorded_at",
                    format_args!(
                        "{:?} is not an RFC 3339 UTC timestamp",
                        clip(&envelope.recorded_at)
                    ),
                )
            })?;
        let occurred_on = date_field("occurred_on", &envelope.occurred_on)?;
        if recorded_at
            .date()
            .next_day()
            .is_some_and(|latest| occurred_on > latest)
        {
            return Err(Rejection::new(
                RejectCode::OccurredAfterRecorded,
                "occurred_on",
                format_args!(
                    "{occurred_on} is after the day the event was recorded ({})",
                    recorded_at.date()
                ),
            ));
        }
        let body = match &envelope.body {
            None => {
                return Err(Rejection::new(
                    RejectCode::UnknownKind,
                    "type",
                    "the envelope has no body of a kind this build knows",
                ));
            }
            Some(Body::PledgeRecorded(p)) => {
                let flow = flow(p.flow.as_ref(), FlowKind::Monetary)?;
                let pledge_id = id_field("pledge_id", &p.pledge_id)?;
                text_field("donor", &p.donor, limits::NAME_LEN_MAX, Required::Yes)?;
                text_field("sector", &p.sector, limits::NAME_LEN_MAX, Required::No)?;
                text_field(
                    "description",
                    &p.description,
                    limits::TEXT_LEN_MAX,
                    Required::No,
                )?;
                EventBody::PledgeRecorded {
                    flow,
                    pledge_id,
                    donor: &p.donor,
                    sector: &p.sector,
                }
            }
            Some(Body::ContributionPaid(p)) => {
                let flow = flow(p.flow.as_ref(), FlowKind::Monetary)?;
                id_field("payment_id", &p.payment_id)?;
                let pledge_id = match p.pledge_id.as_str() {
                    "" => None,
                    id => Some(id_field("pledge_id", id)?),
                };
                text_field("donor", &p.donor, limits::NAME_LEN_MAX, Required::No)?;
                text_field(
                    "description",
                    &p.description,
                    limits::TEXT_LEN_MAX,
                    Required::No,
                )?;
                let donor = (!p.donor.is_empty()).then_some(p.donor.as_str());
                EventBody::ContributionPaid {
                    flow,
                    pledge_id,
                    donor,
                }
            }
            Some(Body::ParallelFundingMobilized(p)) => {
                let flow = flow(p.flow.as_ref(), FlowKind::Monetary)?;
                id_field("funding_id", &p.funding_id)?;
                text_field("source", &p.source, limits::NAME_LEN_MAX, Required::Yes)?;
                let grant_id = id_field("grant_id", &p.grant_id)?;
                text_field(
                    "description",
                    &p.description,
                    limits::TEXT_LEN_MAX,
                    Required::No,
                )?;
                EventBody::ParallelFundingMobilized {
                    flow,
                    grant_id,
                    source: &p.source,
                }
            }
            Some(Body::InKindDonationRecorded(p)) => {
                let flow = flow(p.flow.as_ref(), FlowKind::InKind)?;
                id_field("donation_id", &p.donation_id)?;
                text_field("donor", &p.donor, limits::NAME_LEN_MAX, Required::Yes)?;
                text_field(
                    "description",
                    &p.description,
                    limits::TEXT_LEN_MAX,
                    Required::No,
                )?;
                let basis = v1::ValuationBasis::try_from(p.valuation_basis)
                    .unwrap_or(v1::ValuationBasis::Unspecified);
                if basis == v1::ValuationBasis::Unspecified {
                    return Err(Rejection::new(
                        RejectCode::InvalidValuationBasis,
                        "valuation_basis",
                        "must be declared, fair_value or cost",
                    ));
                }
                EventBody::InKindDonationRecorded {
                    flow,
                    donor: &p.donor,
                }
            }
            Some(Body::EventReversed(r)) => {
                let reverses_event_id = parse_event_id(&r.reverses_event_id).ok_or_else(|| {
                    Rejection::new(
                        RejectCode::InvalidEventId,
                        "reverses_event_id",
                        format_args!("{:?} is not a hyphenated UUID", clip(&r.reverses_event_id)),
                    )
                })?;
                text_field("reason", &r.reason, limits::TEXT_LEN_MAX, Required::Yes)?;
                EventBody::EventReversed { reverses_event_id }
            }
        };
        Ok(Event {
            event_id,
            partner_id,
            occurred_on,
            body,
        })
    }
}

/// Whether allocations carry goods.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FlowKind {
    Monetary,
    InKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Required {
    Yes,
    No,
}

fn flow(flow: Option<&v1::Flow>, kind: FlowKind) -> Result<Flow<'_>, Rejection> {
    let Some(flow) = flow else {
        return Err(Rejection::new(
            RejectCode::MissingField,
            "amount",
            "is required",
        ));
    };
    let (amount_text, currency_code) = flow
        .amount
        .as_ref()
        .map_or(("", ""), |m| (m.value.as_str(), m.currency.as_str()));
    let currency = fundflow_refdata::currency_by_code(currency_code).ok_or_else(|| {
        if currency_code.is_empty() {
            Rejection::new(RejectCode::MissingField, "amount.currency", "is required")
        } else {
            Rejection::new(
                RejectCode::UnknownCurrency,
                "amount.currency",
                format_args!("{:?} is not an ISO 4217 currency code", clip(currency_code)),
            )
        }
    })?;
    let info = &CURRENCIES[usize::from(currency)];
    let amount = money_field("amount.value", amount_text, info.code, info.minor_unit)?;
    let usd_rate = usd_rate(flow, info.code)?;

    if flow.allocations.is_empty() {
        return Err(Rejection::new(
            RejectCode::NoAllocations,
            "allocations",
            "at least one recipient is required",
        ));
    }
    if flow.allocations.len() > limits::ALLOCATIONS_MAX {
        return Err(Rejection::new(
            RejectCode::TooManyAllocations,
            "allocations",
            format_args!(
                "{} allocations is more than the limit of {}",
                flow.allocations.len(),
                limits::ALLOCATIONS_MAX
            ),
        ));
    }
    let mut allocations = Vec::with_capacity(flow.allocations.len());
    let mut sum = Decimal::ZERO;
    for (i, wire) in flow.allocations.iter().enumerate() {
        let allocation = allocation(i, wire, info.code, info.minor_unit, usd_rate, kind)?;
        sum = sum.checked_add(allocation.value).ok_or_else(|| {
            Rejection::new(
                RejectCode::Overflow,
                "allocations",
                "the values overflow when summed",
            )
        })?;
        allocations.push(allocation);
    }
    if sum != amount {
        return Err(Rejection::new(
            RejectCode::AllocationsMismatch,
            "allocations",
            format_args!(
                "the values add up to {} but amount.value is {}",
                money::format_at_scale(sum, u32::from(info.minor_unit)),
                money::format_at_scale(amount, u32::from(info.minor_unit))
            ),
        ));
    }
    Ok(Flow {
        currency,
        amount,
        usd_rate,
        allocations,
    })
}

fn usd_rate(flow: &v1::Flow, currency: &str) -> Result<Option<Decimal>, Rejection> {
    let is_usd = currency == "USD";
    if flow.usd_rate.is_empty() {
        return Ok(is_usd.then_some(Decimal::ONE));
    }
    let bad =
        |detail: &dyn fmt::Display| Rejection::new(RejectCode::InvalidUsdRate, "usd_rate", detail);
    let rate = money::parse_decimal(&flow.usd_rate).map_err(|_| {
        bad(&format_args!(
            "{:?} is not a decimal string",
            clip(&flow.usd_rate)
        ))
    })?;
    if rate <= Decimal::ZERO {
        return Err(bad(&"must be greater than zero"));
    }
    if is_usd && rate != Decimal::ONE {
        return Err(bad(&format_args!(
            "a USD amount can only have rate 1, not {rate}"
        )));
    }
    if parse_date(&flow.usd_rate_date).is_none() {
        return Err(Rejection::new(
            RejectCode::InvalidUsdRate,
            "usd_rate_date",
            "must be the ISO date the rate is for, given with usd_rate",
        ));
    }
    if flow.usd_rate_source.trim().is_empty() {
        return Err(Rejection::new(
            RejectCode::InvalidUsdRate,
            "usd_rate_source",
            "must say where the rate comes from, given with usd_rate",
        ));
    }
    text_field(
        "usd_rate_source",
        &flow.usd_rate_source,
        limits::NAME_LEN_MAX,
        Required::Yes,
    )?;
    Ok(Some(rate))
}

fn allocation<'a>(
    i: usize,
    wire: &'a v1::Allocation,
    currency: &str,
    minor_unit: u8,
    usd_rate: Option<Decimal>,
    kind: FlowKind,
) -> Result<Allocation<'a>, Rejection> {
    let field = |name: &'static str| FieldPath::Allocation(i, name);
    let recipient = match &wire.recipient {
        None => {
            return Err(Rejection::new(
                RejectCode::MissingRecipient,
                format!("allocations[{i}]"),
                "names neither a country nor a region",
            ));
        }
        Some(WireRecipient::Country(code)) => Node::country(code).ok_or_else(|| {
            Rejection::new(
                RejectCode::UnknownCountry,
                field("country").to_string(),
                format_args!("{:?} is not an ISO 3166-1 alpha-3 country code", clip(code)),
            )
        })?,
        Some(WireRecipient::Region(code)) => Node::region(code).ok_or_else(|| {
            Rejection::new(
                RejectCode::UnknownRegion,
                field("region").to_string(),
                format_args!(
                    "{:?} is not a UN M49 region code (three digits)",
                    clip(code)
                ),
            )
        })?,
    };
    text_field(
        field("organisation"),
        &wire.organisation,
        limits::NAME_LEN_MAX,
        Required::No,
    )?;
    let value = money_field(field("value"), &wire.value, currency, minor_unit)?;
    let usd = match usd_rate {
        None => None,
        Some(rate) => Some(money::to_usd(value, rate).ok_or_else(|| {
            Rejection::new(
                RejectCode::Overflow,
                field("value").to_string(),
                "the USD equivalent overflows",
            )
        })?),
    };
    let items = match kind {
        FlowKind::Monetary if !wire.items.is_empty() => {
            return Err(Rejection::new(
                RejectCode::UnexpectedItems,
                field("items").to_string(),
                "only in-kind donations list items",
            ));
        }
        FlowKind::Monetary => Vec::new(),
        FlowKind::InKind => items(i, &wire.items)?,
    };
    Ok(Allocation {
        recipient,
        value,
        usd,
        items,
    })
}

fn items(i: usize, wire: &[v1::InKindItem]) -> Result<Vec<Item<'_>>, Rejection> {
    if wire.is_empty() {
        return Err(Rejection::new(
            RejectCode::MissingItems,
            format!("allocations[{i}].items"),
            "an in-kind allocation lists the goods it is made of",
        ));
    }
    if wire.len() > limits::ITEMS_MAX {
        return Err(Rejection::new(
            RejectCode::TooManyAllocations,
            format!("allocations[{i}].items"),
            format_args!(
                "{} items is more than the limit of {}",
                wire.len(),
                limits::ITEMS_MAX
            ),
        ));
    }
    wire.iter()
        .enumerate()
        .map(|(j, item)| {
            let field = |name: &'static str| FieldPath::Item(i, j, name);
            text_field(
                field("item"),
                &item.item,
                limits::NAME_LEN_MAX,
                Required::Yes,
            )?;
            text_field(
                field("unit"),
                &item.unit,
                limits::UNIT_LEN_MAX,
                Required::Yes,
            )?;
            let quantity = money::parse_decimal(&item.quantity)
                .ok()
                .filter(|q| *q > Decimal::ZERO)
                .ok_or_else(|| {
                    Rejection::new(
                        RejectCode::InvalidQuantity,
                        field("quantity").to_string(),
                        format_args!(
                            "{:?} is not a decimal greater than zero",
                            clip(&item.quantity)
                        ),
                    )
                })?;
            Ok(Item {
                item: &item.item,
                unit: &item.unit,
                quantity,
            })
        })
        .collect()
}

/// A positive amount with at most `minor_unit` decimals.
fn money_field(
    field: impl fmt::Display,
    text: &str,
    currency: &str,
    minor_unit: u8,
) -> Result<Decimal, Rejection> {
    if text.is_empty() {
        return Err(Rejection::new(
            RejectCode::MissingField,
            field.to_string(),
            "is required",
        ));
    }
    let value = money::parse_decimal(text).map_err(|err| {
        let rule = match err {
            DecimalError::Syntax => "is not a plain decimal string such as \"1250.50\"",
            DecimalError::OutOfRange => "has more digits than an exact decimal can hold",
        };
        Rejection::new(
            RejectCode::InvalidDecimal,
            field.to_string(),
            format_args!("{:?} {rule}", clip(text)),
        )
    })?;
    if value <= Decimal::ZERO {
        return Err(Rejection::new(
            RejectCode::NonPositiveAmount,
            field.to_string(),
            format_args!("{text} is not greater than zero"),
        ));
    }
    if value.scale() > u32::from(minor_unit) {
        return Err(Rejection::new(
            RejectCode::TooManyDecimals,
            field.to_string(),
            format_args!("{text:?} has more decimals than {currency} allows ({minor_unit})"),
        ));
    }
    Ok(value)
}

fn date_field(field: &str, text: &str) -> Result<Date, Rejection> {
    parse_date(text).ok_or_else(|| {
        Rejection::new(
            RejectCode::InvalidDate,
            field,
            format_args!("{:?} is not an ISO date (YYYY-MM-DD)", clip(text)),
        )
    })
}

/// A partner's identifier (pledge, payment, grant ...): required, at most `ID_LEN_MAX` bytes.
fn id_field<'a>(field: &str, text: &'a str) -> Result<&'a str, Rejection> {
    text_field(field, text, limits::ID_LEN_MAX, Required::Yes)?;
    Ok(text)
}

fn text_field(
    field: impl fmt::Display,
    text: &str,
    max: usize,
    required: Required,
) -> Result<(), Rejection> {
    if required == Required::Yes && text.trim().is_empty() {
        return Err(Rejection::new(
            RejectCode::MissingField,
            field.to_string(),
            "is required",
        ));
    }
    if text.len() > max {
        return Err(Rejection::new(
            RejectCode::FieldTooLong,
            field.to_string(),
            format_args!("{} bytes is longer than the limit of {max}", text.len()),
        ));
    }
    Ok(())
}

/// Cuts an echoed input to a readable length, so a rejection message stays one line.
fn clip(text: &str) -> &str {
    const ECHO_LEN_MAX: usize = 64;
    match text.char_indices().nth(ECHO_LEN_MAX) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// A field's path as the JSON API names it, formatted only when a rejection needs it.
#[derive(Clone, Copy)]
enum FieldPath {
    Allocation(usize, &'static str),
    Item(usize, usize, &'static str),
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldPath::Allocation(i, name) => write!(f, "allocations[{i}].{name}"),
            FieldPath::Item(i, j, name) => write!(f, "allocations[{i}].items[{j}].{name}"),
        }
    }
}
