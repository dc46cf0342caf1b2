//! The report of a ledger's state in the shape every command prints (`replay-file`, `totals`,
//! `audit replay`) and the API returns (`GET /v1/totals`, `GET /v1/in-kind`): digests, rejected
//! records, totals and in-kind quantities, with every amount a string at its currency's
//! minor-unit scale. It lives in the API layer, not the domain, because it is a JSON shape.

use fundflow_domain::money::{USD_SCALE, format_at_scale, format_quantity};
use fundflow_domain::{Digest32, Ledger, ModelState, Node, Scope, Total, TotalKind};
use fundflow_domain::{currency_code, minor_unit, sorted_totals};
use fundflow_refdata::CurrencyIndex;
use serde::{Deserialize, Serialize};

/// `Scope` as its name, both ways (the domain's type is `Serialize` only).
pub(crate) mod scope_name {
    use fundflow_domain::Scope;
    use serde::{Deserialize, Deserializer, Serializer, de};

    /// Writes the name.
    pub fn serialize<S: Serializer>(scope: &Scope, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(scope.as_str())
    }

    /// Reads a name.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Scope, D::Error> {
        let name = String::deserialize(deserializer)?;
        Scope::parse(&name)
            .ok_or_else(|| de::Error::invalid_value(de::Unexpected::Str(&name), &"a scope name"))
    }
}

/// Everything a reviewer or auditor needs to compare two replays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The last sequence number folded.
    pub last_seq: u64,
    /// Hex SHA-256 chain over the records folded.
    pub log_digest: String,
    /// Hex SHA-256 of the canonical state.
    pub model_digest: String,
    /// Every rejected record, in log order.
    pub rejected: Vec<RejectedRow>,
    /// Every nonzero total, sorted by scope, key, kind and currency.
    pub totals: Vec<TotalRow>,
    /// Every nonzero in-kind quantity, sorted by scope, key, item and unit.
    pub in_kind_items: Vec<ItemRow>,
}

/// A rejected record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRow {
    /// Where it is in the log.
    pub seq: u64,
    /// The event id as given, or empty.
    pub event_id: String,
    /// The rejection code.
    pub code: String,
    /// The field and the rule, in one sentence.
    pub message: String,
}

/// One total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotalRow {
    /// `country`, `region`, `subregion`, `intermediate` or `global`.
    #[serde(with = "scope_name")]
    pub scope: Scope,
    /// Alpha-3 code of a country, three-digit M49 code of an area, `001` for global.
    pub key: String,
    /// The country's or area's name.
    pub name: String,
    /// The submitting partner, when grouped by partner (`group_by`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner: Option<String>,
    /// The year of `occurred_on` (`"2020"`), when grouped by year.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub year: Option<String>,
    /// The quarter of `occurred_on` (`"2020-Q3"`), when grouped by quarter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarter: Option<String>,
    /// The month of `occurred_on` (`"2020-09"`), when grouped by month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month: Option<String>,
    /// The grant (a pledge's id, a payment's pledge, parallel funding's grant; `""` for none),
    /// when grouped by grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// The sector (`""` for none), when grouped by sector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sector: Option<String>,
    /// The donor (`""` for none), when grouped by donor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub donor: Option<String>,
    /// `pledged`, `paid`, `parallel_funding` or `in_kind`.
    pub kind: String,
    /// ISO 4217 code.
    pub currency: String,
    /// The total in `currency`.
    pub amount: String,
    /// USD equivalent of the converted part.
    pub usd_equivalent: String,
    /// The part of `amount` with no USD rate, in `currency`.
    pub unconverted: String,
}

/// One in-kind quantity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRow {
    /// As for totals.
    #[serde(with = "scope_name")]
    pub scope: Scope,
    /// As for totals.
    pub key: String,
    /// As for totals.
    pub name: String,
    /// Item code or name.
    pub item: String,
    /// Unit.
    pub unit: String,
    /// Decimal string without trailing zeros.
    pub quantity: String,
}

impl Report {
    /// The report of `ledger`'s current state.
    pub fn of(ledger: &Ledger) -> Report {
        // The digest from the fold's own indexes and the rows from its direct totals: a full
        // `model_state` would copy every cell and pledge only to hash them.
        let state = ModelState {
            checkpoint: ledger.checkpoint(),
            direct_totals: ledger.direct_totals().map(|(k, t)| (*k, *t)).collect(),
            direct_quantities: ledger.direct_quantities().collect(),
            rejected_events: ledger.rejected().to_vec(),
            ..ModelState::default()
        };
        Report::with_digest(&state, ledger.model_digest())
    }

    /// The report of a state, from a replay or a read model alike.
    pub fn of_state(state: &ModelState) -> Report {
        Report::with_digest(state, state.model_digest())
    }

    /// The report of `state`'s checkpoint, rejections, totals and quantities, with the digest
    /// of the whole model it was taken from.
    fn with_digest(state: &ModelState, model_digest: Digest32) -> Report {
        let rejected = state
            .rejected_events
            .iter()
            .map(|r| RejectedRow {
                seq: r.seq,
                event_id: r.event_id.clone(),
                code: r.rejection.code.as_str().to_owned(),
                message: r.rejection.message.clone(),
            })
            .collect();
        Report {
            last_seq: state.checkpoint.last_seq,
            log_digest: hex::encode(state.checkpoint.log_digest),
            model_digest: hex::encode(model_digest),
            rejected,
            totals: total_rows(state, None),
            in_kind_items: item_rows(state, None),
        }
    }
}

/// The nonzero totals of `state` (of one scope, or all), sorted by scope, key, kind and currency.
pub fn total_rows(state: &ModelState, scope: Option<Scope>) -> Vec<TotalRow> {
    sorted_totals(state, scope)
        .into_iter()
        .map(|(key, total)| total_row(key.node, key.kind, key.currency, &total))
        .collect()
}

/// The row of one total, with no dimension: amounts at the currency's minor unit, the USD
/// equivalent at cents. [`total_rows`] and the grouped rows of [`crate::analytics`] share it so
/// that the same total is written the same way.
pub(crate) fn total_row(
    node: Node,
    kind: TotalKind,
    currency: CurrencyIndex,
    total: &Total,
) -> TotalRow {
    let currency = currency_code(currency);
    let minor = minor_unit(currency);
    TotalRow {
        scope: node.scope(),
        key: node.key().to_owned(),
        name: node.name().to_owned(),
        partner: None,
        year: None,
        quarter: None,
        month: None,
        grant: None,
        sector: None,
        donor: None,
        kind: kind.as_str().to_owned(),
        currency: currency.to_owned(),
        amount: format_at_scale(total.amount, minor),
        usd_equivalent: format_at_scale(total.usd_equivalent, USD_SCALE),
        unconverted: format_at_scale(total.unconverted, minor),
    }
}

/// The nonzero in-kind quantities of `state` (of one scope, or all), sorted by scope, key, item
/// and unit.
pub fn item_rows(state: &ModelState, scope: Option<Scope>) -> Vec<ItemRow> {
    let mut in_kind_items: Vec<ItemRow> = state
        .quantities()
        .into_iter()
        .filter(|((node, _, _), _)| scope.is_none_or(|s| node.scope() == s))
        .map(|((node, item, unit), quantity)| ItemRow {
            scope: node.scope(),
            key: node.key().to_owned(),
            name: node.name().to_owned(),
            item: item.to_owned(),
            unit: unit.to_owned(),
            quantity: format_quantity(quantity),
        })
        .collect();
    in_kind_items.sort_unstable_by(|a, b| {
        (a.scope, &a.key, &a.item, &a.unit).cmp(&(b.scope, &b.key, &b.item, &b.unit))
    });
    in_kind_items
}
