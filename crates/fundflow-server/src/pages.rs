//! The dashboard's routes: sign-in with a token through a form, a server-side session behind an
//! HttpOnly, SameSite=Strict cookie, and pages rendered by `fundflow_dashboard` from the same
//! queries the API runs. Every page and asset is sent with a Content-Security-Policy that allows
//! only fundflow's own assets and with caching forbidden to shared caches.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cookie::time::Duration as CookieDuration;

use axum::Router;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use fundflow_api::TotalsParams;
use fundflow_dashboard::{CountryInput, DashboardError, Filters, OverviewInput, Page, PageContext};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::access::{Principal, Role};
use crate::http::App;
use crate::query::{FlowsParams, PledgesParams, Queries, QueryError, RejectionsParams};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "fundflow_session";
/// How long a session lasts after sign-in.
const SESSION_TTL: Duration = Duration::from_secs(8 * 60 * 60);
/// The most sessions held at once; past it, the oldest is dropped.
const SESSIONS_MAX: usize = 10_000;
/// Only the binary's own assets; no inline script or style, no frames, forms post to us only.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Signed-in sessions, server-side: the cookie holds a random id, the map its SHA-256 (so the
/// map never holds what a client presents), the principal and when the session ends.
#[derive(Default)]
pub struct Sessions {
    by_id_hash: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
}

impl Sessions {
    /// A new session for `principal`; its id, for the cookie.
    fn open(&self, principal: Principal) -> Result<String, getrandom::Error> {
        let mut id = [0u8; 32];
        getrandom::fill(&mut id)?;
        let id = hex::encode(id);
        let now = Instant::now();
        let mut sessions = self.lock();
        sessions.retain(|_, (_, ends)| *ends > now);
        if sessions.len() >= SESSIONS_MAX
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, (_, e))| *e)
                .map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(Self::hash(&id), (principal, now + SESSION_TTL));
        Ok(id)
    }

    /// The principal of a live session.
    fn principal(&self, id: &str) -> Option<Principal> {
        let sessions = self.lock();
        let (principal, ends) = sessions.get(&Self::hash(id))?;
        (*ends > Instant::now()).then(|| principal.clone())
    }

    /// Whether anyone is signed in.
    fn any_live(&self) -> bool {
        let now = Instant::now();
        self.lock().values().any(|(_, ends)| *ends > now)
    }

    fn close(&self, id: &str) {
        self.lock().remove(&Self::hash(id));
    }

    fn hash(id: &str) -> [u8; 32] {
        Sha256::digest(id.as_bytes()).into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Principal, Instant)>> {
        // A panic while holding the lock cannot leave the map half-changed (each change is one
        // call), so a poisoned lock is still a consistent map.
        self.by_id_hash
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The dashboard's routes, for a process that serves queries.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/", get(overview))
        .route("/recipients", get(recipients))
        .route("/recipients/{alpha3}", get(country))
        .route("/pledges", get(pledges))
        .route("/partners", get(partners))
        .route("/in-kind", get(in_kind))
        .route("/flows", get(flows))
        .route("/rejections", get(rejections))
        .route("/sign-in", get(sign_in_form).post(sign_in))
        .route("/sign-out", axum::routing::post(sign_out))
        .route(fundflow_dashboard::STYLESHEET_PATH, get(stylesheet))
        .route(fundflow_dashboard::FAVICON_PATH, get(favicon))
        .layer(middleware::from_fn(tidy_query))
        .layer(middleware::from_fn(page_headers))
}

/// A GET form sends its empty controls as `name=`: such a request is sent on to the same page
/// without them, so that the address a reviewer shares holds only the filters in force.
async fn tidy_query(request: Request, next: Next) -> Response {
    if request.method() == axum::http::Method::GET
        && let Some(query) = request.uri().query()
    {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        if pairs.iter().any(|(_, value)| value.trim().is_empty()) {
            let kept: Vec<&(String, String)> =
                pairs.iter().filter(|(_, v)| !v.trim().is_empty()).collect();
            let mut target = request.uri().path().to_owned();
            if !kept.is_empty() {
                let mut tidy = form_urlencoded::Serializer::new(String::new());
                for (name, value) in kept {
                    tidy.append_pair(name, value);
                }
                target.push('?');
                target.push_str(&tidy.finish());
            }
            return Redirect::to(&target).into_response();
        }
    }
    next.run(request).await
}

/// Headers on every page and asset.
async fn page_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            // The user's own browser may keep it; no shared cache may.
            (header::CACHE_CONTROL, "private, max-age=3600"),
        ],
        fundflow_dashboard::STYLESHEET,
    )
        .into_response()
}

async fn favicon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "private, max-age=3600"),
        ],
        fundflow_dashboard::FAVICON,
    )
        .into_response()
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == SESSION_COOKIE)
        .map(|c| c.value().to_owned())
}

/// The signed-in principal, if any (a page without one redirects to sign-in; the API's read
/// routes take a session too, so that a page's CSV links work in the browser that shows it).
pub(crate) fn signed_in(app: &App, headers: &HeaderMap) -> Option<Principal> {
    session_id(headers).and_then(|id| app.sessions.principal(&id))
}

/// Whether the client reached us over TLS (through a proxy that says so), for the cookie's
/// `Secure` attribute.
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

async fn sign_in_form(State(app): State<App>, headers: HeaderMap) -> Response {
    if signed_in(&app, &headers).is_some() {
        return Redirect::to("/").into_response();
    }
    html(StatusCode::OK, fundflow_dashboard::sign_in(None))
}

#[derive(Deserialize)]
struct SignInForm {
    token: String,
}

async fn sign_in(
    State(app): State<App>,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return html(
            StatusCode::BAD_REQUEST,
            fundflow_dashboard::sign_in(Some("token: the form must have a token field")),
        );
    };
    let Some(principal) = app.access.authenticate(form.token.trim()).cloned() else {
        tracing::info!("a dashboard sign-in with an unknown token");
        return html(
            StatusCode::UNAUTHORIZED,
            fundflow_dashboard::sign_in(Some("token: this token is not known")),
        );
    };
    let id = match app.sessions.open(principal) {
        Ok(id) => id,
        Err(err) => {
            tracing::error!(%err, "no randomness for a session id");
            return html(
                StatusCode::SERVICE_UNAVAILABLE,
                fundflow_dashboard::sign_in(Some("the server cannot open sessions now")),
            );
        }
    };
    let cookie = cookie::Cookie::build((SESSION_COOKIE, id))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(over_tls(&headers))
        .max_age(CookieDuration::seconds(
            i64::try_from(SESSION_TTL.as_secs()).unwrap_or(i64::MAX),
        ))
        .build();
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn sign_out(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        app.sessions.close(&id);
    }
    let expired = cookie::Cookie::build((SESSION_COOKIE, ""))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .max_age(CookieDuration::ZERO)
        .build();
    let mut response = Redirect::to("/sign-in").into_response();
    if let Ok(value) = HeaderValue::from_str(&expired.to_string()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

fn html(status: StatusCode, page: Result<String, DashboardError>) -> Response {
    match page {
        Ok(page) => (status, Html(page)).into_response(),
        Err(DashboardError::NotFound(detail)) => {
            problem(StatusCode::NOT_FOUND, "Not found", &detail)
        }
        Err(err) => {
            tracing::error!(%err, "a page failed to render");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "This page could not be drawn",
                "the server's log says why",
            )
        }
    }
}

/// A page that says why there is no page.
fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    match fundflow_dashboard::problem(title, detail) {
        Ok(page) => (status, Html(page)).into_response(),
        Err(err) => {
            tracing::error!(%err, "the problem page failed to render");
            (status, detail.to_owned()).into_response()
        }
    }
}

/// A page for a failed query: the parameter and its rule, or why the data cannot be read now.
fn query_failed(err: QueryError) -> Response {
    let (status, title) = match err {
        QueryError::InvalidFilter { .. } => (StatusCode::BAD_REQUEST, "A filter is not valid"),
        QueryError::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
        QueryError::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The figures cannot be read now",
        ),
    };
    problem(status, title, &err.to_string())
}

/// The overview's parameters.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeriodParams {
    from: Option<String>,
    to: Option<String>,
}

/// Every page's parameters, under the API's names. A GET form sends its empty controls as
/// empty values: they mean "no filter".
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PageParams {
    from: Option<String>,
    to: Option<String>,
    kind: Option<String>,
    currency: Option<String>,
    partner: Option<String>,
    grant: Option<String>,
    country: Option<String>,
    region: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
}

fn set(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

impl PageParams {
    fn filters(&self) -> Filters {
        Filters {
            from: set(&self.from),
            to: set(&self.to),
            kind: set(&self.kind),
            currency: set(&self.currency),
            partner: set(&self.partner),
            grant: set(&self.grant),
            country: set(&self.country),
            region: set(&self.region),
        }
    }

    fn totals(&self, scope: Option<&str>, group_by: Option<&str>) -> TotalsParams {
        let f = self.filters();
        TotalsParams {
            scope: scope.map(str::to_owned),
            group_by: group_by.map(str::to_owned),
            kind: f.kind,
            currency: f.currency,
            partner: f.partner,
            grant: f.grant,
            from: f.from,
            to: f.to,
            ..TotalsParams::default()
        }
    }
}

/// Who may see a page, with what: the signed-in principal, the page's parameters (a partner's
/// own id put in as its partner filter) and the queries.
struct Visit {
    principal: Principal,
    params: PageParams,
    queries: Queries,
}

fn visit(
    app: &App,
    headers: &HeaderMap,
    page: Page,
    params: Result<Query<PageParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Visit, Box<Response>> {
    let Some(principal) = signed_in(app, headers) else {
        return Err(Box::new(Redirect::to("/sign-in").into_response()));
    };
    let partner_page = page.for_partners();
    if principal.role == Role::Partner && !partner_page {
        return Err(Box::new(problem(
            StatusCode::FORBIDDEN,
            "Not for partners",
            "this page is for reviewers and auditors; a partner sees its own flows and pledges",
        )));
    }
    let mut params = match params {
        Ok(Query(params)) => params,
        Err(err) => {
            return Err(Box::new(problem(
                StatusCode::BAD_REQUEST,
                "A filter is not valid",
                &err.body_text(),
            )));
        }
    };
    if let Some(own) = &principal.partner_id {
        match set(&params.partner) {
            Some(asked) if &asked != own => {
                return Err(Box::new(problem(
                    StatusCode::FORBIDDEN,
                    "Not yours",
                    "partner: a partner may read only its own flows and pledges",
                )));
            }
            _ => params.partner = Some(own.clone()),
        }
    }
    let Some(queries) = app.queries.clone() else {
        return Err(Box::new(problem(
            StatusCode::NOT_FOUND,
            "No figures here",
            "this process serves no queries",
        )));
    };
    Ok(Visit {
        principal,
        params,
        queries,
    })
}

impl Visit {
    async fn context(&self, page: Page, as_of_seq: u64, digest: Option<String>) -> PageContext {
        self.context_of(page, as_of_seq, &[], digest).await
    }

    /// The frame of a page drawn from replies at `as_of_seq` (the page's checkpoint) and at
    /// `others`.
    async fn context_of(
        &self,
        page: Page,
        as_of_seq: u64,
        others: &[u64],
        digest: Option<String>,
    ) -> PageContext {
        let mut seqs = vec![as_of_seq];
        seqs.extend_from_slice(others);
        let model_digest = match digest {
            Some(digest) => Some(digest),
            // A busy projector leaves it uncomputed; the page says so.
            None => self.queries.model_digest(as_of_seq).await.ok().flatten(),
        };
        let mut filters = self.params.filters();
        if self.principal.role == Role::Partner {
            // Its own id is implied, not a filter it chose.
            filters.partner = None;
        }
        PageContext {
            who: self.principal.name.clone(),
            role: self.principal.role.as_str().to_owned(),
            page,
            as_of_seq,
            model_digest,
            filters,
            mixed_seqs: fundflow_dashboard::mixed(&seqs),
        }
    }

    fn own(&self) -> Option<&str> {
        self.principal.partner_id.as_deref()
    }
}

macro_rules! try_query {
    ($query:expr) => {
        match $query.await {
            Ok(reply) => reply,
            Err(err) => return query_failed(err),
        }
    };
}

async fn overview(
    State(app): State<App>,
    headers: HeaderMap,
    params: Result<Query<PeriodParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(principal) = signed_in(&app, &headers) else {
        return Redirect::to("/sign-in").into_response();
    };
    if principal.role == Role::Partner {
        return Redirect::to(Page::Flows.path()).into_response();
    }
    let Ok(Query(params)) = params else {
        return problem(
            StatusCode::BAD_REQUEST,
            "A filter is not valid",
            "only from and to filter the overview",
        );
    };
    let Some(queries) = app.queries.as_ref() else {
        return problem(
            StatusCode::NOT_FOUND,
            "No figures here",
            "this process serves no queries",
        );
    };
    let read = match overview_read(&app, queries, set(&params.from), set(&params.to)).await {
        Ok(read) => read,
        Err(err) => return query_failed(err),
    };
    let [by_month, by_country, by_partner] = read.totals.as_slice() else {
        unreachable!("three totals queries were run")
    };
    let seqs = [
        by_month.as_of_seq,
        read.summary.as_of_seq,
        by_country.as_of_seq,
        by_partner.as_of_seq,
        read.years_seq,
    ];
    let ctx = PageContext {
        who: principal.name.clone(),
        role: principal.role.as_str().to_owned(),
        page: Page::Overview,
        as_of_seq: by_month.as_of_seq,
        model_digest: by_month.model_digest.clone(),
        filters: Filters {
            from: read.from.clone(),
            to: read.to.clone(),
            ..Filters::default()
        },
        mixed_seqs: fundflow_dashboard::mixed(&seqs),
    };
    let input = OverviewInput {
        summary: &read.summary,
        by_month,
        by_country,
        by_partner,
        years: &read.years,
    };
    html(StatusCode::OK, fundflow_dashboard::overview(&ctx, &input))
}

/// How often a page of several queries is read again when events arrived between them, before
/// it is shown with its seqs (`PageContext::mixed_seqs`).
const READ_ATTEMPTS: usize = 3;

/// How many reads a [`ReadCache`] keeps.
const READS_KEPT: usize = 32;

/// The replies an overview is drawn from, all at one checkpoint when `consistent`.
pub struct OverviewRead {
    years: Vec<String>,
    years_seq: u64,
    from: Option<String>,
    to: Option<String>,
    summary: fundflow_api::SummaryReply,
    totals: Vec<fundflow_api::TotalsReply>,
}

impl OverviewRead {
    fn seq(&self) -> Option<u64> {
        let seq = self.summary.as_of_seq;
        (self.years_seq == seq && self.totals.iter().all(|t| t.as_of_seq == seq)).then_some(seq)
    }
}

/// The last reads of a page's dearest queries, by (checkpoint seq, the question asked). A
/// checkpoint's figures never change, so the same question at the same checkpoint is answered
/// from here, and a new checkpoint is a miss: the overview (five queries, the page every
/// reviewer opens first) and the partners page (every partner's every year) are kept.
pub struct ReadCache<T> {
    entries: Mutex<VecDeque<Kept<T>>>,
}

/// A kept read: its checkpoint seq, its question, and the read.
type Kept<T> = ((u64, String), Arc<T>);

impl<T> Default for ReadCache<T> {
    fn default() -> Self {
        ReadCache {
            entries: Mutex::default(),
        }
    }
}

impl<T> ReadCache<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Kept<T>>> {
        // Each change is one call on the deque: a poisoned lock still holds a whole deque.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, seq: u64, question: &str) -> Option<Arc<T>> {
        self.lock()
            .iter()
            .find(|((s, q), _)| *s == seq && q == question)
            .map(|(_, read)| read.clone())
    }

    fn put(&self, seq: u64, question: String, read: Arc<T>) {
        let mut entries = self.lock();
        entries.push_back(((seq, question), read));
        while entries.len() > READS_KEPT {
            entries.pop_front();
        }
    }
}

/// Counts a cached page's read: from the cache, or afresh.
fn count_read(page: &'static str, hit: bool) {
    let cache = if hit { "hit" } else { "miss" };
    metrics::counter!("fundflow_dashboard_reads_total", "page" => page, "cache" => cache)
        .increment(1);
}

/// The current checkpoint's seq (0 for an empty model).
fn current_seq(queries: &Queries) -> Result<u64, QueryError> {
    Ok(queries
        .model()
        .checkpoint()
        .map_err(|err| QueryError::Unavailable(format!("the read model cannot be read: {err}")))?
        .map_or(0, |c| c.last_seq))
}

/// The overview's replies for the asked period (the latest year's when neither end is given),
/// from the cache at the current checkpoint, else read (again, up to [`READ_ATTEMPTS`] times,
/// while events arrive between the queries).
async fn overview_read(
    app: &App,
    queries: &Queries,
    from: Option<String>,
    to: Option<String>,
) -> Result<Arc<OverviewRead>, QueryError> {
    let question = format!("{from:?} {to:?}");
    if let Some(read) = app.reads.overviews.get(current_seq(queries)?, &question) {
        count_read("overview", true);
        return Ok(read);
    }
    count_read("overview", false);
    let mut attempt = 0;
    let read = loop {
        let read = read_overview(queries, from.clone(), to.clone()).await?;
        attempt += 1;
        if read.seq().is_some() || attempt == READ_ATTEMPTS {
            break Arc::new(read);
        }
    };
    if let Some(seq) = read.seq() {
        app.reads.overviews.put(seq, question, read.clone());
    }
    Ok(read)
}

/// The partners page's totals (`scope=global&group_by=partner,year` and its filters), from the
/// cache at the current checkpoint, else read.
async fn partner_years_read(
    app: &App,
    queries: &Queries,
    params: &TotalsParams,
) -> Result<Arc<fundflow_api::TotalsReply>, QueryError> {
    let question = format!("{params:?}");
    if let Some(reply) = app
        .reads
        .partner_years
        .get(current_seq(queries)?, &question)
    {
        count_read("partners", true);
        return Ok(reply);
    }
    count_read("partners", false);
    let reply = Arc::new(queries.totals(params).await?);
    app.reads
        .partner_years
        .put(reply.as_of_seq, question, reply.clone());
    Ok(reply)
}

/// The dashboard's caches of reads.
#[derive(Default)]
pub struct Reads {
    /// Overviews, by period asked.
    overviews: ReadCache<OverviewRead>,
    /// The partners page's totals, by filters.
    partner_years: ReadCache<fundflow_api::TotalsReply>,
}

/// The least time between two overviews read ahead: catching up, the projector checkpoints
/// several times a second, and each read ahead costs as much as a reviewer's first view.
const WARM_INTERVAL: Duration = Duration::from_secs(2);

/// Reads the default overview (the latest year's) and partners page ahead after fold batches, at most once per
/// [`WARM_INTERVAL`] and only while someone is signed in, so that the first reviewer to open
/// the dashboard at a new checkpoint is answered from the cache. Runs until the notices end.
pub async fn read_ahead(
    app: App,
    mut notices: tokio::sync::broadcast::Receiver<Arc<fundflow_projector::FoldNotice>>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let Some(queries) = app.queries.clone() else {
        return;
    };
    loop {
        match notices.recv().await {
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
        tokio::time::sleep(WARM_INTERVAL).await;
        // The batches folded meanwhile: one read ahead covers them all.
        while !matches!(
            notices.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty
                | tokio::sync::broadcast::error::TryRecvError::Closed)
        ) {}
        if !app.sessions.any_live() {
            continue;
        }
        let span = tracing::debug_span!("dashboard read ahead");
        let partners = PageParams::default().totals(Some("global"), Some("partner,year"));
        let read = async {
            overview_read(&app, &queries, None, None).await?;
            partner_years_read(&app, &queries, &partners).await
        };
        if let Err(err) = tracing::Instrument::instrument(read, span).await {
            tracing::debug!(%err, "the dashboard could not be read ahead");
        }
    }
}

/// The overview's queries: the years with data (for the picker and the default period), the
/// summary, then totals by month, country and partner.
async fn read_overview(
    queries: &Queries,
    from: Option<String>,
    to: Option<String>,
) -> Result<OverviewRead, QueryError> {
    let totals =
        |scope: &str, group_by: &str, from: &Option<String>, to: &Option<String>| TotalsParams {
            scope: Some(scope.to_owned()),
            group_by: (!group_by.is_empty()).then(|| group_by.to_owned()),
            from: from.clone(),
            to: to.clone(),
            ..TotalsParams::default()
        };
    let by_year = queries
        .totals(&totals("global", "year", &None, &None))
        .await?;
    let mut years: Vec<String> = by_year.rows.into_iter().filter_map(|r| r.year).collect();
    years.sort_unstable_by(|a, b| b.cmp(a));
    years.dedup();
    let (from, to) = match (from, to, years.first()) {
        (None, None, Some(latest)) => (
            Some(format!("{latest}-01-01")),
            Some(format!("{latest}-12-31")),
        ),
        (from, to, _) => (from, to),
    };
    let summary = queries.summary(from.as_deref(), to.as_deref()).await?;
    let mut replies = Vec::with_capacity(3);
    for (scope, group_by) in [("global", "month"), ("country", ""), ("global", "partner")] {
        replies.push(queries.totals(&totals(scope, group_by, &from, &to)).await?);
    }
    Ok(OverviewRead {
        years,
        years_seq: by_year.as_of_seq,
        from,
        to,
        summary,
        totals: replies,
    })
}

type PageQuery = Result<Query<PageParams>, axum::extract::rejection::QueryRejection>;

async fn recipients(State(app): State<App>, headers: HeaderMap, params: PageQuery) -> Response {
    let visit = match visit(&app, &headers, Page::Recipients, params) {
        Ok(visit) => visit,
        Err(response) => return *response,
    };
    let area = set(&visit.params.region).unwrap_or_else(|| "001".to_owned());
    // Every scope at once: the area, its parts and the countries in one reply.
    let reply = try_query!(visit.queries.totals(&visit.params.totals(None, None)));
    let ctx = visit
        .context(
            Page::Recipients,
            reply.as_of_seq,
            reply.model_digest.clone(),
        )
        .await;
    html(
        StatusCode::OK,
        fundflow_dashboard::recipients(&ctx, &area, &reply),
    )
}

async fn country(
    State(app): State<App>,
    headers: HeaderMap,
    Path(alpha3): Path<String>,
    params: PageQuery,
) -> Response {
    let visit = match visit(&app, &headers, Page::Recipients, params) {
        Ok(visit) => visit,
        Err(response) => return *response,
    };
    let mut attempt = 0;
    let (totals, in_kind, flows) = loop {
        let read = async {
            let mut totals = visit.params.totals(Some("country"), None);
            totals.key = Some(alpha3.clone());
            let totals = visit.queries.totals(&totals).await?;
            let in_kind = visit.queries.in_kind(Some("country")).await?;
            let f = visit.params.filters();
            let flows = FlowsParams {
                country: Some(alpha3.clone()),
                partner: f.partner,
                grant: f.grant,
                from: f.from,
                to: f.to,
                limit: Some("50".to_owned()),
                ..FlowsParams::default()
            };
            let flows = visit.queries.flows(&flows, None).await?;
            Ok::<_, QueryError>((totals, in_kind, flows))
        };
        let (totals, in_kind, flows) = match read.await {
            Ok(replies) => replies,
            Err(err) => return query_failed(err),
        };
        attempt += 1;
        let one = in_kind.as_of_seq == totals.as_of_seq && flows.as_of_seq == totals.as_of_seq;
        if one || attempt == READ_ATTEMPTS {
            break (totals, in_kind, flows);
        }
    };
    let ctx = visit
        .context_of(
            Page::Recipients,
            totals.as_of_seq,
            &[in_kind.as_of_seq, flows.as_of_seq],
            totals.model_digest.clone(),
        )
        .await;
    let input = CountryInput {
        totals: &totals,
        in_kind: &in_kind,
        flows: &flows,
    };
    html(
        StatusCode::OK,
        fundflow_dashboard::country(&ctx, &alpha3, &input),
    )
}

async fn pledges(State(app): State<App>, headers: HeaderMap, params: PageQuery) -> Response {
    let visit = match visit(&app, &headers, Page::Pledges, params) {
        Ok(visit) => visit,
        Err(response) => return *response,
    };
    let f = visit.params.filters();
    let status = set(&visit.params.status).unwrap_or_else(|| "all".to_owned());
    let query = PledgesParams {
        partner: f.partner,
        grant: f.grant,
        from: f.from,
        to: f.to,
        status: Some(status.clone()),
        cursor: set(&visit.params.cursor),
        ..PledgesParams::default()
    };
    let reply = try_query!(visit.queries.pledges(&query, visit.own()));
    let ctx = visit.context(Page::Pledges, reply.as_of_seq, None).await;
    html(
        StatusCode::OK,
        fundflow_dashboard::pledges(&ctx, &status, &reply),
    )
}

async fn partners(State(app): State<App>, headers: HeaderMap, params: PageQuery) -> Response {
    let visit = match visit(&app, &headers, Page::Partners, params) {
        Ok(visit) => visit,
        Err(response) => return *response,
    };
    let params = visit.params.totals(Some("global"), Some("partner,year"));
    let reply = match partner_years_read(&app, &visit.queries, &params).await {
        Ok(reply) => reply,
        Err(err) => return query_failed(err),
    };
    let ctx = visit
        .context(Page::Partners, reply.as_of_seq, reply.model_digest.clone())
        .await;
    html(StatusCode::OK, fundflow_dashboard::partners(&ctx, &reply))
}

async fn in_kind(State(app): State<App>, headers: HeaderMap, params: PageQuery) -> Response {
    let visit = match visit(&app, &headers, Page::InKind, params) {
        Ok(visit) => visit,
        Err(response) => return *response,
    };
    let f = visit.params.filters();
    let totals = TotalsParams {
        scope: Some("country".to_owned()),
        kind: Some("in_kind".to_owned()),
        from: f.from,
        to: f.to,
        ..TotalsParams::default()
    };
    let mut attempt = 0;
    let (items, totals) = loop {
        let items = try_query!(visit.queries.in_kind(Some("country")));
        let totals = try_query!(visit.queries.totals(&totals));
        attempt += 1;
        if items.as_of_seq == totals.as_of_seq || attempt == READ_ATTEMPTS {
            break (items, totals);
        }
    };
    let ctx = visit
        .context_of(
            Page::InKind,
            totals.as_of_seq,
            &[items.as_of_seq],
            totals.model_digest.clone(),
        )
        .await;
    html(
        StatusCode::OK,
        fundflow_dashboard::in_kind(&ctx, &items, &totals),
    )
}

async fn flows(State(app): State<App>, headers: HeaderMap, params: PageQuery) -> Response {
    let visit = match visit(&app, &headers, Page::Flows, params) {
        Ok(visit) => visit,
        Err(response) => return *response,
    };
    let f = visit.params.filters();
    let status = set(&visit.params.status).unwrap_or_else(|| "applied".to_owned());
    let query = FlowsParams {
        kind: f.kind,
        partner: f.partner,
        country: f.country,
        region: f.region,
        grant: f.grant,
        from: f.from,
        to: f.to,
        status: Some(status.clone()),
        cursor: set(&visit.params.cursor),
        ..FlowsParams::default()
    };
    let reply = try_query!(visit.queries.flows(&query, visit.own()));
    let ctx = visit.context(Page::Flows, reply.as_of_seq, None).await;
    html(
        StatusCode::OK,
        fundflow_dashboard::flows(&ctx, &status, &reply),
    )
}

async fn rejections(State(app): State<App>, headers: HeaderMap, params: PageQuery) -> Response {
    let visit = match visit(&app, &headers, Page::Rejections, params) {
        Ok(visit) => visit,
        Err(response) => return *response,
    };
    let query = RejectionsParams {
        cursor: set(&visit.params.cursor),
        ..RejectionsParams::default()
    };
    let reply = try_query!(visit.queries.rejections(&query));
    let ctx = visit.context(Page::Rejections, reply.as_of_seq, None).await;
    html(StatusCode::OK, fundflow_dashboard::rejections(&ctx, &reply))
}
