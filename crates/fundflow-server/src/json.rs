//! The JSON event object of the HTTP and NATS APIs, and its translation to and from the protobuf
//! `Envelope` that the log stores.
//!
//! Only what is particular to JSON is decided here: syntax, types (an amount given as a JSON
//! number is refused, so no float ever carries money), unknown fields, which fields belong to
//! which `type`, event ids derived from a partner's `ref`, and alpha-2 country codes. Everything
//! else, required fields included, is left to the domain's one gate, `Event::from_envelope`.

use fundflow_proto::SCHEMA_VERSION;
use fundflow_proto::v1::{self, allocation::Recipient, envelope::Body};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::problem::Problem;

/// The namespace of event ids derived from (partner, ref): a UUID v5 of both, so the same row
/// sent again gets the same id on any gateway, any day.
const REF_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6a1f_7c2e_5b4d_4e0a_9c3b_2f18_d7e6_a590);

/// Longest `ref` accepted.
pub const REF_LEN_MAX: usize = 128;

/// An event as a partner writes it. Every field is optional here so that the domain, not serde,
/// names what is missing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventObject {
    /// The kind of event.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// A UUID chosen by the partner; or else `reference`.
    pub event_id: Option<String>,
    /// The partner's own reference, from which the event id is derived.
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    /// Must be the caller's own partner id when given.
    pub partner_id: Option<String>,
    /// ISO date.
    pub occurred_on: Option<String>,
    /// How much, in which currency.
    pub amount: Option<MoneyObject>,
    /// USD per unit of the currency.
    pub usd_rate: Option<String>,
    /// The date of the rate.
    pub usd_rate_date: Option<String>,
    /// Where the rate comes from.
    pub usd_rate_source: Option<String>,
    /// Who receives what.
    pub allocations: Option<Vec<AllocationObject>>,
    /// Pledges and payments against them.
    pub pledge_id: Option<String>,
    /// Pledges and in-kind donations.
    pub donor: Option<String>,
    /// Pledges.
    pub sector: Option<String>,
    /// Every kind but reversals.
    pub description: Option<String>,
    /// Payments.
    pub payment_id: Option<String>,
    /// Parallel funding.
    pub funding_id: Option<String>,
    /// Parallel funding.
    pub source: Option<String>,
    /// Parallel funding.
    pub grant_id: Option<String>,
    /// In-kind donations.
    pub donation_id: Option<String>,
    /// In-kind donations: `declared` (the default), `fair_value` or `cost`.
    pub valuation_basis: Option<String>,
    /// Reversals: the id of the event undone.
    pub reverses_event_id: Option<String>,
    /// Reversals: the `ref` of the event undone.
    pub reverses_ref: Option<String>,
    /// Reversals.
    pub reason: Option<String>,
}

/// `{"value": "31500.00", "currency": "USD"}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoneyObject {
    /// Decimal string.
    pub value: Option<String>,
    /// ISO 4217 code.
    pub currency: Option<String>,
}

/// One recipient's share.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocationObject {
    /// ISO 3166-1 alpha-3 or alpha-2 code.
    pub country: Option<String>,
    /// UN M49 code.
    pub region: Option<String>,
    /// The receiving organisation.
    pub organisation: Option<String>,
    /// Decimal string.
    pub value: Option<String>,
    /// In-kind goods.
    pub items: Option<Vec<ItemObject>>,
}

/// A quantity of goods.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemObject {
    /// Item name.
    pub item: Option<String>,
    /// Unit.
    pub unit: Option<String>,
    /// Decimal string.
    pub quantity: Option<String>,
}

/// The five `type` values, in the order of the envelope's body fields.
pub const TYPES: [&str; 5] = [
    "pledge_recorded",
    "contribution_paid",
    "parallel_funding_mobilized",
    "in_kind_donation_recorded",
    "event_reversed",
];

/// Parses one event object, naming the path of the first field that is wrong.
pub fn parse_event(text: &[u8]) -> Result<EventObject, Problem> {
    let deserializer = &mut serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let field = err.path().to_string();
        let inner = err.into_inner();
        let message = inner.to_string();
        if inner.is_syntax() || inner.is_eof() {
            Problem::bad_request("invalid_json", "", format!("not valid JSON: {message}"))
        } else if message.starts_with("invalid type") {
            let rule = if message.contains("expected a string") {
                "must be a JSON string (amounts, rates and quantities are decimal strings such as \"31500.00\", never JSON numbers)"
            } else {
                "has the wrong JSON type"
            };
            Problem::bad_request("invalid_type", &field, format!("{rule}: {message}"))
        } else if message.starts_with("unknown field") {
            // serde names the unknown field and lists the known ones.
            Problem::bad_request("unknown_field", &field, message)
        } else {
            Problem::bad_request("invalid_json", &field, message)
        }
    })
}

/// The event id an object stands for: its `event_id`, or the id derived from (partner, `ref`).
pub fn event_id_of(partner_id: &str, object: &EventObject) -> Result<String, Problem> {
    match (&object.event_id, &object.reference) {
        (Some(_), Some(_)) => Err(Problem::bad_request(
            "ambiguous_identity",
            "ref",
            "give event_id or ref, not both",
        )),
        (Some(id), None) => Ok(id.clone()),
        (None, Some(reference)) => Ok(derived_event_id(partner_id, check_ref("ref", reference)?)),
        (None, None) => Err(Problem::bad_request(
            "missing_field",
            "ref",
            "is required when event_id is not given (the partner's own reference makes a resend count once)",
        )),
    }
}

fn check_ref<'a>(field: &str, reference: &'a str) -> Result<&'a str, Problem> {
    if reference.trim().is_empty() || reference.len() > REF_LEN_MAX {
        return Err(Problem::bad_request(
            "invalid_ref",
            field,
            format!("must be 1 to {REF_LEN_MAX} bytes"),
        ));
    }
    Ok(reference)
}

/// The event id of (partner, ref): a UUID v5, the same on every gateway.
pub fn derived_event_id(partner_id: &str, reference: &str) -> String {
    let name = format!("{partner_id}\n{reference}");
    uuid::Uuid::new_v5(&REF_NAMESPACE, name.as_bytes())
        .hyphenated()
        .to_string()
}

/// Builds the envelope of `object` for `partner_id`, recorded now. Fields that do not belong to
/// the object's `type` are refused, so that nothing a partner sends is silently dropped.
pub fn to_envelope(
    partner_id: &str,
    object: EventObject,
    recorded_at: &str,
) -> Result<v1::Envelope, Problem> {
    if let Some(given) = &object.partner_id
        && given != partner_id
    {
        return Err(Problem::forbidden(format!(
            "partner_id {given:?} is not the submitting partner ({partner_id:?})"
        ))
        .with_field("partner_id"));
    }
    let event_id = event_id_of(partner_id, &object)?;
    let kind = object.kind.as_deref().unwrap_or("");
    let allowed: &[&str] = match kind {
        "pledge_recorded" => &["pledge_id", "donor", "sector", "description"],
        "contribution_paid" => &["payment_id", "pledge_id", "description"],
        "parallel_funding_mobilized" => &["funding_id", "source", "grant_id", "description"],
        "in_kind_donation_recorded" => &["donation_id", "donor", "description", "valuation_basis"],
        "event_reversed" => &["reverses_event_id", "reverses_ref", "reason"],
        "" => {
            return Err(Problem::bad_request(
                "missing_field",
                "type",
                format!("is required: one of {}", TYPES.join(", ")),
            ));
        }
        other => {
            return Err(Problem::bad_request(
                "unknown_kind",
                "type",
                format!("{other:?} is not one of {}", TYPES.join(", ")),
            ));
        }
    };
    let flow_fields = kind != "event_reversed";
    for (name, present) in present_fields(&object) {
        let is_flow = matches!(
            name,
            "amount" | "usd_rate" | "usd_rate_date" | "usd_rate_source" | "allocations"
        );
        if present && !(allowed.contains(&name) || (is_flow && flow_fields)) {
            return Err(Problem::bad_request(
                "unexpected_field",
                name,
                format!("is not a field of {kind}"),
            ));
        }
    }
    let text = |value: Option<String>| value.unwrap_or_default();
    let flow = || -> Result<v1::Flow, Problem> {
        Ok(v1::Flow {
            amount: object.amount.as_ref().map(|m| v1::Money {
                value: m.value.clone().unwrap_or_default(),
                currency: m.currency.clone().unwrap_or_default(),
            }),
            usd_rate: text(object.usd_rate.clone()),
            usd_rate_date: text(object.usd_rate_date.clone()),
            usd_rate_source: text(object.usd_rate_source.clone()),
            allocations: object
                .allocations
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, a)| allocation(i, a))
                .collect::<Result<_, _>>()?,
        })
    };
    let body = match kind {
        "pledge_recorded" => Body::PledgeRecorded(v1::PledgeRecorded {
            flow: Some(flow()?),
            pledge_id: text(object.pledge_id),
            donor: text(object.donor),
            sector: text(object.sector),
            description: text(object.description),
        }),
        "contribution_paid" => Body::ContributionPaid(v1::ContributionPaid {
            flow: Some(flow()?),
            payment_id: text(object.payment_id),
            pledge_id: text(object.pledge_id),
            description: text(object.description),
        }),
        "parallel_funding_mobilized" => {
            Body::ParallelFundingMobilized(v1::ParallelFundingMobilized {
                flow: Some(flow()?),
                funding_id: text(object.funding_id),
                source: text(object.source),
                grant_id: text(object.grant_id),
                description: text(object.description),
            })
        }
        "in_kind_donation_recorded" => {
            // A donor who submits a value without saying how it was found declares it.
            let basis = match object.valuation_basis.as_deref() {
                None | Some("declared") => v1::ValuationBasis::Declared,
                Some("fair_value") => v1::ValuationBasis::FairValue,
                Some("cost") => v1::ValuationBasis::Cost,
                Some(other) => {
                    return Err(Problem::bad_request(
                        "invalid_valuation_basis",
                        "valuation_basis",
                        format!("{other:?} is not one of declared, fair_value, cost"),
                    ));
                }
            };
            Body::InKindDonationRecorded(v1::InKindDonationRecorded {
                flow: Some(flow()?),
                donation_id: text(object.donation_id),
                donor: text(object.donor),
                description: text(object.description),
                valuation_basis: basis.into(),
            })
        }
        _ => {
            let reverses_event_id = match (object.reverses_event_id, object.reverses_ref) {
                (Some(_), Some(_)) => {
                    return Err(Problem::bad_request(
                        "ambiguous_identity",
                        "reverses_ref",
                        "give reverses_event_id or reverses_ref, not both",
                    ));
                }
                (Some(id), None) => id,
                (None, Some(reference)) => {
                    derived_event_id(partner_id, check_ref("reverses_ref", &reference)?)
                }
                (None, None) => String::new(),
            };
            Body::EventReversed(v1::EventReversed {
                reverses_event_id,
                reason: text(object.reason),
            })
        }
    };
    Ok(v1::Envelope {
        event_id,
        partner_id: partner_id.to_owned(),
        recorded_at: recorded_at.to_owned(),
        occurred_on: text(object.occurred_on),
        schema_version: SCHEMA_VERSION,
        body: Some(body),
    })
}

fn present_fields(o: &EventObject) -> [(&'static str, bool); 18] {
    [
        ("amount", o.amount.is_some()),
        ("usd_rate", o.usd_rate.is_some()),
        ("usd_rate_date", o.usd_rate_date.is_some()),
        ("usd_rate_source", o.usd_rate_source.is_some()),
        ("allocations", o.allocations.is_some()),
        ("pledge_id", o.pledge_id.is_some()),
        ("donor", o.donor.is_some()),
        ("sector", o.sector.is_some()),
        ("description", o.description.is_some()),
        ("payment_id", o.payment_id.is_some()),
        ("funding_id", o.funding_id.is_some()),
        ("source", o.source.is_some()),
        ("grant_id", o.grant_id.is_some()),
        ("donation_id", o.donation_id.is_some()),
        ("valuation_basis", o.valuation_basis.is_some()),
        ("reverses_event_id", o.reverses_event_id.is_some()),
        ("reverses_ref", o.reverses_ref.is_some()),
        ("reason", o.reason.is_some()),
    ]
}

fn allocation(i: usize, a: &AllocationObject) -> Result<v1::Allocation, Problem> {
    let recipient = match (&a.country, &a.region) {
        (Some(_), Some(_)) => {
            return Err(Problem::bad_request(
                "ambiguous_recipient",
                &format!("allocations[{i}]"),
                "names both a country and a region; give one",
            ));
        }
        (Some(country), None) => Some(Recipient::Country(alpha3(country))),
        (None, Some(region)) => Some(Recipient::Region(region.clone())),
        (None, None) => None,
    };
    Ok(v1::Allocation {
        recipient,
        organisation: a.organisation.clone().unwrap_or_default(),
        value: a.value.clone().unwrap_or_default(),
        items: a
            .items
            .iter()
            .flatten()
            .map(|item| v1::InKindItem {
                item: item.item.clone().unwrap_or_default(),
                unit: item.unit.clone().unwrap_or_default(),
                quantity: item.quantity.clone().unwrap_or_default(),
            })
            .collect(),
    })
}

/// Alpha-2 codes become alpha-3; anything else is passed on for the domain to judge.
fn alpha3(code: &str) -> String {
    if code.len() == 2
        && let Some(index) = fundflow_refdata::country_by_alpha2(code)
    {
        return fundflow_refdata::COUNTRIES[usize::from(index)]
            .alpha3
            .to_owned();
    }
    code.to_owned()
}

/// The event object of a stored envelope, as `GET /v1/events/{id}` returns it.
pub fn envelope_to_json(envelope: &v1::Envelope) -> Value {
    let mut object = Map::new();
    let mut put = |key: &str, value: &str| {
        if !value.is_empty() {
            object.insert(key.to_owned(), Value::String(value.to_owned()));
        }
    };
    put("event_id", &envelope.event_id);
    put("partner_id", &envelope.partner_id);
    put("recorded_at", &envelope.recorded_at);
    put("occurred_on", &envelope.occurred_on);
    let (kind, flow) = match &envelope.body {
        Some(Body::PledgeRecorded(b)) => {
            put("pledge_id", &b.pledge_id);
            put("donor", &b.donor);
            put("sector", &b.sector);
            put("description", &b.description);
            ("pledge_recorded", b.flow.as_ref())
        }
        Some(Body::ContributionPaid(b)) => {
            put("payment_id", &b.payment_id);
            put("pledge_id", &b.pledge_id);
            put("description", &b.description);
            ("contribution_paid", b.flow.as_ref())
        }
        Some(Body::ParallelFundingMobilized(b)) => {
            put("funding_id", &b.funding_id);
            put("source", &b.source);
            put("grant_id", &b.grant_id);
            put("description", &b.description);
            ("parallel_funding_mobilized", b.flow.as_ref())
        }
        Some(Body::InKindDonationRecorded(b)) => {
            put("donation_id", &b.donation_id);
            put("donor", &b.donor);
            put("description", &b.description);
            let basis = match v1::ValuationBasis::try_from(b.valuation_basis) {
                Ok(v1::ValuationBasis::Declared) => "declared",
                Ok(v1::ValuationBasis::FairValue) => "fair_value",
                Ok(v1::ValuationBasis::Cost) => "cost",
                _ => "",
            };
            put("valuation_basis", basis);
            ("in_kind_donation_recorded", b.flow.as_ref())
        }
        Some(Body::EventReversed(b)) => {
            put("reverses_event_id", &b.reverses_event_id);
            put("reason", &b.reason);
            ("event_reversed", None)
        }
        None => ("", None),
    };
    put("type", kind);
    if let Some(flow) = flow {
        if let Some(amount) = &flow.amount {
            object.insert(
                "amount".into(),
                json!({"value": amount.value, "currency": amount.currency}),
            );
        }
        for (key, value) in [
            ("usd_rate", &flow.usd_rate),
            ("usd_rate_date", &flow.usd_rate_date),
            ("usd_rate_source", &flow.usd_rate_source),
        ] {
            if !value.is_empty() {
                object.insert(key.into(), Value::String(value.clone()));
            }
        }
        let allocations = flow
            .allocations
            .iter()
            .map(|a| {
                let mut out = Map::new();
                match &a.recipient {
                    Some(Recipient::Country(c)) => {
                        out.insert("country".into(), c.clone().into());
                    }
                    Some(Recipient::Region(r)) => {
                        out.insert("region".into(), r.clone().into());
                    }
                    None => {}
                }
                if !a.organisation.is_empty() {
                    out.insert("organisation".into(), a.organisation.clone().into());
                }
                out.insert("value".into(), a.value.clone().into());
                if !a.items.is_empty() {
                    let items = a
                        .items
                        .iter()
                        .map(|i| json!({"item": i.item, "unit": i.unit, "quantity": i.quantity}))
                        .collect();
                    out.insert("items".into(), Value::Array(items));
                }
                Value::Object(out)
            })
            .collect();
        object.insert("allocations".into(), Value::Array(allocations));
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASKS: &str = r#"{"type": "in_kind_donation_recorded", "ref": "ICSHP-2020-12-nepal", "occurred_on": "2020-12-15",
        "donation_id": "icshp-masks-nepal", "donor": "International Center on Small Hydro Power",
        "amount": {"value": "31500.00", "currency": "USD"},
        "allocations": [{"country": "NP", "value": "31500.00",
                         "items": [{"item": "disposable surgical mask", "unit": "piece", "quantity": "210000"}]}],
        "description": "Masks for the municipalities of Khajura and Bardaghat"}"#;

    #[test]
    fn the_issue_example_becomes_a_valid_envelope_and_back() {
        let object = parse_event(MASKS.as_bytes()).unwrap();
        let envelope = to_envelope("icshp", object, "2020-12-16T08:00:00Z").unwrap();
        assert_eq!(
            envelope.event_id,
            derived_event_id("icshp", "ICSHP-2020-12-nepal")
        );
        fundflow_domain::Event::from_envelope(&envelope).unwrap();
        let json = envelope_to_json(&envelope);
        assert_eq!(json["allocations"][0]["country"], "NPL");
        assert_eq!(json["amount"]["value"], "31500.00");
        assert_eq!(json["type"], "in_kind_donation_recorded");
        assert_eq!(json["valuation_basis"], "declared");
    }

    #[test]
    fn a_ref_gives_the_same_id_for_the_same_partner_only() {
        assert_eq!(derived_event_id("a", "r1"), derived_event_id("a", "r1"));
        assert_ne!(derived_event_id("a", "r1"), derived_event_id("b", "r1"));
        assert_ne!(derived_event_id("a", "r1"), derived_event_id("a", "r2"));
        assert!(fundflow_domain::wire::parse_event_id(&derived_event_id("a", "r1")).is_some());
    }

    #[test]
    fn a_number_for_an_amount_is_refused_naming_the_field() {
        let text = MASKS.replace(
            r#""value": "31500.00", "currency""#,
            r#""value": 31500.00, "currency""#,
        );
        let problem = parse_event(text.as_bytes()).unwrap_err();
        assert_eq!(problem.field.as_deref(), Some("amount.value"));
        assert_eq!(problem.code, "invalid_type");
        let text = MASKS.replace(r#""quantity": "210000""#, r#""quantity": 210000"#);
        let problem = parse_event(text.as_bytes()).unwrap_err();
        assert_eq!(
            problem.field.as_deref(),
            Some("allocations[0].items[0].quantity")
        );
    }

    #[test]
    fn unknown_and_misplaced_fields_are_refused() {
        let text = MASKS.replace(r#""donor""#, r#""donour""#);
        let problem = parse_event(text.as_bytes()).unwrap_err();
        assert_eq!(problem.code, "unknown_field");
        assert_eq!(problem.field.as_deref(), Some("donour"));
        let text = MASKS.replace(r#""donor""#, r#""payment_id": "p", "donor""#);
        let object = parse_event(text.as_bytes()).unwrap();
        let problem = to_envelope("icshp", object, "2020-12-16T08:00:00Z").unwrap_err();
        assert_eq!(problem.code, "unexpected_field");
        assert_eq!(problem.field.as_deref(), Some("payment_id"));
    }

    #[test]
    fn another_partners_id_in_the_body_is_forbidden() {
        let text = MASKS.replace(r#""type""#, r#""partner_id": "cabc", "type""#);
        let object = parse_event(text.as_bytes()).unwrap();
        let problem = to_envelope("icshp", object, "2020-12-16T08:00:00Z").unwrap_err();
        assert_eq!(problem.status, 403);
    }
}
