//! The JSON event object, one serde type for both directions, and its translation to and from
//! the protobuf `Envelope` that the log stores.
//!
//! Only what is particular to JSON is decided here: event ids derived from a partner's `ref`,
//! alpha-2 country codes, which recipient an allocation names. Everything else, required fields
//! included, is left to the domain's one gate, `Event::from_envelope`; so every field is an
//! `Option` here, and the domain, not serde, names what is missing.

use fundflow_proto::SCHEMA_VERSION;
use fundflow_proto::v1::{self, allocation::Recipient, envelope::Body};
use serde::{Deserialize, Serialize};

use crate::error::{EventError, InvalidEvent};

/// The namespace of event ids derived from (partner, ref): a UUID v5 of both, so the same row
/// sent again gets the same id on any gateway, any day.
const REF_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6a1f_7c2e_5b4d_4e0a_9c3b_2f18_d7e6_a590);

/// Longest `ref` accepted.
pub const REF_LEN_MAX: usize = 128;

/// An event as the API reads and writes it. `GET /v1/events/{id}` gives `recorded_at` and the
/// partner's id; a submission may not give `recorded_at` (the gateway's clock says it), which
/// the intake ([`crate::parse_event`]) refuses before serde sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventObject {
    /// A UUID chosen by the partner; or else `reference`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// The partner's own reference, from which the event id is derived.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Must be the caller's own partner id when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner_id: Option<String>,
    /// When the gateway recorded it (replies only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_at: Option<String>,
    /// ISO date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_on: Option<String>,
    /// The `type` and the fields that belong to it.
    #[serde(flatten)]
    pub body: EventBody,
}

/// The fields of each `type`. The variants' fields are those of
/// [`crate::schema::EventType::own_fields`] and, for the types that move money,
/// [`crate::schema::FLOW_FIELDS`]; a test holds them equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EventBody {
    /// A donor promises funds.
    PledgeRecorded {
        /// How much, in which currency.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        amount: Option<MoneyObject>,
        /// USD per unit of the currency.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usd_rate: Option<String>,
        /// The date of the rate.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usd_rate_date: Option<String>,
        /// Where the rate comes from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usd_rate_source: Option<String>,
        /// Who receives what.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        allocations: Option<Vec<AllocationObject>>,
        /// The partner's id of the pledge.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pledge_id: Option<String>,
        /// Who pledges.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        donor: Option<String>,
        /// What for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sector: Option<String>,
        /// Free text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    /// A payment against a pledge.
    ContributionPaid {
        /// As for pledges.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        amount: Option<MoneyObject>,
        /// As for pledges.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usd_rate: Option<String>,
        /// As for pledges.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usd_rate_date: Option<String>,
        /// As for pledges.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usd_rate_source: Option<String>,
        /// As for pledges.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        allocations: Option<Vec<AllocationObject>>,
        /// The partner's id of the payment.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payment_id: Option<String>,
        /// The pledge paid against.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pledge_id: Option<String>,
        /// Free text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// Who paid; a payment against a pledge without one counts under the pledge's donor.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        donor: Option<String>,
    },
    /// Funds mobilised from elsewhere.
    ParallelFundingMobilized {
        /// As for pledges.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        amount: Option<MoneyObject>,
        /// As for pledges.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usd_rate: Option<String>,
        /// As for pledges.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usd_rate_date: Option<String>,
        /// As for pledges.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usd_rate_source: Option<String>,
        /// As for pledges.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        allocations: Option<Vec<AllocationObject>>,
        /// The partner's id of the funding.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        funding_id: Option<String>,
        /// Who funds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
        /// The source's grant.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grant_id: Option<String>,
        /// Free text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    /// Goods given.
    InKindDonationRecorded {
        /// As for pledges.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        amount: Option<MoneyObject>,
        /// As for pledges.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usd_rate: Option<String>,
        /// As for pledges.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usd_rate_date: Option<String>,
        /// As for pledges.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usd_rate_source: Option<String>,
        /// As for pledges.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        allocations: Option<Vec<AllocationObject>>,
        /// The partner's id of the donation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        donation_id: Option<String>,
        /// Who gives.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        donor: Option<String>,
        /// Free text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// `declared` (the default), `fair_value` or `cost`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        valuation_basis: Option<String>,
    },
    /// An earlier event undone.
    EventReversed {
        /// The id of the event undone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reverses_event_id: Option<String>,
        /// The `ref` of the event undone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reverses_ref: Option<String>,
        /// Why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// `{"value": "31500.00", "currency": "USD"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoneyObject {
    /// Decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// ISO 4217 code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// One recipient's share.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocationObject {
    /// ISO 3166-1 alpha-3 or alpha-2 code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// UN M49 code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The receiving organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organisation: Option<String>,
    /// Decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// In-kind goods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<ItemObject>>,
}

/// A quantity of goods.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemObject {
    /// Item name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// Unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<String>,
}

/// The event id of (partner, ref): a UUID v5, the same on every gateway.
pub fn derived_event_id(partner_id: &str, reference: &str) -> String {
    let name = format!("{partner_id}\n{reference}");
    uuid::Uuid::new_v5(&REF_NAMESPACE, name.as_bytes())
        .hyphenated()
        .to_string()
}

/// The event id an object stands for: its `event_id`, or the id derived from (partner, `ref`).
pub(crate) fn event_id_of(
    partner_id: &str,
    event_id: Option<&str>,
    reference: Option<&str>,
) -> Result<String, InvalidEvent> {
    match (event_id, reference) {
        (Some(_), Some(_)) => Err(InvalidEvent::new(
            "ambiguous_identity",
            "ref",
            "give event_id or ref, not both",
        )),
        (Some(id), None) => Ok(id.to_owned()),
        (None, Some(reference)) => Ok(derived_event_id(partner_id, check_ref("ref", reference)?)),
        (None, None) => Err(InvalidEvent::new(
            "missing_field",
            "ref",
            "is required when event_id is not given (the partner's own reference makes a resend count once)",
        )),
    }
}

/// Refuses an object that names another partner than `partner_id`.
pub(crate) fn check_partner(given: Option<&str>, partner_id: &str) -> Result<(), EventError> {
    match given {
        Some(given) if given != partner_id => Err(EventError::NotThePartner {
            message: format!("partner_id {given:?} is not the submitting partner ({partner_id:?})"),
        }),
        _ => Ok(()),
    }
}

fn check_ref<'a>(field: &str, reference: &'a str) -> Result<&'a str, InvalidEvent> {
    if reference.trim().is_empty() || reference.len() > REF_LEN_MAX {
        return Err(InvalidEvent::new(
            "invalid_ref",
            field,
            format!("must be 1 to {REF_LEN_MAX} bytes"),
        ));
    }
    Ok(reference)
}

/// The fields of a flow, as the variants that move money hold them.
struct FlowFields {
    amount: Option<MoneyObject>,
    usd_rate: Option<String>,
    usd_rate_date: Option<String>,
    usd_rate_source: Option<String>,
    allocations: Option<Vec<AllocationObject>>,
}

impl FlowFields {
    fn into_flow(self) -> Result<v1::Flow, InvalidEvent> {
        Ok(v1::Flow {
            amount: self.amount.map(|m| v1::Money {
                value: m.value.unwrap_or_default(),
                currency: m.currency.unwrap_or_default(),
            }),
            usd_rate: self.usd_rate.unwrap_or_default(),
            usd_rate_date: self.usd_rate_date.unwrap_or_default(),
            usd_rate_source: self.usd_rate_source.unwrap_or_default(),
            allocations: self
                .allocations
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, a)| allocation(i, a))
                .collect::<Result<_, _>>()?,
        })
    }

    fn of(flow: Option<&v1::Flow>) -> FlowFields {
        let Some(flow) = flow else {
            return FlowFields {
                amount: None,
                usd_rate: None,
                usd_rate_date: None,
                usd_rate_source: None,
                allocations: None,
            };
        };
        FlowFields {
            amount: flow.amount.as_ref().map(|amount| MoneyObject {
                value: Some(amount.value.clone()),
                currency: Some(amount.currency.clone()),
            }),
            usd_rate: given(&flow.usd_rate),
            usd_rate_date: given(&flow.usd_rate_date),
            usd_rate_source: given(&flow.usd_rate_source),
            allocations: Some(flow.allocations.iter().map(allocation_object).collect()),
        }
    }
}

/// Protobuf leaves absent strings empty; JSON leaves them out.
fn given(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

fn allocation(i: usize, a: AllocationObject) -> Result<v1::Allocation, InvalidEvent> {
    let recipient = match (a.country, a.region) {
        (Some(_), Some(_)) => {
            return Err(InvalidEvent::new(
                "ambiguous_recipient",
                &format!("allocations[{i}]"),
                "names both a country and a region; give one",
            ));
        }
        (Some(country), None) => Some(Recipient::Country(alpha3(country))),
        (None, Some(region)) => Some(Recipient::Region(region)),
        (None, None) => None,
    };
    Ok(v1::Allocation {
        recipient,
        organisation: a.organisation.unwrap_or_default(),
        value: a.value.unwrap_or_default(),
        items: a
            .items
            .into_iter()
            .flatten()
            .map(|item| v1::InKindItem {
                item: item.item.unwrap_or_default(),
                unit: item.unit.unwrap_or_default(),
                quantity: item.quantity.unwrap_or_default(),
            })
            .collect(),
    })
}

fn allocation_object(a: &v1::Allocation) -> AllocationObject {
    let (country, region) = match &a.recipient {
        Some(Recipient::Country(c)) => (Some(c.clone()), None),
        Some(Recipient::Region(r)) => (None, Some(r.clone())),
        None => (None, None),
    };
    AllocationObject {
        country,
        region,
        organisation: given(&a.organisation),
        value: Some(a.value.clone()),
        items: (!a.items.is_empty()).then(|| {
            a.items
                .iter()
                .map(|i| ItemObject {
                    item: Some(i.item.clone()),
                    unit: Some(i.unit.clone()),
                    quantity: Some(i.quantity.clone()),
                })
                .collect()
        }),
    }
}

/// Alpha-2 codes become alpha-3; anything else is passed on for the domain to judge.
fn alpha3(code: String) -> String {
    if code.len() == 2
        && let Some(index) = fundflow_refdata::country_by_alpha2(&code)
    {
        return fundflow_refdata::COUNTRIES[usize::from(index)]
            .alpha3
            .to_owned();
    }
    code
}

fn valuation_basis(basis: Option<&str>) -> Result<v1::ValuationBasis, InvalidEvent> {
    // A donor who submits a value without saying how it was found declares it.
    match basis {
        None | Some("declared") => Ok(v1::ValuationBasis::Declared),
        Some("fair_value") => Ok(v1::ValuationBasis::FairValue),
        Some("cost") => Ok(v1::ValuationBasis::Cost),
        Some(other) => Err(InvalidEvent::new(
            "invalid_valuation_basis",
            "valuation_basis",
            format!("{other:?} is not one of declared, fair_value, cost"),
        )),
    }
}

fn valuation_basis_name(basis: i32) -> Option<String> {
    match v1::ValuationBasis::try_from(basis) {
        Ok(v1::ValuationBasis::Declared) => Some("declared".to_owned()),
        Ok(v1::ValuationBasis::FairValue) => Some("fair_value".to_owned()),
        Ok(v1::ValuationBasis::Cost) => Some("cost".to_owned()),
        _ => None,
    }
}

impl EventObject {
    /// The event object of a stored envelope, as `GET /v1/events/{id}` returns it; `None` for
    /// an envelope without a body (which the domain's gate never lets into the log through the
    /// gateway).
    pub fn of_envelope(envelope: &v1::Envelope) -> Option<EventObject> {
        let body = match envelope.body.as_ref()? {
            Body::PledgeRecorded(b) => {
                let flow = FlowFields::of(b.flow.as_ref());
                EventBody::PledgeRecorded {
                    amount: flow.amount,
                    usd_rate: flow.usd_rate,
                    usd_rate_date: flow.usd_rate_date,
                    usd_rate_source: flow.usd_rate_source,
                    allocations: flow.allocations,
                    pledge_id: given(&b.pledge_id),
                    donor: given(&b.donor),
                    sector: given(&b.sector),
                    description: given(&b.description),
                }
            }
            Body::ContributionPaid(b) => {
                let flow = FlowFields::of(b.flow.as_ref());
                EventBody::ContributionPaid {
                    amount: flow.amount,
                    usd_rate: flow.usd_rate,
                    usd_rate_date: flow.usd_rate_date,
                    usd_rate_source: flow.usd_rate_source,
                    allocations: flow.allocations,
                    payment_id: given(&b.payment_id),
                    pledge_id: given(&b.pledge_id),
                    description: given(&b.description),
                    donor: given(&b.donor),
                }
            }
            Body::ParallelFundingMobilized(b) => {
                let flow = FlowFields::of(b.flow.as_ref());
                EventBody::ParallelFundingMobilized {
                    amount: flow.amount,
                    usd_rate: flow.usd_rate,
                    usd_rate_date: flow.usd_rate_date,
                    usd_rate_source: flow.usd_rate_source,
                    allocations: flow.allocations,
                    funding_id: given(&b.funding_id),
                    source: given(&b.source),
                    grant_id: given(&b.grant_id),
                    description: given(&b.description),
                }
            }
            Body::InKindDonationRecorded(b) => {
                let flow = FlowFields::of(b.flow.as_ref());
                EventBody::InKindDonationRecorded {
                    amount: flow.amount,
                    usd_rate: flow.usd_rate,
                    usd_rate_date: flow.usd_rate_date,
                    usd_rate_source: flow.usd_rate_source,
                    allocations: flow.allocations,
                    donation_id: given(&b.donation_id),
                    donor: given(&b.donor),
                    description: given(&b.description),
                    valuation_basis: valuation_basis_name(b.valuation_basis),
                }
            }
            Body::EventReversed(b) => EventBody::EventReversed {
                reverses_event_id: given(&b.reverses_event_id),
                reverses_ref: None,
                reason: given(&b.reason),
            },
        };
        Some(EventObject {
            event_id: given(&envelope.event_id),
            reference: None,
            partner_id: given(&envelope.partner_id),
            recorded_at: given(&envelope.recorded_at),
            occurred_on: given(&envelope.occurred_on),
            body,
        })
    }

    /// The envelope of this object for `partner_id`, recorded at `recorded_at` (any
    /// `recorded_at` of the object is ignored: the gateway's clock says it).
    pub fn into_envelope(
        self,
        partner_id: &str,
        recorded_at: &str,
    ) -> Result<v1::Envelope, EventError> {
        check_partner(self.partner_id.as_deref(), partner_id)?;
        let event_id = event_id_of(
            partner_id,
            self.event_id.as_deref(),
            self.reference.as_deref(),
        )?;
        let text = |value: Option<String>| value.unwrap_or_default();
        let body = match self.body {
            EventBody::PledgeRecorded {
                amount,
                usd_rate,
                usd_rate_date,
                usd_rate_source,
                allocations,
                pledge_id,
                donor,
                sector,
                description,
            } => {
                let flow = FlowFields {
                    amount,
                    usd_rate,
                    usd_rate_date,
                    usd_rate_source,
                    allocations,
                };
                Body::PledgeRecorded(v1::PledgeRecorded {
                    flow: Some(flow.into_flow()?),
                    pledge_id: text(pledge_id),
                    donor: text(donor),
                    sector: text(sector),
                    description: text(description),
                })
            }
            EventBody::ContributionPaid {
                amount,
                usd_rate,
                usd_rate_date,
                usd_rate_source,
                allocations,
                payment_id,
                pledge_id,
                description,
                donor,
            } => {
                let flow = FlowFields {
                    amount,
                    usd_rate,
                    usd_rate_date,
                    usd_rate_source,
                    allocations,
                };
                Body::ContributionPaid(v1::ContributionPaid {
                    flow: Some(flow.into_flow()?),
                    payment_id: text(payment_id),
                    pledge_id: text(pledge_id),
                    description: text(description),
                    donor: text(donor),
                })
            }
            EventBody::ParallelFundingMobilized {
                amount,
                usd_rate,
                usd_rate_date,
                usd_rate_source,
                allocations,
                funding_id,
                source,
                grant_id,
                description,
            } => {
                let flow = FlowFields {
                    amount,
                    usd_rate,
                    usd_rate_date,
                    usd_rate_source,
                    allocations,
                };
                Body::ParallelFundingMobilized(v1::ParallelFundingMobilized {
                    flow: Some(flow.into_flow()?),
                    funding_id: text(funding_id),
                    source: text(source),
                    grant_id: text(grant_id),
                    description: text(description),
                })
            }
            EventBody::InKindDonationRecorded {
                amount,
                usd_rate,
                usd_rate_date,
                usd_rate_source,
                allocations,
                donation_id,
                donor,
                description,
                valuation_basis: basis,
            } => {
                let basis = valuation_basis(basis.as_deref())?;
                let flow = FlowFields {
                    amount,
                    usd_rate,
                    usd_rate_date,
                    usd_rate_source,
                    allocations,
                };
                Body::InKindDonationRecorded(v1::InKindDonationRecorded {
                    flow: Some(flow.into_flow()?),
                    donation_id: text(donation_id),
                    donor: text(donor),
                    description: text(description),
                    valuation_basis: basis.into(),
                })
            }
            EventBody::EventReversed {
                reverses_event_id,
                reverses_ref,
                reason,
            } => {
                let reverses_event_id = match (reverses_event_id, reverses_ref) {
                    (Some(_), Some(_)) => {
                        return Err(InvalidEvent::new(
                            "ambiguous_identity",
                            "reverses_ref",
                            "give reverses_event_id or reverses_ref, not both",
                        )
                        .into());
                    }
                    (Some(id), None) => id,
                    (None, Some(reference)) => {
                        derived_event_id(partner_id, check_ref("reverses_ref", &reference)?)
                    }
                    (None, None) => String::new(),
                };
                Body::EventReversed(v1::EventReversed {
                    reverses_event_id,
                    reason: text(reason),
                })
            }
        };
        Ok(v1::Envelope {
            event_id,
            partner_id: partner_id.to_owned(),
            recorded_at: recorded_at.to_owned(),
            occurred_on: text(self.occurred_on),
            schema_version: SCHEMA_VERSION,
            body: Some(body),
        })
    }
}
