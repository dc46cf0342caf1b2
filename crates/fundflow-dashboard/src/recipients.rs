//! Recipients: the UN M49 drill-down (`/recipients`, `/recipients?region=…`) and a country's
//! page (`/recipients/{alpha3}`).
//!
//! The drill-down is drawn from one all-scope totals reply, so an area, its parts and what was
//! allocated to the area itself are one checkpoint's figures: an area's row less the sum of its
//! parts' rows is the "allocated to the area directly" row, and the rows on a page add up.

use std::collections::BTreeMap;

use askama::Template;
use fundflow_api::{FlowsReply, InKindReply, TotalsReply};
use fundflow_refdata::{COUNTRIES, REGIONS, Region, WORLD};

use crate::chart::{Bar, BarChart};
use crate::page::{Filter, KINDS, PageContext, filter_bar};
use crate::sums::KindSums;
use crate::{DashboardError, STYLESHEET_PATH, decimal};

/// The filters the recipients pages take (those `GET /v1/totals` takes).
pub const RECIPIENT_FILTERS: [Filter; 5] = [
    Filter::From,
    Filter::To,
    Filter::Currency,
    Filter::Partner,
    Filter::Grant,
];

/// A link in the breadcrumbs.
struct Crumb {
    name: String,
    link: String,
}

/// One row of the drill-down.
struct AreaRow {
    name: String,
    level: &'static str,
    link: Option<String>,
    usd: Vec<String>,
    unconverted: String,
    direct: bool,
}

#[derive(Template)]
#[template(path = "recipients.html")]
struct Recipients<'a> {
    stylesheet: &'a str,
    ctx: &'a PageContext,
    kinds: &'a [(&'a str, &'a str)],
    crumbs: Vec<Crumb>,
    area_name: &'static str,
    area_key: &'static str,
    filter_bar: String,
    rows: Vec<AreaRow>,
    total: AreaRow,
    charts: Vec<(String, String)>,
    csv: String,
    reproduce: String,
}

fn area(code: u16) -> Option<&'static Region> {
    fundflow_refdata::region_by_code(code).map(|i| &REGIONS[usize::from(i)])
}

/// World › … › `code`, each a link to its drill-down.
fn crumbs(ctx: &PageContext, mut code: Option<u16>) -> Vec<Crumb> {
    let mut crumbs = Vec::new();
    while let Some(region) = code.and_then(area) {
        let filters = ctx.filters.only(&RECIPIENT_FILTERS);
        let link = if region.code == WORLD {
            filters.link("/recipients", &[])
        } else {
            filters.link("/recipients", &[("region", region.key)])
        };
        crumbs.push(Crumb {
            name: region.name.to_owned(),
            link,
        });
        code = region.parent;
    }
    crumbs.reverse();
    crumbs
}

fn level_name(scope: &str) -> &'static str {
    match scope {
        "region" => "Region",
        "subregion" => "Sub-region",
        "intermediate" => "Intermediate region",
        "country" => "Country",
        _ => "World",
    }
}

/// The drill-down page of the M49 area `area_key` (`001` for the World), from `totals`, the
/// all-scope reply of `GET /v1/totals` for the page's filters.
pub fn recipients(
    ctx: &PageContext,
    area_key: &str,
    totals: &TotalsReply,
) -> Result<String, DashboardError> {
    let node = fundflow_refdata::region_by_key(area_key)
        .map(|i| &REGIONS[usize::from(i)])
        .ok_or_else(|| {
            DashboardError::NotFound(format!("region: {area_key:?} is not an M49 area code"))
        })?;
    let mut sums: BTreeMap<(&str, &str), KindSums> = BTreeMap::new();
    for row in &totals.rows {
        sums.entry((row.scope.as_str(), row.key.as_str()))
            .or_default()
            .add_row(row)?;
    }
    let sums_of = |scope: &str, key: &str| sums.get(&(scope, key)).cloned().unwrap_or_default();
    let filters = ctx.filters.only(&RECIPIENT_FILTERS);
    let node_sums = sums_of(node.level.scope(), node.key);
    // The parts of the area: the areas whose parent it is, and the countries whose innermost
    // area it is.
    let mut parts: Vec<(String, &'static str, String, KindSums)> = Vec::new();
    for region in REGIONS.iter().filter(|r| r.parent == Some(node.code)) {
        let part = sums_of(region.level.scope(), region.key);
        if !part.is_zero() {
            let link = filters.link("/recipients", &[("region", region.key)]);
            parts.push((
                region.name.to_owned(),
                level_name(region.level.scope()),
                link,
                part,
            ));
        }
    }
    for country in COUNTRIES
        .iter()
        .filter(|c| c.ancestors().next() == Some(node.code))
    {
        let part = sums_of("country", country.alpha3);
        if !part.is_zero() {
            let link = filters.link(&format!("/recipients/{}", country.alpha3), &[]);
            parts.push((country.name.to_owned(), "Country", link, part));
        }
    }
    let mut direct = node_sums.clone();
    for (_, _, _, part) in &parts {
        direct.subtract(part)?;
    }
    let mut charts = Vec::new();
    for (index, (_, title)) in KINDS.iter().enumerate() {
        let bars: Vec<Bar> = parts
            .iter()
            .map(|(name, _, _, part)| (name.clone(), part.usd(index)))
            .chain(
                (!direct.is_zero()).then(|| (format!("{} itself", node.name), direct.usd(index))),
            )
            .filter(|(_, usd)| !usd.is_zero())
            .map(|(label, value)| Bar {
                text: format!("USD {value:.2}"),
                label,
                value,
            })
            .collect();
        if !bars.is_empty() {
            let name = format!("{title}, USD equivalent, by part of {}", node.name);
            let svg = BarChart::new(name.clone(), bars)?.render()?;
            charts.push((name, svg));
        }
    }
    let mut rows: Vec<AreaRow> = parts
        .into_iter()
        .map(|(name, level, link, part)| AreaRow {
            name,
            level,
            link: Some(link),
            usd: part.usd_texts(),
            unconverted: part.unconverted_text(),
            direct: false,
        })
        .collect();
    if !direct.is_zero() {
        rows.push(AreaRow {
            name: format!("Allocated to {} directly", node.name),
            level: level_name(node.level.scope()),
            link: None,
            usd: direct.usd_texts(),
            unconverted: direct.unconverted_text(),
            direct: true,
        });
    }
    let total = AreaRow {
        name: format!("{} in all", node.name),
        level: level_name(node.level.scope()),
        link: None,
        usd: node_sums.usd_texts(),
        unconverted: node_sums.unconverted_text(),
        direct: false,
    };
    let hidden_region = [("region", node.key)];
    let hidden: &[(&str, &str)] = if node.code == WORLD {
        &[]
    } else {
        &hidden_region
    };
    Ok(Recipients {
        stylesheet: STYLESHEET_PATH,
        ctx,
        kinds: &KINDS,
        crumbs: crumbs(ctx, node.parent),
        area_name: node.name,
        area_key: node.key,
        filter_bar: filter_bar(&ctx.filters, "/recipients", &RECIPIENT_FILTERS, hidden)?,
        rows,
        total,
        charts,
        csv: filters.link("/v1/totals", &[("format", "csv")]),
        reproduce: filters.command(
            &format!(
                "fundflow audit replay --file EXPORT --until-seq {}",
                ctx.as_of_seq
            ),
            &[],
        ),
    }
    .render()?)
}

/// One total of a country.
struct CountryTotal {
    kind: &'static str,
    currency: String,
    amount: String,
    usd: String,
    unconverted: String,
}

#[derive(Template)]
#[template(path = "country.html")]
struct CountryPage<'a> {
    stylesheet: &'a str,
    ctx: &'a PageContext,
    crumbs: Vec<Crumb>,
    name: &'static str,
    alpha3: &'static str,
    filter_bar: String,
    totals: Vec<CountryTotal>,
    items: Vec<(String, String, String)>,
    flows: &'a [fundflow_api::FlowItem],
    more_flows: Option<String>,
    csv_totals: String,
    csv_flows: String,
    reproduce: String,
}

/// The inputs of a country's page, all for its alpha-3 code.
#[derive(Debug)]
pub struct CountryInput<'a> {
    /// `GET /v1/totals?scope=country&key=…` with the page's filters.
    pub totals: &'a TotalsReply,
    /// `GET /v1/in-kind?scope=country` (its rows for other countries are skipped).
    pub in_kind: &'a InKindReply,
    /// `GET /v1/flows?country=…` with the page's filters: the first page.
    pub flows: &'a FlowsReply,
}

/// A country's page: its totals per kind and currency, its in-kind goods and its flows.
pub fn country(
    ctx: &PageContext,
    alpha3: &str,
    input: &CountryInput<'_>,
) -> Result<String, DashboardError> {
    let country = fundflow_refdata::country_by_alpha3(alpha3)
        .map(|i| &COUNTRIES[usize::from(i)])
        .ok_or_else(|| {
            DashboardError::NotFound(format!("{alpha3:?} is not an ISO 3166-1 alpha-3 code"))
        })?;
    let mut totals = Vec::new();
    for (kind, title) in KINDS {
        for row in input
            .totals
            .rows
            .iter()
            .filter(|r| r.kind == kind && r.key == country.alpha3)
        {
            // A check that the reply's figures are decimals before a page shows them as such.
            decimal("an amount", &row.amount)?;
            totals.push(CountryTotal {
                kind: title,
                currency: row.currency.clone(),
                amount: row.amount.clone(),
                usd: row.usd_equivalent.clone(),
                unconverted: row.unconverted.clone(),
            });
        }
    }
    let items = input
        .in_kind
        .rows
        .iter()
        .filter(|r| r.key == country.alpha3)
        .map(|r| (r.item.clone(), r.unit.clone(), r.quantity.clone()))
        .collect();
    let filters = ctx.filters.only(&RECIPIENT_FILTERS);
    let flow_filters =
        ctx.filters
            .only(&[Filter::From, Filter::To, Filter::Partner, Filter::Grant]);
    let more_flows = input
        .flows
        .next_cursor
        .as_ref()
        .map(|_| flow_filters.link("/flows", &[("country", country.alpha3)]));
    let mut crumbs = crumbs(ctx, country.ancestors().next());
    crumbs.retain(|c| !c.name.is_empty());
    Ok(CountryPage {
        stylesheet: STYLESHEET_PATH,
        ctx,
        crumbs,
        name: country.name,
        alpha3: country.alpha3,
        filter_bar: filter_bar(
            &ctx.filters,
            &format!("/recipients/{}", country.alpha3),
            &RECIPIENT_FILTERS,
            &[],
        )?,
        totals,
        items,
        flows: &input.flows.flows,
        more_flows,
        csv_totals: filters.link(
            "/v1/totals",
            &[
                ("scope", "country"),
                ("key", country.alpha3),
                ("format", "csv"),
            ],
        ),
        csv_flows: flow_filters.link(
            "/v1/flows",
            &[("country", country.alpha3), ("format", "csv")],
        ),
        reproduce: filters.command(
            &format!(
                "fundflow audit replay --file EXPORT --until-seq {}",
                ctx.as_of_seq
            ),
            &[("scope", "country"), ("key", country.alpha3)],
        ),
    }
    .render()?)
}

#[cfg(test)]
mod tests {
    use fundflow_api::TotalRow;
    use fundflow_domain::Scope;

    use super::*;
    use crate::page::{Filters, Page};

    fn row(scope: Scope, key: &str, kind: &str, usd: &str, unconverted: &str) -> TotalRow {
        TotalRow {
            scope,
            key: key.into(),
            name: key.into(),
            partner: None,
            year: None,
            quarter: None,
            month: None,
            grant: None,
            sector: None,
            donor: None,
            kind: kind.into(),
            currency: "USD".into(),
            amount: usd.into(),
            usd_equivalent: usd.into(),
            unconverted: unconverted.into(),
        }
    }

    fn context() -> PageContext {
        PageContext {
            who: "r".into(),
            role: "reviewer".into(),
            page: Page::Recipients,
            as_of_seq: 9,
            model_digest: None,
            filters: Filters::default(),
            mixed_seqs: None,
        }
    }

    #[test]
    fn an_areas_direct_row_is_its_total_less_its_parts_so_the_rows_add_up() {
        // 500.00 to Kenya, 250.00 to Ethiopia and 300.00 to Eastern Africa itself (COMESA).
        let mut rows = Vec::new();
        for (scope, key, usd) in [
            (Scope::Global, "001", "1050.00"),
            (Scope::Region, "002", "1050.00"),
            (Scope::Subregion, "202", "1050.00"),
            (Scope::Intermediate, "014", "1050.00"),
            (Scope::Country, "KEN", "500.00"),
            (Scope::Country, "ETH", "250.00"),
        ] {
            rows.push(row(scope, key, "in_kind", usd, "0.00"));
        }
        let reply = TotalsReply {
            as_of_seq: 9,
            log_digest: String::new(),
            model_digest: None,
            rows,
        };
        let page = recipients(&context(), "014", &reply).unwrap();
        let direct = page
            .split(r#"data-direct="true""#)
            .nth(1)
            .and_then(|rest| rest.split("</tr>").next())
            .unwrap();
        assert!(
            direct.contains("Allocated to Eastern Africa directly"),
            "{direct}"
        );
        assert!(
            direct.contains(r#"<td class="num">300.00</td>"#),
            "{direct}"
        );
        assert!(
            page.contains(r#"<a href="/recipients/KEN">Kenya</a>"#),
            "{page}"
        );
        let total = page.split(r#"id="area-total""#).nth(1).unwrap();
        assert!(total.contains("1050.00"));
        // At the World, the one part is Africa, with nothing allocated directly.
        let world = recipients(&context(), "001", &reply).unwrap();
        assert!(
            world.contains(r#"<a href="/recipients?region=002">Africa</a>"#),
            "{world}"
        );
        assert!(!world.contains("data-direct"), "{world}");
        assert!(matches!(
            recipients(&context(), "999", &reply),
            Err(DashboardError::NotFound(_))
        ));
    }
}
