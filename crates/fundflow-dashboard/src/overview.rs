//! The overview (`/`): the programme's figures at a glance for a period.

use std::collections::BTreeMap;

use askama::Template;
use fundflow_api::{SummaryReply, TotalRow, TotalsReply};
use rust_decimal::Decimal;

use crate::chart::{Bar, BarChart};
use crate::page::PageContext;
use crate::{DashboardError, STYLESHEET_PATH, decimal};

/// How many recipients and partners the overview ranks.
const TOP: usize = 10;

/// The replies the overview is drawn from, all at one checkpoint and for the same period.
#[derive(Debug)]
pub struct OverviewInput<'a> {
    /// `GET /v1/summary?from&to`.
    pub summary: &'a SummaryReply,
    /// `GET /v1/totals?scope=global&group_by=month&from&to`.
    pub by_month: &'a TotalsReply,
    /// `GET /v1/totals?scope=country&from&to`.
    pub by_country: &'a TotalsReply,
    /// `GET /v1/totals?scope=global&group_by=partner&from&to`.
    pub by_partner: &'a TotalsReply,
    /// The years with data, newest first, for the year picker.
    pub years: &'a [String],
}

/// A ranked row: a name and its USD equivalent of the benefiting kinds.
struct Ranked {
    name: String,
    link: Option<String>,
    usd: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview<'a> {
    stylesheet: &'a str,
    ctx: &'a PageContext,
    summary: &'a SummaryReply,
    years: &'a [String],
    monthly: Vec<(String, String, String)>,
    monthly_chart: String,
    top_recipients: Vec<Ranked>,
    top_partners: Vec<Ranked>,
    csv_by_month: String,
    csv_by_country: String,
    csv_by_partner: String,
    reproduce: String,
}

impl Overview<'_> {
    /// A kind as a page names it (`Parallel funding` for `parallel_funding`).
    fn kind_title<'k>(&self, kind: &'k str) -> &'k str {
        crate::page::KINDS
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(kind, |(_, title)| *title)
    }
}

/// Kinds whose money reached recipients: a pledge alone benefits no one yet.
const BENEFITING: [&str; 3] = ["paid", "in_kind", "parallel_funding"];

fn add(sum: &mut Decimal, row: &TotalRow, what: &'static str) -> Result<(), DashboardError> {
    *sum = sum
        .checked_add(decimal(what, &row.usd_equivalent)?)
        .ok_or(DashboardError::Overflow { what })?;
    Ok(())
}

fn ranked(
    rows: &[TotalRow],
    key_of: impl Fn(&TotalRow) -> Option<(String, String, Option<String>)>,
) -> Result<Vec<Ranked>, DashboardError> {
    let mut sums: BTreeMap<String, (String, Option<String>, Decimal)> = BTreeMap::new();
    for row in rows
        .iter()
        .filter(|r| BENEFITING.contains(&r.kind.as_str()))
    {
        let Some((key, name, link)) = key_of(row) else {
            continue;
        };
        let entry = sums.entry(key).or_insert((name, link, Decimal::ZERO));
        add(&mut entry.2, row, "a ranking")?;
    }
    let mut sums: Vec<_> = sums.into_values().filter(|s| !s.2.is_zero()).collect();
    // Largest first; ties by name, so the order is the same on every machine.
    sums.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    Ok(sums
        .into_iter()
        .take(TOP)
        .map(|(name, link, usd)| Ranked {
            name,
            link,
            usd: format!("{usd:.2}"),
        })
        .collect())
}

/// The overview page.
pub fn overview(ctx: &PageContext, input: &OverviewInput<'_>) -> Result<String, DashboardError> {
    // Paid and in-kind USD per month, the chart's series.
    let mut months: BTreeMap<String, (Decimal, Decimal)> = BTreeMap::new();
    for row in &input.by_month.rows {
        let Some(month) = &row.month else { continue };
        let entry = months
            .entry(month.clone())
            .or_insert((Decimal::ZERO, Decimal::ZERO));
        match row.kind.as_str() {
            "paid" => add(&mut entry.0, row, "paid per month")?,
            "in_kind" => add(&mut entry.1, row, "in kind per month")?,
            _ => {}
        }
    }
    let mut bars = Vec::new();
    let mut monthly = Vec::new();
    for (month, (paid, in_kind)) in &months {
        let both = paid.checked_add(*in_kind).ok_or(DashboardError::Overflow {
            what: "a month's total",
        })?;
        bars.push(Bar {
            label: month.clone(),
            value: both,
            text: format!("USD {both:.2}"),
        });
        monthly.push((month.clone(), format!("{paid:.2}"), format!("{in_kind:.2}")));
    }
    let monthly_chart =
        BarChart::new("Paid and in-kind, USD equivalent per month", bars)?.render()?;
    let top_recipients = ranked(&input.by_country.rows, |row| {
        Some((
            row.key.clone(),
            row.name.clone(),
            Some(ctx.filters.link(&format!("/recipients/{}", row.key), &[])),
        ))
    })?;
    let top_partners = ranked(&input.by_partner.rows, |row| {
        let partner = row.partner.clone()?;
        Some((partner.clone(), partner, None))
    })?;
    let csv = |extra: &[(&str, &str)]| {
        let mut extra = extra.to_vec();
        extra.push(("format", "csv"));
        ctx.filters.link("/v1/totals", &extra)
    };
    let mut reproduce = format!(
        "fundflow audit replay --file EXPORT --until-seq {}",
        ctx.as_of_seq
    );
    if let Some(from) = &ctx.filters.from {
        reproduce.push_str(&format!(" --from {from}"));
    }
    if let Some(to) = &ctx.filters.to {
        reproduce.push_str(&format!(" --to {to}"));
    }
    reproduce.push_str(" --scope global --group-by month");
    Ok(Overview {
        stylesheet: STYLESHEET_PATH,
        ctx,
        summary: input.summary,
        years: input.years,
        monthly,
        monthly_chart,
        top_recipients,
        top_partners,
        csv_by_month: csv(&[("scope", "global"), ("group_by", "month")]),
        csv_by_country: csv(&[("scope", "country")]),
        csv_by_partner: csv(&[("scope", "global"), ("group_by", "partner")]),
        reproduce,
    }
    .render()?)
}
