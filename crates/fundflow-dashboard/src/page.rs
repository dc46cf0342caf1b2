//! What every page shares: who is signed in, the checkpoint, the filters kept in the URL.

use askama::Template;

use crate::{DashboardError, STYLESHEET_PATH};

/// The filters a page was asked for, under the API's parameter names, so that a view is a link
/// and its CSV link asks the API the same question.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// The first `occurred_on` counted.
    pub from: Option<String>,
    /// The last `occurred_on` counted.
    pub to: Option<String>,
}

impl Filters {
    /// The filters as a query string (`from=…&to=…`), empty when none is set.
    pub fn query(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in [("from", &self.from), ("to", &self.to)] {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
        query.finish()
    }

    /// `path` with the filters and `extra` parameters appended.
    pub fn link(&self, path: &str, extra: &[(&str, &str)]) -> String {
        let mut query = form_urlencoded::Serializer::new(self.query());
        for (name, value) in extra {
            query.append_pair(name, value);
        }
        let query = query.finish();
        if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        }
    }
}

/// What the frame of every page shows.
#[derive(Debug, Clone)]
pub struct PageContext {
    /// The signed-in principal's name.
    pub who: String,
    /// Its role (`reviewer`, `auditor`, `partner`).
    pub role: String,
    /// The checkpoint the figures are at.
    pub as_of_seq: u64,
    /// The model digest at it, when computed.
    pub model_digest: Option<String>,
    /// The filters.
    pub filters: Filters,
}

impl PageContext {
    /// The model digest, or a sentence saying it is not computed yet.
    pub fn digest_text(&self) -> &str {
        self.model_digest
            .as_deref()
            .unwrap_or("not computed yet at this checkpoint")
    }
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignIn<'a> {
    stylesheet: &'a str,
    error: Option<&'a str>,
}

/// The sign-in page, with `error` when a token was refused.
pub fn sign_in(error: Option<&str>) -> Result<String, DashboardError> {
    Ok(SignIn {
        stylesheet: STYLESHEET_PATH,
        error,
    }
    .render()?)
}
