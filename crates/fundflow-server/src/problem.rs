//! Errors as RFC 9457 problem details (`application/problem+json`): a status, a stable `code`,
//! the offending `field` as the JSON API names it, and a one-sentence `detail` with the rule.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fundflow_api::ProblemBody;
use serde::Serialize;

/// A problem, ready to be sent: boxed, so that the `Result`s carrying it stay small. Only the
/// front builds one: [`crate::http::problem_of`] maps the services' typed errors to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Problem(Box<ProblemBody>);

impl std::ops::Deref for Problem {
    type Target = ProblemBody;
    fn deref(&self) -> &ProblemBody {
        &self.0
    }
}

impl std::ops::DerefMut for Problem {
    fn deref_mut(&mut self) -> &mut ProblemBody {
        &mut self.0
    }
}

impl From<Problem> for ProblemBody {
    fn from(problem: Problem) -> ProblemBody {
        *problem.0
    }
}

impl Problem {
    fn new(status: StatusCode, title: &'static str, code: &str, detail: String) -> Problem {
        Problem(Box::new(ProblemBody {
            kind: format!("urn:fundflow:problem:{code}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            code: code.to_owned(),
            field: None,
            event_id: None,
            seq: None,
        }))
    }

    /// 400: the input breaks a rule that needs no ledger state.
    pub fn bad_request(code: &str, field: &str, rule: impl Into<String>) -> Problem {
        let rule = rule.into();
        let detail = if field.is_empty() {
            rule
        } else {
            format!("{field}: {rule}")
        };
        let mut problem = Problem::new(StatusCode::BAD_REQUEST, "invalid event", code, detail);
        if !field.is_empty() {
            problem.field = Some(field.to_owned());
        }
        problem
    }

    /// 400 for a request as a whole (query parameters, content type).
    pub fn bad_query(code: &str, detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid request",
            code,
            detail.into(),
        )
    }

    /// 401: no token, or one nobody holds.
    pub fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "not authenticated",
            "unauthorized",
            detail.into(),
        )
    }

    /// 403: the principal's role does not allow this.
    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::FORBIDDEN,
            "not allowed",
            "forbidden",
            detail.into(),
        )
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not found",
            "not_found",
            detail.into(),
        )
    }

    /// 409: the id is taken by an event with other content.
    pub fn conflict(event_id: &str, seq: u64) -> Problem {
        let mut problem = Problem::new(
            StatusCode::CONFLICT,
            "event id already used",
            "event_id_conflict",
            format!(
                "event {event_id} was recorded at seq {seq} with different content; a correction is a reversal plus a new event with a new ref"
            ),
        );
        problem.event_id = Some(event_id.to_owned());
        problem.seq = Some(seq);
        problem
    }

    /// 413: the request is larger than the server takes.
    pub fn too_large(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request too large",
            "too_large",
            detail.into(),
        )
    }

    /// 415.
    pub fn unsupported_media_type(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported content type",
            "unsupported_media_type",
            detail.into(),
        )
    }

    /// 408: the request took too long.
    pub fn timeout(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "request timeout",
            "timeout",
            detail.into(),
        )
    }

    /// 503: a dependency (the log, the read model) failed; the request may be retried.
    pub fn unavailable(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily unavailable",
            "unavailable",
            detail.into(),
        )
    }

    /// Names the field to blame.
    pub fn with_field(mut self, field: &str) -> Problem {
        self.field = Some(field.to_owned());
        self
    }

    /// The HTTP status.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let mut response = (status, axum::Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"fundflow\""),
            );
        }
        response
    }
}
