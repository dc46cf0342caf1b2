//! The list pages: the pledge book (`/pledges`), the flows (`/flows`) and the rejected events
//! (`/rejections`), each a page of the API's reply with a link to the next.

use askama::Template;
use fundflow_api::{FlowsReply, PledgeItem, PledgesReply, RejectionsReply};

use crate::chart::{Bar, BarChart};
use crate::page::{Filter, PageContext, filter_bar};
use crate::{DashboardError, STYLESHEET_PATH, decimal};

/// The filters of the pledges page (those `GET /v1/pledges` takes).
pub const PLEDGE_FILTERS: [Filter; 4] = [Filter::From, Filter::To, Filter::Partner, Filter::Grant];
/// The filters of the flows page (those `GET /v1/flows` takes).
pub const FLOW_FILTERS: [Filter; 7] = [
    Filter::From,
    Filter::To,
    Filter::Kind,
    Filter::Partner,
    Filter::Grant,
    Filter::Country,
    Filter::Region,
];

/// A page's status filter and its choices, as the API names them.
struct Choice {
    value: &'static str,
    title: &'static str,
    link: String,
    current: bool,
}

fn choices(
    ctx: &PageContext,
    path: &str,
    kept: &[Filter],
    status: &str,
    all: &[(&'static str, &'static str)],
) -> Vec<Choice> {
    all.iter()
        .map(|&(value, title)| Choice {
            value,
            title,
            link: ctx.filters.only(kept).link(path, &[("status", value)]),
            current: value == status,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "pledges.html")]
struct Pledges<'a> {
    stylesheet: &'a str,
    ctx: &'a PageContext,
    filter_bar: String,
    statuses: Vec<Choice>,
    pledges: &'a [PledgeItem],
    chart: Option<String>,
    next: Option<String>,
    csv: String,
    reproduce: String,
}

/// The pledge book page, for the status `status` (`all`, `open`, `paid`).
pub fn pledges(
    ctx: &PageContext,
    status: &str,
    reply: &PledgesReply,
) -> Result<String, DashboardError> {
    let filters = ctx.filters.only(&PLEDGE_FILTERS);
    let mut bars = Vec::new();
    for pledge in &reply.pledges {
        let (Some(pledged), Some(paid)) = (&pledge.pledged_usd, &pledge.paid_usd) else {
            continue;
        };
        let name = &pledge.pledge_id;
        for (what, text) in [("pledged", pledged), ("paid", paid)] {
            bars.push(Bar {
                label: format!("{name} {what}"),
                value: decimal("a pledge's USD equivalent", text)?,
                text: format!("USD {text}"),
            });
        }
    }
    let chart = if bars.is_empty() {
        None
    } else {
        Some(BarChart::new("Pledged and paid per pledge, USD equivalent", bars)?.render()?)
    };
    let status_pair = [("status", status)];
    Ok(Pledges {
        stylesheet: STYLESHEET_PATH,
        ctx,
        filter_bar: filter_bar(&ctx.filters, "/pledges", &PLEDGE_FILTERS, &status_pair)?,
        statuses: choices(
            ctx,
            "/pledges",
            &PLEDGE_FILTERS,
            status,
            &[("all", "All"), ("open", "Open"), ("paid", "Paid")],
        ),
        pledges: &reply.pledges,
        chart,
        next: reply
            .next_cursor
            .as_ref()
            .map(|cursor| filters.link("/pledges", &[("status", status), ("cursor", cursor)])),
        csv: filters.link("/v1/pledges", &[("status", status), ("format", "csv")]),
        reproduce: filters.command(
            "fundflow pledges --data-dir DATA_DIR --format csv",
            &[("status", status)],
        ),
    }
    .render()?)
}

#[derive(Template)]
#[template(path = "flows.html")]
struct Flows<'a> {
    stylesheet: &'a str,
    ctx: &'a PageContext,
    filter_bar: String,
    statuses: Vec<Choice>,
    flows: &'a [fundflow_api::FlowItem],
    next: Option<String>,
    csv: String,
    reproduce: String,
}

/// The flows page, for the status `status` (`applied`, `reversed`, `all`).
pub fn flows(
    ctx: &PageContext,
    status: &str,
    reply: &FlowsReply,
) -> Result<String, DashboardError> {
    let filters = ctx.filters.only(&FLOW_FILTERS);
    let status_pair = [("status", status)];
    Ok(Flows {
        stylesheet: STYLESHEET_PATH,
        ctx,
        filter_bar: filter_bar(&ctx.filters, "/flows", &FLOW_FILTERS, &status_pair)?,
        statuses: choices(
            ctx,
            "/flows",
            &FLOW_FILTERS,
            status,
            &[
                ("applied", "Applied"),
                ("reversed", "Reversed"),
                ("all", "All"),
            ],
        ),
        flows: &reply.flows,
        next: reply
            .next_cursor
            .as_ref()
            .map(|cursor| filters.link("/flows", &[("status", status), ("cursor", cursor)])),
        csv: filters.link("/v1/flows", &[("status", status), ("format", "csv")]),
        reproduce: filters.command(
            "fundflow flows --data-dir DATA_DIR --format csv",
            &[("status", status)],
        ),
    }
    .render()?)
}

#[derive(Template)]
#[template(path = "rejections.html")]
struct Rejections<'a> {
    stylesheet: &'a str,
    ctx: &'a PageContext,
    reply: &'a RejectionsReply,
    next: Option<String>,
    csv: String,
}

/// The data-quality page: rejected events, newest first.
pub fn rejections(ctx: &PageContext, reply: &RejectionsReply) -> Result<String, DashboardError> {
    Ok(Rejections {
        stylesheet: STYLESHEET_PATH,
        ctx,
        reply,
        next: reply
            .next_cursor
            .as_ref()
            .map(|cursor| format!("/rejections?cursor={cursor}")),
        csv: "/v1/rejections?format=csv".to_owned(),
    }
    .render()?)
}
