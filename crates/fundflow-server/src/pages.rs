//! The dashboard's routes: sign-in with a token through a form, a server-side session behind an
//! HttpOnly, SameSite=Strict cookie, and pages rendered by `fundflow_dashboard` from the same
//! queries the API runs. Every page and asset is sent with a Content-Security-Policy that allows
//! only fundflow's own assets and with caching forbidden to shared caches.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cookie::time::Duration as CookieDuration;

use axum::Router;
use axum::extract::{Form, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use fundflow_api::TotalsParams;
use fundflow_dashboard::{Filters, OverviewInput, PageContext};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::access::{Principal, Role};
use crate::http::App;
use crate::query::QueryError;

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
        .route("/sign-in", get(sign_in_form).post(sign_in))
        .route("/sign-out", axum::routing::post(sign_out))
        .route(fundflow_dashboard::STYLESHEET_PATH, get(stylesheet))
        .layer(middleware::from_fn(page_headers))
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

/// The signed-in principal, if any (a page without one redirects to sign-in).
fn signed_in(app: &App, headers: &HeaderMap) -> Option<Principal> {
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

fn html(status: StatusCode, page: Result<String, fundflow_dashboard::DashboardError>) -> Response {
    match page {
        Ok(page) => (status, Html(page)).into_response(),
        Err(err) => {
            tracing::error!(%err, "a page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered; the server's log says why",
            )
                .into_response()
        }
    }
}

/// A page for an error: the rule broken, or why the data cannot be read now.
fn query_failed(err: QueryError) -> Response {
    let status = match err {
        QueryError::InvalidFilter { .. } => StatusCode::BAD_REQUEST,
        QueryError::NotFound(_) => StatusCode::NOT_FOUND,
        QueryError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, err.to_string()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeriodParams {
    from: Option<String>,
    to: Option<String>,
}

fn context(
    principal: &Principal,
    filters: Filters,
    as_of_seq: u64,
    digest: Option<String>,
) -> PageContext {
    PageContext {
        who: principal.name.clone(),
        role: principal.role.as_str().to_owned(),
        as_of_seq,
        model_digest: digest,
        filters,
    }
}

async fn overview(
    State(app): State<App>,
    headers: HeaderMap,
    params: Result<Query<PeriodParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(principal) = signed_in(&app, &headers) else {
        return Redirect::to("/sign-in").into_response();
    };
    if !matches!(principal.role, Role::Reviewer | Role::Auditor) {
        return (
            StatusCode::FORBIDDEN,
            "the overview is for reviewers and auditors; a partner reads its own flows and pledges through the API",
        )
            .into_response();
    }
    let Ok(Query(params)) = params else {
        return (
            StatusCode::BAD_REQUEST,
            "only from and to filter the overview",
        )
            .into_response();
    };
    let Some(queries) = app.queries.as_ref() else {
        return (StatusCode::NOT_FOUND, "this process serves no queries").into_response();
    };
    let totals = |scope: &str,
                  group_by: Option<&str>,
                  from: &Option<String>,
                  to: &Option<String>| TotalsParams {
        scope: Some(scope.to_owned()),
        group_by: group_by.map(str::to_owned),
        from: from.clone(),
        to: to.clone(),
        ..TotalsParams::default()
    };
    // The years with data, for the picker and the default period (the latest year).
    let years = match queries
        .totals_grouped(&totals("global", Some("year"), &None, &None))
        .await
    {
        Ok((reply, _)) => {
            let mut years: Vec<String> = reply.rows.into_iter().filter_map(|r| r.year).collect();
            years.sort_unstable_by(|a, b| b.cmp(a));
            years.dedup();
            years
        }
        Err(err) => return query_failed(err),
    };
    let (from, to) = match (params.from, params.to, years.first()) {
        (None, None, Some(latest)) => (
            Some(format!("{latest}-01-01")),
            Some(format!("{latest}-12-31")),
        ),
        (from, to, _) => (from, to),
    };
    let summary = match queries.summary(from.as_deref(), to.as_deref()).await {
        Ok(reply) => reply,
        Err(err) => return query_failed(err),
    };
    let mut replies = Vec::with_capacity(3);
    for (scope, group_by) in [
        ("global", Some("month")),
        ("country", None),
        ("global", Some("partner")),
    ] {
        match queries
            .totals_grouped(&totals(scope, group_by, &from, &to))
            .await
        {
            Ok((reply, _)) => replies.push(reply),
            Err(err) => return query_failed(err),
        }
    }
    let [by_month, by_country, by_partner] = replies.as_slice() else {
        unreachable!("three queries were run")
    };
    let ctx = context(
        &principal,
        Filters { from, to },
        by_month.as_of_seq,
        by_month.model_digest.clone(),
    );
    let input = OverviewInput {
        summary: &summary,
        by_month,
        by_country,
        by_partner,
        years: &years,
    };
    html(StatusCode::OK, fundflow_dashboard::overview(&ctx, &input))
}
