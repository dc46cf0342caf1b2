//! The HTTP API (axum): routes, authentication, limits, content types and metrics. Handlers
//! only translate; the gateway and the queries do the work. [`problem_of`] is the one place
//! where the services' typed errors become HTTP statuses (NATS replies reuse it, so that one
//! client reads both).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fundflow_log::jetstream::ConnectionStats;
use fundflow_projector::Metrics as ProjectorMetrics;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;

use fundflow_api::{SubmitReply, SubmitResult, Summary};

use crate::access::{AccessControl, Principal, Role};
use crate::csv_import::{self, CsvError};
use crate::gateway::{Gateway, Input, Refusal, SubmitError, Submitted, Verdict};
use crate::problem::Problem;
use crate::query::{
    FlowsParams, PledgesParams, Queries, QueryError, RejectionsParams, SummaryParams, TotalsFilter,
};

/// A service's typed error, on its way to becoming a problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// One event refused before the log.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The log did not take a request's events.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// A read has no answer.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// A CSV export could not be read as a whole.
    #[error(transparent)]
    Csv(#[from] CsvError),
}

/// The problem of `error`: its HTTP status, code, field and detail. The one place that chooses
/// statuses for the services' errors.
pub fn problem_of(error: ServiceError) -> Problem {
    match error {
        ServiceError::Refused(Refusal::Invalid(invalid)) => {
            let mut problem = Problem::bad_request(invalid.code, "", invalid.message.clone());
            problem.field = (!invalid.field.is_empty()).then_some(invalid.field);
            problem
        }
        ServiceError::Refused(Refusal::NotThePartner { message }) => {
            Problem::forbidden(message).with_field("partner_id")
        }
        ServiceError::Refused(Refusal::Conflict { event_id, seq }) => {
            Problem::conflict(&event_id, seq)
        }
        ServiceError::Submit(error) => Problem::unavailable(error.to_string()),
        ServiceError::Query(QueryError::InvalidFilter {
            code,
            parameter,
            detail,
        }) => Problem::bad_query(code, detail).with_field(parameter),
        ServiceError::Query(QueryError::NotFound(detail)) => Problem::not_found(detail),
        ServiceError::Query(QueryError::Unavailable(detail)) => Problem::unavailable(detail),
        ServiceError::Csv(error @ CsvError::Invalid(_)) => {
            Problem::bad_query("invalid_csv", error.to_string())
        }
        ServiceError::Csv(error @ CsvError::TooManyRows { .. }) => {
            Problem::too_large(error.to_string())
        }
    }
}

macro_rules! problem_from {
    ($($error:ty),*) => {$(
        impl From<$error> for Problem {
            fn from(error: $error) -> Problem {
                problem_of(error.into())
            }
        }
    )*};
}

problem_from!(Refusal, SubmitError, QueryError, CsvError);

/// The wire result of one submitted event.
pub fn submit_result(submitted: Submitted) -> SubmitResult {
    let status = submitted.verdict.status();
    let mut result = SubmitResult {
        line: None,
        event_id: submitted.event_id,
        seq: submitted.seq,
        status,
        code: None,
        field: None,
        message: None,
        problem: None,
    };
    match submitted.verdict {
        Verdict::Accepted | Verdict::Duplicate | Verdict::Applied => {}
        Verdict::Rejected(rejection) => {
            result.code = Some(rejection.code.as_str().to_owned());
            result.field = (!rejection.field.is_empty()).then_some(rejection.field);
            result.message = Some(rejection.message);
        }
        Verdict::Refused(refusal) => result.problem = Some(problem_of(refusal.into()).into()),
    }
    result
}

/// The OpenAPI 3 document of this API, served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body.
    pub body_bytes_max: usize,
    /// Most events (NDJSON lines, CSV rows) in one request.
    pub lines_max: usize,
    /// Longest a request may take to arrive and be answered (the append, once started, always
    /// completes).
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes_max: 1024 * 1024,
            lines_max: 10_000,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Everything the routes need. What a process does not run is `None`, and its routes are not
/// served (a `gateway` has no queries, a `project` no submissions).
#[derive(Clone)]
pub struct App {
    /// Who may do what.
    pub access: Arc<AccessControl>,
    /// Submissions.
    pub gateway: Option<Gateway>,
    /// Reads.
    pub queries: Option<Queries>,
    /// The projector's counters, for `/metrics` and `/readyz`.
    pub projector: Option<Arc<ProjectorMetrics>>,
    /// The log's last sequence at start: ready once the checkpoint reaches it.
    pub ready_at_seq: u64,
    /// Set once ready (it stays set).
    pub ready: Arc<AtomicBool>,
    /// The NATS connection's state and counters, on the JetStream log.
    pub nats: Option<Arc<ConnectionStats>>,
    /// Renders the metrics registry.
    pub metrics: PrometheusHandle,
    /// Request limits.
    pub limits: Limits,
    /// The dashboard's signed-in sessions.
    pub sessions: Arc<crate::pages::Sessions>,
    /// The dashboard's last reads of its dearest pages, by checkpoint and question.
    pub reads: Arc<crate::pages::Reads>,
    /// The reporting organisation of the IATI export; `None`: the server publishes none.
    pub iati: Option<Arc<fundflow_interop::iati::Publisher>>,
}

/// The router of `app`.
pub fn router(app: App) -> Router {
    let mut router = Router::new();
    for route in Route::ALL {
        let served = match route.needs() {
            Needs::Nothing => true,
            Needs::Gateway => app.gateway.is_some(),
            Needs::Queries => app.queries.is_some(),
        };
        if served {
            router = router.route(route.path(), route.handler());
        }
    }
    if app.queries.is_some() {
        router = router.merge(crate::pages::routes());
    }
    router
        .fallback(|| async { Problem::not_found("no such route; see /v1/openapi.json") })
        .layer(middleware::from_fn(track))
        .with_state(app)
}

/// Every route of the API. The router is built from this list, and a test checks the OpenAPI
/// document against it, so a route cannot be served without being documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /healthz`.
    Healthz,
    /// `GET /readyz`.
    Readyz,
    /// `GET /metrics`.
    Metrics,
    /// `GET /v1/openapi.json`.
    OpenApi,
    /// `POST /v1/events`.
    Submit,
    /// `GET /v1/totals`.
    Totals,
    /// `GET /v1/in-kind`.
    InKind,
    /// `GET /v1/pledges/{pledge_id}`.
    Pledge,
    /// `GET /v1/events/{event_id}`.
    Event,
    /// `GET /v1/checkpoint`.
    Checkpoint,
    /// `GET /v1/flows`.
    Flows,
    /// `GET /v1/pledges`.
    Pledges,
    /// `GET /v1/summary`.
    Summary,
    /// `GET /v1/rejections`.
    Rejections,
    /// `GET /v1/exports/iati.xml`.
    ExportIati,
    /// `GET /v1/exports/fts.csv`.
    ExportFtsCsv,
    /// `GET /v1/exports/fts.json`.
    ExportFtsJson,
}

/// Which part of a process a route needs (a `gateway` has no queries, a `project` no
/// submissions).
enum Needs {
    Nothing,
    Gateway,
    Queries,
}

impl Route {
    /// Every route.
    pub const ALL: [Route; 17] = [
        Route::Healthz,
        Route::Readyz,
        Route::Metrics,
        Route::OpenApi,
        Route::Submit,
        Route::Totals,
        Route::InKind,
        Route::Pledge,
        Route::Event,
        Route::Checkpoint,
        Route::Flows,
        Route::Pledges,
        Route::Summary,
        Route::Rejections,
        Route::ExportIati,
        Route::ExportFtsCsv,
        Route::ExportFtsJson,
    ];

    /// Its HTTP method.
    pub fn method(self) -> &'static str {
        match self {
            Route::Submit => "POST",
            _ => "GET",
        }
    }

    /// Its path, as the router and the OpenAPI document write it.
    pub fn path(self) -> &'static str {
        match self {
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/v1/openapi.json",
            Route::Submit => "/v1/events",
            Route::Totals => "/v1/totals",
            Route::InKind => "/v1/in-kind",
            Route::Pledge => "/v1/pledges/{pledge_id}",
            Route::Event => "/v1/events/{event_id}",
            Route::Checkpoint => "/v1/checkpoint",
            Route::Flows => "/v1/flows",
            Route::Pledges => "/v1/pledges",
            Route::Summary => "/v1/summary",
            Route::Rejections => "/v1/rejections",
            Route::ExportIati => "/v1/exports/iati.xml",
            Route::ExportFtsCsv => "/v1/exports/fts.csv",
            Route::ExportFtsJson => "/v1/exports/fts.json",
        }
    }

    fn needs(self) -> Needs {
        match self {
            Route::Healthz | Route::Readyz | Route::Metrics | Route::OpenApi => Needs::Nothing,
            Route::Submit => Needs::Gateway,
            Route::Totals
            | Route::InKind
            | Route::Pledge
            | Route::Event
            | Route::Checkpoint
            | Route::Flows
            | Route::Pledges
            | Route::Summary
            | Route::Rejections
            | Route::ExportIati
            | Route::ExportFtsCsv
            | Route::ExportFtsJson => Needs::Queries,
        }
    }

    fn handler(self) -> axum::routing::MethodRouter<App> {
        match self {
            Route::Healthz => get(healthz),
            Route::Readyz => get(readyz),
            Route::Metrics => get(metrics_text),
            Route::OpenApi => get(openapi),
            Route::Submit => post(submit),
            Route::Totals => get(totals),
            Route::InKind => get(in_kind),
            Route::Pledge => get(pledge),
            Route::Event => get(event),
            Route::Checkpoint => get(checkpoint),
            Route::Flows => get(flows),
            Route::Pledges => get(pledges),
            Route::Summary => get(summary),
            Route::Rejections => get(rejections),
            Route::ExportIati => get(crate::exports::iati_xml),
            Route::ExportFtsCsv => get(crate::exports::fts_csv),
            Route::ExportFtsJson => get(crate::exports::fts_json),
        }
    }
}

/// Counts and times every request by route and status; one span per request.
async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // Only the methods the API knows become label values, so clients cannot mint series.
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "HEAD" => "HEAD",
        _ => "other",
    };
    let span = tracing::info_span!("request", %method, %route);
    let started = Instant::now();
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    let status = response.status().as_u16().to_string();
    let elapsed = started.elapsed();
    span.in_scope(|| tracing::debug!(%status, ?elapsed, "answered"));
    metrics::counter!("fundflow_http_requests_total", "route" => route.clone(), "method" => method, "status" => status).increment(1);
    metrics::histogram!("fundflow_http_request_duration_seconds", "route" => route)
        .record(elapsed.as_secs_f64());
    response
}

/// The principal of a read: a bearer token, else a dashboard session (so that a page's CSV
/// links work in the browser that shows it; the session cookie is SameSite=Strict, and reads
/// change nothing).
pub(crate) fn authenticate(app: &App, headers: &HeaderMap) -> Result<Principal, Problem> {
    if headers.get(header::AUTHORIZATION).is_none()
        && let Some(principal) = crate::pages::signed_in(app, headers)
    {
        return Ok(principal);
    }
    bearer(app, headers).cloned()
}

/// The principal of a bearer token: the only way to submit.
fn bearer<'a>(app: &'a App, headers: &HeaderMap) -> Result<&'a Principal, Problem> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        })
        .ok_or_else(|| {
            Problem::unauthorized("an Authorization: Bearer <token> header is required")
        })?;
    app.access
        .authenticate(token)
        .ok_or_else(|| Problem::unauthorized("the token is not known"))
}

pub(crate) fn require(principal: &Principal, roles: &[Role], what: &str) -> Result<(), Problem> {
    if roles.contains(&principal.role) {
        Ok(())
    } else {
        Err(Problem::forbidden(format!(
            "a {} may not {what}",
            principal.role.as_str()
        )))
    }
}

/// The partner whose data a read is about: a partner reads only its own; reviewers and auditors
/// name one with `?partner=`.
fn partner_scope(principal: &Principal, asked: Option<&str>) -> Result<String, Problem> {
    match (&principal.partner_id, asked) {
        (Some(own), None) => Ok(own.clone()),
        (Some(own), Some(asked)) if asked == own => Ok(own.clone()),
        (Some(_), Some(_)) => Err(Problem::forbidden(
            "a partner may read only its own events and pledges",
        )),
        (None, Some(asked)) if fundflow_domain::wire::is_valid_partner_id(asked) => {
            Ok(asked.to_owned())
        }
        (None, Some(asked)) => Err(Problem::bad_query(
            "invalid_partner",
            format!("partner {asked:?} is not a partner id ([a-z0-9][a-z0-9-]{{0,63}})"),
        )),
        (None, None) => Err(Problem::bad_query(
            "missing_partner",
            "name the partner with ?partner=<partner_id>",
        )),
    }
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

async fn readyz(State(app): State<App>) -> Response {
    let ready = app.ready.load(Ordering::Relaxed)
        || match &app.projector {
            None => true,
            Some(m) => m.checkpoint_seq.load(Ordering::Relaxed) >= app.ready_at_seq,
        };
    if ready {
        app.ready.store(true, Ordering::Relaxed);
        axum::Json(json!({"status": "ready"})).into_response()
    } else {
        let at = app
            .projector
            .as_ref()
            .map_or(0, |m| m.checkpoint_seq.load(Ordering::Relaxed));
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "catching_up", "checkpoint_seq": at, "ready_at_seq": app.ready_at_seq})),
        )
            .into_response()
    }
}

async fn metrics_text(State(app): State<App>) -> Response {
    if let Some(m) = &app.projector {
        let checkpoint = m.checkpoint_seq.load(Ordering::Relaxed);
        let seen = m.log_seq_seen.load(Ordering::Relaxed);
        metrics::counter!("fundflow_events_applied_total")
            .absolute(m.applied.load(Ordering::Relaxed));
        for (code, count) in fundflow_domain::RejectCode::ALL
            .iter()
            .zip(&m.rejected_by_code)
        {
            let count = count.load(Ordering::Relaxed);
            if count > 0 {
                metrics::counter!("fundflow_events_rejected_total", "code" => code.as_str())
                    .absolute(count);
            }
        }
        metrics::gauge!("fundflow_projector_checkpoint_seq").set(checkpoint as f64);
        metrics::gauge!("fundflow_projector_lag_events")
            .set(seen.saturating_sub(checkpoint) as f64);
        metrics::counter!("fundflow_projector_batches_total")
            .absolute(m.batches.load(Ordering::Relaxed));
        metrics::counter!("fundflow_projector_read_errors_total")
            .absolute(m.read_errors.load(Ordering::Relaxed));
        metrics::gauge!("fundflow_projector_snapshot_seq")
            .set(m.snapshot_seq.load(Ordering::Relaxed) as f64);
        metrics::counter!("fundflow_projector_snapshot_failures_total")
            .absolute(m.snapshot_failures.load(Ordering::Relaxed));
        metrics::gauge!("fundflow_projector_resumed_from_seq")
            .set(m.resumed_from_seq.load(Ordering::Relaxed) as f64);
        metrics::gauge!("fundflow_projector_fold_bytes")
            .set(m.fold_bytes.load(Ordering::Relaxed) as f64);
        metrics::gauge!("fundflow_projector_reading").set(if m.reading.load(Ordering::Relaxed) {
            1.0
        } else {
            0.0
        });
    }
    if let Some(nats) = &app.nats {
        metrics::gauge!("fundflow_nats_connected").set(if nats.connected.load(Ordering::Relaxed) {
            1.0
        } else {
            0.0
        });
        metrics::counter!("fundflow_nats_disconnects_total")
            .absolute(nats.disconnects.load(Ordering::Relaxed));
        metrics::counter!("fundflow_log_publish_retries_total")
            .absolute(nats.publish_retries.load(Ordering::Relaxed));
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        app.metrics.render(),
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitParams {
    wait: Option<bool>,
}

async fn submit(
    State(app): State<App>,
    params: Result<Query<SubmitParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let timeout = app.limits.request_timeout;
    match tokio::time::timeout(timeout, submit_inner(&app, params, &headers, body)).await {
        Ok(Ok(response)) => response,
        Ok(Err(problem)) => problem.into_response(),
        Err(_) => Problem::timeout(format!(
            "the request took longer than {timeout:?}; events whose append had begun are in the log, and sending the request again is safe"
        ))
        .into_response(),
    }
}

enum Shape {
    One,
    Lines,
    Csv,
}

async fn submit_inner(
    app: &App,
    params: Result<Query<SubmitParams>, axum::extract::rejection::QueryRejection>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let principal = bearer(app, headers)?;
    require(principal, &[Role::Partner], "submit events")?;
    // The access config gives every partner an id; a partner principal without one is a bug.
    let Some(partner_id) = principal.partner_id.clone() else {
        debug_assert!(false, "a partner principal without a partner id");
        return Err(Problem::forbidden("this token names no partner"));
    };
    let Query(params) = params.map_err(|e| Problem::bad_query("invalid_query", e.body_text()))?;
    let gateway = app
        .gateway
        .as_ref()
        .ok_or_else(|| Problem::not_found("this process takes no submissions"))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let shape = match essence.as_str() {
        "application/json" => Shape::One,
        "application/x-ndjson" | "application/jsonl" => Shape::Lines,
        "text/csv" => Shape::Csv,
        other => {
            return Err(Problem::unsupported_media_type(format!(
                "content type {other:?} is not application/json, application/x-ndjson or text/csv"
            )));
        }
    };
    let limit = app.limits.body_bytes_max;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|err| {
        if std::error::Error::source(&err)
            .is_some_and(|e| e.is::<http_body_util::LengthLimitError>())
        {
            Problem::too_large(format!(
                "the body is larger than {limit} bytes; send fewer events per request"
            ))
        } else {
            Problem::bad_query(
                "incomplete_body",
                format!("the body could not be read in full ({err}); nothing of it was taken"),
            )
        }
    })?;
    let lines_max = app.limits.lines_max;
    let (inputs, lines): (Vec<Input>, Vec<usize>) = match shape {
        Shape::One => (
            vec![Input::Object(fundflow_api::parse_event(&bytes))],
            vec![1],
        ),
        Shape::Lines => {
            let mut inputs = Vec::new();
            let mut lines = Vec::new();
            for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if inputs.len() == lines_max {
                    return Err(Problem::too_large(format!(
                        "more than {lines_max} events in one request; split it"
                    )));
                }
                inputs.push(Input::Object(fundflow_api::parse_event(line)));
                lines.push(i + 1);
            }
            (inputs, lines)
        }
        Shape::Csv => csv_import::read_events(&bytes, lines_max)?
            .into_iter()
            .map(|(line, event)| (Input::Object(event), line))
            .unzip(),
    };
    let wait = params.wait.unwrap_or(false);
    let mut submitted = gateway.submit(&partner_id, inputs, wait).await?;
    if let Shape::One = shape {
        let Some(one) = submitted.pop() else {
            return Err(Problem::unavailable("no result for the event"));
        };
        return Ok(single_response(one));
    }
    let results: Vec<SubmitResult> = submitted
        .into_iter()
        .zip(lines)
        .map(|(one, line)| SubmitResult {
            line: Some(line),
            ..submit_result(one)
        })
        .collect();
    let summary = Summary::of(results.iter().map(|r| r.status));
    Ok(axum::Json(SubmitReply { results, summary }).into_response())
}

fn single_response(submitted: Submitted) -> Response {
    let status = match submitted.verdict {
        Verdict::Accepted => StatusCode::ACCEPTED,
        Verdict::Duplicate => StatusCode::OK,
        Verdict::Applied => StatusCode::CREATED,
        Verdict::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Verdict::Refused(refusal) => return problem_of(refusal.into()).into_response(),
    };
    (status, axum::Json(submit_result(submitted))).into_response()
}

pub(crate) fn queries(app: &App) -> Result<&Queries, Problem> {
    app.queries
        .as_ref()
        .ok_or_else(|| Problem::not_found("this process serves no queries"))
}

/// Whether a reply is JSON (default) or CSV.
fn wants_csv(format: Option<&str>) -> Result<bool, Problem> {
    match format {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(other) => Err(Problem::bad_query(
            "invalid_format",
            format!("format: {other:?} is not json or csv"),
        )
        .with_field("format")),
    }
}

/// A CSV reply: the table in the body, the checkpoint (and the next page) in headers, so that
/// the CSV stays one table.
pub(crate) fn csv_response(
    csv: Result<Vec<u8>, csv::Error>,
    as_of_seq: u64,
    model_digest: Option<&str>,
    next_cursor: Option<&str>,
) -> Result<Response, Problem> {
    let csv = csv.map_err(|err| {
        Problem::unavailable(format!("the reply could not be written as CSV: {err}"))
    })?;
    let mut response = (
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"))],
        csv,
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert("fundflow-as-of-seq", HeaderValue::from(as_of_seq));
    if let Some(digest) = model_digest.and_then(|d| HeaderValue::from_str(d).ok()) {
        headers.insert("fundflow-model-digest", digest);
    }
    if let Some(cursor) = next_cursor.and_then(|c| HeaderValue::from_str(c).ok()) {
        headers.insert("fundflow-next-cursor", cursor);
    }
    Ok(response)
}

async fn totals(
    State(app): State<App>,
    headers: HeaderMap,
    filter: Result<Query<TotalsFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let principal = &authenticate(&app, &headers)?;
    require(principal, &[Role::Reviewer, Role::Auditor], "read totals")?;
    let Query(filter) = filter.map_err(|e| Problem::bad_query("invalid_query", e.body_text()))?;
    let csv = wants_csv(filter.format.as_deref())?;
    let (reply, group_by) = queries(&app)?.totals_grouped(&filter.params()).await?;
    if !csv {
        return Ok(axum::Json(reply).into_response());
    }
    csv_response(
        fundflow_api::totals_csv(&reply.rows, &group_by),
        reply.as_of_seq,
        reply.model_digest.as_deref(),
        None,
    )
}

/// The partner whose flows and pledges a principal reads: a partner only its own (naming
/// another is refused), reviewers and auditors any one or all.
fn own_partner(principal: &Principal, asked: Option<&str>) -> Result<Option<String>, Problem> {
    match (&principal.partner_id, asked) {
        (Some(own), None) => Ok(Some(own.clone())),
        (Some(own), Some(asked)) if asked == own => Ok(Some(own.clone())),
        (Some(_), Some(_)) => Err(Problem::forbidden(
            "a partner may read only its own flows and pledges",
        )),
        (None, _) => Ok(None),
    }
}

async fn flows(
    State(app): State<App>,
    headers: HeaderMap,
    params: Result<Query<FlowsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let principal = &authenticate(&app, &headers)?;
    let Query(params) = params.map_err(|e| Problem::bad_query("invalid_query", e.body_text()))?;
    let csv = wants_csv(params.format.as_deref())?;
    let own = own_partner(principal, params.partner.as_deref())?;
    let reply = queries(&app)?.flows(&params, own.as_deref()).await?;
    if !csv {
        return Ok(axum::Json(reply).into_response());
    }
    csv_response(
        fundflow_api::flows_csv(&reply.flows),
        reply.as_of_seq,
        None,
        reply.next_cursor.as_deref(),
    )
}

async fn pledges(
    State(app): State<App>,
    headers: HeaderMap,
    params: Result<Query<PledgesParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let principal = &authenticate(&app, &headers)?;
    let Query(params) = params.map_err(|e| Problem::bad_query("invalid_query", e.body_text()))?;
    let csv = wants_csv(params.format.as_deref())?;
    let own = own_partner(principal, params.partner.as_deref())?;
    let reply = queries(&app)?.pledges(&params, own.as_deref()).await?;
    if !csv {
        return Ok(axum::Json(reply).into_response());
    }
    csv_response(
        fundflow_api::pledges_csv(&reply.pledges),
        reply.as_of_seq,
        None,
        reply.next_cursor.as_deref(),
    )
}

async fn summary(
    State(app): State<App>,
    headers: HeaderMap,
    params: Result<Query<SummaryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let principal = &authenticate(&app, &headers)?;
    require(
        principal,
        &[Role::Reviewer, Role::Auditor],
        "read the summary",
    )?;
    let Query(params) = params.map_err(|e| Problem::bad_query("invalid_query", e.body_text()))?;
    let reply = queries(&app)?
        .summary(params.from.as_deref(), params.to.as_deref())
        .await?;
    Ok(axum::Json(reply).into_response())
}

async fn rejections(
    State(app): State<App>,
    headers: HeaderMap,
    params: Result<Query<RejectionsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let principal = &authenticate(&app, &headers)?;
    require(
        principal,
        &[Role::Reviewer, Role::Auditor],
        "read the rejected events",
    )?;
    let Query(params) = params.map_err(|e| Problem::bad_query("invalid_query", e.body_text()))?;
    let csv = wants_csv(params.format.as_deref())?;
    let reply = queries(&app)?.rejections(&params).await?;
    if !csv {
        return Ok(axum::Json(reply).into_response());
    }
    csv_response(
        fundflow_api::rejections_csv(&reply.rejections),
        reply.as_of_seq,
        None,
        reply.next_cursor.as_deref(),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeParams {
    scope: Option<String>,
}

async fn in_kind(
    State(app): State<App>,
    headers: HeaderMap,
    params: Result<Query<ScopeParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let principal = &authenticate(&app, &headers)?;
    require(
        principal,
        &[Role::Reviewer, Role::Auditor],
        "read in-kind quantities",
    )?;
    let Query(params) = params.map_err(|e| Problem::bad_query("invalid_query", e.body_text()))?;
    let reply = queries(&app)?.in_kind(params.scope.as_deref()).await?;
    Ok(axum::Json(reply).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartnerParams {
    partner: Option<String>,
}

async fn pledge(
    State(app): State<App>,
    headers: HeaderMap,
    Path(pledge_id): Path<String>,
    params: Result<Query<PartnerParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let principal = &authenticate(&app, &headers)?;
    let Query(params) = params.map_err(|e| Problem::bad_query("invalid_query", e.body_text()))?;
    let partner = partner_scope(principal, params.partner.as_deref())?;
    let reply = queries(&app)?.pledge(&partner, &pledge_id).await?;
    Ok(axum::Json(reply).into_response())
}

async fn event(
    State(app): State<App>,
    headers: HeaderMap,
    Path(event_id): Path<String>,
    params: Result<Query<PartnerParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let principal = &authenticate(&app, &headers)?;
    let Query(params) = params.map_err(|e| Problem::bad_query("invalid_query", e.body_text()))?;
    let partner = partner_scope(principal, params.partner.as_deref())?;
    let reply = queries(&app)?.event(&partner, &event_id).await?;
    Ok(axum::Json(reply).into_response())
}

async fn checkpoint(State(app): State<App>, headers: HeaderMap) -> Result<Response, Problem> {
    let principal = &authenticate(&app, &headers)?;
    require(principal, &[Role::Auditor], "read checkpoints")?;
    let reply = queries(&app)?.checkpoint().await?;
    Ok(axum::Json(reply).into_response())
}

/// What a process serves while it starts (the projector refolds the log, the log connects):
/// `/healthz` is 200, `/readyz` is 503 `starting`, `/metrics` renders, and every other route
/// is a 503 problem a client may retry, so a load balancer and a person both see why.
pub fn starting_router(metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route(
            "/readyz",
            get(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(json!({"status": "starting"})),
                )
            }),
        )
        .route("/metrics", get(move || async move { metrics.render() }))
        .route("/v1/openapi.json", get(openapi))
        .fallback(|| async {
            Problem::unavailable(
                "starting: the log is being opened and refolded; try again shortly",
            )
        })
        .layer(middleware::from_fn(track))
}

#[cfg(test)]
mod tests {
    use fundflow_api::InvalidEvent;

    use super::*;

    #[test]
    fn each_service_error_gets_its_status_code_and_field() {
        let invalid = InvalidEvent::new("invalid_type", "amount.value", "must be a string");
        let problem = problem_of(Refusal::Invalid(invalid).into());
        assert_eq!(
            (
                problem.status,
                problem.code.as_str(),
                problem.field.as_deref()
            ),
            (400, "invalid_type", Some("amount.value"))
        );
        assert_eq!(problem.kind, "urn:fundflow:problem:invalid_type");
        assert_eq!(problem.detail, "amount.value: must be a string");
        let problem = problem_of(
            Refusal::NotThePartner {
                message: "not yours".into(),
            }
            .into(),
        );
        assert_eq!(
            (problem.status, problem.field.as_deref()),
            (403, Some("partner_id"))
        );
        let problem = problem_of(
            Refusal::Conflict {
                event_id: "e".into(),
                seq: 7,
            }
            .into(),
        );
        assert_eq!(
            (problem.status, problem.code.as_str(), problem.seq),
            (409, "event_id_conflict", Some(7))
        );
        let problem = problem_of(CsvError::TooManyRows { rows_max: 2 }.into());
        assert_eq!(problem.status, 413);
        let problem = problem_of(CsvError::Invalid("unknown column \"amout\"".into()).into());
        assert_eq!(
            (problem.status, problem.code.as_str()),
            (400, "invalid_csv")
        );
        assert!(problem.detail.contains("amout"));
        let problem = problem_of(QueryError::NotFound("no pledge".into()).into());
        assert_eq!(problem.status, 404);
        let problem = problem_of(SubmitError::AppenderStopped.into());
        assert_eq!(problem.status, 503);
    }

    #[test]
    fn a_refused_result_carries_the_problem_and_a_rejected_one_its_code() {
        let refused = submit_result(Submitted {
            event_id: Some("e".into()),
            seq: Some(3),
            verdict: Verdict::Refused(Refusal::Conflict {
                event_id: "e".into(),
                seq: 3,
            }),
        });
        assert_eq!(refused.status, fundflow_api::Status::Conflict);
        assert_eq!(refused.problem.map(|p| p.status), Some(409));
        let rejected = submit_result(Submitted {
            event_id: Some("e".into()),
            seq: Some(4),
            verdict: Verdict::Rejected(fundflow_domain::Rejection {
                code: fundflow_domain::RejectCode::Overpaid,
                field: String::new(),
                message: "too much".into(),
            }),
        });
        assert_eq!(
            (rejected.code.as_deref(), rejected.field, rejected.problem),
            (Some("overpaid"), None, None)
        );
    }
}
