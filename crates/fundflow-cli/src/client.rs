//! The commands for people that talk to a running server: `submit` and `totals --url`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use fundflow_api::{ProblemBody, Status, SubmitReply, SubmitResult};
use serde::de::DeserializeOwned;

/// Events per request when submitting a file: well below the server's default of 10,000 lines
/// and 1 MiB, so a file of any size goes through in steady steps.
pub const SUBMIT_CHUNK: usize = 500;

/// A connection to a fundflow server.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// Counts over a whole file.
#[derive(Debug, Default)]
pub struct Totals {
    /// Per status.
    pub by_status: std::collections::BTreeMap<Status, u64>,
    /// The first few refusals, to show.
    pub refusals: Vec<String>,
}

impl Client {
    /// A client of the server at `base` (`http://host:port`).
    pub fn new(base: &str, token: &str) -> anyhow::Result<Client> {
        Ok(Client {
            http: reqwest::Client::builder()
                .build()
                .context("cannot set up the HTTP client")?,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    /// POSTs one request of events and returns the server's per-event results.
    pub async fn post_events(
        &self,
        content_type: &str,
        body: Vec<u8>,
        wait: bool,
    ) -> anyhow::Result<Vec<SubmitResult>> {
        let url = format!(
            "{}/v1/events{}",
            self.base,
            if wait { "?wait=true" } else { "" }
        );
        let response = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await;
        let (status, body) = reply_bytes(&url, response).await?;
        if status.is_success()
            && let Ok(reply) = serde_json::from_slice::<SubmitReply>(&body)
        {
            return Ok(reply.results);
        }
        // One event's result, rejected (422) or not; a problem otherwise.
        if let Ok(result) = serde_json::from_slice::<SubmitResult>(&body) {
            return Ok(vec![result]);
        }
        let problem: ProblemBody = decode(&url, status, &body)?;
        if status.is_server_error() {
            anyhow::bail!(
                "the server could not take the request ({status}): {}",
                problem.detail
            );
        }
        // A problem about the request as a whole (401, 403, 413, 415 ...).
        anyhow::bail!(
            "the server refused the request ({status}): {}",
            problem.detail
        )
    }

    /// GETs a JSON reply of type `T`.
    pub async fn get<T: DeserializeOwned>(&self, path_and_query: &str) -> anyhow::Result<T> {
        let none: &[(&str, &str)] = &[];
        self.get_with(path_and_query, &none).await
    }

    /// GETs a JSON reply of type `T`, or `None` when the server answers 404.
    pub async fn get_optional<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
    ) -> anyhow::Result<Option<T>> {
        let url = format!("{}{path_and_query}", self.base);
        let response = self.http.get(&url).bearer_auth(&self.token).send().await;
        let (status, body) = reply_bytes(&url, response).await?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let detail = serde_json::from_slice::<ProblemBody>(&body)
                .map(|p| p.detail)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            anyhow::bail!("{url} answered {status}: {detail}");
        }
        decode(&url, status, &body).map(Some)
    }

    /// GETs a JSON reply of type `T` with `query` as the query string.
    pub async fn get_with<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &impl serde::Serialize,
    ) -> anyhow::Result<T> {
        let (url, status, body) = self.get_bytes(path, query).await?;
        decode(&url, status, &body)
    }

    /// GETs a reply's body as text (CSV), with `query` as the query string.
    pub async fn get_text(
        &self,
        path: &str,
        query: &impl serde::Serialize,
    ) -> anyhow::Result<String> {
        let (url, _, body) = self.get_bytes(path, query).await?;
        String::from_utf8(body.to_vec())
            .with_context(|| format!("{url} answered text that is not UTF-8"))
    }

    async fn get_bytes(
        &self,
        path: &str,
        query: &impl serde::Serialize,
    ) -> anyhow::Result<(String, reqwest::StatusCode, bytes::Bytes)> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .get(&url)
            .query(query)
            .bearer_auth(&self.token)
            .send()
            .await;
        let (status, body) = reply_bytes(&url, response).await?;
        if !status.is_success() {
            // Not every error reply is a problem (a proxy's page, say): then its text.
            let detail = serde_json::from_slice::<ProblemBody>(&body)
                .map(|p| p.detail)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            anyhow::bail!("{url} answered {status}: {detail}");
        }
        Ok((url, status, body))
    }
}

/// The status and body of a reply, or why there is none.
async fn reply_bytes(
    url: &str,
    response: reqwest::Result<reqwest::Response>,
) -> anyhow::Result<(reqwest::StatusCode, bytes::Bytes)> {
    let response = response.with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .with_context(|| format!("{url} answered {status} but the body could not be read"))?;
    Ok((status, body))
}

fn decode<T: DeserializeOwned>(
    url: &str,
    status: reqwest::StatusCode,
    body: &[u8],
) -> anyhow::Result<T> {
    serde_json::from_slice(body)
        .with_context(|| format!("{url} answered {status} without the JSON reply expected"))
}

/// Bytes per request, well below the server's default body limit of 1 MiB.
const SUBMIT_BYTES: usize = 512 * 1024;

/// One request: its body, how many events it holds, and the file line of each of its lines (or
/// CSV data rows), so that the server's per-request line numbers can be told as file lines.
pub struct Chunk {
    /// Events in it.
    pub events: usize,
    /// The request body.
    pub body: Vec<u8>,
    /// File line of the body's n-th line (NDJSON) or data row (CSV), n from 1.
    pub lines: Vec<u64>,
}

/// Splits a file into requests of at most [`SUBMIT_CHUNK`] events and about [`SUBMIT_BYTES`]:
/// NDJSON by lines, CSV by whole events (rows of one `ref` stay together) with the header
/// repeated.
pub fn chunks(path: &Path, text: &str) -> anyhow::Result<(&'static str, Vec<Chunk>)> {
    let is_csv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let mut out = Vec::new();
    if !is_csv {
        let mut current = Chunk {
            events: 0,
            body: Vec::new(),
            lines: Vec::new(),
        };
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let full =
                current.events == SUBMIT_CHUNK || current.body.len() + line.len() > SUBMIT_BYTES;
            if full && current.events > 0 {
                out.push(std::mem::replace(
                    &mut current,
                    Chunk {
                        events: 0,
                        body: Vec::new(),
                        lines: Vec::new(),
                    },
                ));
            }
            current.body.extend_from_slice(line.as_bytes());
            current.body.push(b'\n');
            current.lines.push(n as u64 + 1);
            current.events += 1;
        }
        if current.events > 0 {
            out.push(current);
        }
        return Ok(("application/x-ndjson", out));
    }
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .with_context(|| format!("{} has no CSV header row", path.display()))?
        .clone();
    let ref_column = headers
        .iter()
        .position(|h| h.trim() == "ref")
        .with_context(|| format!("{} has no ref column", path.display()))?;
    let mut groups: Vec<Vec<csv::StringRecord>> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for row in reader.records() {
        let row = row.with_context(|| format!("{} is not valid CSV", path.display()))?;
        let reference = row.get(ref_column).unwrap_or("").trim().to_owned();
        let slot = *index.entry(reference).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[slot].push(row);
    }
    let mut current: Vec<&csv::StringRecord> = Vec::new();
    let (mut events, mut bytes) = (0usize, 0usize);
    let flush = |rows: &mut Vec<&csv::StringRecord>,
                 events: &mut usize,
                 out: &mut Vec<Chunk>|
     -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(&headers)?;
        for row in rows.iter() {
            writer.write_record(*row)?;
        }
        out.push(Chunk {
            events: *events,
            body: writer.into_inner().context("cannot write CSV")?,
            lines: rows
                .iter()
                .map(|r| r.position().map_or(0, csv::Position::line))
                .collect(),
        });
        rows.clear();
        *events = 0;
        Ok(())
    };
    for rows in &groups {
        let size: usize = rows.iter().map(|r| r.as_slice().len() + r.len()).sum();
        if current.len() + rows.len() > SUBMIT_CHUNK || bytes + size > SUBMIT_BYTES {
            flush(&mut current, &mut events, &mut out)?;
            bytes = 0;
        }
        current.extend(rows.iter());
        events += 1;
        bytes += size;
    }
    flush(&mut current, &mut events, &mut out)?;
    Ok(("text/csv", out))
}

/// `fundflow submit FILE`.
pub async fn submit(path: &Path, url: &str, token: &str, wait: bool) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (content_type, chunks) = chunks(path, &text)?;
    let client = Client::new(url, token)?;
    let events: usize = chunks.iter().map(|c| c.events).sum();
    let bar = indicatif::ProgressBar::new(u64::try_from(events).unwrap_or(u64::MAX));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} events, {per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut totals = Totals::default();
    for Chunk {
        events: count,
        body,
        lines,
    } in chunks
    {
        let results = client.post_events(content_type, body, wait).await?;
        for result in &results {
            let status = result.status;
            if status.is_failure() && totals.refusals.len() < 20 {
                // The server counts lines within the request; tell the file's line.
                let line = result
                    .line
                    .and_then(|l| lines.get(l.checked_sub(1)?))
                    .map_or(String::new(), |l| format!("line {l}: "));
                let detail = result.detail().unwrap_or("");
                totals.refusals.push(format!("{line}{status}: {detail}"));
            }
            *totals.by_status.entry(status).or_default() += 1;
        }
        bar.inc(u64::try_from(count).unwrap_or(0));
    }
    bar.finish_and_clear();
    let mut out = std::io::stdout().lock();
    let summary: Vec<String> = totals
        .by_status
        .iter()
        .map(|(status, n)| format!("{status} {n}"))
        .collect();
    writeln!(out, "{}: {}", path.display(), summary.join(", "))?;
    for refusal in &totals.refusals {
        writeln!(out, "  {refusal}")?;
    }
    let refused = [Status::Refused, Status::Conflict]
        .iter()
        .map(|s| totals.by_status.get(s).copied().unwrap_or(0))
        .sum::<u64>();
    if refused > 0 {
        anyhow::bail!("{refused} events were refused (see above); the others went through");
    }
    Ok(())
}

/// `fundflow totals --url`: the totals a server gives, printed as asked.
pub async fn totals_from_server(
    url: &str,
    token: &str,
    totals: &crate::args::TotalsArgs,
    format: crate::Format,
) -> anyhow::Result<()> {
    let query = totals.query()?;
    let client = Client::new(url, token)?;
    let reply: fundflow_api::TotalsReply = client.get_with("/v1/totals", &totals.params()).await?;
    crate::analytics::print_totals(&reply, &query.group_by, format)
}

/// Prints totals rows (as the API gives them) as a table for people.
pub fn print_total_rows(rows: &[fundflow_api::TotalRow]) {
    println!(
        "  {:<4} {:<34} {:<17} {:<4} {:>20} {:>20}",
        "key", "name", "kind", "cur", "amount", "usd_equivalent"
    );
    for row in rows {
        let mut name = row.name.clone();
        if name.chars().count() > 34 {
            name = name.chars().take(33).collect::<String>() + "…";
        }
        println!(
            "  {:<4} {:<34} {:<17} {:<4} {:>20} {:>20}",
            row.key, name, row.kind, row.currency, row.amount, row.usd_equivalent
        );
    }
}
