//! The audit report: a document a person can read and sign, in Markdown or HTML. Every figure in
//! it comes from a replay, none from a live server.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use fundflow_api::{Report, item_rows};
use fundflow_domain::money::{USD_SCALE, format_at_scale};
use fundflow_domain::{Node, currency_code, minor_unit};

use crate::replay::Replay;

/// Markdown or HTML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocFormat {
    /// GitHub-flavoured Markdown.
    Markdown,
    /// A self-contained HTML page.
    Html,
}

/// One area's total in a table: its path from World (for the order), the area, and amount, USD
/// equivalent and unconverted part, formatted.
type AreaRow = (Vec<&'static str>, Node, [String; 3]);

enum Block {
    Heading(usize, String),
    Para(String),
    Table(Vec<&'static str>, Vec<Vec<String>>),
}

/// What the report says about where its figures come from.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The source replayed (a file, a NATS URL, a data directory).
    pub source: String,
    /// The cutoff, in words.
    pub cutoff: String,
    /// When the report was made (RFC 3339).
    pub generated_at: String,
}

/// Renders the report of `replay`.
pub fn render(replay: &Replay, scope: &Scope, format: DocFormat) -> String {
    let state = replay.ledger.model_state();
    let summary = Report::of_state(&state);
    let mut blocks =
        vec![
        Block::Heading(1, "fundflow audit report".into()),
        Block::Para(format!(
            "Every figure below was computed by replaying the event log from its first record, \
             in memory, with fundflow {}; none was read from a running server.",
            env!("CARGO_PKG_VERSION")
        )),
        Block::Heading(2, "Scope and digests".into()),
        Block::Table(
            vec!["", ""],
            vec![
                vec!["Source".into(), scope.source.clone()],
                vec!["Cutoff".into(), scope.cutoff.clone()],
                vec!["Records read".into(), replay.read.to_string()],
                vec![
                    "Records left out by the date cutoff".into(),
                    replay.skipped.to_string(),
                ],
                vec!["Last sequence folded".into(), summary.last_seq.to_string()],
                vec![
                    "Events applied".into(),
                    state.checkpoint.applied.to_string(),
                ],
                vec![
                    "Events rejected".into(),
                    state.checkpoint.rejected.to_string(),
                ],
                vec![
                    if replay.skipped > 0 {
                        "Log digest (SHA-256 chain over the records counted)".into()
                    } else {
                        "Log digest (SHA-256 chain)".into()
                    },
                    summary.log_digest.clone(),
                ],
                vec!["Model digest (SHA-256)".into(), summary.model_digest.clone()],
                vec!["Generated at".into(), scope.generated_at.clone()],
            ],
        ),
        Block::Heading(2, "Totals by area".into()),
        Block::Para(
            "Per kind and currency, each M49 region with its sub-regions and countries beneath \
             it. A country's or area's total includes what was allocated to the areas within it; \
             USD equivalents are converted per allocation at the rates listed below, and amounts \
             without a rate are shown as unconverted."
                .into(),
        ),
    ];
    let totals = state.totals();
    let mut groups: BTreeMap<(&str, &str), Vec<AreaRow>> = BTreeMap::new();
    for (key, total) in &totals {
        let currency = currency_code(key.currency);
        let scale = minor_unit(currency);
        let mut path: Vec<&str> = key.node.rollup().map(Node::key).collect();
        path.reverse();
        groups
            .entry((key.kind.as_str(), currency))
            .or_default()
            .push((
                path,
                key.node,
                [
                    format_at_scale(total.amount, scale),
                    format_at_scale(total.usd_equivalent, USD_SCALE),
                    format_at_scale(total.unconverted, scale),
                ],
            ));
    }
    for ((kind, currency), mut rows) in groups {
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        blocks.push(Block::Heading(3, format!("{kind}, {currency}")));
        blocks.push(Block::Table(
            vec![
                "area",
                "code",
                "scope",
                "amount",
                "USD equivalent",
                "unconverted",
            ],
            rows.into_iter()
                .map(|(path, node, [amount, usd, unconverted])| {
                    let indent = "\u{a0}\u{a0}".repeat(path.len().saturating_sub(1));
                    vec![
                        format!("{indent}{}", node.name()),
                        node.key().to_owned(),
                        node.scope().as_str().to_owned(),
                        amount,
                        usd,
                        unconverted,
                    ]
                })
                .collect(),
        ));
    }
    blocks.push(Block::Heading(2, "USD rates used".into()));
    if replay.rates.is_empty() {
        blocks.push(Block::Para(
            "No applied event carried a USD rate (USD amounts are their own equivalent).".into(),
        ));
    } else {
        blocks.push(Block::Table(
            vec![
                "currency",
                "USD per unit",
                "rate date",
                "source",
                "allocations",
            ],
            replay
                .rates
                .iter()
                .map(|(r, n)| {
                    vec![
                        r.currency.clone(),
                        r.rate.clone(),
                        r.date.clone(),
                        r.source.clone(),
                        n.to_string(),
                    ]
                })
                .collect(),
        ));
    }
    blocks.push(Block::Heading(2, "In-kind quantities".into()));
    let items = item_rows(&state, None);
    if items.is_empty() {
        blocks.push(Block::Para("No in-kind donations.".into()));
    } else {
        blocks.push(Block::Table(
            vec!["scope", "code", "area", "item", "unit", "quantity"],
            items
                .into_iter()
                .map(|i| {
                    vec![
                        i.scope.as_str().to_owned(),
                        i.key.to_owned(),
                        i.name.to_owned(),
                        i.item,
                        i.unit,
                        i.quantity,
                    ]
                })
                .collect(),
        ));
    }
    blocks.push(Block::Heading(2, "Rejected events".into()));
    if summary.rejected.is_empty() {
        blocks.push(Block::Para("None.".into()));
    } else {
        blocks.push(Block::Table(
            vec!["seq", "event id", "code", "why"],
            summary
                .rejected
                .iter()
                .map(|r| {
                    vec![
                        r.seq.to_string(),
                        r.event_id.clone(),
                        r.code.to_owned(),
                        r.message.clone(),
                    ]
                })
                .collect(),
        ));
    }
    blocks.push(Block::Heading(2, "Reversals".into()));
    if replay.reversals.is_empty() {
        blocks.push(Block::Para("None.".into()));
    } else {
        blocks.push(Block::Table(
            vec!["seq", "partner", "reversal", "reverses", "reason"],
            replay
                .reversals
                .iter()
                .map(|r| {
                    vec![
                        r.seq.to_string(),
                        r.partner_id.clone(),
                        r.event_id.clone(),
                        r.reverses_event_id.clone(),
                        r.reason.clone(),
                    ]
                })
                .collect(),
        ));
    }
    blocks.push(Block::Heading(2, "Sign-off".into()));
    blocks.push(Block::Para(
        "Replayed and checked by: ______________________   Date: ____________   Signature: \
         ______________________"
            .into(),
    ));
    match format {
        DocFormat::Markdown => markdown(&blocks),
        DocFormat::Html => html(&blocks),
    }
}

/// Partner text made inert in a Markdown table cell: no line breaks of any kind, no markup, no
/// HTML. A reason or a name cannot add rows, headings or links to a document someone signs.
fn inert(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => out.push(' '),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '|' | '`' | '*' | '_' | '[' | ']' | '#' | '!' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

fn markdown(blocks: &[Block]) -> String {
    let cell = |text: &str| inert(text);
    let mut out = String::new();
    for block in blocks {
        match block {
            Block::Heading(level, text) => {
                let _ = writeln!(out, "{} {text}\n", "#".repeat(*level));
            }
            Block::Para(text) => {
                let _ = writeln!(out, "{text}\n");
            }
            Block::Table(headers, rows) => {
                let _ = writeln!(
                    out,
                    "| {} |",
                    headers
                        .iter()
                        .map(|h| cell(h))
                        .collect::<Vec<_>>()
                        .join(" | ")
                );
                let _ = writeln!(out, "|{}", " --- |".repeat(headers.len()));
                for row in rows {
                    let _ = writeln!(
                        out,
                        "| {} |",
                        row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
                    );
                }
                out.push('\n');
            }
        }
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn html(blocks: &[Block]) -> String {
    let mut out = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>fundflow audit report</title><style>\
         body{font-family:sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem}\
         table{border-collapse:collapse;margin-bottom:1.5rem}\
         td,th{border:1px solid #bbb;padding:.25rem .5rem;text-align:left}\
         td:nth-child(n+4){font-variant-numeric:tabular-nums}\
         </style></head><body>\n",
    );
    for block in blocks {
        match block {
            Block::Heading(level, text) => {
                let _ = writeln!(out, "<h{level}>{}</h{level}>", escape(text));
            }
            Block::Para(text) => {
                let _ = writeln!(out, "<p>{}</p>", escape(text));
            }
            Block::Table(headers, rows) => {
                out.push_str("<table><thead><tr>");
                for h in headers {
                    let _ = write!(out, "<th>{}</th>", escape(h));
                }
                out.push_str("</tr></thead><tbody>\n");
                for row in rows {
                    out.push_str("<tr>");
                    for c in row {
                        let _ = write!(out, "<td>{}</td>", escape(c));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</tbody></table>\n");
            }
        }
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a hostile partner might put in a name, a description or a reversal's reason.
    const HOSTILE: &str = "ok | <script>alert(1)</script> & [link](http://x) *b* _i_ `c` # h\n| injected | row |\r\u{2028}next";

    #[test]
    fn inert_cells_cannot_add_rows_markup_or_html() {
        let cell = inert(HOSTILE);
        assert!(!cell.contains(['\n', '\r', '\u{2028}', '<', '>']), "{cell}");
        assert!(
            !cell.contains(" | "),
            "an unescaped pipe would split the cell: {cell}"
        );
        assert_eq!(
            cell,
            "ok \\| &lt;script&gt;alert(1)&lt;/script&gt; &amp; \\[link\\](http://x) \\*b\\* \\_i\\_ \\`c\\` \\# h \\| injected \\| row \\|  next"
        );
        let table = markdown(&[Block::Table(vec!["reason"], vec![vec![HOSTILE.to_owned()]])]);
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(rows.len(), 3, "header, rule and one row only: {table}");
    }

    #[test]
    fn html_escapes_every_partner_text() {
        assert_eq!(
            escape("<a href=\"x\">&amp;</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;amp;&lt;/a&gt;"
        );
        let page = html(&[
            Block::Para(HOSTILE.to_owned()),
            Block::Table(vec!["reason"], vec![vec![HOSTILE.to_owned()]]),
        ]);
        assert!(!page.contains("<script>"), "{page}");
        assert_eq!(page.matches("&lt;script&gt;").count(), 2, "{page}");
        assert_eq!(page.matches("<td>").count(), 1, "{page}");
    }
}
