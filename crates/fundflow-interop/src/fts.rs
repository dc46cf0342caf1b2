//! FTS-style flows out: one row per allocation of every applied flow, in the column set of the
//! FTS funding tables that HDX publishes where they apply, then fundflow's own columns. Each
//! row is a "single" flow on the incoming boundary, counting in exactly one recipient, as FTS
//! counts flows in a location.
//!
//! How the columns are filled:
//! - `date`: the event's `occurred_on` (ISO date); `budgetYear` its year.
//! - `amountUSD`: the allocation's USD equivalent, **with its cents** (FTS publishes whole
//!   dollars; fundflow keeps the exact figure); empty without a rate.
//! - `srcOrganization`: the donor (the source, for parallel funding); `destOrganization`: the
//!   allocation's organisation.
//! - `destLocations`: the recipient country's ISO 3166-1 alpha-3 code; empty when the
//!   recipient is an M49 area, whose code is then in `destRegion`.
//! - `contributionType`: `financial`, or `in kind` for in-kind donations; `flowType`
//!   `Standard`; `method` `Traditional aid`; `boundary` `incoming`; `onBoundary` `single`.
//! - `status`: `pledge` for pledges, `paid` for payments, parallel funding and in-kind
//!   donations, so a pledge and the payments against it are never both counted as funding.
//! - `decisionDate`: a pledge's date; empty otherwise.
//! - `originalAmount`, `originalCurrency`: the allocation's value and currency; both empty for
//!   a USD flow, as FTS leaves them.
//! - `exchangeRate`: **currency units per USD**, FTS's convention: 1 / fundflow's `usd_rate`
//!   (rust_decimal's quotient, 28 significant digits, trailing zeros dropped); empty for USD and
//!   without a rate. fundflow's own rate is in `usdRate`.
//! - `id`: the event id and the allocation's index (`EVENT_ID:0`); `refCode`: the partner's own
//!   id of the event (its pledge, payment, funding or donation id).
//! - fundflow's columns: `destRegion`, `partner`, `seq`, `usdRate`.

use fundflow_api::{FlowItem, FlowStatus};
use fundflow_domain::Scope;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The columns, in order: FTS's, then fundflow's.
pub const COLUMNS: [&str; 23] = [
    "date",
    "budgetYear",
    "description",
    "amountUSD",
    "srcOrganization",
    "destOrganization",
    "destLocations",
    "contributionType",
    "flowType",
    "method",
    "boundary",
    "onBoundary",
    "status",
    "decisionDate",
    "originalAmount",
    "originalCurrency",
    "exchangeRate",
    "id",
    "refCode",
    "destRegion",
    "partner",
    "seq",
    "usdRate",
];

/// One FTS-style row: one allocation of one flow. Field names are the CSV's columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FtsRow {
    /// ISO date.
    pub date: String,
    /// The year of `date`.
    pub budget_year: String,
    /// The flow's description.
    pub description: String,
    /// The allocation in USD, at cents; empty without a rate.
    #[serde(rename = "amountUSD")]
    pub amount_usd: String,
    /// Who gives.
    pub src_organization: String,
    /// Who receives.
    pub dest_organization: String,
    /// The recipient country's alpha-3 code, or empty.
    pub dest_locations: String,
    /// `financial` or `in kind`.
    pub contribution_type: String,
    /// `Standard`.
    pub flow_type: String,
    /// `Traditional aid`.
    pub method: String,
    /// `incoming`.
    pub boundary: String,
    /// `single`.
    pub on_boundary: String,
    /// `pledge` or `paid`.
    pub status: String,
    /// A pledge's date, or empty.
    pub decision_date: String,
    /// The allocation in its currency; empty for USD.
    pub original_amount: String,
    /// Its currency; empty for USD.
    pub original_currency: String,
    /// Currency units per USD; empty for USD and without a rate.
    pub exchange_rate: String,
    /// `EVENT_ID:INDEX`.
    pub id: String,
    /// The partner's own id of the event.
    pub ref_code: String,
    /// The recipient's M49 code when it is an area, or empty.
    pub dest_region: String,
    /// The submitting partner.
    pub partner: String,
    /// Where the event is in the log.
    pub seq: u64,
    /// fundflow's rate, USD per unit, as given; empty without one.
    pub usd_rate: String,
}

/// `GET /v1/exports/fts.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FtsReply {
    /// The checkpoint the rows are at.
    pub as_of_seq: u64,
    /// The rows.
    pub flows: Vec<FtsRow>,
}

/// A flow the API returned that no row can be written for: the API writes none such, so this
/// names a bug, with the flow's seq.
#[derive(Debug, thiserror::Error)]
#[error("flow seq {seq}: {message}")]
pub struct BadFlow {
    /// The flow's seq.
    pub seq: u64,
    /// What is wrong.
    pub message: String,
}

/// The rows of the applied flows among `flows` (reversed ones are left out), in the flows'
/// order, allocations in theirs.
pub fn rows(flows: &[FlowItem]) -> Result<Vec<FtsRow>, BadFlow> {
    let mut rows = Vec::new();
    for flow in flows.iter().filter(|f| f.status == FlowStatus::Applied) {
        let bad = |message: String| BadFlow {
            seq: flow.seq,
            message,
        };
        let is_usd = flow.currency == "USD";
        let is_pledge = flow.kind == "pledged";
        let exchange_rate = match flow.usd_rate.as_deref() {
            Some(rate) if !is_usd => inverse(rate)
                .ok_or_else(|| bad(format!("usd_rate {rate:?} is not a positive decimal")))?,
            _ => String::new(),
        };
        let budget_year = flow
            .occurred_on
            .get(..4)
            .ok_or_else(|| bad(format!("occurred_on {:?} is not a date", flow.occurred_on)))?;
        for (index, allocation) in flow.allocations.iter().enumerate() {
            let (location, region) = match allocation.scope {
                Scope::Country => (allocation.key.clone(), String::new()),
                _ => (String::new(), allocation.key.clone()),
            };
            rows.push(FtsRow {
                date: flow.occurred_on.clone(),
                budget_year: budget_year.to_owned(),
                description: flow.description.clone(),
                amount_usd: allocation.usd_equivalent.clone().unwrap_or_default(),
                src_organization: flow.donor.clone(),
                dest_organization: allocation.organisation.clone(),
                dest_locations: location,
                contribution_type: if flow.kind == "in_kind" {
                    "in kind"
                } else {
                    "financial"
                }
                .into(),
                flow_type: "Standard".into(),
                method: "Traditional aid".into(),
                boundary: "incoming".into(),
                on_boundary: "single".into(),
                status: if is_pledge { "pledge" } else { "paid" }.into(),
                decision_date: if is_pledge {
                    flow.occurred_on.clone()
                } else {
                    String::new()
                },
                original_amount: if is_usd {
                    String::new()
                } else {
                    allocation.value.clone()
                },
                original_currency: if is_usd {
                    String::new()
                } else {
                    flow.currency.clone()
                },
                exchange_rate: exchange_rate.clone(),
                id: format!("{}:{index}", flow.event_id),
                ref_code: flow.own_id.clone(),
                dest_region: region,
                partner: flow.partner.clone(),
                seq: flow.seq,
                usd_rate: flow.usd_rate.clone().unwrap_or_default(),
            });
        }
    }
    Ok(rows)
}

/// 1 / `rate`; `None` when it is not a positive decimal (the fold applies no such rate).
fn inverse(rate: &str) -> Option<String> {
    Decimal::from_str_exact(rate)
        .ok()
        .filter(|r| *r > Decimal::ZERO)
        .and_then(|r| Decimal::ONE.checked_div(r))
        .map(|q| q.normalize().to_string())
}

/// The rows as CSV under [`COLUMNS`].
pub fn csv(rows: &[FtsRow]) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for row in rows {
        writer.serialize(row)?;
    }
    if rows.is_empty() {
        writer.write_record(COLUMNS)?;
    }
    writer
        .into_inner()
        .map_err(|err| csv::Error::from(err.into_error()))
}
