//! The table pages drawn from totals and quantities: per partner and year (`/partners`) and the
//! in-kind goods per recipient (`/in-kind`).

use std::collections::BTreeMap;

use askama::Template;
use fundflow_api::{InKindReply, TotalsReply};
use rust_decimal::Decimal;

use crate::chart::{Bar, BarChart};
use crate::page::{Filter, KINDS, PageContext, filter_bar};
use crate::sums::KindSums;
use crate::{DashboardError, STYLESHEET_PATH};

/// The filters of the partners page (those `GET /v1/totals` takes).
pub const PARTNER_FILTERS: [Filter; 5] = [
    Filter::From,
    Filter::To,
    Filter::Currency,
    Filter::Partner,
    Filter::Grant,
];

struct PartnerYear {
    partner: String,
    year: String,
    usd: Vec<String>,
    unconverted: String,
}

#[derive(Template)]
#[template(path = "partners.html")]
struct Partners<'a> {
    stylesheet: &'a str,
    ctx: &'a PageContext,
    kinds: &'a [(&'a str, &'a str)],
    filter_bar: String,
    rows: Vec<PartnerYear>,
    chart: Option<String>,
    csv: String,
    reproduce: String,
}

/// Per partner and year, what it recorded per kind, from `GET /v1/totals?scope=global&
/// group_by=partner,year` for the page's filters.
pub fn partners(ctx: &PageContext, totals: &TotalsReply) -> Result<String, DashboardError> {
    let mut sums: BTreeMap<(String, String), KindSums> = BTreeMap::new();
    let mut per_partner: BTreeMap<String, KindSums> = BTreeMap::new();
    for row in &totals.rows {
        let (Some(partner), Some(year)) = (&row.partner, &row.year) else {
            return Err(DashboardError::Unexpected(
                "a partner-and-year total without its partner or year".into(),
            ));
        };
        sums.entry((partner.clone(), year.clone()))
            .or_default()
            .add_row(row)?;
        per_partner
            .entry(partner.clone())
            .or_default()
            .add_row(row)?;
    }
    // Paid, parallel funding and in kind: what reached recipients.
    let mut bars = Vec::new();
    for (partner, sums) in &per_partner {
        let mut value = Decimal::ZERO;
        for index in 1..KINDS.len() {
            value = value
                .checked_add(sums.usd(index))
                .ok_or(DashboardError::Overflow {
                    what: "a partner's total",
                })?;
        }
        if !value.is_zero() {
            bars.push(Bar {
                label: partner.clone(),
                value,
                text: format!("USD {value:.2}"),
            });
        }
    }
    let chart = if bars.is_empty() {
        None
    } else {
        Some(
            BarChart::new(
                "Paid, parallel funding and in kind per partner, USD equivalent",
                bars,
            )?
            .render()?,
        )
    };
    let filters = ctx.filters.only(&PARTNER_FILTERS);
    Ok(Partners {
        stylesheet: STYLESHEET_PATH,
        ctx,
        kinds: &KINDS,
        filter_bar: filter_bar(&ctx.filters, "/partners", &PARTNER_FILTERS, &[])?,
        rows: sums
            .into_iter()
            .map(|((partner, year), sums)| PartnerYear {
                partner,
                year,
                usd: sums.usd_texts(),
                unconverted: sums.unconverted_text(),
            })
            .collect(),
        chart,
        csv: filters.link(
            "/v1/totals",
            &[
                ("scope", "global"),
                ("group_by", "partner,year"),
                ("format", "csv"),
            ],
        ),
        reproduce: filters.command(
            &format!(
                "fundflow audit replay --file EXPORT --until-seq {}",
                ctx.as_of_seq
            ),
            &[("scope", "global"), ("group_by", "partner,year")],
        ),
    }
    .render()?)
}

struct Goods {
    name: String,
    key: String,
    link: String,
    items: Vec<(String, String, String)>,
    usd: String,
}

#[derive(Template)]
#[template(path = "in_kind.html")]
struct InKind<'a> {
    stylesheet: &'a str,
    ctx: &'a PageContext,
    filter_bar: String,
    recipients: Vec<Goods>,
    csv: String,
    reproduce: String,
}

/// The in-kind goods per recipient country: the quantities of `GET /v1/in-kind?scope=country`
/// (all of them up to the checkpoint) and the USD equivalent in kind of `GET /v1/totals?
/// scope=country&kind=in_kind` for the page's period.
pub fn in_kind(
    ctx: &PageContext,
    items: &InKindReply,
    totals: &TotalsReply,
) -> Result<String, DashboardError> {
    let mut usd: BTreeMap<&str, KindSums> = BTreeMap::new();
    for row in &totals.rows {
        usd.entry(row.key.as_str()).or_default().add_row(row)?;
    }
    let in_kind = KINDS
        .iter()
        .position(|(k, _)| *k == "in_kind")
        .ok_or_else(|| DashboardError::Unexpected("no in-kind kind".into()))?;
    let mut by_key: BTreeMap<&str, Goods> = BTreeMap::new();
    let period = ctx.filters.only(&[Filter::From, Filter::To]);
    for row in &items.rows {
        let goods = by_key.entry(row.key.as_str()).or_insert_with(|| Goods {
            name: row.name.clone(),
            key: row.key.clone(),
            link: period.link(&format!("/recipients/{}", row.key), &[]),
            items: Vec::new(),
            usd: usd
                .get(row.key.as_str())
                .map(|s| format!("{:.2}", s.usd(in_kind)))
                .unwrap_or_else(|| "0.00".to_owned()),
        });
        goods
            .items
            .push((row.item.clone(), row.unit.clone(), row.quantity.clone()));
    }
    let mut recipients: Vec<Goods> = by_key.into_values().collect();
    recipients.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(InKind {
        stylesheet: STYLESHEET_PATH,
        ctx,
        filter_bar: filter_bar(&ctx.filters, "/in-kind", &[Filter::From, Filter::To], &[])?,
        recipients,
        csv: period.link(
            "/v1/totals",
            &[("scope", "country"), ("kind", "in_kind"), ("format", "csv")],
        ),
        reproduce: period.command(
            &format!(
                "fundflow audit replay --file EXPORT --until-seq {}",
                ctx.as_of_seq
            ),
            &[("scope", "country"), ("kind", "in_kind")],
        ),
    }
    .render()?)
}
