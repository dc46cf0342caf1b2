//! The reviewers' dashboard as HTML: server-rendered pages (askama templates, checked at compile
//! time), SVG bar charts drawn from exact decimals, and the stylesheet and script the pages use,
//! embedded in the binary. It turns the API's replies (`fundflow_api`) into pages and knows no
//! HTTP, session or store: the server's `pages` module authenticates, runs the queries and hands
//! their replies here, so every figure on a page is a figure the API returns for the same
//! filters.

mod chart;
mod overview;
mod page;

pub use chart::{Bar, BarChart};
pub use overview::{OverviewInput, overview};
pub use page::{Filters, PageContext, sign_in};

/// The stylesheet every page links to, served at [`STYLESHEET_PATH`].
pub const STYLESHEET: &str = include_str!("../assets/dashboard.css");
/// Where the server serves [`STYLESHEET`].
pub const STYLESHEET_PATH: &str = "/assets/dashboard.css";

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
