//! The reviewers' dashboard as HTML: server-rendered pages (askama templates, checked at compile
//! time), SVG bar charts drawn from exact decimals, and the stylesheet and script the pages use,
//! embedded in the binary. It turns the API's replies (`fundflow_api`) into pages and knows no
//! HTTP, session or store: the server's `pages` module authenticates, runs the queries and hands
//! their replies here, so every figure on a page is a figure the API returns for the same
//! filters.

mod chart;
mod lists;
mod overview;
mod page;
mod recipients;
mod sums;
mod tables;

pub use chart::{Bar, BarChart};
pub use lists::{FLOW_FILTERS, PLEDGE_FILTERS, flows, pledges, rejections};
pub use overview::{OverviewInput, overview};
pub use page::{Filter, Filters, KINDS, Page, PageContext, filter_bar, mixed, problem, sign_in};
pub use recipients::{CountryInput, RECIPIENT_FILTERS, country, recipients};
pub use tables::{PARTNER_FILTERS, in_kind, partners};

/// The stylesheet every page links to, served at [`STYLESHEET_PATH`].
pub const STYLESHEET: &str = include_str!("../assets/dashboard.css");
/// Where the server serves [`STYLESHEET`].
pub const STYLESHEET_PATH: &str = "/assets/dashboard.css";
/// The pages' icon (an SVG), served at [`FAVICON_PATH`].
pub const FAVICON: &str = include_str!("../assets/favicon.svg");
/// Where the server serves [`FAVICON`].
pub const FAVICON_PATH: &str = "/assets/favicon.svg";

/// Why a page could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// A reply held an amount that is not a decimal: a bug in the server, never input.
    #[error("the reply holds {what} {text:?}, which is not a decimal")]
    NotDecimal {
        /// Which figure.
        what: &'static str,
        /// As given.
        text: String,
    },
    /// A sum for a chart or a table overflowed.
    #[error("the sum of {what} overflows")]
    Overflow {
        /// Which sum.
        what: &'static str,
    },
    /// No such area or country: the client asked for a page that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A reply held what the API never returns: a bug in the server, never input.
    #[error("the reply holds {0}, which the API never returns")]
    Unexpected(String),
    /// A template failed to render.
    #[error("a page could not be rendered: {0}")]
    Render(#[from] askama::Error),
}

/// A decimal from a reply's string.
fn decimal(what: &'static str, text: &str) -> Result<rust_decimal::Decimal, DashboardError> {
    text.parse().map_err(|_| DashboardError::NotDecimal {
        what,
        text: text.to_owned(),
    })
}
