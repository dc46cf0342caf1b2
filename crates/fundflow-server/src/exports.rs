//! `GET /v1/exports/iati.xml`, `/v1/exports/fts.csv` and `/v1/exports/fts.json`: the applied
//! flows the filters select, at one checkpoint, in the field's formats (the mappings are
//! `fundflow_interop`'s). Reviewers and auditors only: an export is the programme's whole
//! publication, not one partner's view.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use fundflow_interop::{fts, iati};

use crate::access::Role;
use crate::http::{App, authenticate, csv_response, queries, require};
use crate::problem::Problem;
use crate::query::FlowsParams;

/// The filters of an export: those of `GET /v1/flows` that select flows (the status is always
/// `applied`, and an export has no pages).
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// `pledged`, `paid`, `parallel_funding` or `in_kind`.
    pub kind: Option<String>,
    /// A partner id.
    pub partner: Option<String>,
    /// A country, ISO 3166-1 alpha-2 or alpha-3.
    pub country: Option<String>,
    /// An M49 area.
    pub region: Option<String>,
    /// A grant id.
    pub grant: Option<String>,
    /// A donor.
    pub donor: Option<String>,
    /// A sector.
    pub sector: Option<String>,
    /// The first `occurred_on`.
    pub from: Option<String>,
    /// The last `occurred_on`.
    pub to: Option<String>,
}

impl ExportParams {
    /// The flows query that selects the export's flows.
    pub fn flows(&self) -> FlowsParams {
        FlowsParams {
            kind: self.kind.clone(),
            partner: self.partner.clone(),
            country: self.country.clone(),
            region: self.region.clone(),
            grant: self.grant.clone(),
            donor: self.donor.clone(),
            sector: self.sector.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            ..FlowsParams::default()
        }
    }
}

type Params = Result<Query<ExportParams>, axum::extract::rejection::QueryRejection>;

async fn selected(
    app: &App,
    headers: &HeaderMap,
    params: Params,
) -> Result<fundflow_api::FlowsReply, Problem> {
    let principal = &authenticate(app, headers)?;
    require(principal, &[Role::Reviewer, Role::Auditor], "read exports")?;
    let Query(params) = params.map_err(|e| Problem::bad_query("invalid_query", e.body_text()))?;
    Ok(queries(app)?.export_flows(&params.flows()).await?)
}

/// `GET /v1/exports/fts.csv`.
pub async fn fts_csv(
    State(app): State<App>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, Problem> {
    let reply = selected(&app, &headers, params).await?;
    let rows = fts::rows(&reply.flows).map_err(bad_flow)?;
    csv_response(fts::csv(&rows), reply.as_of_seq, None, None)
}

/// `GET /v1/exports/fts.json`.
pub async fn fts_json(
    State(app): State<App>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, Problem> {
    let reply = selected(&app, &headers, params).await?;
    Ok(axum::Json(fts::FtsReply {
        as_of_seq: reply.as_of_seq,
        flows: fts::rows(&reply.flows).map_err(bad_flow)?,
    })
    .into_response())
}

/// A flow the read model gave that the table cannot hold: the model needs a rebuild.
fn bad_flow(err: fts::BadFlow) -> Problem {
    Problem::unavailable(format!(
        "the FTS table could not be written: {err} (rebuild the read model)"
    ))
}

/// `GET /v1/exports/iati.xml`.
pub async fn iati_xml(
    State(app): State<App>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, Problem> {
    let publisher: Arc<iati::Publisher> = app.iati.clone().ok_or_else(|| {
        Problem::not_found(
            "this server has no IATI reporting organisation configured: start it with --iati-ref, --iati-org-type and --iati-org-name",
        )
    })?;
    let reply = selected(&app, &headers, params).await?;
    let export = iati::activities(&reply.flows, &publisher, reply.as_of_seq).map_err(|err| {
        match err {
            iati::IatiError::NothingToPublish => Problem::not_found(format!(
                "the ledger has no applied flow that matches the filters as of seq {}: an IATI file needs at least one activity",
                reply.as_of_seq
            )),
            other => Problem::unavailable(format!("the IATI file could not be written: {other}")),
        }
    })?;
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml; charset=utf-8"),
        )],
        export.xml,
    )
        .into_response();
    response
        .headers_mut()
        .insert("fundflow-as-of-seq", HeaderValue::from(reply.as_of_seq));
    Ok(response)
}
