//! What every page shares: who is signed in, the checkpoint, the filters kept in the URL, the
//! filter bar, and the command that reproduces a page offline.

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
    /// A totals kind (`pledged`, `paid`, `parallel_funding`, `in_kind`).
    pub kind: Option<String>,
    /// An ISO 4217 code.
    pub currency: Option<String>,
    /// A partner id.
    pub partner: Option<String>,
    /// A grant id.
    pub grant: Option<String>,
    /// A country, alpha-2 or alpha-3.
    pub country: Option<String>,
    /// An M49 area code.
    pub region: Option<String>,
}

/// A filter's parameter name, as the API and the URL spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `from`.
    From,
    /// `to`.
    To,
    /// `kind`.
    Kind,
    /// `currency`.
    Currency,
    /// `partner`.
    Partner,
    /// `grant`.
    Grant,
    /// `country`.
    Country,
    /// `region`.
    Region,
}

impl Filter {
    /// Every filter, in the order the filter bar shows them.
    pub const ALL: [Filter; 8] = [
        Filter::From,
        Filter::To,
        Filter::Kind,
        Filter::Currency,
        Filter::Partner,
        Filter::Grant,
        Filter::Country,
        Filter::Region,
    ];

    /// The parameter's name.
    pub fn name(self) -> &'static str {
        match self {
            Filter::From => "from",
            Filter::To => "to",
            Filter::Kind => "kind",
            Filter::Currency => "currency",
            Filter::Partner => "partner",
            Filter::Grant => "grant",
            Filter::Country => "country",
            Filter::Region => "region",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Filter::From => "From",
            Filter::To => "To",
            Filter::Kind => "Kind",
            Filter::Currency => "Currency",
            Filter::Partner => "Partner",
            Filter::Grant => "Grant",
            Filter::Country => "Country",
            Filter::Region => "Region (M49)",
        }
    }
}

/// The totals kinds, with the words a page shows for them.
pub const KINDS: [(&str, &str); 4] = [
    ("pledged", "Pledged"),
    ("paid", "Paid"),
    ("parallel_funding", "Parallel funding"),
    ("in_kind", "In kind"),
];

impl Filters {
    /// The value of `filter`.
    pub fn get(&self, filter: Filter) -> Option<&str> {
        match filter {
            Filter::From => self.from.as_deref(),
            Filter::To => self.to.as_deref(),
            Filter::Kind => self.kind.as_deref(),
            Filter::Currency => self.currency.as_deref(),
            Filter::Partner => self.partner.as_deref(),
            Filter::Grant => self.grant.as_deref(),
            Filter::Country => self.country.as_deref(),
            Filter::Region => self.region.as_deref(),
        }
    }

    /// The filters that are set, as (name, value), in [`Filter::ALL`] order.
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        Filter::ALL
            .into_iter()
            .filter_map(|f| self.get(f).map(|v| (f.name(), v)))
            .collect()
    }

    /// The filters as a query string (`from=…&to=…`), empty when none is set.
    pub fn query(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.extend_pairs(self.pairs());
        query.finish()
    }

    /// `path` with the filters and `extra` parameters appended.
    pub fn link(&self, path: &str, extra: &[(&str, &str)]) -> String {
        let mut query = form_urlencoded::Serializer::new(self.query());
        query.extend_pairs(extra);
        let query = query.finish();
        if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        }
    }

    /// Only the filters in `kept`: what an API route that takes no others is asked.
    pub fn only(&self, kept: &[Filter]) -> Filters {
        let keep = |f: Filter, v: &Option<String>| v.clone().filter(|_| kept.contains(&f));
        Filters {
            from: keep(Filter::From, &self.from),
            to: keep(Filter::To, &self.to),
            kind: keep(Filter::Kind, &self.kind),
            currency: keep(Filter::Currency, &self.currency),
            partner: keep(Filter::Partner, &self.partner),
            grant: keep(Filter::Grant, &self.grant),
            country: keep(Filter::Country, &self.country),
            region: keep(Filter::Region, &self.region),
        }
    }

    /// `command` followed by `--name value` for each filter set and each of `extra`, quoted for
    /// a POSIX shell: what an auditor types to get the same figures offline.
    pub fn command(&self, command: &str, extra: &[(&str, &str)]) -> String {
        let mut line = command.to_owned();
        for (name, value) in self.pairs().into_iter().chain(extra.iter().copied()) {
            line.push_str(" --");
            line.push_str(&name.replace('_', "-"));
            line.push(' ');
            line.push_str(&shell_word(value));
        }
        line
    }
}

/// `value` as one word of a POSIX shell.
fn shell_word(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:,/".contains(&b));
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// The pages of the dashboard, for the navigation and `aria-current`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// `/`.
    Overview,
    /// `/recipients`, `/recipients/{alpha3}`.
    Recipients,
    /// `/pledges`.
    Pledges,
    /// `/partners`.
    Partners,
    /// `/in-kind`.
    InKind,
    /// `/flows`.
    Flows,
    /// `/rejections`.
    Rejections,
}

impl Page {
    /// Every page, in the navigation's order.
    pub const ALL: [Page; 7] = [
        Page::Overview,
        Page::Recipients,
        Page::Pledges,
        Page::Partners,
        Page::InKind,
        Page::Flows,
        Page::Rejections,
    ];

    /// Its path.
    pub fn path(self) -> &'static str {
        match self {
            Page::Overview => "/",
            Page::Recipients => "/recipients",
            Page::Pledges => "/pledges",
            Page::Partners => "/partners",
            Page::InKind => "/in-kind",
            Page::Flows => "/flows",
            Page::Rejections => "/rejections",
        }
    }

    /// Its name in the navigation.
    pub fn title(self) -> &'static str {
        match self {
            Page::Overview => "Overview",
            Page::Recipients => "Recipients",
            Page::Pledges => "Pledges",
            Page::Partners => "Partners",
            Page::InKind => "In kind",
            Page::Flows => "Flows",
            Page::Rejections => "Data quality",
        }
    }

    /// Whether a partner's session may open it: a partner sees its own flows and pledges only.
    pub fn for_partners(self) -> bool {
        matches!(self, Page::Pledges | Page::Flows)
    }
}

/// What the frame of every page shows.
#[derive(Debug, Clone)]
pub struct PageContext {
    /// The signed-in principal's name.
    pub who: String,
    /// Its role (`reviewer`, `auditor`, `partner`).
    pub role: String,
    /// The page shown.
    pub page: Page,
    /// The checkpoint the figures are at.
    pub as_of_seq: u64,
    /// The model digest at it, when computed.
    pub model_digest: Option<String>,
    /// The filters.
    pub filters: Filters,
    /// The lowest and highest seq of a page's replies when they differ: events arrived between
    /// its queries (the server asks again a few times before it shows such a page).
    pub mixed_seqs: Option<(u64, u64)>,
}

/// The lowest and highest of `seqs` when they differ: for [`PageContext::mixed_seqs`].
pub fn mixed(seqs: &[u64]) -> Option<(u64, u64)> {
    let low = seqs.iter().copied().min()?;
    let high = seqs.iter().copied().max()?;
    (low != high).then_some((low, high))
}

/// A link of the navigation.
pub struct NavLink {
    /// Where.
    pub path: &'static str,
    /// Its text.
    pub title: &'static str,
    /// Whether it is the page shown.
    pub current: bool,
}

impl PageContext {
    /// The model digest, or a sentence saying it is not computed yet.
    pub fn digest_text(&self) -> &str {
        self.model_digest
            .as_deref()
            .unwrap_or("not computed yet at this checkpoint")
    }

    /// The pages this principal may open.
    pub fn nav(&self) -> Vec<NavLink> {
        let partner = self.role == "partner";
        Page::ALL
            .into_iter()
            .filter(|page| !partner || page.for_partners())
            .map(|page| NavLink {
                path: page.path(),
                title: page.title(),
                current: page == self.page,
            })
            .collect()
    }
}

/// One control of a filter bar.
struct Field {
    name: &'static str,
    label: &'static str,
    value: String,
    input_type: &'static str,
    options: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "filter_bar.html")]
struct FilterBar<'a> {
    action: &'a str,
    fields: Vec<Field>,
    hidden: &'a [(&'a str, &'a str)],
    clear: &'a str,
}

/// The filter bar of a page at `action`: a GET form with a control for each of `shown`, filled
/// with the filters in force, plus `hidden` parameters a page keeps (a status, a region).
pub fn filter_bar(
    filters: &Filters,
    action: &str,
    shown: &[Filter],
    hidden: &[(&str, &str)],
) -> Result<String, DashboardError> {
    let fields = shown
        .iter()
        .map(|&filter| {
            let value = filters.get(filter).unwrap_or("").to_owned();
            let (input_type, options) = match filter {
                Filter::From | Filter::To => ("date", Vec::new()),
                Filter::Kind => (
                    "select",
                    std::iter::once((String::new(), "Every kind".to_owned()))
                        .chain(
                            KINDS
                                .iter()
                                .map(|(k, t)| ((*k).to_owned(), (*t).to_owned())),
                        )
                        .collect(),
                ),
                _ => ("text", Vec::new()),
            };
            Field {
                name: filter.name(),
                label: filter.label(),
                value,
                input_type,
                options,
            }
        })
        .collect();
    Ok(FilterBar {
        action,
        fields,
        hidden,
        clear: action,
    }
    .render()?)
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

#[derive(Template)]
#[template(path = "problem.html")]
struct ProblemPage<'a> {
    stylesheet: &'a str,
    title: &'a str,
    detail: &'a str,
}

/// A page that says why a request has no page: the parameter and its rule, or why the data
/// cannot be read now.
pub fn problem(title: &str, detail: &str) -> Result<String, DashboardError> {
    Ok(ProblemPage {
        stylesheet: STYLESHEET_PATH,
        title,
        detail,
    }
    .render()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_links_and_commands_under_the_apis_names() {
        let filters = Filters {
            from: Some("2020-01-01".into()),
            partner: Some("ffrc cafs".into()),
            ..Filters::default()
        };
        assert_eq!(
            filters.link("/v1/totals", &[("format", "csv")]),
            "/v1/totals?from=2020-01-01&partner=ffrc+cafs&format=csv"
        );
        assert_eq!(
            filters.command("fundflow audit replay", &[("group_by", "month")]),
            "fundflow audit replay --from 2020-01-01 --partner 'ffrc cafs' --group-by month"
        );
        assert_eq!(
            filters.only(&[Filter::Partner]).query(),
            "partner=ffrc+cafs"
        );
        assert_eq!(Filters::default().link("/", &[]), "/");
    }
}
