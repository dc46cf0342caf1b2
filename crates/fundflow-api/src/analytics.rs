//! The reviewers' analytics (issue 12), shared by the server and by the auditor's replay: the
//! parameters of `GET /v1/totals` with `group_by` and its filters, the grouping of cells into
//! total rows, the period summary, and the reply shapes of the flows list and the pledge book
//! with their CSV writers and paging cursors.
//!
//! The server reads cells from its read model and a replay from `Ledger::cells`; both hand them
//! to [`grouped_total_rows`] and [`summary`] here, so that the same query at the same seq gives
//! the same rows by the same code. Neither function knows where its cells come from: the caller
//! reads the cells of [`TotalsQuery::level`] (or finer) for [`TotalsQuery::periods`], and the
//! functions filter, roll up and sum.
//!
//! No floats: amounts are `Decimal`, and USD sums across currencies, whose bound the fold's cap
//! does not give, are exact sums of cents in an `i128` (see [`Cents`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use fundflow_domain::money::{USD_SCALE, format_at_scale, format_quantity, to_usd};
use fundflow_domain::{
    CellLevel, CellRef, DayOutcomes, Month, Node, PledgeRow, QuantityCellRef, Scope, SummaryPart,
    Total, TotalKind, currency_code, limits, minor_unit, wire,
};
use fundflow_refdata::CurrencyIndex;
use rust_decimal::{Decimal, RoundingStrategy};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use std::collections::hash_map::Entry;
use time::Date;

use crate::reply::PledgeLineReply;
use crate::report::{TotalRow, scope_name, total_row};

/// Default number of flows or pledges in a page.
pub const PAGE_LIMIT_DEFAULT: usize = 100;

/// Most flows or pledges in a page.
pub const PAGE_LIMIT_MAX: usize = 1_000;

/// Longest cursor accepted, in hex digits: a pledges cursor of the longest partner id and
/// pledge id the gate lets through (a flows cursor is shorter). Anything longer is not one of
/// ours and is refused before it is decoded.
const CURSOR_LEN_MAX: usize = 2 * (2 + 8 + 4 + limits::PARTNER_ID_LEN_MAX + 4 + limits::ID_LEN_MAX);

/// A query parameter breaks a rule: the client fixes the request (HTTP 400). The front turns it
/// into a problem whose `field` is `parameter`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct QueryParamError {
    /// A stable code: `invalid_group_by`, `invalid_date`, `invalid_range`, `invalid_scope`,
    /// `invalid_kind`, `invalid_currency`, `invalid_partner`, `invalid_limit` or
    /// `invalid_cursor`.
    pub code: &'static str,
    /// The parameter to blame, as the API names it (`group_by`, `from`, ...).
    pub parameter: &'static str,
    /// The parameter and the rule, in one sentence that starts with the parameter's name.
    pub detail: String,
}

impl QueryParamError {
    fn new(code: &'static str, parameter: &'static str, rule: impl fmt::Display) -> Self {
        QueryParamError {
            code,
            parameter,
            detail: format!("{parameter} {rule}"),
        }
    }
}

/// Why cells did not make rows. Neither can follow from a request: each is a caller's bug or a
/// broken invariant of the fold, reported as an error rather than a panic or a clamped figure
/// (the front answers 500).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalyticsError {
    /// The caller read cells coarser than the query needs (see [`TotalsQuery::level`]): they
    /// lack a dimension it filters or groups by.
    #[error("a cell at the {got:?} level was given to a query that needs the {needed:?} level")]
    CellTooCoarse {
        /// The level the query needs.
        needed: CellLevel,
        /// The level of the cell given.
        got: CellLevel,
    },
    /// A sum left `Decimal`'s exact range. Cells are non-negative parts of direct totals, each
    /// capped at 10^26 by the fold, and no sum here adds more than the reference data's nodes'
    /// worth of them, so this does not happen while the cap holds.
    #[error("the sum of {what} leaves the exact decimal range")]
    Overflow {
        /// Which figure.
        what: &'static str,
    },
}

/// One dimension a total can be grouped by, besides its recipient, kind and currency. The
/// declaration order is the fixed order of the columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dimension {
    /// The submitting partner.
    Partner,
    /// The year of `occurred_on`, `"2020"`.
    Year,
    /// The quarter of `occurred_on`, `"2020-Q3"`.
    Quarter,
    /// The month of `occurred_on`, `"2020-09"`.
    Month,
    /// The grant: a pledge's id, a payment's pledge, parallel funding's grant id; else `""`.
    Grant,
    /// A pledge's sector, inherited by its payments; else `""`.
    Sector,
    /// The donor (parallel funding's source; a payment's own or its pledge's); else `""`.
    Donor,
}

impl Dimension {
    /// Every dimension, in column order.
    pub const ALL: [Dimension; 7] = [
        Dimension::Partner,
        Dimension::Year,
        Dimension::Quarter,
        Dimension::Month,
        Dimension::Grant,
        Dimension::Sector,
        Dimension::Donor,
    ];

    /// The name used in `group_by`, as a row's field and as a CSV column.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Partner => "partner",
            Dimension::Year => "year",
            Dimension::Quarter => "quarter",
            Dimension::Month => "month",
            Dimension::Grant => "grant",
            Dimension::Sector => "sector",
            Dimension::Donor => "donor",
        }
    }

    /// The dimension named `name`, the inverse of [`Dimension::as_str`].
    pub fn parse(name: &str) -> Option<Dimension> {
        Dimension::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// The coarsest level of cells that keeps this dimension.
    pub fn level(self) -> CellLevel {
        match self {
            Dimension::Partner | Dimension::Year => CellLevel::Year,
            Dimension::Quarter | Dimension::Month | Dimension::Grant => CellLevel::Month,
            Dimension::Sector | Dimension::Donor => CellLevel::Day,
        }
    }

    /// A row's value of this dimension (`None` when the row is not grouped by it).
    pub fn value_of(self, row: &TotalRow) -> Option<&str> {
        match self {
            Dimension::Partner => row.partner.as_deref(),
            Dimension::Year => row.year.as_deref(),
            Dimension::Quarter => row.quarter.as_deref(),
            Dimension::Month => row.month.as_deref(),
            Dimension::Grant => row.grant.as_deref(),
            Dimension::Sector => row.sector.as_deref(),
            Dimension::Donor => row.donor.as_deref(),
        }
    }

    fn names() -> String {
        Dimension::ALL.map(Dimension::as_str).join(", ")
    }
}

/// Parses `group_by`, a comma list of dimension names (spaces around a name are ignored), into
/// the dimensions in column order. An unknown, empty or repeated name is refused: a typo must not
/// silently give another grouping.
pub fn parse_group_by(text: &str) -> Result<Vec<Dimension>, QueryParamError> {
    let invalid = |rule: String| QueryParamError::new("invalid_group_by", "group_by", rule);
    let mut dimensions = Vec::new();
    for name in text.split(',').map(str::trim) {
        if name.is_empty() {
            return Err(invalid(format!(
                "{text:?} has an empty name; give a comma list of {}",
                Dimension::names()
            )));
        }
        let dimension = Dimension::parse(name).ok_or_else(|| {
            invalid(format!(
                "{name:?} is not a dimension; the dimensions are {}",
                Dimension::names()
            ))
        })?;
        if dimensions.contains(&dimension) {
            return Err(invalid(format!("names {name:?} twice")));
        }
        dimensions.push(dimension);
    }
    dimensions.sort_unstable();
    Ok(dimensions)
}

/// An inclusive range of `occurred_on` dates, open at either end when not given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Period {
    /// The first day counted.
    pub from: Option<Date>,
    /// The last day counted.
    pub to: Option<Date>,
}

impl Period {
    /// Parses `from` and `to` (ISO dates, `YYYY-MM-DD`); `from` after `to` is refused rather
    /// than read as an empty period, which is never what was meant.
    pub fn parse(from: Option<&str>, to: Option<&str>) -> Result<Period, QueryParamError> {
        let date = |parameter: &'static str, text: Option<&str>| {
            text.map(|text| {
                wire::parse_date(text).ok_or_else(|| {
                    QueryParamError::new(
                        "invalid_date",
                        parameter,
                        format_args!("{text:?} is not a date of the form YYYY-MM-DD"),
                    )
                })
            })
            .transpose()
        };
        let period = Period {
            from: date("from", from)?,
            to: date("to", to)?,
        };
        if let (Some(from), Some(to)) = (period.from, period.to)
            && from > to
        {
            return Err(QueryParamError::new(
                "invalid_range",
                "to",
                format_args!("{to} is before from {from}"),
            ));
        }
        Ok(period)
    }

    /// Whether `day` is in the period.
    pub fn contains(&self, day: Date) -> bool {
        self.from.is_none_or(|from| from <= day) && self.to.is_none_or(|to| day <= to)
    }

    /// The coarsest level whose periods the bounds fall on: Year when each bound is open or on
    /// a year's boundary (`from` a 1 January, `to` a 31 December), Month when on a month's,
    /// else Day. Cells of that level are whole inside or whole outside the period.
    pub fn level(&self) -> CellLevel {
        let from = self.from.map_or(CellLevel::Year, |from| {
            if from.ordinal() == 1 {
                CellLevel::Year
            } else if from.day() == 1 {
                CellLevel::Month
            } else {
                CellLevel::Day
            }
        });
        let to = self.to.map_or(CellLevel::Year, |to| {
            let last_of_month = to.next_day().is_none_or(|next| next.day() == 1);
            if last_of_month && to.month() == time::Month::December {
                CellLevel::Year
            } else if last_of_month {
                CellLevel::Month
            } else {
                CellLevel::Day
            }
        });
        from.max(to)
    }

    /// The periods to read at `level`: years at the Year level, months at the Month and Day
    /// levels (day cells are stored in monthly blocks); `None` when the period is unbounded.
    pub fn periods(&self, level: CellLevel) -> Option<Periods> {
        if self.from.is_none() && self.to.is_none() {
            return None;
        }
        Some(match level {
            CellLevel::Year => Periods::Years {
                first: self.from.map(Date::year),
                last: self.to.map(Date::year),
            },
            CellLevel::Month | CellLevel::Day => Periods::Months {
                first: self.from.map(Month::of),
                last: self.to.map(Month::of),
            },
        })
    }

    /// The records applied and rejected whose `occurred_on` is in the period, from the per-day
    /// counts of a ledger or a read model: the summary's `events_applied` and `events_rejected`.
    pub fn outcomes(&self, days: impl IntoIterator<Item = (Date, DayOutcomes)>) -> DayOutcomes {
        days.into_iter()
            .filter(|(day, _)| self.contains(*day))
            .fold(DayOutcomes::default(), |sum, (_, day)| DayOutcomes {
                // Counts of records in a log: u64 does not run out.
                applied: sum.applied.saturating_add(day.applied),
                rejected: sum.rejected.saturating_add(day.rejected),
            })
    }

    /// Whether a cell's flows are in the period, judged by the finest date the cell keeps. A
    /// coarser cell is judged by its month or year, which is exact when the period falls on
    /// that level's boundaries ([`Period::level`]), as the caller's choice of level ensures.
    fn admits(&self, cell: &CellRef<'_>) -> bool {
        match (cell.day, cell.month) {
            (Some(day), _) => self.contains(day),
            (None, Some(month)) => {
                self.from.is_none_or(|from| Month::of(from) <= month)
                    && self.to.is_none_or(|to| month <= Month::of(to))
            }
            (None, None) => {
                self.from.is_none_or(|from| from.year() <= cell.year)
                    && self.to.is_none_or(|to| cell.year <= to.year())
            }
        }
    }

    fn text(date: Option<Date>) -> Option<String> {
        date.map(|d| d.to_string())
    }
}

/// The years or months of cells a query reads, inclusive, open at an end given as `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Periods {
    /// Year blocks, for a query at the Year level.
    Years {
        /// The first year.
        first: Option<i32>,
        /// The last year.
        last: Option<i32>,
    },
    /// Month blocks, for a query at the Month or Day level.
    Months {
        /// The first month.
        first: Option<Month>,
        /// The last month.
        last: Option<Month>,
    },
}

impl Periods {
    /// Whether any of `year` is to be read.
    pub fn contains_year(&self, year: i32) -> bool {
        let (first, last) = match *self {
            Periods::Years { first, last } => (first, last),
            Periods::Months { first, last } => (first.map(Month::year), last.map(Month::year)),
        };
        first.is_none_or(|f| f <= year) && last.is_none_or(|l| year <= l)
    }

    /// Whether `month` is to be read.
    pub fn contains_month(&self, month: Month) -> bool {
        match *self {
            Periods::Years { .. } => self.contains_year(month.year()),
            Periods::Months { first, last } => {
                first.is_none_or(|f| f <= month) && last.is_none_or(|l| month <= l)
            }
        }
    }
}

/// The raw query parameters of `GET /v1/totals` (and of `fundflow totals`, `audit replay`),
/// as strings, before validation by [`TotalsQuery::parse`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotalsParams {
    /// `country`, `region`, `subregion`, `intermediate` or `global`; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// `pledged`, `paid`, `parallel_funding` or `in_kind`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// An ISO 4217 code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// A country's alpha-3 or an area's M49 code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A comma list of dimensions (see [`Dimension`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    /// A partner id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner: Option<String>,
    /// A grant id (empty: flows with no grant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// A sector (empty: flows with none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sector: Option<String>,
    /// A donor (empty: flows with none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub donor: Option<String>,
    /// The first `occurred_on` counted, `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The last `occurred_on` counted, `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// A validated totals query. The default is today's plain query: every scope, no filter, no
/// grouping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TotalsQuery {
    /// Only rows of this scope.
    pub scope: Option<Scope>,
    /// Only this kind.
    pub kind: Option<TotalKind>,
    /// Only this currency.
    pub currency: Option<CurrencyIndex>,
    /// Only the row of this country or area key.
    pub key: Option<String>,
    /// The dimensions grouped by, in column order, each once.
    pub group_by: Vec<Dimension>,
    /// Only this partner's flows.
    pub partner: Option<String>,
    /// Only flows of this grant (`""` is the value of flows without one).
    pub grant: Option<String>,
    /// Only flows of this sector.
    pub sector: Option<String>,
    /// Only flows of this donor.
    pub donor: Option<String>,
    /// Only flows whose `occurred_on` is in this period.
    pub period: Period,
}

impl TotalsQuery {
    /// Validates the raw parameters; each error names its parameter and the rule. `grant`,
    /// `sector` and `donor` are free text (empty included) and a `key` that names nothing
    /// matches nothing, as before.
    pub fn parse(params: &TotalsParams) -> Result<TotalsQuery, QueryParamError> {
        let scope = params
            .scope
            .as_deref()
            .map(|name| {
                Scope::parse(name).ok_or_else(|| {
                    let names = Scope::ALL.map(Scope::as_str).join(", ");
                    QueryParamError::new(
                        "invalid_scope",
                        "scope",
                        format_args!("{name:?} is not one of {names}"),
                    )
                })
            })
            .transpose()?;
        let kind = params
            .kind
            .as_deref()
            .map(|name| {
                TotalKind::parse(name).ok_or_else(|| {
                    let names = TotalKind::ALL.map(TotalKind::as_str).join(", ");
                    QueryParamError::new(
                        "invalid_kind",
                        "kind",
                        format_args!("{name:?} is not one of {names}"),
                    )
                })
            })
            .transpose()?;
        let currency = params
            .currency
            .as_deref()
            .map(|code| {
                fundflow_refdata::currency_by_code(code).ok_or_else(|| {
                    QueryParamError::new(
                        "invalid_currency",
                        "currency",
                        format_args!("{code:?} is not an ISO 4217 code"),
                    )
                })
            })
            .transpose()?;
        let group_by = params
            .group_by
            .as_deref()
            .map(parse_group_by)
            .transpose()?
            .unwrap_or_default();
        if let Some(partner) = &params.partner
            && !wire::is_valid_partner_id(partner)
        {
            return Err(QueryParamError::new(
                "invalid_partner",
                "partner",
                format_args!("{partner:?} is not a partner id ([a-z0-9][a-z0-9-]{{0,63}})"),
            ));
        }
        Ok(TotalsQuery {
            scope,
            kind,
            currency,
            key: params.key.clone(),
            group_by,
            partner: params.partner.clone(),
            grant: params.grant.clone(),
            sector: params.sector.clone(),
            donor: params.donor.clone(),
            period: Period::parse(params.from.as_deref(), params.to.as_deref())?,
        })
    }

    /// The coarsest level of cells that has every dimension the query groups or filters by,
    /// and whose periods its `from` and `to` fall on the boundaries of: Year for partner and
    /// year alone, Month for quarter, month or grant, Day for sector or donor or dates inside a
    /// month. Reading the coarsest level reads the fewest cells.
    pub fn level(&self) -> CellLevel {
        let filters = [
            (self.partner.is_some(), CellLevel::Year),
            (self.grant.is_some(), CellLevel::Month),
            (self.sector.is_some(), CellLevel::Day),
            (self.donor.is_some(), CellLevel::Day),
        ];
        self.group_by
            .iter()
            .map(|d| d.level())
            .chain(filters.into_iter().filter(|(on, _)| *on).map(|(_, l)| l))
            .fold(self.period.level(), CellLevel::max)
    }

    /// Whether the query asks for nothing but what today's totals answer (no grouping, no
    /// partner, grant, sector, donor or period): then its rows are [`crate::total_rows`]'s, read
    /// from the direct totals.
    pub fn is_plain(&self) -> bool {
        self.group_by.is_empty()
            && self.partner.is_none()
            && self.grant.is_none()
            && self.sector.is_none()
            && self.donor.is_none()
            && self.period == Period::default()
    }

    /// The years or months to read at [`TotalsQuery::level`]; `None`: all.
    pub fn periods(&self) -> Option<Periods> {
        self.period.periods(self.level())
    }

    fn grouped(&self, dimension: Dimension) -> bool {
        self.group_by.contains(&dimension)
    }

    /// Whether a cell's flows count, by every filter that is not about the recipient (those
    /// apply to the roll-up's nodes).
    fn admits(&self, cell: &CellRef<'_>) -> bool {
        let matches = |wanted: &Option<String>, value: Option<&str>| {
            wanted.as_deref().is_none_or(|w| value == Some(w))
        };
        self.kind.is_none_or(|k| cell.kind == k)
            && self.currency.is_none_or(|c| cell.currency == c)
            && matches(&self.partner, Some(cell.partner))
            && matches(&self.grant, cell.grant)
            && matches(&self.sector, cell.sector)
            && matches(&self.donor, cell.donor)
            && self.period.admits(cell)
    }

    /// Whether a node of a cell's roll-up is reported.
    fn reports(&self, node: Node) -> bool {
        self.scope.is_none_or(|s| node.scope() == s)
            && self.key.as_deref().is_none_or(|k| node.key() == k)
    }
}

/// The dimensions of a row, `None` for a dimension not grouped by; their field order is the
/// column order, which the derived `Ord` sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Dims<'a> {
    partner: Option<&'a str>,
    year: Option<i32>,
    quarter: Option<(i32, u8)>,
    month: Option<Month>,
    grant: Option<&'a str>,
    sector: Option<&'a str>,
    donor: Option<&'a str>,
}

/// A row's key before formatting: recipient, dimensions, kind, currency.
type RowKey<'a> = (Node, Dims<'a>, TotalKind, CurrencyIndex);

/// The total rows of a query, from cells at [`TotalsQuery::level`] or finer: each cell that
/// passes the filters is added to its recipient and every M49 area above it (those of the
/// query's scope and key), grouped by the query's dimensions, kind and currency; zero rows are
/// dropped, and rows are sorted by scope, key, dimensions, kind and currency. Without grouping
/// or the new filters, the rows are [`crate::total_rows`]'s.
pub fn grouped_total_rows<'a>(
    cells: impl IntoIterator<Item = CellRef<'a>>,
    query: &TotalsQuery,
) -> Result<Vec<TotalRow>, AnalyticsError> {
    let overflow = || AnalyticsError::Overflow { what: "a total" };
    let needed = query.level();
    let [partner, year, quarter, month, grant, sector, donor] =
        Dimension::ALL.map(|d| query.grouped(d));
    // Sum per recipient as allocated first, then roll the sums up: a query that reads finer
    // cells than it groups by (a replay's day cells, a period cut by day) rolls up each sum
    // once rather than each cell.
    let mut direct: FxHashMap<RowKey<'a>, Total> = FxHashMap::default();
    for cell in cells {
        check_level(&cell, needed)?;
        if !query.admits(&cell) {
            continue;
        }
        let dims = Dims {
            partner: partner.then_some(cell.partner),
            year: year.then_some(cell.year),
            quarter: cell
                .month
                .filter(|_| quarter)
                .map(|m| (m.year(), m.quarter())),
            month: cell.month.filter(|_| month),
            grant: cell.grant.filter(|_| grant),
            sector: cell.sector.filter(|_| sector),
            donor: cell.donor.filter(|_| donor),
        };
        let sum = direct
            .entry((cell.node, dims, cell.kind, cell.currency))
            .or_default();
        *sum = add(sum, &cell.total).ok_or_else(overflow)?;
    }
    let mut rolled: FxHashMap<RowKey<'a>, Total> = FxHashMap::default();
    for ((node, dims, kind, currency), total) in direct {
        for at in node.rollup().filter(|&n| query.reports(n)) {
            let sum = rolled.entry((at, dims, kind, currency)).or_default();
            *sum = add(sum, &total).ok_or_else(overflow)?;
        }
    }
    let mut rows: Vec<(RowKey<'a>, Total)> = rolled
        .into_iter()
        .filter(|(_, total)| !is_zero(total))
        .collect();
    // The order of `total_rows`: scope, key, then the dimensions, kind and currency code.
    let order = |(node, dims, kind, currency): &RowKey<'a>| {
        (
            node.scope(),
            node.key(),
            *dims,
            *kind,
            currency_code(*currency),
        )
    };
    rows.sort_unstable_by(|(a, _), (b, _)| order(a).cmp(&order(b)));
    Ok(rows
        .into_iter()
        .map(|((node, dims, kind, currency), total)| TotalRow {
            partner: dims.partner.map(str::to_owned),
            year: dims.year.map(|y| format!("{y:04}")),
            quarter: dims.quarter.map(|(y, q)| format!("{y:04}-Q{q}")),
            month: dims.month.map(|m| m.to_string()),
            grant: dims.grant.map(str::to_owned),
            sector: dims.sector.map(str::to_owned),
            donor: dims.donor.map(str::to_owned),
            ..total_row(node, kind, currency, &total)
        })
        .collect())
}

/// Refuses a cell coarser than `needed`: it lacks a dimension the query uses, and guessing it
/// would give wrong rows.
fn check_level(cell: &CellRef<'_>, needed: CellLevel) -> Result<(), AnalyticsError> {
    let got = cell.level();
    if got < needed {
        return Err(AnalyticsError::CellTooCoarse { needed, got });
    }
    Ok(())
}

/// `a + b`, part by part, or `None` when a part leaves `Decimal`'s range. Never clamped: a
/// clamped total would be a wrong figure that looks right.
fn add(a: &Total, b: &Total) -> Option<Total> {
    Some(Total {
        amount: a.amount.checked_add(b.amount)?,
        usd_equivalent: a.usd_equivalent.checked_add(b.usd_equivalent)?,
        unconverted: a.unconverted.checked_add(b.unconverted)?,
    })
}

fn is_zero(total: &Total) -> bool {
    total.amount.is_zero() && total.usd_equivalent.is_zero() && total.unconverted.is_zero()
}

/// Whether none of a total's figures is below zero, as every sum of flows is.
fn is_non_negative(total: &Total) -> bool {
    [total.amount, total.usd_equivalent, total.unconverted]
        .iter()
        .all(|figure| *figure >= Decimal::ZERO)
}

/// The total rows as CSV: `scope,key,name`, one column per dimension grouped by (in column
/// order), then `kind,currency,amount,usd_equivalent,unconverted`. Without grouping, the columns
/// of `fundflow totals --format csv` plus the name, as before.
pub fn totals_csv(rows: &[TotalRow], group_by: &[Dimension]) -> Result<Vec<u8>, csv::Error> {
    let mut dimensions = group_by.to_vec();
    dimensions.sort_unstable();
    dimensions.dedup();
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["scope", "key", "name"];
    header.extend(dimensions.iter().map(|d| d.as_str()));
    header.extend([
        "kind",
        "currency",
        "amount",
        "usd_equivalent",
        "unconverted",
    ]);
    writer.write_record(&header)?;
    for row in rows {
        let mut record = vec![row.scope.as_str(), &row.key, &row.name];
        record.extend(dimensions.iter().map(|d| d.value_of(row).unwrap_or("")));
        record.extend([
            row.kind.as_str(),
            &row.currency,
            &row.amount,
            &row.usd_equivalent,
            &row.unconverted,
        ]);
        writer.write_record(&record)?;
    }
    into_bytes(writer)
}

fn into_bytes(writer: csv::Writer<Vec<u8>>) -> Result<Vec<u8>, csv::Error> {
    writer
        .into_inner()
        .map_err(|err| csv::Error::from(err.into_error()))
}

/// USD summed exactly in cents. A sum of USD across currencies is not bounded by the fold's
/// cap (which is per recipient, kind and currency): a few hundred currencies' worth of capped
/// totals can leave `Decimal`'s range, but not an `i128` of cents (about 1.7 × 10^38).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cents(i128);

impl Cents {
    /// `usd` in cents. USD figures are at cents already (conversions round there); a finer one
    /// would be rounded half-even, as conversions are.
    fn of(usd: Decimal) -> Cents {
        let rounded = usd.round_dp_with_strategy(USD_SCALE, RoundingStrategy::MidpointNearestEven);
        // The scale is at most USD_SCALE after rounding, and a 96-bit mantissa times 100 fits.
        let factor = 10i128.pow(USD_SCALE.saturating_sub(rounded.scale()));
        Cents(rounded.mantissa().saturating_mul(factor))
    }

    fn plus(self, other: Cents) -> Option<Cents> {
        self.0.checked_add(other.0).map(Cents)
    }

    /// At two decimals, as `format_at_scale(_, USD_SCALE)` writes a `Decimal`.
    fn text(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        format!("{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

/// `numerator / denominator` (in the same unit) at four decimals, rounded half-even, computed
/// on integers so that the quotient is rounded once, exactly (a `Decimal` division rounds at 28
/// digits first, which can move a quotient onto a midpoint). `None` when the denominator is not
/// positive, or the numerator times 10^4 leaves an `i128`, which a sum of capped totals does not
/// (it is below 10^34 cents).
fn ratio_4dp(numerator: Cents, denominator: Cents) -> Option<String> {
    if denominator.0 <= 0 {
        return None;
    }
    let scaled = numerator.0.checked_mul(10_000)?;
    let (mut quotient, remainder) = (scaled / denominator.0, scaled % denominator.0);
    // Twice a remainder below the denominator fits, the denominator being below i128::MAX / 2.
    let twice = remainder.saturating_mul(2);
    if twice > denominator.0 || (twice == denominator.0 && quotient % 2 != 0) {
        quotient += 1;
    }
    let sign = if quotient < 0 { "-" } else { "" };
    let abs = quotient.unsigned_abs();
    Some(format!("{sign}{}.{:04}", abs / 10_000, abs % 10_000))
}

/// The parameters of `GET /v1/summary`: only the period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SummaryQuery {
    /// The period summed.
    pub period: Period,
}

impl SummaryQuery {
    /// Validates `from` and `to` (see [`Period::parse`]).
    pub fn parse(from: Option<&str>, to: Option<&str>) -> Result<SummaryQuery, QueryParamError> {
        Ok(SummaryQuery {
            period: Period::parse(from, to)?,
        })
    }

    /// The level of cells to read: at least Month, since the summary counts grants; Day when
    /// the period does not fall on month boundaries.
    pub fn level(&self) -> CellLevel {
        self.period.level().max(CellLevel::Month)
    }

    /// The months (or days' months) to read; `None`: all.
    pub fn periods(&self) -> Option<Periods> {
        self.period.periods(self.level())
    }

    /// Whether the period is of whole years (or open at the ends), so that a read model's
    /// summary parts per year give its summary ([`summary_of_parts`]) without its cells.
    pub fn on_year_boundaries(&self) -> bool {
        self.period.level() == CellLevel::Year
    }
}

/// `GET /v1/summary`: the programme's figures for a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryReply {
    /// The checkpoint the figures are at.
    pub as_of_seq: u64,
    /// The period's first day, or `null` for open.
    pub from: Option<String>,
    /// The period's last day, or `null` for open.
    pub to: Option<String>,
    /// One entry per kind, all four, in report order.
    pub by_kind: Vec<KindSummary>,
    /// Distinct countries with a non-zero paid, in-kind or parallel-funding total.
    pub countries_benefiting: u64,
    /// The distinct top-level M49 regions (Africa `002`, Americas `019`, Asia `142`, Europe
    /// `150`, Oceania `009`) in which the benefiting countries, and the areas that received
    /// paid, in-kind or parallel funding directly, lie; sorted by key. An allocation to the World
    /// (`001`) lies in no region.
    pub regions: Vec<RegionRef>,
    /// Distinct partners with a non-zero total of any kind.
    pub partners: u64,
    /// Distinct non-empty grants with a non-zero total of any kind.
    pub grants: u64,
    /// Records applied whose `occurred_on` is in the period (reversals included).
    pub events_applied: u64,
    /// Records rejected whose `occurred_on` is in the period.
    pub events_rejected: u64,
    /// In-kind quantities donated in the period, per item and unit, sorted.
    pub in_kind_items: Vec<ItemQuantity>,
}

/// The figures of one kind in a summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindSummary {
    /// `pledged`, `paid`, `parallel_funding` or `in_kind`.
    pub kind: String,
    /// The USD equivalent of the converted part, over every currency.
    pub usd_equivalent: String,
    /// What came without a USD rate, per currency (sorted by code; none when all converted).
    pub unconverted: Vec<CurrencyAmount>,
    /// Distinct recipient countries with a non-zero total of this kind.
    pub countries: u64,
}

/// An amount in a currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencyAmount {
    /// ISO 4217 code.
    pub currency: String,
    /// At the currency's minor unit.
    pub amount: String,
}

/// An M49 area, by key and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionRef {
    /// The three-digit M49 code.
    pub key: String,
    /// Its English name.
    pub name: String,
}

/// A quantity of goods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemQuantity {
    /// Item code or name.
    pub item: String,
    /// Unit.
    pub unit: String,
    /// Decimal string without trailing zeros.
    pub quantity: String,
}

/// Kinds whose flows reach their recipients: a pledge alone benefits no one yet.
const BENEFITING: [TotalKind; 3] = [
    TotalKind::Paid,
    TotalKind::InKind,
    TotalKind::ParallelFunding,
];

/// The summary of a period from cells at [`SummaryQuery::level`] or finer and the in-kind
/// quantity cells; `outcomes` are the period's applied and rejected counts (see
/// [`Period::outcomes`]). The cells and quantities outside the period are left out, and the rest
/// summed by [`summary_of_parts`].
pub fn summary<'a>(
    cells: impl IntoIterator<Item = CellRef<'a>>,
    quantities: impl IntoIterator<Item = QuantityCellRef<'a>>,
    outcomes: DayOutcomes,
    query: &SummaryQuery,
    as_of_seq: u64,
) -> Result<SummaryReply, AnalyticsError> {
    let needed = query.level();
    let mut too_coarse = None;
    let parts = cells
        .into_iter()
        .filter(|cell| {
            if too_coarse.is_some() {
                return false;
            }
            if let Err(err) = check_level(cell, needed) {
                too_coarse = Some(err);
                return false;
            }
            query.period.admits(cell)
        })
        .flat_map(|cell| cell.summary_parts());
    let items = quantities
        .into_iter()
        .filter(|cell| query.period.contains(cell.day))
        .map(|cell| cell.summary_part());
    let reply = summary_of_parts(parts.chain(items), outcomes, query, as_of_seq);
    match too_coarse {
        Some(err) => Err(err),
        None => reply,
    }
}

/// The summary of a period from the [`SummaryPart`]s of its flows and in-kind goods, all of them
/// within the period (a read model's parts of the years of a period on year boundaries, or the
/// parts of its cells), summed by [`SummarySums`].
pub fn summary_of_parts<'a>(
    parts: impl IntoIterator<Item = SummaryPart<'a>>,
    outcomes: DayOutcomes,
    query: &SummaryQuery,
    as_of_seq: u64,
) -> Result<SummaryReply, AnalyticsError> {
    let mut sums = SummarySums::default();
    for part in parts {
        sums.add(part)?;
    }
    sums.reply(outcomes, query, as_of_seq)
}

/// The sums a period's summary is read from, added one [`SummaryPart`] at a time. Every count of
/// the reply is of these sums: a figure counts when its sum per (recipient, kind, currency), or
/// per (partner or grant, kind, currency), is not zero, so a reversal that removed a country's
/// only flow removes the country. Allocations to an M49 area count no country, and do count the
/// area's region.
///
/// Partners and grants are counted, not summed: every flow's amount is positive and a reversal
/// takes a flow out of exactly the cells it counted in, so every part is a sum of non-negative
/// figures, and a sum of parts is zero only when each part is. A partner or grant therefore
/// counts when any of its parts is not zero, and a set of names is all that needs keeping (it
/// was the larger half of a year's summary, with tens of thousands of grants).
#[derive(Debug, Default)]
pub struct SummarySums<'a> {
    by_node: FxHashMap<(TotalKind, Node, CurrencyIndex), Total>,
    partners: FxHashSet<&'a str>,
    grants: FxHashSet<&'a str>,
    items: BTreeMap<(&'a str, &'a str), Decimal>,
}

impl<'a> SummarySums<'a> {
    /// Adds one part to its sum.
    pub fn add(&mut self, part: SummaryPart<'a>) -> Result<(), AnalyticsError> {
        match part {
            SummaryPart::Recipient {
                node,
                kind,
                currency,
                total,
            } => sum_into(&mut self.by_node, (kind, node, currency), total),
            SummaryPart::Partner { partner, total, .. } => {
                debug_assert!(is_non_negative(&total), "a part is a sum of positive flows");
                if !is_zero(&total) {
                    self.partners.insert(partner);
                }
                Ok(())
            }
            SummaryPart::Grant { grant, total, .. } => {
                debug_assert!(is_non_negative(&total), "a part is a sum of positive flows");
                if !is_zero(&total) {
                    self.grants.insert(grant);
                }
                Ok(())
            }
            SummaryPart::Item {
                item,
                unit,
                quantity,
            } => {
                let sum = self.items.entry((item, unit)).or_default();
                *sum = sum.checked_add(quantity).ok_or(AnalyticsError::Overflow {
                    what: "an in-kind quantity",
                })?;
                Ok(())
            }
        }
    }

    /// The summary of the sums; `outcomes` are the period's applied and rejected counts (see
    /// [`Period::outcomes`]).
    pub fn reply(
        self,
        outcomes: DayOutcomes,
        query: &SummaryQuery,
        as_of_seq: u64,
    ) -> Result<SummaryReply, AnalyticsError> {
        let overflow = |what| move || AnalyticsError::Overflow { what };
        let SummarySums {
            by_node,
            partners,
            grants,
            items,
        } = self;
        let mut by_kind = Vec::with_capacity(TotalKind::ALL.len());
        for kind in TotalKind::ALL {
            let mut usd = Cents::default();
            let mut unconverted: BTreeMap<&'static str, Decimal> = BTreeMap::new();
            let mut countries: BTreeSet<Node> = BTreeSet::new();
            let of_kind = by_node
                .iter()
                .filter(|((k, _, _), total)| *k == kind && !is_zero(total));
            for ((_, node, currency), total) in of_kind {
                if node.scope() == Scope::Country {
                    countries.insert(*node);
                }
                usd = usd
                    .plus(Cents::of(total.usd_equivalent))
                    .ok_or_else(overflow("a kind's USD equivalent"))?;
                if !total.unconverted.is_zero() {
                    let sum = unconverted.entry(currency_code(*currency)).or_default();
                    *sum = sum
                        .checked_add(total.unconverted)
                        .ok_or_else(overflow("an unconverted amount"))?;
                }
            }
            by_kind.push(KindSummary {
                kind: kind.as_str().to_owned(),
                usd_equivalent: usd.text(),
                unconverted: unconverted
                    .into_iter()
                    .map(|(currency, amount)| CurrencyAmount {
                        currency: currency.to_owned(),
                        amount: format_at_scale(amount, minor_unit(currency)),
                    })
                    .collect(),
                countries: count(countries.len()),
            });
        }

        let benefiting = by_node
            .iter()
            .filter(|((kind, _, _), total)| BENEFITING.contains(kind) && !is_zero(total))
            .map(|((_, node, _), _)| *node);
        let (mut countries, mut regions) = (BTreeSet::new(), BTreeSet::new());
        for node in benefiting {
            if node.scope() == Scope::Country {
                countries.insert(node);
            }
            if let Some(region) = node.rollup().find(|n| n.scope() == Scope::Region) {
                regions.insert((region.key(), region));
            }
        }

        Ok(SummaryReply {
            as_of_seq,
            from: Period::text(query.period.from),
            to: Period::text(query.period.to),
            by_kind,
            countries_benefiting: count(countries.len()),
            regions: regions
                .into_iter()
                .map(|(key, region)| RegionRef {
                    key: key.to_owned(),
                    name: region.name().to_owned(),
                })
                .collect(),
            partners: count(partners.len()),
            grants: count(grants.len()),
            events_applied: outcomes.applied,
            events_rejected: outcomes.rejected,
            in_kind_items: items
                .into_iter()
                .filter(|(_, quantity)| !quantity.is_zero())
                .map(|((item, unit), quantity)| ItemQuantity {
                    item: item.to_owned(),
                    unit: unit.to_owned(),
                    quantity: format_quantity(quantity),
                })
                .collect(),
        })
    }
}

/// Adds a part to its sum. The first part of a key is taken as it is: a year's parts are
/// already summed, so the summary of one year adds nothing.
fn sum_into<K: std::hash::Hash + Eq>(
    map: &mut FxHashMap<K, Total>,
    key: K,
    total: Total,
) -> Result<(), AnalyticsError> {
    match map.entry(key) {
        Entry::Vacant(vacant) => {
            vacant.insert(total);
        }
        Entry::Occupied(mut occupied) => {
            let sum = occupied.get_mut();
            *sum = add(sum, &total).ok_or(AnalyticsError::Overflow {
                what: "a recipient's total",
            })?;
        }
    }
    Ok(())
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// `GET /v1/flows`: a page of the flows behind the totals, newest `occurred_on` first, then
/// highest seq first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowsReply {
    /// The checkpoint the page is at (a cursor pins later pages to the first page's).
    pub as_of_seq: u64,
    /// The page.
    pub flows: Vec<FlowItem>,
    /// The cursor of the next page, `null` after the last.
    pub next_cursor: Option<String>,
}

/// Whether a flow still counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowStatus {
    /// Applied and counting in the totals.
    Applied,
    /// Undone by a reversal: counts in no total and no period.
    Reversed,
}

impl FlowStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowStatus::Applied => "applied",
            FlowStatus::Reversed => "reversed",
        }
    }
}

/// One applied monetary or in-kind event (reversals are not items: they mark their target).
/// Amounts are strings at the currency's minor unit, USD at cents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowItem {
    /// Where it is in the log.
    pub seq: u64,
    /// Its event id.
    pub event_id: String,
    /// The submitting partner.
    pub partner: String,
    /// The event's type, as in the JSON event object (`pledge_recorded`, ...).
    #[serde(rename = "type")]
    pub event_type: String,
    /// The partner's own id of it: its `pledge_id`, `payment_id`, `funding_id` or
    /// `donation_id`.
    pub own_id: String,
    /// The totals kind it counts in (`pledged`, `paid`, `parallel_funding`, `in_kind`).
    pub kind: String,
    /// ISO date.
    pub occurred_on: String,
    /// RFC 3339, UTC, as the gateway recorded it.
    pub recorded_at: String,
    /// The donor it counts under (`""` for none).
    pub donor: String,
    /// The grant it counts under (`""` for none).
    pub grant: String,
    /// The sector it counts under (`""` for none).
    pub sector: String,
    /// Free text (`""` for none).
    pub description: String,
    /// ISO 4217 code.
    pub currency: String,
    /// The whole amount.
    pub amount: String,
    /// USD per unit of the currency, as given; `null` without a rate.
    pub usd_rate: Option<String>,
    /// The date of the rate; `null` without a rate.
    pub usd_rate_date: Option<String>,
    /// Where the rate comes from; `null` without a rate.
    pub usd_rate_source: Option<String>,
    /// The sum of the allocations' USD equivalents; `null` without a rate.
    pub usd_equivalent: Option<String>,
    /// Applied or reversed.
    pub status: FlowStatus,
    /// The reversal's event id; `null` unless reversed.
    pub reversed_by: Option<String>,
    /// The reversal's seq; `null` unless reversed.
    pub reversed_seq: Option<u64>,
    /// The reversal's reason; `null` unless reversed.
    pub reason: Option<String>,
    /// The recipients' shares, in the event's order.
    pub allocations: Vec<FlowAllocation>,
}

/// One recipient's share of a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowAllocation {
    /// The recipient's scope.
    #[serde(with = "scope_name")]
    pub scope: Scope,
    /// Its alpha-3 or M49 code.
    pub key: String,
    /// Its name.
    pub name: String,
    /// The receiving organisation (`""` for none).
    pub organisation: String,
    /// The share, in the flow's currency.
    pub value: String,
    /// The share in USD (value × rate, half-even to cents); `null` without a rate.
    pub usd_equivalent: Option<String>,
    /// In-kind goods; empty for monetary kinds.
    pub items: Vec<ItemQuantity>,
}

/// The columns of [`flows_csv`].
const FLOW_COLUMNS: [&str; 29] = [
    "seq",
    "event_id",
    "partner",
    "type",
    "own_id",
    "kind",
    "occurred_on",
    "recorded_at",
    "donor",
    "grant",
    "sector",
    "description",
    "currency",
    "amount",
    "usd_rate",
    "usd_rate_date",
    "usd_rate_source",
    "usd_equivalent",
    "status",
    "reversed_by",
    "reason",
    "allocation",
    "recipient_scope",
    "recipient",
    "recipient_name",
    "organisation",
    "value",
    "value_usd",
    "items",
];

/// The flows as CSV, one row per allocation (the flow's columns repeated; `allocation` is the
/// allocation's index from 0, as in `allocations[0]`), a `null` as an empty cell, and the items
/// as `item:unit:quantity` joined by `; `. A flow without allocations, which the fold never
/// applies, would still get one row, so that no flow is lost from the file.
pub fn flows_csv(flows: &[FlowItem]) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(FLOW_COLUMNS)?;
    for flow in flows {
        let seq = flow.seq.to_string();
        let head = [
            seq.as_str(),
            &flow.event_id,
            &flow.partner,
            &flow.event_type,
            &flow.own_id,
            &flow.kind,
            &flow.occurred_on,
            &flow.recorded_at,
            &flow.donor,
            &flow.grant,
            &flow.sector,
            &flow.description,
            &flow.currency,
            &flow.amount,
            text(&flow.usd_rate),
            text(&flow.usd_rate_date),
            text(&flow.usd_rate_source),
            text(&flow.usd_equivalent),
            flow.status.as_str(),
            text(&flow.reversed_by),
            text(&flow.reason),
        ];
        if flow.allocations.is_empty() {
            let mut record = head.to_vec();
            record.extend([""; FLOW_COLUMNS.len() - 21]);
            writer.write_record(&record)?;
        }
        for (index, allocation) in flow.allocations.iter().enumerate() {
            let index = index.to_string();
            let items = items_text(&allocation.items);
            let mut record = head.to_vec();
            record.extend([
                index.as_str(),
                allocation.scope.as_str(),
                &allocation.key,
                &allocation.name,
                &allocation.organisation,
                &allocation.value,
                text(&allocation.usd_equivalent),
                &items,
            ]);
            writer.write_record(&record)?;
        }
    }
    into_bytes(writer)
}

fn text(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("")
}

fn items_text(items: &[ItemQuantity]) -> String {
    items
        .iter()
        .map(|i| format!("{}:{}:{}", i.item, i.unit, i.quantity))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `GET /v1/pledges`: a page of the pledge book, in (partner, pledge id) order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PledgesReply {
    /// The checkpoint the page is at.
    pub as_of_seq: u64,
    /// The page.
    pub pledges: Vec<PledgeItem>,
    /// The cursor of the next page, `null` after the last.
    pub next_cursor: Option<String>,
}

/// One pledge of the book: its balance per recipient and the parallel funding it drew.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PledgeItem {
    /// Whose pledge.
    pub partner: String,
    /// The partner's id of it, also the grant id parallel funding names.
    pub pledge_id: String,
    /// Who pledges (`""` for none).
    pub donor: String,
    /// What for (`""` for none).
    pub sector: String,
    /// ISO date.
    pub occurred_on: String,
    /// ISO 4217 code of the pledge and its payments.
    pub currency: String,
    /// Promised, over the recipients.
    pub pledged: String,
    /// Paid so far, over the recipients.
    pub paid: String,
    /// Still to pay, over the recipients.
    pub outstanding: String,
    /// The pledge's USD equivalent at its own rate; `null` without one.
    pub pledged_usd: Option<String>,
    /// The payments' own USD equivalents, summed; `null` when a payment came without a rate.
    pub paid_usd: Option<String>,
    /// What is outstanding per recipient at the pledge's rate (each half-even to cents), summed;
    /// `null` without a rate. Payments convert at their own rates, so this need not equal
    /// `pledged_usd - paid_usd`.
    pub outstanding_usd: Option<String>,
    /// Per recipient.
    pub lines: Vec<PledgeLineReply>,
    /// The parallel funding whose grant is this pledge's id, all partners, per currency (sorted
    /// by code).
    pub parallel_funding: Vec<FundingPart>,
    /// The USD equivalent of the converted parts of `parallel_funding`.
    pub parallel_funding_usd: String,
    /// `parallel_funding_usd / pledged_usd`, four decimals, rounded half-even; `null` when
    /// `pledged_usd` is `null` or zero.
    pub leverage: Option<String>,
}

/// The parallel funding of a grant in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundingPart {
    /// ISO 4217 code.
    pub currency: String,
    /// Everything, in `currency`.
    pub amount: String,
    /// The USD equivalent of the converted part.
    pub usd_equivalent: String,
    /// The part with no USD rate, in `currency` (not in `usd_equivalent`, nor in the leverage).
    pub unconverted: String,
}

/// The pledge book's item of `row`, with `funding` the parallel funding that names its id
/// (`Ledger::grant_funding`), one entry per currency.
pub fn pledge_item(
    row: &PledgeRow,
    funding: &[(CurrencyIndex, Total)],
) -> Result<PledgeItem, AnalyticsError> {
    let overflow = |what| move || AnalyticsError::Overflow { what };
    let currency = currency_code(row.currency);
    let minor = minor_unit(currency);
    let money = |d: Decimal| format_at_scale(d, minor);
    let (mut pledged, mut paid) = (Decimal::ZERO, Decimal::ZERO);
    let mut outstanding_usd = row.usd_rate.map(|_| Cents::default());
    let mut lines = Vec::with_capacity(row.lines.len());
    for line in &row.lines {
        // A pledge's lines add up to its amount, a parsed decimal: these sums fit.
        pledged = pledged
            .checked_add(line.pledged)
            .ok_or_else(overflow("a pledge"))?;
        paid = paid
            .checked_add(line.paid)
            .ok_or_else(overflow("a pledge's payments"))?;
        if let (Some(sum), Some(rate)) = (outstanding_usd.as_mut(), row.usd_rate) {
            // At most the line's pledged USD, which the fold converted at this rate.
            let usd = to_usd(line.outstanding(), rate).ok_or_else(overflow("outstanding USD"))?;
            *sum = sum
                .plus(Cents::of(usd))
                .ok_or_else(overflow("outstanding USD"))?;
        }
        lines.push(PledgeLineReply {
            scope: line.node.scope(),
            key: line.node.key().to_owned(),
            name: line.node.name().to_owned(),
            pledged: money(line.pledged),
            paid: money(line.paid),
            outstanding: money(line.outstanding()),
        });
    }
    let outstanding = pledged
        .checked_sub(paid)
        .ok_or_else(overflow("outstanding"))?;
    let mut parts: Vec<(&'static str, &Total)> = funding
        .iter()
        .map(|(currency, total)| (currency_code(*currency), total))
        .collect();
    parts.sort_unstable_by_key(|(code, _)| *code);
    let mut funding_usd = Cents::default();
    for (_, total) in &parts {
        funding_usd = funding_usd
            .plus(Cents::of(total.usd_equivalent))
            .ok_or_else(overflow("parallel funding USD"))?;
    }
    let pledged_usd = row.pledged_usd.map(Cents::of);
    Ok(PledgeItem {
        partner: row.partner_id.clone(),
        pledge_id: row.pledge_id.clone(),
        donor: row.donor.clone(),
        sector: row.sector.clone(),
        occurred_on: row.occurred_on.to_string(),
        currency: currency.to_owned(),
        pledged: money(pledged),
        paid: money(paid),
        outstanding: money(outstanding),
        pledged_usd: pledged_usd.map(Cents::text),
        paid_usd: (row.payments_unconverted == 0).then(|| Cents::of(row.paid_usd).text()),
        outstanding_usd: outstanding_usd.map(Cents::text),
        lines,
        parallel_funding: parts
            .into_iter()
            .map(|(code, total)| {
                let minor = minor_unit(code);
                FundingPart {
                    currency: code.to_owned(),
                    amount: format_at_scale(total.amount, minor),
                    usd_equivalent: format_at_scale(total.usd_equivalent, USD_SCALE),
                    unconverted: format_at_scale(total.unconverted, minor),
                }
            })
            .collect(),
        parallel_funding_usd: funding_usd.text(),
        leverage: pledged_usd.and_then(|p| ratio_4dp(funding_usd, p)),
    })
}

/// The columns of [`pledges_csv`].
const PLEDGE_COLUMNS: [&str; 22] = [
    "partner",
    "pledge_id",
    "donor",
    "sector",
    "occurred_on",
    "currency",
    "pledged",
    "paid",
    "outstanding",
    "pledged_usd",
    "paid_usd",
    "outstanding_usd",
    "parallel_funding",
    "parallel_funding_usd",
    "leverage",
    "line",
    "recipient_scope",
    "recipient",
    "recipient_name",
    "line_pledged",
    "line_paid",
    "line_outstanding",
];

/// The pledges as CSV, one row per pledge line (the pledge's columns repeated; `line` is the
/// line's index from 0), a `null` as an empty cell, and the parallel funding as
/// `currency:amount` joined by `; `.
pub fn pledges_csv(pledges: &[PledgeItem]) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(PLEDGE_COLUMNS)?;
    for pledge in pledges {
        let funding = pledge
            .parallel_funding
            .iter()
            .map(|p| format!("{}:{}", p.currency, p.amount))
            .collect::<Vec<_>>()
            .join("; ");
        let head = [
            pledge.partner.as_str(),
            &pledge.pledge_id,
            &pledge.donor,
            &pledge.sector,
            &pledge.occurred_on,
            &pledge.currency,
            &pledge.pledged,
            &pledge.paid,
            &pledge.outstanding,
            text(&pledge.pledged_usd),
            text(&pledge.paid_usd),
            text(&pledge.outstanding_usd),
            &funding,
            &pledge.parallel_funding_usd,
            text(&pledge.leverage),
        ];
        if pledge.lines.is_empty() {
            let mut record = head.to_vec();
            record.extend([""; PLEDGE_COLUMNS.len() - 15]);
            writer.write_record(&record)?;
        }
        for (index, line) in pledge.lines.iter().enumerate() {
            let index = index.to_string();
            let mut record = head.to_vec();
            record.extend([
                index.as_str(),
                line.scope.as_str(),
                &line.key,
                &line.name,
                &line.pledged,
                &line.paid,
                &line.outstanding,
            ]);
            writer.write_record(&record)?;
        }
    }
    into_bytes(writer)
}

/// Parses `limit`, the size of a page of flows or pledges: [`PAGE_LIMIT_DEFAULT`] when absent,
/// 1 to [`PAGE_LIMIT_MAX`] otherwise.
pub fn parse_limit(text: Option<&str>) -> Result<usize, QueryParamError> {
    let Some(text) = text else {
        return Ok(PAGE_LIMIT_DEFAULT);
    };
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=PAGE_LIMIT_MAX).contains(n))
        .ok_or_else(|| {
            QueryParamError::new(
                "invalid_limit",
                "limit",
                format_args!("{text:?} is not a whole number from 1 to {PAGE_LIMIT_MAX}"),
            )
        })
}

/// The version byte every cursor starts with, so that a later format can tell old cursors.
const CURSOR_VERSION: u8 = 1;
/// The second byte: which list the cursor pages, so that one list's cursor is refused by the
/// other.
const FLOWS_TAG: u8 = b'F';
const PLEDGES_TAG: u8 = b'P';

/// Where a page of the flows list ends: the seq the pages are pinned to and the last item
/// given. Opaque to clients: hex of a versioned binary form (URL-safe, no padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowsCursor {
    /// The checkpoint of the first page; later pages answer as of it.
    pub as_of_seq: u64,
    /// The last item's `occurred_on`.
    pub occurred_on: Date,
    /// The last item's seq.
    pub seq: u64,
}

impl FlowsCursor {
    /// The cursor's text.
    pub fn encode(&self) -> String {
        let mut bytes = vec![CURSOR_VERSION, FLOWS_TAG];
        bytes.extend(self.as_of_seq.to_be_bytes());
        bytes.extend(self.occurred_on.to_julian_day().to_be_bytes());
        bytes.extend(self.seq.to_be_bytes());
        hex::encode(bytes)
    }

    /// Reads a cursor's text; anything [`FlowsCursor::encode`] did not write is refused.
    pub fn decode(text: &str) -> Result<FlowsCursor, QueryParamError> {
        let mut reader = CursorReader::open(text, FLOWS_TAG)?;
        let as_of_seq = reader.u64()?;
        let occurred_on = Date::from_julian_day(reader.i32()?).map_err(|_| cursor_error())?;
        let seq = reader.u64()?;
        reader.end()?;
        Ok(FlowsCursor {
            as_of_seq,
            occurred_on,
            seq,
        })
    }

    /// Whether an item comes after the cursor in the list's order (newest `occurred_on` first,
    /// then highest seq first): the next page is the first items it admits.
    pub fn admits(&self, occurred_on: Date, seq: u64) -> bool {
        (occurred_on, seq) < (self.occurred_on, self.seq)
    }
}

/// Where a page of the pledge book ends: the seq the pages are pinned to and the last pledge
/// given, in (partner, pledge id) order. Opaque as [`FlowsCursor`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PledgesCursor {
    /// The checkpoint of the first page.
    pub as_of_seq: u64,
    /// The last pledge's partner.
    pub partner: String,
    /// The last pledge's id.
    pub pledge_id: String,
}

impl PledgesCursor {
    /// The cursor's text.
    pub fn encode(&self) -> String {
        let mut bytes = vec![CURSOR_VERSION, PLEDGES_TAG];
        bytes.extend(self.as_of_seq.to_be_bytes());
        push_text(&mut bytes, &self.partner);
        push_text(&mut bytes, &self.pledge_id);
        hex::encode(bytes)
    }

    /// Reads a cursor's text; anything [`PledgesCursor::encode`] did not write is refused.
    pub fn decode(text: &str) -> Result<PledgesCursor, QueryParamError> {
        let mut reader = CursorReader::open(text, PLEDGES_TAG)?;
        let as_of_seq = reader.u64()?;
        let partner = reader.text()?;
        let pledge_id = reader.text()?;
        reader.end()?;
        if !wire::is_valid_partner_id(&partner) || pledge_id.len() > limits::ID_LEN_MAX {
            return Err(cursor_error());
        }
        Ok(PledgesCursor {
            as_of_seq,
            partner,
            pledge_id,
        })
    }

    /// Whether a pledge comes after the cursor in (partner, pledge id) order.
    pub fn admits(&self, partner: &str, pledge_id: &str) -> bool {
        (partner, pledge_id) > (self.partner.as_str(), self.pledge_id.as_str())
    }
}

/// A text as its byte length (u32, big-endian) and its bytes, whole: an id longer than the
/// gate allows, which cannot be in the ledger, makes a cursor that decoding refuses rather than
/// one that silently names another pledge.
fn push_text(bytes: &mut Vec<u8>, text: &str) {
    let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
    bytes.extend(len.to_be_bytes());
    bytes.extend(text.as_bytes());
}

fn cursor_error() -> QueryParamError {
    QueryParamError::new(
        "invalid_cursor",
        "cursor",
        "is not a cursor this list gave (pass next_cursor unchanged)",
    )
}

/// Reads a cursor's bytes after its version and tag, refusing anything short or malformed.
struct CursorReader {
    bytes: Vec<u8>,
    at: usize,
}

impl CursorReader {
    fn open(text: &str, tag: u8) -> Result<CursorReader, QueryParamError> {
        if text.len() > CURSOR_LEN_MAX {
            return Err(cursor_error());
        }
        let bytes = hex::decode(text).map_err(|_| cursor_error())?;
        if bytes.get(..2) != Some(&[CURSOR_VERSION, tag][..]) {
            return Err(cursor_error());
        }
        Ok(CursorReader { bytes, at: 2 })
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], QueryParamError> {
        let end = self.at.checked_add(N).ok_or_else(cursor_error)?;
        let chunk = self.bytes.get(self.at..end).ok_or_else(cursor_error)?;
        self.at = end;
        chunk.try_into().map_err(|_| cursor_error())
    }

    fn u64(&mut self) -> Result<u64, QueryParamError> {
        self.take::<8>().map(u64::from_be_bytes)
    }

    fn i32(&mut self) -> Result<i32, QueryParamError> {
        self.take::<4>().map(i32::from_be_bytes)
    }

    fn text(&mut self) -> Result<String, QueryParamError> {
        let len =
            usize::try_from(u32::from_be_bytes(self.take::<4>()?)).map_err(|_| cursor_error())?;
        let end = self.at.checked_add(len).ok_or_else(cursor_error)?;
        let chunk = self.bytes.get(self.at..end).ok_or_else(cursor_error)?;
        self.at = end;
        String::from_utf8(chunk.to_vec()).map_err(|_| cursor_error())
    }

    fn end(&self) -> Result<(), QueryParamError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(cursor_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fundflow_domain::PledgeLine;

    fn d(text: &str) -> Decimal {
        fundflow_domain::money::parse_decimal(text).unwrap()
    }

    /// A generated ledger of a few thousand records: many partners, currencies, areas,
    /// payments against pledges and reversals.
    fn generated() -> &'static fundflow_domain::Ledger {
        static LEDGER: std::sync::LazyLock<fundflow_domain::Ledger> =
            std::sync::LazyLock::new(fold_generated);
        &LEDGER
    }

    fn fold_generated() -> fundflow_domain::Ledger {
        let config = fundflow_gen::GenConfig {
            events: 3_000,
            ..fundflow_gen::GenConfig::default()
        };
        let mut ledger = fundflow_domain::Ledger::new();
        for (seq, record) in (1..).zip(fundflow_gen::LogGenerator::new(7, config)) {
            ledger.apply(seq, &record);
        }
        ledger
    }

    #[test]
    fn without_grouping_the_rows_are_todays_at_every_level() {
        let ledger = generated();
        let state = ledger.model_state();
        let levels = [CellLevel::Year, CellLevel::Month, CellLevel::Day];
        for scope in Scope::ALL.map(Some).into_iter().chain([None]) {
            let today = crate::report::total_rows(&state, scope);
            assert!(!today.is_empty());
            let query = TotalsQuery {
                scope,
                ..TotalsQuery::default()
            };
            assert_eq!(query.level(), CellLevel::Year);
            for level in levels {
                let rows = grouped_total_rows(ledger.cells(level), &query).unwrap();
                assert_eq!(rows, today, "{scope:?} from {level:?} cells");
            }
        }
        // The old filters, applied by the server after the rows, are applied to the cells.
        let params = ps(&[("kind", "paid"), ("currency", "EUR"), ("key", "002")]);
        let today: Vec<TotalRow> = crate::report::total_rows(&state, None)
            .into_iter()
            .filter(|r| r.kind == "paid" && r.currency == "EUR" && r.key == "002")
            .collect();
        assert_eq!(today.len(), 1);
        assert_eq!(rows(&ledger.cells(CellLevel::Year), params), today);
    }

    #[test]
    fn grouped_rows_add_up_to_the_ungrouped_ones() {
        let ledger = generated();
        let plain =
            grouped_total_rows(ledger.cells(CellLevel::Year), &TotalsQuery::default()).unwrap();
        let day = ledger.cells(CellLevel::Day);
        for group in [
            "partner",
            "year",
            "quarter,month",
            "grant",
            "sector,donor",
            "partner,year,grant",
        ] {
            let grouped = rows(&day, p("group_by", group));
            // The generator's log may lie in one year: a grouping splits rows or keeps them.
            assert!(grouped.len() >= plain.len(), "{group}");
            let mut sums: BTreeMap<(Scope, String, String, String), [Decimal; 3]> = BTreeMap::new();
            for row in &grouped {
                let key = (
                    row.scope,
                    row.key.clone(),
                    row.kind.clone(),
                    row.currency.clone(),
                );
                let sum = sums.entry(key).or_default();
                for (part, text) in
                    sum.iter_mut()
                        .zip([&row.amount, &row.usd_equivalent, &row.unconverted])
                {
                    *part += d(text);
                }
            }
            assert_eq!(sums.len(), plain.len(), "{group}");
            for row in &plain {
                let key = (
                    row.scope,
                    row.key.clone(),
                    row.kind.clone(),
                    row.currency.clone(),
                );
                let expected = [d(&row.amount), d(&row.usd_equivalent), d(&row.unconverted)];
                assert_eq!(sums[&key], expected, "{group}: {key:?}");
            }
        }
    }

    fn date(text: &str) -> Date {
        wire::parse_date(text).unwrap()
    }

    fn currency(code: &str) -> CurrencyIndex {
        fundflow_refdata::currency_by_code(code).unwrap()
    }

    fn node(code: &str) -> Node {
        Node::country(code).or_else(|| Node::region(code)).unwrap()
    }

    /// A day cell; `usd` `None` leaves the amount unconverted.
    struct Flow {
        day: &'static str,
        partner: &'static str,
        grant: &'static str,
        sector: &'static str,
        donor: &'static str,
        to: &'static str,
        kind: TotalKind,
        currency: &'static str,
        amount: &'static str,
        usd: Option<&'static str>,
    }

    const BASE: Flow = Flow {
        day: "2020-09-15",
        partner: "ffrc-cafs",
        grant: "",
        sector: "",
        donor: "",
        to: "KEN",
        kind: TotalKind::Paid,
        currency: "USD",
        amount: "100.00",
        usd: Some("100.00"),
    };

    fn cell(flow: &Flow) -> CellRef<'static> {
        let day = date(flow.day);
        let amount = d(flow.amount);
        let total = match flow.usd {
            Some(usd) => Total {
                amount,
                usd_equivalent: d(usd),
                unconverted: Decimal::ZERO,
            },
            None => Total {
                amount,
                usd_equivalent: Decimal::ZERO,
                unconverted: amount,
            },
        };
        CellRef {
            year: day.year(),
            month: Some(Month::of(day)),
            day: Some(day),
            partner: flow.partner,
            grant: Some(flow.grant),
            sector: Some(flow.sector),
            donor: Some(flow.donor),
            node: node(flow.to),
            kind: flow.kind,
            currency: currency(flow.currency),
            total,
        }
    }

    /// The cells summed to `level`, as a read model stores them (the test's own sum).
    fn coarsened(cells: &[CellRef<'static>], level: CellLevel) -> Vec<CellRef<'static>> {
        let mut out: Vec<CellRef<'static>> = Vec::new();
        for c in cells {
            let c = CellRef {
                month: c.month.filter(|_| level >= CellLevel::Month),
                day: c.day.filter(|_| level == CellLevel::Day),
                grant: c.grant.filter(|_| level >= CellLevel::Month),
                sector: c.sector.filter(|_| level == CellLevel::Day),
                donor: c.donor.filter(|_| level == CellLevel::Day),
                ..*c
            };
            let same = |o: &CellRef<'_>| {
                CellRef {
                    total: c.total,
                    ..*o
                } == c
            };
            match out.iter_mut().find(|o| same(o)) {
                Some(o) => o.total = add(&o.total, &c.total).unwrap(),
                None => out.push(c),
            }
        }
        out
    }

    /// Four flows over two partners, two years, two grants, a sector and a donor; KEN and the
    /// area 014 (Eastern Africa) receive, so KEN rolls up into 014, 202, 002 and 001.
    fn cells() -> Vec<CellRef<'static>> {
        [
            BASE,
            Flow {
                day: "2020-02-01",
                partner: "cafs",
                amount: "50.00",
                usd: Some("50.00"),
                ..BASE
            },
            Flow {
                day: "2021-01-10",
                grant: "sg-2020-01",
                sector: "health",
                donor: "acme",
                to: "014",
                amount: "30.00",
                usd: Some("30.00"),
                ..BASE
            },
            Flow {
                day: "2020-09-20",
                grant: "sg-2020-01",
                kind: TotalKind::ParallelFunding,
                currency: "EUR",
                amount: "10.00",
                usd: None,
                ..BASE
            },
        ]
        .iter()
        .map(cell)
        .collect()
    }

    fn query(params: TotalsParams) -> TotalsQuery {
        TotalsQuery::parse(&params).unwrap()
    }

    fn rows(cells: &[CellRef<'_>], params: TotalsParams) -> Vec<TotalRow> {
        grouped_total_rows(cells.iter().copied(), &query(params)).unwrap()
    }

    fn p(field: &str, value: &str) -> TotalsParams {
        let mut params = TotalsParams::default();
        set(&mut params, field, value);
        params
    }

    fn set(params: &mut TotalsParams, field: &str, value: &str) {
        let slot = match field {
            "scope" => &mut params.scope,
            "kind" => &mut params.kind,
            "currency" => &mut params.currency,
            "key" => &mut params.key,
            "group_by" => &mut params.group_by,
            "partner" => &mut params.partner,
            "grant" => &mut params.grant,
            "sector" => &mut params.sector,
            "donor" => &mut params.donor,
            "from" => &mut params.from,
            "to" => &mut params.to,
            other => panic!("no parameter {other}"),
        };
        *slot = Some(value.to_owned());
    }

    fn ps(pairs: &[(&str, &str)]) -> TotalsParams {
        let mut params = TotalsParams::default();
        for (field, value) in pairs {
            set(&mut params, field, value);
        }
        params
    }

    /// Each row as `key dims… kind currency amount usd unconverted`, dims as `name=value`.
    fn lines(rows: &[TotalRow]) -> Vec<String> {
        rows.iter()
            .map(|r| {
                let mut parts = vec![r.key.clone()];
                for dim in Dimension::ALL {
                    if let Some(v) = dim.value_of(r) {
                        parts.push(format!("{}={v}", dim.as_str()));
                    }
                }
                parts.extend([
                    r.kind.clone(),
                    r.currency.clone(),
                    r.amount.clone(),
                    r.usd_equivalent.clone(),
                    r.unconverted.clone(),
                ]);
                parts.join(" ")
            })
            .collect()
    }

    fn error(params: TotalsParams) -> QueryParamError {
        TotalsQuery::parse(&params).unwrap_err()
    }

    #[track_caller]
    fn assert_names(err: &QueryParamError, code: &str, parameter: &str) {
        assert_eq!((err.code, err.parameter), (code, parameter), "{err:?}");
        assert!(
            err.detail.starts_with(parameter),
            "{:?} does not start with {parameter}",
            err.detail
        );
        assert_eq!(err.to_string(), err.detail);
    }

    #[test]
    fn every_bad_parameter_is_named_with_its_rule() {
        let cases = [
            ("scope", "continent", "invalid_scope"),
            ("kind", "promised", "invalid_kind"),
            ("currency", "usd", "invalid_currency"),
            ("currency", "XYZ", "invalid_currency"),
            ("group_by", "country", "invalid_group_by"),
            ("group_by", "partner,,year", "invalid_group_by"),
            ("group_by", "", "invalid_group_by"),
            ("group_by", "year,partner,year", "invalid_group_by"),
            ("partner", "FFRC", "invalid_partner"),
            ("partner", "", "invalid_partner"),
            ("from", "2020-13-01", "invalid_date"),
            ("from", "2020-1-01", "invalid_date"),
            ("to", "yesterday", "invalid_date"),
            ("to", "2020-02-30", "invalid_date"),
        ];
        for (field, value, code) in cases {
            assert_names(&error(p(field, value)), code, field);
        }
        let unknown = error(p("group_by", "partner,country"));
        assert!(unknown.detail.contains("\"country\""), "{}", unknown.detail);
        assert!(
            unknown
                .detail
                .contains("partner, year, quarter, month, grant, sector, donor"),
            "{}",
            unknown.detail
        );
        let twice = error(p("group_by", "year,partner,year"));
        assert!(twice.detail.contains("twice"), "{}", twice.detail);
        let range = error(ps(&[("from", "2021-01-01"), ("to", "2020-12-31")]));
        assert_names(&range, "invalid_range", "to");
        assert_eq!(range.detail, "to 2020-12-31 is before from 2021-01-01");
        // A single day is a period; free-text filters take any value, the empty one included.
        TotalsQuery::parse(&ps(&[("from", "2020-05-05"), ("to", "2020-05-05")])).unwrap();
        TotalsQuery::parse(&ps(&[("grant", ""), ("sector", ""), ("donor", "")])).unwrap();
    }

    #[test]
    fn group_by_is_read_in_column_order() {
        assert_eq!(
            parse_group_by("donor, year,partner").unwrap(),
            [Dimension::Partner, Dimension::Year, Dimension::Donor]
        );
        for dim in Dimension::ALL {
            assert_eq!(Dimension::parse(dim.as_str()), Some(dim));
        }
    }

    #[test]
    fn the_level_is_the_coarsest_that_has_every_dimension() {
        let level = |pairs: &[(&str, &str)]| query(ps(pairs)).level();
        assert_eq!(level(&[]), CellLevel::Year);
        assert_eq!(level(&[("group_by", "partner,year")]), CellLevel::Year);
        assert_eq!(
            level(&[("partner", "cafs"), ("scope", "country"), ("kind", "paid")]),
            CellLevel::Year
        );
        assert_eq!(
            level(&[("from", "2020-01-01"), ("to", "2021-12-31")]),
            CellLevel::Year
        );
        for group in ["quarter", "month", "grant", "partner,month"] {
            assert_eq!(level(&[("group_by", group)]), CellLevel::Month, "{group}");
        }
        assert_eq!(level(&[("grant", "sg-2020-01")]), CellLevel::Month);
        assert_eq!(level(&[("from", "2020-03-01")]), CellLevel::Month);
        assert_eq!(level(&[("to", "2020-02-29")]), CellLevel::Month);
        assert_eq!(level(&[("to", "2020-02-28")]), CellLevel::Day);
        assert_eq!(level(&[("from", "2020-03-02")]), CellLevel::Day);
        assert_eq!(level(&[("to", "2020-12-30")]), CellLevel::Day);
        for group in ["sector", "donor", "year,donor"] {
            assert_eq!(level(&[("group_by", group)]), CellLevel::Day, "{group}");
        }
        assert_eq!(level(&[("sector", "health")]), CellLevel::Day);
        assert_eq!(level(&[("donor", "")]), CellLevel::Day);
    }

    #[test]
    fn periods_are_years_or_months_at_the_level() {
        let periods = |pairs: &[(&str, &str)]| query(ps(pairs)).periods();
        assert_eq!(periods(&[("group_by", "month")]), None);
        assert_eq!(
            periods(&[("from", "2020-01-01"), ("to", "2020-12-31")]),
            Some(Periods::Years {
                first: Some(2020),
                last: Some(2020)
            })
        );
        let march = Month::of(date("2020-03-01"));
        let may = Month::of(date("2020-05-31"));
        let spring = periods(&[("from", "2020-03-01"), ("to", "2020-05-31")]).unwrap();
        assert_eq!(
            spring,
            Periods::Months {
                first: Some(march),
                last: Some(may)
            }
        );
        assert!(spring.contains_month(march) && spring.contains_month(may));
        assert!(!spring.contains_month(Month::of(date("2020-06-01"))));
        assert!(spring.contains_year(2020) && !spring.contains_year(2019));
        // Day cells are read by their months; the days are filtered after.
        assert_eq!(
            periods(&[("from", "2020-03-02")]),
            Some(Periods::Months {
                first: Some(march),
                last: None
            })
        );
        let years = periods(&[("to", "2021-12-31")]).unwrap();
        assert!(years.contains_year(1990) && years.contains_year(2021));
        assert!(!years.contains_month(Month::of(date("2022-01-01"))));
    }

    #[test]
    fn a_country_cell_rolls_up_to_every_area_above_it() {
        let all = rows(&cells(), TotalsParams::default());
        assert_eq!(
            lines(&all),
            [
                "KEN paid USD 150.00 150.00 0.00",
                "KEN parallel_funding EUR 10.00 0.00 10.00",
                "002 paid USD 180.00 180.00 0.00",
                "002 parallel_funding EUR 10.00 0.00 10.00",
                "202 paid USD 180.00 180.00 0.00",
                "202 parallel_funding EUR 10.00 0.00 10.00",
                "014 paid USD 180.00 180.00 0.00",
                "014 parallel_funding EUR 10.00 0.00 10.00",
                "001 paid USD 180.00 180.00 0.00",
                "001 parallel_funding EUR 10.00 0.00 10.00",
            ]
        );
        assert!(
            all.iter()
                .all(|r| Dimension::ALL.iter().all(|d| d.value_of(r).is_none()))
        );
        let area = rows(&cells(), ps(&[("scope", "intermediate"), ("kind", "paid")]));
        assert_eq!(lines(&area), ["014 paid USD 180.00 180.00 0.00"]);
        let key = rows(&cells(), ps(&[("key", "202"), ("currency", "EUR")]));
        assert_eq!(lines(&key), ["202 parallel_funding EUR 10.00 0.00 10.00"]);
    }

    #[test]
    fn grouping_by_each_dimension_sums_exactly() {
        let global = |group: &str| {
            lines(&rows(
                &cells(),
                ps(&[("scope", "global"), ("kind", "paid"), ("group_by", group)]),
            ))
        };
        assert_eq!(
            global("partner"),
            [
                "001 partner=cafs paid USD 50.00 50.00 0.00",
                "001 partner=ffrc-cafs paid USD 130.00 130.00 0.00",
            ]
        );
        assert_eq!(
            global("year"),
            [
                "001 year=2020 paid USD 150.00 150.00 0.00",
                "001 year=2021 paid USD 30.00 30.00 0.00",
            ]
        );
        assert_eq!(
            global("quarter"),
            [
                "001 quarter=2020-Q1 paid USD 50.00 50.00 0.00",
                "001 quarter=2020-Q3 paid USD 100.00 100.00 0.00",
                "001 quarter=2021-Q1 paid USD 30.00 30.00 0.00",
            ]
        );
        assert_eq!(
            global("month"),
            [
                "001 month=2020-02 paid USD 50.00 50.00 0.00",
                "001 month=2020-09 paid USD 100.00 100.00 0.00",
                "001 month=2021-01 paid USD 30.00 30.00 0.00",
            ]
        );
        assert_eq!(
            global("grant"),
            [
                "001 grant= paid USD 150.00 150.00 0.00",
                "001 grant=sg-2020-01 paid USD 30.00 30.00 0.00",
            ]
        );
        assert_eq!(
            global("sector"),
            [
                "001 sector= paid USD 150.00 150.00 0.00",
                "001 sector=health paid USD 30.00 30.00 0.00",
            ]
        );
        assert_eq!(
            global("donor"),
            [
                "001 donor= paid USD 150.00 150.00 0.00",
                "001 donor=acme paid USD 30.00 30.00 0.00",
            ]
        );
    }

    #[test]
    fn groupings_combine_and_filters_cut() {
        let got = rows(
            &cells(),
            ps(&[("group_by", "year,partner"), ("scope", "intermediate")]),
        );
        assert_eq!(
            lines(&got),
            [
                "014 partner=cafs year=2020 paid USD 50.00 50.00 0.00",
                "014 partner=ffrc-cafs year=2020 paid USD 100.00 100.00 0.00",
                "014 partner=ffrc-cafs year=2020 parallel_funding EUR 10.00 0.00 10.00",
                "014 partner=ffrc-cafs year=2021 paid USD 30.00 30.00 0.00",
            ]
        );
        let got = rows(
            &cells(),
            ps(&[("group_by", "grant,month"), ("scope", "country")]),
        );
        assert_eq!(
            lines(&got),
            [
                "KEN month=2020-02 grant= paid USD 50.00 50.00 0.00",
                "KEN month=2020-09 grant= paid USD 100.00 100.00 0.00",
                "KEN month=2020-09 grant=sg-2020-01 parallel_funding EUR 10.00 0.00 10.00",
            ]
        );
        // A period inside a month is cut by day: 2020-09-15 counts, 2020-09-20 does not.
        let got = rows(
            &cells(),
            ps(&[
                ("scope", "global"),
                ("from", "2020-02-01"),
                ("to", "2020-09-19"),
            ]),
        );
        assert_eq!(lines(&got), ["001 paid USD 150.00 150.00 0.00"]);
        let got = rows(
            &cells(),
            ps(&[("scope", "global"), ("partner", "ffrc-cafs"), ("grant", "")]),
        );
        assert_eq!(lines(&got), ["001 paid USD 100.00 100.00 0.00"]);
        let got = rows(
            &cells(),
            ps(&[
                ("scope", "global"),
                ("donor", "acme"),
                ("group_by", "sector"),
            ]),
        );
        assert_eq!(lines(&got), ["001 sector=health paid USD 30.00 30.00 0.00"]);
        assert!(rows(&cells(), p("partner", "nobody")).is_empty());
    }

    #[test]
    fn coarser_cells_give_the_same_rows_and_too_coarse_ones_are_refused() {
        let day = cells();
        for pairs in [
            &[("group_by", "partner,year")][..],
            &[("from", "2020-01-01"), ("to", "2020-12-31")],
            &[("group_by", "quarter,grant"), ("from", "2020-09-01")],
            &[("grant", "sg-2020-01"), ("scope", "country")],
        ] {
            let query = query(ps(pairs));
            let level = query.level();
            let from_day = grouped_total_rows(day.iter().copied(), &query).unwrap();
            let from_level = grouped_total_rows(coarsened(&day, level), &query).unwrap();
            assert_eq!(from_day, from_level, "{pairs:?}");
            assert!(!from_day.is_empty(), "{pairs:?}");
        }
        let by_sector = query(p("group_by", "sector"));
        assert_eq!(
            grouped_total_rows(coarsened(&day, CellLevel::Month), &by_sector),
            Err(AnalyticsError::CellTooCoarse {
                needed: CellLevel::Day,
                got: CellLevel::Month
            })
        );
    }

    #[test]
    fn a_row_serializes_its_dimensions_between_name_and_kind() {
        let got = rows(
            &cells(),
            ps(&[
                ("scope", "global"),
                ("group_by", "year,partner"),
                ("kind", "paid"),
            ]),
        );
        let json = serde_json::to_string(&got[1]).unwrap();
        assert_eq!(
            json,
            r#"{"scope":"global","key":"001","name":"World","partner":"ffrc-cafs","year":"2020","kind":"paid","currency":"USD","amount":"100.00","usd_equivalent":"100.00","unconverted":"0.00"}"#
        );
        assert_eq!(serde_json::from_str::<TotalRow>(&json).unwrap(), got[1]);
        let plain = serde_json::to_value(&rows(&cells(), p("key", "001"))[0]).unwrap();
        assert_eq!(plain.as_object().unwrap().len(), 8);
    }

    #[test]
    fn totals_csv_has_a_column_per_dimension() {
        let got = rows(
            &cells(),
            ps(&[
                ("scope", "global"),
                ("group_by", "year,partner"),
                ("kind", "paid"),
            ]),
        );
        let csv =
            String::from_utf8(totals_csv(&got, &[Dimension::Year, Dimension::Partner]).unwrap())
                .unwrap();
        assert_eq!(
            csv.lines().take(2).collect::<Vec<_>>(),
            [
                "scope,key,name,partner,year,kind,currency,amount,usd_equivalent,unconverted",
                "global,001,World,cafs,2020,paid,USD,50.00,50.00,0.00",
            ]
        );
        let plain = rows(&cells(), p("key", "014"));
        let csv = String::from_utf8(totals_csv(&plain, &[]).unwrap()).unwrap();
        assert_eq!(
            csv.lines().collect::<Vec<_>>(),
            [
                "scope,key,name,kind,currency,amount,usd_equivalent,unconverted",
                "intermediate,014,Eastern Africa,paid,USD,180.00,180.00,0.00",
                "intermediate,014,Eastern Africa,parallel_funding,EUR,10.00,0.00,10.00",
            ]
        );
    }

    #[test]
    fn the_summary_reads_months_or_days() {
        let summary = |from, to| SummaryQuery::parse(from, to).unwrap();
        assert_eq!(summary(None, None).level(), CellLevel::Month);
        assert_eq!(summary(None, None).periods(), None);
        let year = summary(Some("2020-01-01"), Some("2020-12-31"));
        assert_eq!(year.level(), CellLevel::Month);
        assert_eq!(
            year.periods(),
            Some(Periods::Months {
                first: Some(Month::of(date("2020-01-01"))),
                last: Some(Month::of(date("2020-12-31")))
            })
        );
        assert_eq!(summary(Some("2020-01-15"), None).level(), CellLevel::Day);
    }

    #[test]
    fn the_summary_usd_of_a_kind_is_the_worlds_over_currencies() {
        let ledger = generated();
        let plain =
            grouped_total_rows(ledger.cells(CellLevel::Year), &TotalsQuery::default()).unwrap();
        let all = summary(
            ledger.cells(CellLevel::Month),
            ledger.quantity_cells(),
            SummaryQuery::default()
                .period
                .outcomes(ledger.day_outcomes()),
            &SummaryQuery::default(),
            ledger.last_seq(),
        )
        .unwrap();
        for kind in &all.by_kind {
            let world: Decimal = plain
                .iter()
                .filter(|r| r.key == "001" && r.kind == kind.kind)
                .map(|r| d(&r.usd_equivalent))
                .sum();
            assert_eq!(d(&kind.usd_equivalent), world, "{}", kind.kind);
        }
        let (applied, rejected) = ledger.counts();
        assert!(all.events_applied <= applied && all.events_rejected <= rejected);
        assert!(
            all.countries_benefiting > 20 && all.regions.len() == 5,
            "{all:?}"
        );
    }

    fn quantity(day: &str, to: &str, item: &'static str, n: &str) -> QuantityCellRef<'static> {
        QuantityCellRef {
            day: date(day),
            partner: "cafs",
            node: node(to),
            item,
            unit: "piece",
            quantity: d(n),
        }
    }

    /// The 2020 panel of a small programme, with the cells as they are after a reversal that
    /// removed TZA's only payment (so TZA has no cell at all).
    fn panel_cells() -> Vec<CellRef<'static>> {
        [
            // A pledge benefits no one yet: KEN is not counted, nor is Africa by it.
            Flow {
                day: "2020-03-01",
                grant: "sg-2020-01",
                kind: TotalKind::Pledged,
                amount: "1000.00",
                usd: Some("1000.00"),
                to: "KEN",
                ..BASE
            },
            Flow {
                day: "2020-04-01",
                grant: "sg-2020-01",
                to: "NPL",
                amount: "400.00",
                usd: Some("400.00"),
                ..BASE
            },
            Flow {
                day: "2020-05-01",
                partner: "cafs",
                grant: "sg-2020-02",
                to: "NPL",
                currency: "EUR",
                amount: "100.00",
                usd: None,
                ..BASE
            },
            // To the area itself: no country, and its region.
            Flow {
                day: "2020-06-01",
                partner: "comesa",
                grant: "sg-2020-01",
                kind: TotalKind::ParallelFunding,
                to: "014",
                amount: "258800.00",
                usd: Some("258800.00"),
                ..BASE
            },
            Flow {
                day: "2020-07-01",
                partner: "cafs",
                kind: TotalKind::InKind,
                to: "NGA",
                currency: "CNY",
                amount: "5000.00",
                usd: Some("769.00"),
                ..BASE
            },
            // Outside the period.
            Flow {
                day: "2021-01-05",
                partner: "other",
                grant: "sg-2021-01",
                to: "BRA",
                ..BASE
            },
        ]
        .iter()
        .map(cell)
        .collect()
    }

    #[test]
    fn partners_and_grants_count_once_each_and_only_with_a_figure() {
        let usd = fundflow_refdata::currency_by_code("USD").unwrap();
        let eur = fundflow_refdata::currency_by_code("EUR").unwrap();
        let total = |amount: i64| Total {
            amount: Decimal::new(amount, 2),
            usd_equivalent: Decimal::new(amount, 2),
            unconverted: Decimal::ZERO,
        };
        let grant = |grant, kind, currency, amount| SummaryPart::Grant {
            grant,
            kind,
            currency,
            total: total(amount),
        };
        let partner = |partner, amount| SummaryPart::Partner {
            partner,
            kind: TotalKind::Paid,
            currency: usd,
            total: total(amount),
        };
        let parts = [
            // One grant in two kinds, two currencies and two years' parts: one grant.
            grant("sg-2020-01", TotalKind::Pledged, usd, 10_000),
            grant("sg-2020-01", TotalKind::ParallelFunding, eur, 500),
            grant("sg-2020-01", TotalKind::Pledged, usd, 2_500),
            // A grant whose every flow was reversed keeps a zero part at most: it does not count.
            grant("sg-2020-02", TotalKind::Paid, usd, 0),
            grant("sg-2020-03", TotalKind::InKind, usd, 1),
            partner("ffrc-cafs", 100),
            partner("ffrc-cafs", 200),
            partner("icshp", 0),
        ];
        let query = SummaryQuery::parse(Some("2020-01-01"), Some("2021-12-31")).unwrap();
        let reply = summary_of_parts(parts, DayOutcomes::default(), &query, 9).unwrap();
        assert_eq!((reply.grants, reply.partners), (2, 1));
    }

    #[test]
    fn the_summary_counts_what_the_period_sums_to() {
        let query = SummaryQuery::parse(Some("2020-01-01"), Some("2020-12-31")).unwrap();
        let days = [
            (
                date("2019-12-31"),
                DayOutcomes {
                    applied: 7,
                    rejected: 7,
                },
            ),
            (
                date("2020-04-01"),
                DayOutcomes {
                    applied: 3,
                    rejected: 1,
                },
            ),
            (
                date("2020-12-31"),
                DayOutcomes {
                    applied: 2,
                    rejected: 0,
                },
            ),
            (
                date("2021-01-01"),
                DayOutcomes {
                    applied: 9,
                    rejected: 9,
                },
            ),
        ];
        let outcomes = query.period.outcomes(days);
        assert_eq!(
            outcomes,
            DayOutcomes {
                applied: 5,
                rejected: 1
            }
        );
        let quantities = [
            quantity("2020-07-01", "NGA", "mask", "20000"),
            quantity("2020-08-01", "NPL", "mask", "210000"),
            quantity("2020-08-01", "014", "mask", "5000.0"),
            quantity("2020-08-01", "014", "gown", "10"),
            quantity("2021-08-01", "NPL", "mask", "1"),
        ];
        let month_cells = coarsened(&panel_cells(), query.level());
        let got = summary(month_cells, quantities, outcomes, &query, 42).unwrap();
        let json = serde_json::to_value(&got).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "as_of_seq": 42,
                "from": "2020-01-01",
                "to": "2020-12-31",
                "by_kind": [
                    {"kind": "pledged", "usd_equivalent": "1000.00", "unconverted": [], "countries": 1},
                    {"kind": "paid", "usd_equivalent": "400.00",
                     "unconverted": [{"currency": "EUR", "amount": "100.00"}], "countries": 1},
                    {"kind": "parallel_funding", "usd_equivalent": "258800.00", "unconverted": [],
                     "countries": 0},
                    {"kind": "in_kind", "usd_equivalent": "769.00", "unconverted": [], "countries": 1},
                ],
                "countries_benefiting": 2,
                "regions": [{"key": "002", "name": "Africa"}, {"key": "142", "name": "Asia"}],
                "partners": 3,
                "grants": 2,
                "events_applied": 5,
                "events_rejected": 1,
                "in_kind_items": [
                    {"item": "gown", "unit": "piece", "quantity": "10"},
                    {"item": "mask", "unit": "piece", "quantity": "235000"},
                ],
            })
        );
        assert_eq!(serde_json::from_value::<SummaryReply>(json).unwrap(), got);
    }

    #[test]
    fn a_reversal_that_removes_a_countrys_only_flow_removes_the_country() {
        let query = SummaryQuery::default();
        let tza = Flow {
            day: "2020-08-01",
            to: "TZA",
            ..BASE
        };
        let mut before = panel_cells();
        before.push(cell(&tza));
        let count = |cells: Vec<CellRef<'static>>| {
            let s = summary(cells, [], DayOutcomes::default(), &query, 1).unwrap();
            (s.countries_benefiting, s.by_kind[1].countries)
        };
        // NPL, NGA, BRA; TZA too before its payment is reversed.
        assert_eq!(count(before), (4, 3));
        assert_eq!(count(panel_cells()), (3, 2));
        // Day cells in a period that ends mid-month need the Day level.
        let mid = SummaryQuery::parse(Some("2020-04-02"), None).unwrap();
        assert!(matches!(
            summary(
                coarsened(&panel_cells(), CellLevel::Month),
                [],
                DayOutcomes::default(),
                &mid,
                1
            ),
            Err(AnalyticsError::CellTooCoarse { .. })
        ));
        let s = summary(panel_cells(), [], DayOutcomes::default(), &mid, 1).unwrap();
        assert_eq!((s.countries_benefiting, s.partners, s.grants), (3, 3, 3));
    }

    #[test]
    fn a_limit_is_a_page_size_within_bounds() {
        for bad in ["0", "1001", "-1", "ten", ""] {
            assert_names(
                &parse_limit(Some(bad)).unwrap_err(),
                "invalid_limit",
                "limit",
            );
        }
        assert_eq!(parse_limit(None), Ok(PAGE_LIMIT_DEFAULT));
        assert_eq!(parse_limit(Some("1000")), Ok(1000));
    }

    fn pledge_row(usd_rate: Option<&str>, pledged_usd: Option<&str>) -> PledgeRow {
        PledgeRow {
            partner_id: "ffrc-cafs".into(),
            pledge_id: "sg-2020-01".into(),
            currency: currency("EUR"),
            lines: vec![
                PledgeLine {
                    node: node("KEN"),
                    pledged: d("60000.00"),
                    paid: d("10000.00"),
                },
                PledgeLine {
                    node: node("014"),
                    pledged: d("40000.00"),
                    paid: d("0.00"),
                },
            ],
            donor: "acme".into(),
            sector: "health".into(),
            occurred_on: date("2020-03-01"),
            usd_rate: usd_rate.map(d),
            pledged_usd: pledged_usd.map(d),
            paid_usd: d("12000.00"),
            payments_unconverted: 0,
        }
    }

    fn funding(parts: &[(&str, &str, &str, &str)]) -> Vec<(CurrencyIndex, Total)> {
        parts
            .iter()
            .map(|(code, amount, usd, unconverted)| {
                (
                    currency(code),
                    Total {
                        amount: d(amount),
                        usd_equivalent: d(usd),
                        unconverted: d(unconverted),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn leverage_rounds_half_even_at_four_decimals() {
        let row = pledge_row(Some("1"), Some("100000.00"));
        let leverage = |usd: &str| {
            pledge_item(&row, &funding(&[("USD", usd, usd, "0")]))
                .unwrap()
                .leverage
        };
        assert_eq!(leverage("12345.00").as_deref(), Some("0.1234"));
        assert_eq!(leverage("12355.00").as_deref(), Some("0.1236"));
        assert_eq!(leverage("12345.01").as_deref(), Some("0.1235"));
        assert_eq!(leverage("258800.00").as_deref(), Some("2.5880"));
        assert_eq!(leverage("0.00").as_deref(), Some("0.0000"));
        // The integer rounding agrees with rust_decimal's on ordinary quotients.
        for (num, den) in [("1", "3"), ("2", "3"), ("100.00", "7.00"), ("5.55", "0.01")] {
            let expected =
                (d(num) / d(den)).round_dp_with_strategy(4, RoundingStrategy::MidpointNearestEven);
            assert_eq!(
                ratio_4dp(Cents::of(d(num)), Cents::of(d(den))),
                Some(format_at_scale(expected, 4)),
                "{num} / {den}"
            );
        }
        let no_usd = pledge_row(None, None);
        assert_eq!(pledge_item(&no_usd, &[]).unwrap().leverage, None);
        let zero = pledge_row(Some("1"), Some("0.00"));
        assert_eq!(pledge_item(&zero, &[]).unwrap().leverage, None);
    }

    #[test]
    fn a_pledge_item_has_its_balances_and_its_parallel_funding() {
        let mut row = pledge_row(Some("1.2215"), Some("122150.00"));
        let item = pledge_item(
            &row,
            &funding(&[
                ("USD", "64700.00", "64700.00", "0"),
                ("EUR", "1000.00", "1221.50", "0"),
                ("KES", "500.00", "0", "500.00"),
            ]),
        )
        .unwrap();
        let json = serde_json::to_value(&item).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "partner": "ffrc-cafs", "pledge_id": "sg-2020-01", "donor": "acme",
                "sector": "health", "occurred_on": "2020-03-01", "currency": "EUR",
                "pledged": "100000.00", "paid": "10000.00", "outstanding": "90000.00",
                "pledged_usd": "122150.00", "paid_usd": "12000.00",
                // 50000 × 1.2215 + 40000 × 1.2215
                "outstanding_usd": "109935.00",
                "lines": [
                    {"scope": "country", "key": "KEN", "name": "Kenya", "pledged": "60000.00",
                     "paid": "10000.00", "outstanding": "50000.00"},
                    {"scope": "intermediate", "key": "014", "name": "Eastern Africa",
                     "pledged": "40000.00", "paid": "0.00", "outstanding": "40000.00"},
                ],
                "parallel_funding": [
                    {"currency": "EUR", "amount": "1000.00", "usd_equivalent": "1221.50",
                     "unconverted": "0.00"},
                    {"currency": "KES", "amount": "500.00", "usd_equivalent": "0.00",
                     "unconverted": "500.00"},
                    {"currency": "USD", "amount": "64700.00", "usd_equivalent": "64700.00",
                     "unconverted": "0.00"},
                ],
                "parallel_funding_usd": "65921.50",
                // 65921.50 / 122150.00 = 0.53967…
                "leverage": "0.5397",
            })
        );
        assert_eq!(serde_json::from_value::<PledgeItem>(json).unwrap(), item);
        // Each line's outstanding is converted and rounded on its own, half-even.
        row.usd_rate = Some(d("0.00125"));
        row.lines[0].paid = d("59900.00"); // 100.00 outstanding → 0.125 → 0.12
        row.lines[1].paid = d("39900.00"); // 100.00 → 0.12
        row.payments_unconverted = 1;
        let item = pledge_item(&row, &[]).unwrap();
        assert_eq!(item.outstanding_usd.as_deref(), Some("0.24"));
        assert_eq!(item.paid_usd, None);
        assert_eq!(item.parallel_funding_usd, "0.00");
    }

    #[test]
    fn pledges_csv_has_a_row_per_line() {
        let item = pledge_item(
            &pledge_row(None, None),
            &funding(&[("USD", "5.00", "5.00", "0")]),
        )
        .unwrap();
        let csv = String::from_utf8(pledges_csv(&[item]).unwrap()).unwrap();
        assert_eq!(
            csv.lines().collect::<Vec<_>>(),
            [
                PLEDGE_COLUMNS.join(","),
                "ffrc-cafs,sg-2020-01,acme,health,2020-03-01,EUR,100000.00,10000.00,90000.00,,12000.00,,USD:5.00,5.00,,0,country,KEN,Kenya,60000.00,10000.00,50000.00".into(),
                "ffrc-cafs,sg-2020-01,acme,health,2020-03-01,EUR,100000.00,10000.00,90000.00,,12000.00,,USD:5.00,5.00,,1,intermediate,014,Eastern Africa,40000.00,0.00,40000.00".into(),
            ]
        );
    }

    fn flow_item() -> FlowItem {
        FlowItem {
            seq: 7,
            event_id: "6f1c2a9e-0000-4000-8000-000000000001".into(),
            partner: "cafs".into(),
            event_type: "in_kind_donation_recorded".into(),
            own_id: "don-1".into(),
            kind: "in_kind".into(),
            occurred_on: "2020-04-02".into(),
            recorded_at: "2020-04-03T10:00:00Z".into(),
            donor: "Jack Ma Foundation".into(),
            grant: String::new(),
            sector: String::new(),
            description: "Masks, \"N95\" grade".into(),
            currency: "CNY".into(),
            amount: "5000.00".into(),
            usd_rate: Some("0.1538".into()),
            usd_rate_date: Some("2020-04-02".into()),
            usd_rate_source: Some("ECB".into()),
            usd_equivalent: Some("769.00".into()),
            status: FlowStatus::Applied,
            reversed_by: None,
            reversed_seq: None,
            reason: None,
            allocations: vec![
                FlowAllocation {
                    scope: Scope::Country,
                    key: "NGA".into(),
                    name: "Nigeria".into(),
                    organisation: String::new(),
                    value: "3000.00".into(),
                    usd_equivalent: Some("461.40".into()),
                    items: vec![
                        ItemQuantity {
                            item: "mask".into(),
                            unit: "piece".into(),
                            quantity: "20000".into(),
                        },
                        ItemQuantity {
                            item: "gown".into(),
                            unit: "piece".into(),
                            quantity: "5".into(),
                        },
                    ],
                },
                FlowAllocation {
                    scope: Scope::Intermediate,
                    key: "014".into(),
                    name: "Eastern Africa".into(),
                    organisation: "COMESA secretariat".into(),
                    value: "2000.00".into(),
                    usd_equivalent: Some("307.60".into()),
                    items: Vec::new(),
                },
            ],
        }
    }

    #[test]
    fn flows_csv_quotes_what_needs_it() {
        let csv = String::from_utf8(flows_csv(&[flow_item()]).unwrap()).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], FLOW_COLUMNS.join(","));
        assert_eq!(
            lines[1],
            "7,6f1c2a9e-0000-4000-8000-000000000001,cafs,in_kind_donation_recorded,don-1,in_kind,\
             2020-04-02,2020-04-03T10:00:00Z,Jack Ma Foundation,,,\"Masks, \"\"N95\"\" grade\",\
             CNY,5000.00,0.1538,2020-04-02,ECB,769.00,applied,,,0,country,NGA,Nigeria,,3000.00,\
             461.40,mask:piece:20000; gown:piece:5"
        );
        assert!(
            lines[2]
                .ends_with(",1,intermediate,014,Eastern Africa,COMESA secretariat,2000.00,307.60,")
        );
        assert_eq!(lines.len(), 3);
        // What the writer quoted, a reader reads back whole.
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        let record = reader.records().next().unwrap().unwrap();
        assert_eq!(&record[11], "Masks, \"N95\" grade");
        assert_eq!(record.len(), FLOW_COLUMNS.len());
    }

    #[test]
    fn a_flow_item_keeps_its_nulls_and_its_type() {
        let mut item = flow_item();
        item.usd_rate = None;
        item.usd_rate_date = None;
        item.usd_rate_source = None;
        item.usd_equivalent = None;
        item.allocations.truncate(1);
        item.allocations[0].usd_equivalent = None;
        let json = serde_json::to_value(&item).unwrap();
        for field in [
            "usd_rate",
            "usd_equivalent",
            "reversed_by",
            "reversed_seq",
            "reason",
        ] {
            assert!(json[field].is_null(), "{field}");
            assert!(json.as_object().unwrap().contains_key(field), "{field}");
        }
        assert_eq!(json["type"], "in_kind_donation_recorded");
        assert_eq!(json["status"], "applied");
        assert!(json["allocations"][0]["usd_equivalent"].is_null());
        assert_eq!(json["allocations"][0]["scope"], "country");
        assert_eq!(serde_json::from_value::<FlowItem>(json).unwrap(), item);
        let reply = FlowsReply {
            as_of_seq: 9,
            flows: vec![FlowItem {
                status: FlowStatus::Reversed,
                reversed_by: Some("id".into()),
                reversed_seq: Some(12),
                reason: Some("duplicate entry".into()),
                ..item
            }],
            next_cursor: None,
        };
        let json = serde_json::to_value(&reply).unwrap();
        assert_eq!(json["flows"][0]["status"], "reversed");
        assert!(json["next_cursor"].is_null());
        assert_eq!(serde_json::from_value::<FlowsReply>(json).unwrap(), reply);
    }

    #[test]
    fn cursors_round_trip_and_anything_else_is_refused() {
        let flows = FlowsCursor {
            as_of_seq: 1_000_000,
            occurred_on: date("2020-09-30"),
            seq: 77,
        };
        let text = flows.encode();
        assert!(text.bytes().all(|b| b.is_ascii_alphanumeric()), "{text}");
        assert_eq!(FlowsCursor::decode(&text), Ok(flows));
        assert!(flows.admits(date("2020-09-30"), 76));
        assert!(flows.admits(date("2020-09-29"), 900));
        assert!(!flows.admits(date("2020-09-30"), 77));
        assert!(!flows.admits(date("2020-10-01"), 1));

        let pledges = PledgesCursor {
            as_of_seq: 5,
            partner: "ffrc-cafs".into(),
            pledge_id: "sg-2020-01 ünï".into(),
        };
        let text = pledges.encode();
        assert_eq!(PledgesCursor::decode(&text), Ok(pledges.clone()));
        assert!(pledges.admits("ffrc-cafs", "sg-2020-02"));
        assert!(pledges.admits("zz", "a"));
        assert!(!pledges.admits("ffrc-cafs", "sg-2020-01 ünï"));

        let flows_text = flows.encode();
        let bad = [
            String::new(),
            "zz".into(),
            "0".into(),
            flows_text[..flows_text.len() - 2].to_owned(),
            format!("{flows_text}00"),
            format!("02{}", &flows_text[2..]),
            text.clone(),
            "a".repeat(CURSOR_LEN_MAX + 2),
        ];
        for cursor in &bad {
            assert_names(
                &FlowsCursor::decode(cursor).unwrap_err(),
                "invalid_cursor",
                "cursor",
            );
        }
        assert_names(
            &PledgesCursor::decode(&flows_text).unwrap_err(),
            "invalid_cursor",
            "cursor",
        );
        let too_long = PledgesCursor {
            pledge_id: "x".repeat(limits::ID_LEN_MAX + 1),
            ..pledges.clone()
        };
        assert!(PledgesCursor::decode(&too_long.encode()).is_err());
        let longest = PledgesCursor {
            partner: "p".repeat(limits::PARTNER_ID_LEN_MAX),
            pledge_id: "x".repeat(limits::ID_LEN_MAX),
            ..pledges.clone()
        };
        assert_eq!(PledgesCursor::decode(&longest.encode()), Ok(longest));
        let bad_partner = PledgesCursor {
            partner: "Not An Id".into(),
            ..pledges
        };
        assert!(PledgesCursor::decode(&bad_partner.encode()).is_err());
    }
}
