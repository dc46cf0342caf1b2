//! FTS flows in: `fundflow import fts` reads the `flow` objects of OCHA's FTS API v1
//! (`{"data": {"flows": [...]}}`), or the rows of fundflow's own FTS-style export
//! (`{"as_of_seq", "flows": [...]}`, so that fundflow → FTS → fundflow is a round trip), and
//! plans the fundflow events they stand for. Planning is pure: the CLI submits the plan through
//! the gateway, as a partner, and looks up which earlier versions of a flow it holds.
//!
//! The mapping, and what is not guessed:
//! - `status` `pledge` or `commitment` → a pledge (`pledge_id` `fts-ID`); `paid` → a payment
//!   (`payment_id` `fts-ID`, no pledge, the source organisations as `donor`); a
//!   `contributionType` of `in kind` (or `inKind`) that is paid → an in-kind donation with one
//!   item, "goods reported in kind", 1 lot, valued at the flow's amount. An in-kind pledge is
//!   not imported: fundflow records goods when they are given.
//! - The amount: `originalAmount` in `originalCurrency` when both are given and the currency
//!   is not USD, with `usd_rate` = 1 / `exchangeRate` (FTS gives currency units per USD,
//!   fundflow USD per unit; rust_decimal's quotient, 28 significant digits) dated the flow's
//!   date, source "FTS"; else `amountUSD` in USD. Numbers are read from the JSON text, never
//!   through a float.
//! - The recipient: the one destination `Location`, by its `iso3` (or a three-letter `name`)
//!   or its name as the reference data spells it (case, spaces and punctuation aside); the
//!   destination `Organization` is the allocation's organisation. An export row's recipient is
//!   its `destLocations` country, or its `destRegion` M49 area; its id is the row's `id`, at
//!   version 1.
//! - Identity: the event's `ref` is `fts-ID-vVERSION`, so an import run twice counts nothing
//!   twice; a flow's later version reverses the earlier versions the ledger holds (the CLI
//!   asks), with the reversal's own `ref` `fts-ID-vOLD-superseded`.
//! - Not imported, with the flow's id and the reason: several destination locations, or
//!   `onBoundary` `shared` (FTS does not say how such a flow splits and counts it in no
//!   location); `boundary` `internal` or `outgoing` (money moving inside or out of a location,
//!   which FTS leaves out of its incoming totals); a zero amount; an unknown location; a
//!   missing or unreadable field. Of these, the zero amounts, the boundaries and the shared
//!   flows are FTS's own counting rules (*skipped*); the rest are *refused*: the file says
//!   something fundflow cannot record as given.
//! - The same (id, version) in several files (FTS returns a flow under each location it
//!   touches) is planned once; of several versions of one flow, only the latest.

use std::collections::BTreeMap;

use fundflow_api::{AllocationObject, EventBody, EventObject, ItemObject, MoneyObject};

use crate::fts::{FtsReply, FtsRow};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

/// The `usd_rate_source` of an imported rate.
pub const RATE_SOURCE: &str = "FTS";

/// The one item an in-kind flow is recorded as, since FTS does not itemise goods.
pub const IN_KIND_ITEM: &str = "goods reported in kind";

/// A file the import reads: an FTS API reply, or fundflow's own FTS-style export.
#[derive(Debug)]
pub enum FtsFile {
    /// `{"data": {"flows": [...]}}`: FTS API v1 flow objects.
    Api(FtsData),
    /// `{"as_of_seq", "flows": [...]}`: rows of `GET /v1/exports/fts.json` (one allocation
    /// each, so one event each; `destRegion` rows go to their M49 area).
    Rows(Vec<FtsRow>),
}

impl FtsFile {
    /// Reads either shape from JSON text (numbers are kept as their text, never floats).
    pub fn parse(text: &str) -> Result<FtsFile, serde_json::Error> {
        #[derive(Deserialize)]
        struct Api {
            data: FtsData,
        }
        match serde_json::from_str::<Api>(text) {
            Ok(api) => Ok(FtsFile::Api(api.data)),
            Err(api_error) => match serde_json::from_str::<FtsReply>(text) {
                Ok(reply) => Ok(FtsFile::Rows(reply.flows)),
                // The API shape is the one FTS itself writes: its error is the useful one.
                Err(_) => Err(api_error),
            },
        }
    }
}

/// The `data` of an FTS API reply.
#[derive(Debug, Deserialize)]
pub struct FtsData {
    /// The flows.
    pub flows: Vec<FtsFlow>,
}

/// One FTS API `flow` object (the fields the import reads; others are ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FtsFlow {
    /// FTS's flow id (a number or a string).
    pub id: Box<RawValue>,
    /// The flow's version (1 when absent).
    #[serde(default)]
    pub version_id: Option<Box<RawValue>>,
    /// The amount in USD.
    #[serde(default, rename = "amountUSD")]
    pub amount_usd: Option<Box<RawValue>>,
    /// The amount in the original currency.
    #[serde(default)]
    pub original_amount: Option<Box<RawValue>>,
    /// The original currency.
    #[serde(default)]
    pub original_currency: Option<String>,
    /// Original currency units per USD.
    #[serde(default)]
    pub exchange_rate: Option<Box<RawValue>>,
    /// `pledge`, `commitment` or `paid`.
    #[serde(default)]
    pub status: Option<String>,
    /// `financial` or `in kind`.
    #[serde(default)]
    pub contribution_type: Option<String>,
    /// When (ISO date or date-time).
    #[serde(default)]
    pub date: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Where the money comes from.
    #[serde(default)]
    pub source_objects: Vec<FtsObject>,
    /// Where it goes.
    #[serde(default)]
    pub destination_objects: Vec<FtsObject>,
    /// `incoming`, `internal` or `outgoing`.
    #[serde(default)]
    pub boundary: Option<String>,
    /// `single` or `shared`.
    #[serde(default)]
    pub on_boundary: Option<String>,
    /// The reporting organisation's reference.
    #[serde(default)]
    pub ref_code: Option<String>,
}

/// One of a flow's source or destination objects.
#[derive(Debug, Deserialize)]
pub struct FtsObject {
    /// `Organization`, `Location`, `UsageYear`, `Plan` ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Its name.
    #[serde(default)]
    pub name: Option<String>,
    /// A location's ISO 3166-1 alpha-3 code, where given.
    #[serde(default)]
    pub iso3: Option<String>,
}

/// Why a flow was not imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotImported {
    /// FTS's flow id.
    pub id: String,
    /// Its version.
    pub version: u64,
    /// Why, in one sentence.
    pub reason: String,
    /// Refused (the file says something fundflow cannot record as given) rather than skipped
    /// by FTS's own counting rules.
    pub refused: bool,
}

/// A flow to submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFlow {
    /// FTS's flow id.
    pub id: String,
    /// Its version.
    pub version: u64,
    /// The event.
    pub event: EventObject,
}

impl PlannedFlow {
    /// The `ref`s of the flow's earlier versions, which a ledger that imported them holds.
    pub fn earlier_refs(&self) -> impl Iterator<Item = (u64, String)> + '_ {
        (1..self.version).map(|old| (old, flow_ref(&self.id, old)))
    }

    /// The reversals of the earlier versions `held` (the ones the ledger has applied).
    pub fn reversals(&self, held: &[u64]) -> Vec<EventObject> {
        held.iter()
            .copied()
            .filter(|old| *old < self.version)
            .map(|old| EventObject {
                event_id: None,
                reference: Some(format!("{}-superseded", flow_ref(&self.id, old))),
                partner_id: None,
                recorded_at: None,
                occurred_on: self.event.occurred_on.clone(),
                body: EventBody::EventReversed {
                    reverses_event_id: None,
                    reverses_ref: Some(flow_ref(&self.id, old)),
                    reason: Some(format!(
                        "FTS flow {} version {old} superseded by version {}",
                        self.id, self.version
                    )),
                },
            })
            .collect()
    }
}

/// What a set of FTS files comes to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportPlan {
    /// The flows to submit, by id and version.
    pub flows: Vec<PlannedFlow>,
    /// The flows not imported, with why.
    pub not_imported: Vec<NotImported>,
    /// Flows met again (the same id and version in another file, or an earlier version of a
    /// flow whose later version is planned).
    pub repeated: usize,
}

/// The `ref` of version `version` of FTS flow `id`.
pub fn flow_ref(id: &str, version: u64) -> String {
    format!("fts-{id}-v{version}")
}

/// Plans the import of `files`: one event per distinct flow, the latest version of each.
pub fn plan(files: &[FtsFile]) -> ImportPlan {
    let mut latest: BTreeMap<String, (u64, Read)> = BTreeMap::new();
    let mut plan = ImportPlan::default();
    let flows = files
        .iter()
        .flat_map(|file| -> Vec<(String, Option<String>, Read)> {
            match file {
                FtsFile::Api(data) => data
                    .flows
                    .iter()
                    .map(|f| {
                        (
                            text_of(&f.id),
                            f.version_id.as_deref().map(text_of),
                            Flow::of_api(f),
                        )
                    })
                    .collect(),
                FtsFile::Rows(rows) => rows
                    .iter()
                    .map(|r| (r.id.clone(), None, Flow::of_row(r)))
                    .collect(),
            }
        });
    for (id, version, flow) in flows {
        let version = match version.as_deref() {
            None | Some("null") => 1,
            Some(text) => match text.parse::<u64>() {
                Ok(v) if v >= 1 => v,
                _ => {
                    plan.not_imported.push(NotImported {
                        id,
                        version: 0,
                        reason: format!("versionId {text:?} is not a positive whole number"),
                        refused: true,
                    });
                    continue;
                }
            },
        };
        match latest.get(&id) {
            Some((held, _)) if *held >= version => plan.repeated += 1,
            Some(_) => {
                plan.repeated += 1;
                latest.insert(id, (version, flow));
            }
            None => {
                latest.insert(id, (version, flow));
            }
        }
    }
    for (id, (version, flow)) in latest {
        match flow.and_then(|flow| event_of(&flow, &id, version)) {
            Ok(event) => plan.flows.push(PlannedFlow { id, version, event }),
            Err((reason, refused)) => plan.not_imported.push(NotImported {
                id,
                version,
                reason,
                refused,
            }),
        }
    }
    plan
}

/// A flow read, or why it could not be (and whether that is a refusal).
type Read = Result<Flow, (String, bool)>;

/// A flow of either shape, read: what the mapping to an event needs.
struct Flow {
    amount_usd: Option<Decimal>,
    original_amount: Option<Decimal>,
    original_currency: Option<String>,
    exchange_rate: Option<Decimal>,
    status: Option<String>,
    contribution_type: Option<String>,
    date: Option<String>,
    description: Option<String>,
    sources: Vec<String>,
    destinations: Vec<String>,
    /// Destination locations (`iso3` or name); for a row, its M49 area as `Recipient::Region`.
    recipients: Vec<Recipient>,
    boundary: Option<String>,
    on_boundary: Option<String>,
}

enum Recipient {
    Location {
        iso3: Option<String>,
        name: Option<String>,
    },
    Region(String),
}

impl Flow {
    fn of_api(flow: &FtsFlow) -> Result<Flow, (String, bool)> {
        let organisations = |objects: &[FtsObject]| {
            objects
                .iter()
                .filter(|o| o.kind.eq_ignore_ascii_case("Organization"))
                .filter_map(|o| o.name.clone())
                .collect()
        };
        Ok(Flow {
            amount_usd: decimal_of("amountUSD", flow.amount_usd.as_deref())?,
            original_amount: decimal_of("originalAmount", flow.original_amount.as_deref())?,
            original_currency: flow.original_currency.clone(),
            exchange_rate: decimal_of("exchangeRate", flow.exchange_rate.as_deref())?,
            status: flow.status.clone(),
            contribution_type: flow.contribution_type.clone(),
            date: flow.date.clone(),
            description: flow.description.clone(),
            sources: organisations(&flow.source_objects),
            destinations: organisations(&flow.destination_objects),
            recipients: flow
                .destination_objects
                .iter()
                .filter(|o| o.kind.eq_ignore_ascii_case("Location"))
                .map(|o| Recipient::Location {
                    iso3: o.iso3.clone(),
                    name: o.name.clone(),
                })
                .collect(),
            boundary: flow.boundary.clone(),
            on_boundary: flow.on_boundary.clone(),
        })
    }

    fn of_row(row: &FtsRow) -> Result<Flow, (String, bool)> {
        let text = |t: &str| (!t.trim().is_empty()).then(|| t.to_owned());
        let decimal = |field: &str, t: &str| match text(t) {
            None => Ok(None),
            Some(t) => Decimal::from_str_exact(&t)
                .map(Some)
                .map_err(|_| (format!("{field} {t:?} is not a plain decimal number"), true)),
        };
        let recipient = match (text(&row.dest_locations), text(&row.dest_region)) {
            (Some(iso3), _) => vec![Recipient::Location {
                iso3: Some(iso3),
                name: None,
            }],
            (None, Some(region)) => vec![Recipient::Region(region)],
            (None, None) => Vec::new(),
        };
        Ok(Flow {
            amount_usd: decimal("amountUSD", &row.amount_usd)?,
            original_amount: decimal("originalAmount", &row.original_amount)?,
            original_currency: text(&row.original_currency),
            exchange_rate: decimal("exchangeRate", &row.exchange_rate)?,
            status: text(&row.status),
            contribution_type: text(&row.contribution_type),
            date: text(&row.date),
            description: text(&row.description),
            sources: text(&row.src_organization).into_iter().collect(),
            destinations: text(&row.dest_organization).into_iter().collect(),
            recipients: recipient,
            boundary: text(&row.boundary),
            on_boundary: text(&row.on_boundary),
        })
    }
}

/// A JSON string's contents, or a number's text.
fn text_of(raw: &RawValue) -> String {
    let text = raw.get();
    serde_json::from_str::<String>(text).unwrap_or_else(|_| text.to_owned())
}

/// A decimal from a JSON number or string, read from its text (no float); `None` for `null`.
fn decimal_of(field: &str, raw: Option<&RawValue>) -> Result<Option<Decimal>, (String, bool)> {
    let Some(raw) = raw else { return Ok(None) };
    if raw.get() == "null" {
        return Ok(None);
    }
    let text = text_of(raw);
    Decimal::from_str_exact(&text).map(Some).map_err(|_| {
        (
            format!("{field} {text:?} is not a plain decimal number"),
            true,
        )
    })
}

fn event_of(flow: &Flow, id: &str, version: u64) -> Result<EventObject, (String, bool)> {
    let refused = |reason: String| (reason, true);
    let skipped = |reason: String| (reason, false);
    let lower = |t: &Option<String>| t.as_deref().map(|s| s.trim().to_ascii_lowercase());
    match lower(&flow.boundary).as_deref() {
        None | Some("incoming") => {}
        Some(other) => {
            return Err(skipped(format!(
                "boundary {other:?}: FTS leaves flows inside or out of a location out of its incoming totals"
            )));
        }
    }
    if lower(&flow.on_boundary).as_deref() == Some("shared") {
        return Err(skipped(
            "onBoundary \"shared\": FTS does not say how it splits and counts it in no location's total".into(),
        ));
    }
    let (country, region) = match flow.recipients.as_slice() {
        [Recipient::Location { iso3, name }] => {
            let code = country_of(iso3.as_deref(), name.as_deref()).ok_or_else(|| {
                refused(format!(
                    "unknown location {:?}",
                    iso3.as_deref().or(name.as_deref()).unwrap_or("")
                ))
            })?;
            (Some(code.to_owned()), None)
        }
        [Recipient::Region(code)] => {
            if fundflow_refdata::region_by_key(code).is_none() {
                return Err(refused(format!("unknown M49 area {code:?}")));
            }
            (None, Some(code.clone()))
        }
        [] => return Err(refused("no destination Location".into())),
        several => {
            return Err(skipped(format!(
                "{} destination locations: FTS does not say how the flow splits between them",
                several.len()
            )));
        }
    };
    let date = flow
        .date
        .as_deref()
        .and_then(|d| d.get(..10))
        .filter(|d| time::Date::parse(d, DATE).is_ok())
        .ok_or_else(|| refused(format!("date {:?} is not an ISO date", flow.date)))?
        .to_owned();
    let original_currency = flow
        .original_currency
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty() && *c != "USD");
    let (value, currency, usd_rate) = match (flow.original_amount, original_currency) {
        (Some(value), Some(currency)) => {
            let rate = match flow.exchange_rate {
                Some(rate) if rate > Decimal::ZERO => Some(
                    Decimal::ONE
                        .checked_div(rate)
                        .ok_or_else(|| refused(format!("exchangeRate {rate} has no inverse")))?
                        .normalize(),
                ),
                Some(rate) => return Err(refused(format!("exchangeRate {rate} is not positive"))),
                None => None,
            };
            (value, currency.to_owned(), rate)
        }
        _ => {
            let usd = flow.amount_usd.ok_or_else(|| {
                refused("no amountUSD and no originalAmount with its currency".into())
            })?;
            (usd, "USD".to_owned(), None)
        }
    };
    if value.is_zero() {
        return Err(skipped("a zero amount".into()));
    }
    let joined = |names: &[String]| (!names.is_empty()).then(|| names.join(" / "));
    let donor = joined(&flow.sources);
    let organisation = joined(&flow.destinations);
    let in_kind = lower(&flow.contribution_type).is_some_and(|t| t.replace(' ', "") == "inkind");
    let status = lower(&flow.status).ok_or_else(|| refused("no status".into()))?;
    let amount = Some(MoneyObject {
        value: Some(value.to_string()),
        currency: Some(currency),
    });
    let (usd_rate_date, usd_rate_source) = match usd_rate {
        Some(_) => (Some(date.clone()), Some(RATE_SOURCE.to_owned())),
        None => (None, None),
    };
    let usd_rate = usd_rate.map(|r| r.to_string());
    let allocation = |items: Option<Vec<ItemObject>>| {
        Some(vec![AllocationObject {
            country: country.clone(),
            region: region.clone(),
            organisation: organisation.clone(),
            value: Some(value.to_string()),
            items,
        }])
    };
    let own_id = Some(format!("fts-{id}"));
    let description = flow.description.clone().filter(|d| !d.trim().is_empty());
    let body = match (status.as_str(), in_kind) {
        ("pledge" | "commitment", true) => {
            return Err(skipped(format!(
                "an in-kind {status}: fundflow records goods when they are given"
            )));
        }
        ("paid", true) => EventBody::InKindDonationRecorded {
            amount,
            usd_rate,
            usd_rate_date,
            usd_rate_source,
            allocations: allocation(Some(vec![ItemObject {
                item: Some(IN_KIND_ITEM.into()),
                unit: Some("lot".into()),
                quantity: Some("1".into()),
            }])),
            donation_id: own_id,
            donor,
            description,
            valuation_basis: None,
        },
        ("pledge" | "commitment", false) => EventBody::PledgeRecorded {
            amount,
            usd_rate,
            usd_rate_date,
            usd_rate_source,
            allocations: allocation(None),
            pledge_id: own_id,
            donor,
            sector: None,
            description,
        },
        ("paid", false) => EventBody::ContributionPaid {
            amount,
            usd_rate,
            usd_rate_date,
            usd_rate_source,
            allocations: allocation(None),
            payment_id: own_id,
            pledge_id: None,
            description,
            donor,
        },
        (other, _) => {
            return Err(refused(format!(
                "status {other:?} is none of pledge, commitment, paid"
            )));
        }
    };
    Ok(EventObject {
        event_id: None,
        reference: Some(flow_ref(id, version)),
        partner_id: None,
        recorded_at: None,
        occurred_on: Some(date),
        body,
    })
}

const DATE: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

/// A destination location's alpha-3 code: by `iso3`, a three-letter `name`, or the name as the
/// reference data spells it.
fn country_of(iso3: Option<&str>, name: Option<&str>) -> Option<&'static str> {
    let by_code = |code: &str| {
        fundflow_refdata::country_by_alpha3(&code.trim().to_ascii_uppercase())
            .map(|i| fundflow_refdata::COUNTRIES[usize::from(i)].alpha3)
    };
    if let Some(code) = iso3 {
        return by_code(code);
    }
    let name = name?;
    if name.len() == 3
        && let Some(alpha3) = by_code(name)
    {
        return Some(alpha3);
    }
    let folded = fold_name(name);
    fundflow_refdata::COUNTRIES
        .iter()
        .find(|c| fold_name(c.name) == folded)
        .map(|c| c.alpha3)
}

/// A name with case, spaces and punctuation folded away: "Korea, Republic of" and "korea
/// republic of" are one name.
fn fold_name(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn file(flows: &str) -> FtsFile {
        FtsFile::parse(&format!(r#"{{"data": {{"flows": [{flows}]}}}}"#)).unwrap()
    }

    fn flow(id: u64, extra: &str) -> String {
        format!(
            r#"{{"id": {id}, "versionId": 1, "amountUSD": 1234567.89, "status": "paid",
            "contributionType": "financial", "date": "2020-05-12T00:00:00Z",
            "description": "COVID-19 response", "boundary": "incoming", "onBoundary": "single",
            "sourceObjects": [{{"type": "Organization", "name": "Japan, Government of"}},
                              {{"type": "Location", "name": "Japan"}}],
            "destinationObjects": [{{"type": "Organization", "name": "WHO"}},
                                   {{"type": "Location", "name": "Kenya"}},
                                   {{"type": "UsageYear", "name": "2020"}}]{extra}}}"#
        )
    }

    #[test]
    fn a_paid_flow_becomes_a_payment_with_its_exact_amount_donor_and_recipient() {
        let plan = plan(&[file(&flow(101, ""))]);
        assert!(plan.not_imported.is_empty(), "{:?}", plan.not_imported);
        let [planned] = plan.flows.as_slice() else {
            panic!("{:?}", plan.flows)
        };
        assert_eq!(planned.event.reference.as_deref(), Some("fts-101-v1"));
        assert_eq!(planned.event.occurred_on.as_deref(), Some("2020-05-12"));
        let EventBody::ContributionPaid {
            amount,
            allocations,
            donor,
            payment_id,
            usd_rate,
            ..
        } = &planned.event.body
        else {
            panic!("{:?}", planned.event.body)
        };
        let amount = amount.as_ref().unwrap();
        assert_eq!(amount.value.as_deref(), Some("1234567.89"));
        assert_eq!(amount.currency.as_deref(), Some("USD"));
        assert_eq!(usd_rate, &None);
        assert_eq!(donor.as_deref(), Some("Japan, Government of"));
        assert_eq!(payment_id.as_deref(), Some("fts-101"));
        let allocation = &allocations.as_ref().unwrap()[0];
        assert_eq!(allocation.country.as_deref(), Some("KEN"));
        assert_eq!(allocation.organisation.as_deref(), Some("WHO"));
        assert_eq!(allocation.value.as_deref(), Some("1234567.89"));
    }

    #[test]
    fn an_original_currency_keeps_its_amount_and_the_rate_is_inverted() {
        let plan = plan(&[file(&flow(
            102,
            r#", "originalAmount": 1000000, "originalCurrency": "EUR", "exchangeRate": 0.8"#,
        ))]);
        let EventBody::ContributionPaid {
            amount,
            usd_rate,
            usd_rate_source,
            usd_rate_date,
            ..
        } = &plan.flows[0].event.body
        else {
            panic!()
        };
        let amount = amount.as_ref().unwrap();
        assert_eq!(amount.value.as_deref(), Some("1000000"));
        assert_eq!(amount.currency.as_deref(), Some("EUR"));
        assert_eq!(usd_rate.as_deref(), Some("1.25"));
        assert_eq!(usd_rate_source.as_deref(), Some("FTS"));
        assert_eq!(usd_rate_date.as_deref(), Some("2020-05-12"));
    }

    #[test]
    fn pledges_commitments_and_in_kind_map_to_their_event_types() {
        let plan = plan(&[file(
            &[
                flow(1, "").replace(r#""status": "paid""#, r#""status": "pledge""#),
                flow(2, "").replace(r#""status": "paid""#, r#""status": "commitment""#),
                flow(3, "").replace("financial", "in kind"),
                flow(4, "")
                    .replace("financial", "inKind")
                    .replace(r#""status": "paid""#, r#""status": "pledge""#),
            ]
            .join(","),
        )]);
        let types: Vec<&str> = plan
            .flows
            .iter()
            .map(|f| match f.event.body {
                EventBody::PledgeRecorded { .. } => "pledge",
                EventBody::InKindDonationRecorded { .. } => "in_kind",
                _ => "other",
            })
            .collect();
        assert_eq!(types, ["pledge", "pledge", "in_kind"]);
        let EventBody::InKindDonationRecorded { allocations, .. } = &plan.flows[2].event.body
        else {
            panic!()
        };
        let items = allocations.as_ref().unwrap()[0].items.as_ref().unwrap();
        assert_eq!(items[0].item.as_deref(), Some(IN_KIND_ITEM));
        assert_eq!(plan.not_imported.len(), 1);
        assert_eq!(plan.not_imported[0].id, "4");
        assert!(!plan.not_imported[0].refused);
    }

    #[test]
    fn what_fts_does_not_count_or_does_not_say_is_reported_not_guessed() {
        let two_places = flow(5, "").replace(
            r#"{"type": "Location", "name": "Kenya"}"#,
            r#"{"type": "Location", "name": "Kenya"}, {"type": "Location", "name": "Uganda"}"#,
        );
        let plan = plan(&[file(
            &[
                flow(1, "").replace(r#""onBoundary": "single""#, r#""onBoundary": "shared""#),
                flow(2, "").replace(r#""boundary": "incoming""#, r#""boundary": "internal""#),
                flow(3, "").replace("1234567.89", "0"),
                flow(4, "").replace("Kenya", "Atlantis"),
                two_places,
                flow(6, "").replace(r#""status": "paid""#, r#""status": "unknown""#),
            ]
            .join(","),
        )]);
        assert!(plan.flows.is_empty(), "{:?}", plan.flows);
        let verdicts: Vec<(&str, bool)> = plan
            .not_imported
            .iter()
            .map(|n| (n.id.as_str(), n.refused))
            .collect();
        assert_eq!(
            verdicts,
            [
                ("1", false),
                ("2", false),
                ("3", false),
                ("4", true),
                ("5", false),
                ("6", true)
            ]
        );
        assert!(plan.not_imported[3].reason.contains("Atlantis"));
    }

    #[test]
    fn a_flow_met_twice_is_planned_once_and_a_later_version_reverses_the_earlier() {
        let v2 = flow(7, "")
            .replace(r#""versionId": 1"#, r#""versionId": 2"#)
            .replace("1234567.89", "2000");
        let plan = plan(&[file(&flow(7, "")), file(&v2), file(&flow(7, ""))]);
        assert_eq!(plan.repeated, 2);
        let [planned] = plan.flows.as_slice() else {
            panic!()
        };
        assert_eq!(planned.version, 2);
        assert_eq!(planned.event.reference.as_deref(), Some("fts-7-v2"));
        assert_eq!(
            planned.earlier_refs().collect::<Vec<_>>(),
            [(1, "fts-7-v1".to_owned())]
        );
        let reversals = planned.reversals(&[1]);
        let [reversal] = reversals.as_slice() else {
            panic!()
        };
        assert_eq!(reversal.reference.as_deref(), Some("fts-7-v1-superseded"));
        let EventBody::EventReversed { reverses_ref, .. } = &reversal.body else {
            panic!()
        };
        assert_eq!(reverses_ref.as_deref(), Some("fts-7-v1"));
        assert!(planned.reversals(&[]).is_empty());
    }

    #[test]
    fn a_number_in_exponent_form_is_refused_not_rounded() {
        let plan = plan(&[file(&flow(8, "").replace("1234567.89", "1.5e6"))]);
        assert!(plan.flows.is_empty());
        assert!(plan.not_imported[0].refused);
        assert!(plan.not_imported[0].reason.contains("amountUSD"));
    }
}
