//! The reviewers' analytics (issue 12) at 1,000,000 generated events, side by side with
//! PostgreSQL holding the same flows, in one run on one machine:
//!
//! 1. a nats-server 2.10 and `fundflow serve` on it are started; `gen-log --events N --seed 7`
//!    is published onto the stream with `publish-file`, and the projector's fold rate is timed
//!    from the start of publishing until the projector's checkpoint gauge (`/metrics`) reaches
//!    the log's last seq;
//! 2. five questions are asked of fundflow, 200 times each one request at a time after 10
//!    warm-up requests (client side, full body read): p50 and p99;
//! 3. the applied flows are read back from fundflow (`GET /v1/flows?format=csv`, paged by the
//!    `fundflow-next-cursor` header) and streamed into a fresh PostgreSQL database with
//!    `COPY ... FROM STDIN`, one row per allocation, next to an `m49` table of every country's
//!    and area's ancestors (from `fundflow_domain::Node`), with the indexes a PostgreSQL user
//!    would add; the same five questions are asked in SQL (prepared statements, the same runs);
//!    then the dashboard's pages (issue 14) in a reviewer's session, the same way;
//! 4. one table compares them, with the rows each side returned (and whether they are the same
//!    rows), PostgreSQL's table size and fundflow's data dir size.
//!
//! Run: `cargo bench -p fundflow-cli --bench analytics` (needs the nats-server 2.10 binary of
//! `deploy/nats/fetch-nats-server.sh` and a PostgreSQL at 127.0.0.1:5432 with trust auth; without
//! PostgreSQL it says so and stops). `FUNDFLOW_BENCH_EVENTS` changes the 1,000,000;
//! `FUNDFLOW_BENCH_PG` the connection (`host=127.0.0.1 port=5432 user=postgres`);
//! `FUNDFLOW_BENCH_BUDGET_SECS` (default 240) caps the timed runs of one question on one side,
//! so a slow SQL query ends the run in bounded time (the table says how many runs were timed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use futures::SinkExt;
use rust_decimal::Decimal;
use serde_json::Value;
use tokio_postgres::{Client, NoTls};

const REVIEWER: &str = "fft_bench_reviewer";
const AUDITOR: &str = "fft_bench_auditor";
const WARMUP: usize = 10;
const RUNS: usize = 200;
const DATABASE: &str = "fundflow_bench";
const PAGE: usize = 1_000;

/// The five questions of the issue, in its order.
const QUESTIONS: [&str; 5] = [
    "/v1/totals?group_by=partner,year",
    "/v1/totals?scope=country&group_by=year&kind=paid&from=2020-01-01&to=2020-12-31",
    "/v1/flows?country=KEN&limit=100",
    "/v1/pledges?status=open&limit=100",
    "/v1/summary?from=2020-01-01&to=2020-12-31",
];

/// The dashboard's pages (issue 14), asked in a reviewer's session like the questions: each
/// runs the queries behind it and renders its HTML, so its time less its queries' is the
/// rendering's.
const PAGES: [&str; 9] = [
    "/?from=2020-01-01&to=2020-12-31",
    "/recipients",
    "/recipients?region=014",
    "/recipients/KEN",
    "/pledges?status=open",
    "/partners",
    "/in-kind",
    "/flows?country=KEN",
    "/rejections",
];

/// The CSV columns of `GET /v1/flows?format=csv`, as PostgreSQL columns (`grant` is a reserved
/// word there, hence `grant_id`). Empty text is `''`, never NULL (`FORCE_NOT_NULL`); an empty
/// rate, date or USD figure is NULL.
const CREATE_FLOWS: &str = "CREATE TABLE flows (
    seq bigint NOT NULL,
    event_id text NOT NULL,
    partner text NOT NULL,
    type text NOT NULL,
    own_id text NOT NULL,
    kind text NOT NULL,
    occurred_on date NOT NULL,
    recorded_at timestamptz NOT NULL,
    donor text NOT NULL,
    grant_id text NOT NULL,
    sector text NOT NULL,
    description text NOT NULL,
    currency text NOT NULL,
    amount numeric NOT NULL,
    usd_rate numeric,
    usd_rate_date date,
    usd_rate_source text NOT NULL,
    usd_equivalent numeric,
    status text NOT NULL,
    reversed_by text NOT NULL,
    reason text NOT NULL,
    allocation integer NOT NULL,
    recipient_scope text NOT NULL,
    recipient text NOT NULL,
    recipient_name text NOT NULL,
    organisation text NOT NULL,
    value numeric NOT NULL,
    value_usd numeric,
    items text NOT NULL
)";

const COPY_FLOWS: &str = "COPY flows FROM STDIN (FORMAT csv, HEADER, FORCE_NOT_NULL (event_id, \
    partner, type, own_id, kind, donor, grant_id, sector, description, currency, usd_rate_source, status, \
    reversed_by, reason, recipient_scope, recipient, recipient_name, organisation, items))";

/// Every node and each area it rolls up into (itself included), as fundflow rolls them up.
const CREATE_M49: &str = "CREATE TABLE m49 (
    node text NOT NULL,
    ancestor text NOT NULL,
    ancestor_scope text NOT NULL,
    ancestor_name text NOT NULL,
    scope_rank smallint NOT NULL,
    PRIMARY KEY (node, ancestor)
)";

const INDEXES: [&str; 6] = [
    "ALTER TABLE flows ADD PRIMARY KEY (seq, allocation)",
    "CREATE INDEX flows_recipient ON flows (recipient, occurred_on, seq)",
    "CREATE INDEX flows_partner ON flows (partner, occurred_on)",
    "CREATE INDEX flows_kind ON flows (kind, occurred_on)",
    "CREATE INDEX flows_grant ON flows (grant_id)",
    "CREATE INDEX flows_occurred ON flows (occurred_on, seq)",
];

/// An allocation row's USD equivalent (NULL when it has none: it counts as unconverted). A USD
/// flow's rate is always 1, whether or not the CSV writes it.
const USD: &str = "coalesce(f.value_usd, CASE WHEN f.currency = 'USD' THEN f.value END)";

/// The SQL of each question, its text parameters, and the columns the totals rows carry.
fn sql_questions() -> [(String, Vec<&'static str>); 5] {
    let sums = format!(
        "sum(f.value)::text, coalesce(sum({USD}), 0)::text, \
         coalesce(sum(f.value) FILTER (WHERE ({USD}) IS NULL), 0)::text"
    );
    [
        // Every allocation counts at its recipient and every area above it.
        (
            format!(
                "SELECT m.ancestor_scope, m.ancestor, m.ancestor_name, f.partner, \
                    to_char(f.occurred_on, 'YYYY') AS year, f.kind, f.currency, {sums}
                 FROM flows f JOIN m49 m ON m.node = f.recipient
                 GROUP BY m.scope_rank, m.ancestor_scope, m.ancestor, m.ancestor_name, f.partner,
                    year, f.kind, f.currency
                 HAVING sum(f.value) <> 0
                 ORDER BY m.scope_rank, m.ancestor, f.partner, year, f.kind, f.currency"
            ),
            vec![],
        ),
        // At country scope, only the allocations to a country count (no roll-up needed).
        (
            format!(
                "SELECT f.recipient_scope, f.recipient, f.recipient_name,
                    to_char(f.occurred_on, 'YYYY') AS year, f.kind, f.currency, {sums}
                 FROM flows f
                 WHERE f.recipient_scope = 'country' AND f.kind = $1::text
                    AND f.occurred_on BETWEEN $2::text::date AND $3::text::date
                 GROUP BY f.recipient_scope, f.recipient, f.recipient_name, year, f.kind, f.currency
                 HAVING sum(f.value) <> 0
                 ORDER BY f.recipient, year, f.kind, f.currency"
            ),
            vec!["paid", "2020-01-01", "2020-12-31"],
        ),
        // The newest events with an allocation to the country, with all their allocations.
        (
            "WITH ev AS (
                SELECT seq, occurred_on FROM flows WHERE recipient = $1::text
                GROUP BY seq, occurred_on
                ORDER BY occurred_on DESC, seq DESC LIMIT $2::text::bigint)
             SELECT f.seq::text, f.event_id, f.partner, f.type, f.kind, f.occurred_on::text,
                f.recorded_at::text, f.donor, f.grant_id, f.sector, f.description, f.currency,
                f.amount::text, f.usd_rate::text, f.usd_rate_date::text, f.usd_rate_source,
                f.usd_equivalent::text, f.status, f.allocation::text, f.recipient_scope,
                f.recipient, f.recipient_name, f.organisation, f.value::text, f.value_usd::text,
                f.items
             FROM ev JOIN flows f ON f.seq = ev.seq
             ORDER BY ev.occurred_on DESC, ev.seq DESC, f.allocation"
                .to_owned(),
            vec!["KEN", "100"],
        ),
        // The pledge book: pledged per (partner, pledge id), paid by the same partner against
        // it, parallel funding naming it as its grant (any partner); open ones, first 100.
        (
            format!(
                "WITH pledged AS (
                    SELECT f.partner, f.grant_id AS pledge_id, min(f.donor) AS donor,
                        min(f.sector) AS sector, min(f.occurred_on) AS occurred_on,
                        min(f.currency) AS currency, sum(f.value) AS pledged,
                        sum({USD}) AS pledged_usd
                    FROM flows f WHERE f.kind = 'pledged' GROUP BY f.partner, f.grant_id),
                 paid AS (
                    SELECT f.partner, f.grant_id AS pledge_id, sum(f.value) AS paid,
                        sum({USD}) AS paid_usd
                    FROM flows f WHERE f.kind = 'paid' AND f.grant_id <> ''
                    GROUP BY f.partner, f.grant_id),
                 parallel AS (
                    SELECT grant_id,
                        string_agg(currency || ' ' || amount::text, ', ' ORDER BY currency)
                            AS parallel_funding,
                        sum(usd) AS parallel_funding_usd
                    FROM (SELECT f.grant_id, f.currency, sum(f.value) AS amount,
                            sum({USD}) AS usd
                          FROM flows f WHERE f.kind = 'parallel_funding' AND f.grant_id <> ''
                          GROUP BY f.grant_id, f.currency) g
                    GROUP BY grant_id)
                 SELECT p.partner, p.pledge_id, p.donor, p.sector, p.occurred_on::text, p.currency,
                    p.pledged::text, coalesce(d.paid, 0)::text,
                    (p.pledged - coalesce(d.paid, 0))::text,
                    p.pledged_usd::text, d.paid_usd::text,
                    (p.pledged_usd - coalesce(d.paid_usd, 0))::text,
                    x.parallel_funding, x.parallel_funding_usd::text,
                    round(x.parallel_funding_usd / nullif(p.pledged_usd, 0), 4)::text
                 FROM pledged p
                    LEFT JOIN paid d USING (partner, pledge_id)
                    LEFT JOIN parallel x ON x.grant_id = p.pledge_id
                 WHERE p.pledged - coalesce(d.paid, 0) > 0
                 ORDER BY p.partner, p.pledge_id
                 LIMIT $1::text::bigint"
            ),
            vec!["100"],
        ),
        // The figures at a glance: (figure, kind, currency or key, value) rows.
        (
            format!(
                "WITH p AS MATERIALIZED (
                    SELECT f.kind, f.partner, f.grant_id, f.recipient, f.recipient_scope,
                        f.currency, f.seq, f.value, {USD} AS usd
                    FROM flows f
                    WHERE f.occurred_on BETWEEN $1::text::date AND $2::text::date),
                 cells AS MATERIALIZED (
                    SELECT kind, recipient, recipient_scope FROM p
                    GROUP BY kind, recipient, recipient_scope, currency HAVING sum(value) <> 0)
                 SELECT 'usd_equivalent', kind, '', coalesce(sum(usd), 0)::text FROM p
                    GROUP BY kind
                 UNION ALL
                 SELECT 'unconverted', kind, currency, sum(value)::text FROM p
                    WHERE usd IS NULL GROUP BY kind, currency
                 UNION ALL
                 SELECT 'countries', kind, '', count(DISTINCT recipient)::text FROM cells
                    WHERE recipient_scope = 'country' GROUP BY kind
                 UNION ALL
                 SELECT 'countries_benefiting', '', '', count(DISTINCT recipient)::text
                    FROM cells WHERE recipient_scope = 'country' AND kind <> 'pledged'
                 UNION ALL
                 SELECT 'region', '', m.ancestor, '1'
                    FROM (SELECT DISTINCT recipient FROM cells WHERE kind <> 'pledged') c
                    JOIN m49 m ON m.node = c.recipient AND m.ancestor_scope = 'region'
                    GROUP BY m.ancestor
                 UNION ALL
                 SELECT 'partners', '', '', count(DISTINCT partner)::text FROM p WHERE value <> 0
                 UNION ALL
                 SELECT 'grants', '', '', count(DISTINCT grant_id)::text FROM p
                    WHERE grant_id <> '' AND value <> 0
                 UNION ALL
                 SELECT 'events_applied', '', '', count(DISTINCT seq)::text FROM p"
            ),
            vec!["2020-01-01", "2020-12-31"],
        ),
    ]
}

/// The `percent`-th percentile (nearest rank) of sorted latencies, in ms.
fn percentile_ms(sorted: &[Duration], percent: usize) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(sorted.len() - 1) * percent / 100].as_secs_f64() * 1e3
}

/// The latencies of one question on one side, or why there are none.
struct Timed {
    latencies: Vec<Duration>,
    error: Option<String>,
    /// The first request's time: a page's cache is cold then.
    first: Option<Duration>,
}

impl Timed {
    fn p50(&self) -> f64 {
        percentile_ms(&self.latencies, 50)
    }

    fn p99(&self) -> f64 {
        percentile_ms(&self.latencies, 99)
    }

    fn cell(&self) -> String {
        match &self.error {
            Some(e) if self.latencies.is_empty() => truncate(e, 21),
            _ => format!("{:>8.2} / {:>8.2}", self.p50(), self.p99()),
        }
    }
}

fn truncate(text: &str, chars: usize) -> String {
    let one_line = text.replace('\n', " ");
    if one_line.chars().count() <= chars {
        one_line
    } else {
        one_line.chars().take(chars - 1).collect::<String>() + "…"
    }
}

fn budget() -> Duration {
    Duration::from_secs(
        std::env::var("FUNDFLOW_BENCH_BUDGET_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(240),
    )
}

/// One GET with the reviewer's token: status and the whole body.
async fn get(http: &reqwest::Client, url: &str) -> Result<(u16, Bytes), String> {
    let response = http
        .get(url)
        .bearer_auth(REVIEWER)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    Ok((status, body))
}

/// Asks fundflow `path` after warm-up: the timings and the last body (a JSON value).
async fn ask_fundflow(http: &reqwest::Client, base: &str, path: &str) -> (Timed, Option<Value>) {
    let url = format!("{base}{path}");
    let mut timed = Timed {
        latencies: Vec::with_capacity(RUNS),
        error: None,
        first: None,
    };
    let mut last = Bytes::new();
    let started = Instant::now();
    for run in 0..WARMUP + RUNS {
        let sent = Instant::now();
        let (status, body) = match get(http, &url).await {
            Ok(reply) => reply,
            Err(e) => {
                timed.error = Some(e);
                break;
            }
        };
        let elapsed = sent.elapsed();
        if status != 200 {
            timed.error = Some(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
            break;
        }
        if run == 0 {
            timed.first = Some(elapsed);
        }
        if run >= WARMUP {
            timed.latencies.push(elapsed);
        }
        last = body;
        if run >= WARMUP && started.elapsed() > budget() {
            break;
        }
    }
    timed.latencies.sort_unstable();
    let value = serde_json::from_slice(&last).ok();
    (timed, value)
}

/// Runs the prepared statement of `sql` after warm-up: the timings and the last rows, every
/// column as text (`""` for NULL).
async fn ask_postgres(
    client: &Client,
    sql: &str,
    params: &[&'static str],
) -> (Timed, Vec<Vec<String>>) {
    let mut timed = Timed {
        latencies: Vec::with_capacity(RUNS),
        error: None,
        first: None,
    };
    let statement = match client.prepare(sql).await {
        Ok(s) => s,
        Err(e) => {
            timed.error = Some(format!("prepare: {e}"));
            return (timed, Vec::new());
        }
    };
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
        .iter()
        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let mut last = Vec::new();
    let started = Instant::now();
    for run in 0..WARMUP + RUNS {
        let sent = Instant::now();
        match client.query(&statement, &params).await {
            Ok(rows) => {
                let elapsed = sent.elapsed();
                if run >= WARMUP {
                    timed.latencies.push(elapsed);
                }
                last = rows;
            }
            Err(e) => {
                timed.error = Some(format!("{e}"));
                break;
            }
        }
        if run >= WARMUP && started.elapsed() > budget() {
            break;
        }
    }
    timed.latencies.sort_unstable();
    let rows = last
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| row.get::<_, Option<String>>(i).unwrap_or_default())
                .collect()
        })
        .collect();
    (timed, rows)
}

/// A decimal string in its shortest form, so `12.50` and `12.5` compare equal.
fn number(text: &str) -> String {
    Decimal::from_str(text).map_or_else(|_| text.to_owned(), |d| d.normalize().to_string())
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Totals rows as comparable tuples: scope, key, name, the grouped dimensions, kind, currency,
/// amount, usd_equivalent, unconverted (numbers normalised).
fn fundflow_totals(reply: &Value, dims: &[&str]) -> Vec<Vec<String>> {
    let Some(rows) = reply["rows"].as_array() else {
        return Vec::new();
    };
    rows.iter()
        .map(|row| {
            let mut tuple: Vec<String> = ["scope", "key", "name"]
                .iter()
                .chain(dims)
                .chain(&["kind", "currency"])
                .map(|f| text(&row[*f]))
                .collect();
            for f in ["amount", "usd_equivalent", "unconverted"] {
                tuple.push(number(&text(&row[f])));
            }
            tuple
        })
        .collect()
}

fn postgres_totals(rows: &[Vec<String>]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|row| {
            let n = row.len();
            row.iter()
                .enumerate()
                .map(|(i, v)| if i + 3 >= n { number(v) } else { v.clone() })
                .collect()
        })
        .collect()
}

/// Whether two lists hold the same items (as sets when `ordered` is false); a short account of
/// the first differences otherwise.
fn compare(fundflow: &[Vec<String>], postgres: &[Vec<String>], ordered: bool) -> String {
    if ordered {
        if fundflow == postgres {
            return "same".to_owned();
        }
        let at = fundflow
            .iter()
            .zip(postgres)
            .position(|(a, b)| a != b)
            .unwrap_or(fundflow.len().min(postgres.len()));
        return format!(
            "differ from item {at}: fundflow {:?} / PostgreSQL {:?}",
            fundflow.get(at),
            postgres.get(at)
        );
    }
    let a: BTreeSet<&Vec<String>> = fundflow.iter().collect();
    let b: BTreeSet<&Vec<String>> = postgres.iter().collect();
    if a == b && fundflow.len() == postgres.len() {
        return "same".to_owned();
    }
    let only_fundflow: Vec<_> = a.difference(&b).take(2).collect();
    let only_postgres: Vec<_> = b.difference(&a).take(2).collect();
    format!(
        "{} rows only in fundflow, e.g. {only_fundflow:?}; {} only in PostgreSQL, e.g. {only_postgres:?}",
        a.difference(&b).count(),
        b.difference(&a).count()
    )
}

/// The summary's figures as `figure/kind/currency-or-key → value`.
fn fundflow_summary(reply: &Value) -> BTreeMap<String, String> {
    let mut figures = BTreeMap::new();
    for k in reply["by_kind"].as_array().into_iter().flatten() {
        let kind = text(&k["kind"]);
        let usd = number(&text(&k["usd_equivalent"]));
        if usd != "0" {
            figures.insert(format!("usd_equivalent/{kind}/"), usd);
        }
        let countries = text(&k["countries"]);
        if countries != "0" {
            figures.insert(format!("countries/{kind}/"), countries);
        }
        for u in k["unconverted"].as_array().into_iter().flatten() {
            let amount = number(&text(&u["amount"]));
            if amount != "0" {
                figures.insert(
                    format!("unconverted/{kind}/{}", text(&u["currency"])),
                    amount,
                );
            }
        }
    }
    for r in reply["regions"].as_array().into_iter().flatten() {
        let key = if r.is_object() {
            text(&r["key"])
        } else {
            text(r)
        };
        figures.insert(format!("region//{key}"), "1".to_owned());
    }
    for f in [
        "countries_benefiting",
        "partners",
        "grants",
        "events_applied",
    ] {
        figures.insert(format!("{f}//"), text(&reply[f]));
    }
    figures
}

fn postgres_summary(rows: &[Vec<String>]) -> BTreeMap<String, String> {
    rows.iter()
        .map(|r| {
            let value = if r[0] == "usd_equivalent" || r[0] == "unconverted" {
                number(&r[3])
            } else {
                r[3].clone()
            };
            (format!("{}/{}/{}", r[0], r[1], r[2]), value)
        })
        .filter(|(k, v)| {
            !((k.starts_with("countries/") || k.starts_with("usd_equivalent/")) && v == "0")
        })
        .collect()
}

fn compare_figures(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> String {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let differ: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            format!(
                "{k}: fundflow {} / PostgreSQL {}",
                a.get(k).map_or("-", String::as_str),
                b.get(k).map_or("-", String::as_str)
            )
        })
        .collect();
    if differ.is_empty() {
        "same".to_owned()
    } else {
        format!("{} figures differ: {}", differ.len(), differ.join("; "))
    }
}

/// Bytes under `path`, recursively.
fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

async fn connect(conninfo: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conninfo, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("PostgreSQL connection: {e}");
        }
    });
    Ok(client)
}

/// The `m49` table's rows: every country and area, with each area it rolls up into.
fn m49_rows() -> String {
    let mut text = String::new();
    for node in (0..=u16::MAX).map_while(fundflow_domain::Node::from_index) {
        for ancestor in node.rollup() {
            let scope = ancestor.scope();
            let rank = fundflow_domain::Scope::ALL
                .iter()
                .position(|s| *s == scope)
                .unwrap_or(0);
            // Tab-separated COPY text: the names have no tabs, newlines or backslashes.
            text.push_str(&format!(
                "{}\t{}\t{}\t{}\t{rank}\n",
                node.key(),
                ancestor.key(),
                scope.as_str(),
                ancestor.name()
            ));
        }
    }
    text
}

/// Fills PostgreSQL from fundflow's own flows; returns (events, rows, seconds to page, seconds
/// to index).
async fn load_postgres(
    client: &Client,
    http: &reqwest::Client,
    base: &str,
) -> Result<(usize, usize, f64, f64), String> {
    // `Error`'s own text is only "db error"; the server's message is in the `DbError`.
    let pg = |e: tokio_postgres::Error| match e.as_db_error() {
        Some(db) => format!("PostgreSQL: {db}"),
        None => format!("PostgreSQL: {e}"),
    };
    client.batch_execute(CREATE_FLOWS).await.map_err(pg)?;
    client.batch_execute(CREATE_M49).await.map_err(pg)?;
    let sink = client
        .copy_in::<_, Bytes>("COPY m49 FROM STDIN")
        .await
        .map_err(pg)?;
    futures::pin_mut!(sink);
    sink.send(Bytes::from(m49_rows())).await.map_err(pg)?;
    sink.finish().await.map_err(pg)?;

    let started = Instant::now();
    let sink = client.copy_in::<_, Bytes>(COPY_FLOWS).await.map_err(pg)?;
    futures::pin_mut!(sink);
    let (mut events, mut rows, mut pages) = (0, 0, 0);
    let mut cursor: Option<String> = None;
    loop {
        let limit = PAGE.to_string();
        let mut query = vec![
            ("format", "csv"),
            ("status", "applied"),
            ("limit", limit.as_str()),
        ];
        if let Some(c) = &cursor {
            query.push(("cursor", c.as_str()));
        }
        let response = http
            .get(format!("{base}/v1/flows"))
            .query(&query)
            .bearer_auth(REVIEWER)
            .send()
            .await
            .map_err(|e| format!("GET /v1/flows: {e}"))?;
        let status = response.status();
        let next = response
            .headers()
            .get("fundflow-next-cursor")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("GET /v1/flows: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "GET /v1/flows?format=csv: {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
        // The header line goes to COPY once; later pages' headers are skipped.
        let start = if pages == 0 {
            0
        } else {
            body.iter()
                .position(|b| *b == b'\n')
                .map_or(body.len(), |i| i + 1)
        };
        let data = body.slice(start..);
        let lines = data.iter().filter(|b| **b == b'\n').count();
        rows += if pages == 0 {
            lines.saturating_sub(1)
        } else {
            lines
        };
        events += page_events(&data, pages == 0);
        sink.send(data).await.map_err(pg)?;
        pages += 1;
        match next {
            Some(c) if !c.is_empty() => cursor = Some(c),
            _ => break,
        }
    }
    sink.finish().await.map_err(pg)?;
    let paged = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for index in INDEXES {
        client.batch_execute(index).await.map_err(pg)?;
    }
    // One statement per call: several in one simple query run in one implicit transaction,
    // which VACUUM refuses.
    for table in ["flows", "m49"] {
        client
            .batch_execute(&format!("VACUUM (ANALYZE) {table}"))
            .await
            .map_err(pg)?;
    }
    Ok((events, rows, paged, started.elapsed().as_secs_f64()))
}

/// Distinct seqs (the first CSV field) among a page's records; approximate for quoted newlines,
/// which only a description could hold (and the generator writes none).
fn page_events(data: &[u8], header: bool) -> usize {
    let text = String::from_utf8_lossy(data);
    text.lines()
        .skip(usize::from(header))
        .filter_map(|l| l.split(',').next())
        .filter(|s| !s.is_empty())
        .collect::<BTreeSet<_>>()
        .len()
}

/// `fundflow_projector_checkpoint_seq` from `/metrics`; 0 until it is there.
async fn metrics_checkpoint_seq(http: &reqwest::Client, base: &str) -> u64 {
    let Ok(response) = http.get(format!("{base}/metrics")).send().await else {
        return 0;
    };
    let Ok(text) = response.text().await else {
        return 0;
    };
    text.lines()
        .find_map(|line| line.strip_prefix("fundflow_projector_checkpoint_seq "))
        // The exporter writes a gauge with f64's `Display`, which prints a whole number
        // without a fraction or an exponent.
        .and_then(|value| value.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

async fn checkpoint(http: &reqwest::Client, base: &str) -> Option<Value> {
    let response = http
        .get(format!("{base}/v1/checkpoint"))
        .bearer_auth(AUDITOR)
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let events: usize = std::env::var("FUNDFLOW_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let conninfo = std::env::var("FUNDFLOW_BENCH_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(events, &conninfo));
}

async fn run(events: usize, conninfo: &str) {
    // PostgreSQL first: without it there is nothing to compare, so nothing is started.
    let admin = match connect(&format!("{conninfo} dbname=postgres connect_timeout=5")).await {
        Ok(client) => client,
        Err(e) => {
            println!("analytics bench skipped: PostgreSQL is unreachable at {conninfo:?}: {e}");
            return;
        }
    };
    let version: String = admin
        .query_one("SELECT version()", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or_default();

    let nats = fundflow_testkit::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("access.toml");
    fundflow_testkit::AccessConfig::new()
        .reviewer("R", &fundflow_server::access::token_sha256(REVIEWER))
        .auditor("A", &fundflow_server::access::token_sha256(AUDITOR), None)
        .write(&config);
    let bin = env!("CARGO_BIN_EXE_fundflow");
    let data_dir = dir.path().join("data");
    let mut serve =
        fundflow_testkit::FundflowCommand::new(bin, "serve", &dir.path().join("serve.stderr"))
            .args(["serve", "--config"])
            .args([&config])
            .listen_on_any_port()
            .args(["--data-dir"])
            .args([&data_dir])
            .env("FUNDFLOW_NATS_URL", nats.url())
            .spawn();
    serve.wait_ready(Duration::from_secs(60)).await;
    let base = serve.url().to_owned();
    let http = reqwest::Client::new();
    println!("fundflow serve on NATS; {events} generated events (seed 7); {version}\n");

    // 1. Fill the log and time the fold.
    let file = dir.path().join("bench.ffl");
    let started = Instant::now();
    let status = Command::new(bin)
        .args(["gen-log", "--events", &events.to_string(), "--seed", "7"])
        .arg(&file)
        .status()
        .unwrap();
    assert!(status.success(), "gen-log failed");
    println!(
        "gen-log: {events} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let output = tokio::process::Command::new(bin)
        .arg("publish-file")
        .arg(&file)
        .env("FUNDFLOW_NATS_URL", nats.url())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "publish-file failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let published = started.elapsed();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let mut stream = js.get_stream("FUNDFLOW").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    // Watch the projector's gauge, not `/v1/checkpoint`: that digests the whole model each
    // time the seq has moved, which would slow the fold it measures.
    while metrics_checkpoint_seq(&http, &base).await < last {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let folded = started.elapsed();
    let reached = checkpoint(&http, &base)
        .await
        .expect("the checkpoint, once the projector has caught up");
    println!(
        "publish-file: {last} records in {:.1} s; the projector caught up {:.1} s after publishing began \
         ({:.1} s after it ended): fold rate {:.0} events/s; checkpoint {} applied, {} rejected",
        published.as_secs_f64(),
        folded.as_secs_f64(),
        (folded - published).as_secs_f64(),
        last as f64 / folded.as_secs_f64(),
        reached["applied"],
        reached["rejected"],
    );

    // 2. The questions, asked of fundflow.
    let mut fundflow = Vec::new();
    for path in QUESTIONS {
        let (timed, body) = ask_fundflow(&http, &base, path).await;
        if let Some(e) = &timed.error {
            println!("fundflow {path}: {e}");
        }
        fundflow.push((timed, body));
    }

    // 2b. The dashboard's pages, in a reviewer's session (the cookie; pages ignore the bearer
    // token `get` also sends).
    let signed_in = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{base}/sign-in"))
        .form(&[("token", REVIEWER)])
        .send()
        .await
        .unwrap();
    let session = signed_in.headers()[reqwest::header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let mut cookie = reqwest::header::HeaderMap::new();
    cookie.insert(reqwest::header::COOKIE, session.parse().unwrap());
    let pages_http = reqwest::Client::builder()
        .default_headers(cookie)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut pages = Vec::new();
    for path in PAGES {
        let (timed, _) = ask_fundflow(&pages_http, &base, path).await;
        pages.push(timed);
    }

    // 3. The same flows in PostgreSQL.
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
        .await
        .unwrap();
    let client = connect(&format!("{conninfo} dbname={DATABASE}"))
        .await
        .unwrap();
    let mut postgres = Vec::new();
    match load_postgres(&client, &http, &base).await {
        Ok((events, rows, paged, indexed)) => {
            println!(
                "PostgreSQL: {rows} allocation rows of {events} applied events paged from \
                 /v1/flows?format=csv into COPY in {paged:.1} s; indexes and VACUUM ANALYZE {indexed:.1} s"
            );
            for (sql, params) in sql_questions() {
                postgres.push(ask_postgres(&client, &sql, &params).await);
            }
        }
        Err(e) => {
            println!("PostgreSQL not loaded: {e}");
        }
    }
    let size: i64 = client
        .query_one("SELECT pg_total_relation_size('flows')", &[])
        .await
        .map_or(0, |r| r.get(0));
    let heap: i64 = client
        .query_one("SELECT pg_relation_size('flows')", &[])
        .await
        .map_or(0, |r| r.get(0));

    // 4. The table.
    println!(
        "\n{:<84} {:>21} {:>21} {:>9} {:>15} {:>9}",
        "question (p50 / p99 ms)", "fundflow", "PostgreSQL", "PG/ff p99", "rows ff / PG", "runs"
    );
    let mut notes = Vec::new();
    for (i, path) in QUESTIONS.iter().enumerate() {
        let (ff, body) = &fundflow[i];
        let empty = (
            Timed {
                latencies: Vec::new(),
                error: Some("not run".to_owned()),
                first: None,
            },
            Vec::new(),
        );
        let (pg, rows) = postgres.get(i).unwrap_or(&empty);
        let null = Value::Null;
        let body = body.as_ref().unwrap_or(&null);
        let (ff_rows, pg_rows, same) = match i {
            0 | 1 => {
                let dims: &[&str] = if i == 0 {
                    &["partner", "year"]
                } else {
                    &["year"]
                };
                let a = fundflow_totals(body, dims);
                let b = postgres_totals(rows);
                (
                    a.len().to_string(),
                    b.len().to_string(),
                    compare(&a, &b, false),
                )
            }
            2 => {
                let flows = body["flows"].as_array().cloned().unwrap_or_default();
                let allocations: usize = flows
                    .iter()
                    .map(|f| f["allocations"].as_array().map_or(0, Vec::len))
                    .sum();
                let a: Vec<Vec<String>> = flows.iter().map(|f| vec![text(&f["seq"])]).collect();
                let mut b: Vec<Vec<String>> = Vec::new();
                for row in rows {
                    if b.last().is_none_or(|l| l[0] != row[0]) {
                        b.push(vec![row[0].clone()]);
                    }
                }
                (
                    format!("{}+{allocations}a", a.len()),
                    format!("{}+{}a", b.len(), rows.len()),
                    compare(&a, &b, true),
                )
            }
            3 => {
                let pledges = body["pledges"].as_array().cloned().unwrap_or_default();
                let a: Vec<Vec<String>> = pledges
                    .iter()
                    .map(|p| {
                        vec![
                            text(&p["partner"]),
                            text(&p["pledge_id"]),
                            number(&text(&p["outstanding"])),
                        ]
                    })
                    .collect();
                let b: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| vec![r[0].clone(), r[1].clone(), number(&r[8])])
                    .collect();
                (
                    a.len().to_string(),
                    b.len().to_string(),
                    compare(&a, &b, true),
                )
            }
            _ => {
                let mut a = fundflow_summary(body);
                let mut b = postgres_summary(rows);
                // Not comparable: fundflow counts every record applied in the period
                // (reversals, and flows reversed later, included); the applied flows that
                // PostgreSQL holds are only the events that still count.
                let key = "events_applied//";
                notes.push(format!(
                    "  {path}: events_applied: fundflow {} (records applied, reversals included) / \
                     PostgreSQL {} (flow events still applied; not compared)",
                    a.remove(key).unwrap_or_default(),
                    b.remove(key).unwrap_or_default()
                ));
                (
                    format!("{}f", a.len()),
                    format!("{}f", b.len()),
                    compare_figures(&a, &b),
                )
            }
        };
        let ratio = pg.p99() / ff.p99();
        println!(
            "{:<84} {:>21} {:>21} {:>9} {:>15} {:>9}",
            format!("GET {path}"),
            ff.cell(),
            pg.cell(),
            if ratio.is_finite() {
                format!("{ratio:.1}x")
            } else {
                "-".to_owned()
            },
            format!("{ff_rows} / {pg_rows}"),
            format!("{}/{}", ff.latencies.len(), pg.latencies.len()),
        );
        if ff.latencies.is_empty() || pg.latencies.is_empty() {
            notes.push(format!("  {path}: results not compared"));
        } else {
            notes.push(format!("  {path}: results {same}"));
        }
        if let Some(e) = &pg.error {
            notes.push(format!("  {path}: PostgreSQL: {e}"));
        }
        if let Some(e) = &ff.error {
            notes.push(format!("  {path}: fundflow: {e}"));
        }
    }
    println!("(rows: totals rows; flows as events+allocations; pledges; summary as figures)");
    println!("\n{}", notes.join("\n"));
    println!(
        "\n{:<60} {:>21} {:>12} {:>9}",
        "dashboard page (p50 / p99 ms)", "fundflow", "first ms", "runs"
    );
    for (path, timed) in PAGES.iter().zip(&pages) {
        println!(
            "{:<60} {:>21} {:>12} {:>9}",
            format!("GET {path}"),
            timed.cell(),
            timed
                .first
                .map_or("-".to_owned(), |d| format!("{:.2}", d.as_secs_f64() * 1e3)),
            timed.latencies.len()
        );
        if let Some(e) = &timed.error {
            println!("  {path}: {e}");
        }
    }
    println!(
        "\nPostgreSQL table flows: {} with indexes ({} heap); fundflow data dir: {}",
        mib(u64::try_from(size).unwrap_or(0)),
        mib(u64::try_from(heap).unwrap_or(0)),
        mib(dir_size(&data_dir)),
    );
    drop(client);
    drop(serve);
}
