//! `fundflow quickstart`: everything on one machine with no server to install. An embedded log
//! and read model in `./fundflow-data`, demo principals, the sample dataset built from the
//! programme's 2020 report submitted through the real gateway over HTTP, the totals printed, and
//! the server left running for the reader to explore.
//!
//! Running it again changes nothing: the tokens are kept in the data directory, and every event
//! of the dataset has a `ref`, so a second submission is a `duplicate`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use fundflow_server::access::{AccessFile, PartnerEntry, ReaderEntry, new_token, token_sha256};
use serde_json::Value;

use crate::LogArgs;
use crate::client::Client;
use crate::serve::HttpArgs;
use fundflow_server::app::Mode;

/// The sample dataset, compiled in so that the installed binary needs no file beside it.
const DATASET: &str = include_str!("../quickstart/programme-2020.ndjson");
const DATASET_NAME: &str = "crates/fundflow-cli/quickstart/programme-2020.ndjson";

/// The demo principals: the dataset's partners, a reviewer and an auditor.
const PARTNERS: [(&str, &str); 2] = [
    (
        "gssdc",
        "Global South-South Development Center Project office",
    ),
    ("icshp", "International Center on Small Hydro Power"),
];

struct Demo {
    /// (role, name, partner id, token)
    principals: Vec<(String, String, Option<String>, String)>,
    config: PathBuf,
}

/// Reads the demo tokens kept in `data_dir`, or makes and keeps new ones.
fn demo_principals(data_dir: &Path) -> anyhow::Result<Demo> {
    let tokens_path = data_dir.join("quickstart-tokens.toml");
    let config = data_dir.join("quickstart-access.toml");
    let mut principals = Vec::new();
    if let Ok(text) = std::fs::read_to_string(&tokens_path) {
        let table: toml::Table = toml::from_str(&text)
            .with_context(|| format!("{} is unreadable; delete it", tokens_path.display()))?;
        for (key, token) in &table {
            let token = token
                .as_str()
                .with_context(|| {
                    format!(
                        "{}: {key} is not a string; delete the file",
                        tokens_path.display()
                    )
                })?
                .to_owned();
            let (role, name, partner) = match key.as_str() {
                "reviewer" => ("reviewer", "Finance review (demo)".to_owned(), None),
                "auditor" => ("auditor", "Audit (demo)".to_owned(), None),
                partner => {
                    let name = PARTNERS
                        .iter()
                        .find(|(id, _)| *id == partner)
                        .map_or(partner, |(_, name)| name);
                    ("partner", name.to_owned(), Some(partner.to_owned()))
                }
            };
            principals.push((role.to_owned(), name, partner, token));
        }
    } else {
        for (id, name) in PARTNERS {
            principals.push((
                "partner".into(),
                name.into(),
                Some(id.into()),
                new_token()?.0,
            ));
        }
        principals.push((
            "reviewer".into(),
            "Finance review (demo)".into(),
            None,
            new_token()?.0,
        ));
        principals.push((
            "auditor".into(),
            "Audit (demo)".into(),
            None,
            new_token()?.0,
        ));
        let tokens: toml::Table = principals
            .iter()
            .map(|(role, _, partner, token)| {
                let key = partner.as_deref().unwrap_or(role);
                (key.to_owned(), toml::Value::String(token.clone()))
            })
            .collect();
        let text = format!(
            "# Demo tokens of fundflow quickstart. Secrets: for this machine only.\n{}",
            toml::to_string(&tokens)?
        );
        write_private(&tokens_path, &text)?;
    }
    let mut access = AccessFile::default();
    for (role, name, partner, token) in &principals {
        let token_sha256 = token_sha256(token);
        match (partner, role.as_str()) {
            (Some(id), _) => access.partners.push(PartnerEntry {
                id: id.clone(),
                name: name.clone(),
                token_sha256,
                nats_nkey: None,
            }),
            (None, "reviewer") => access.reviewers.push(ReaderEntry {
                name: name.clone(),
                token_sha256,
                nats_nkey: None,
            }),
            (None, _) => access.auditors.push(ReaderEntry {
                name: name.clone(),
                token_sha256,
                nats_nkey: None,
            }),
        }
    }
    let access = format!(
        "# Written by fundflow quickstart: token hashes, never tokens.\n{}",
        access.to_toml()?
    );
    std::fs::write(&config, access)
        .with_context(|| format!("cannot write {}", config.display()))?;
    Ok(Demo { principals, config })
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn token_of<'a>(demo: &'a Demo, key: &str) -> anyhow::Result<&'a str> {
    demo.principals
        .iter()
        .find(|(role, _, partner, _)| partner.as_deref() == Some(key) || role == key)
        .map(|(_, _, _, token)| token.as_str())
        .with_context(|| {
            format!("no demo token for {key}; delete fundflow-data/quickstart-tokens.toml")
        })
}

/// `fundflow quickstart`.
pub async fn run(log_args: &LogArgs, http: &HttpArgs, exit: bool) -> anyhow::Result<()> {
    let mut log_args = log_args.clone();
    log_args.embedded = true;
    std::fs::create_dir_all(&log_args.data_dir)
        .with_context(|| format!("cannot create {}", log_args.data_dir.display()))?;
    let demo = demo_principals(&log_args.data_dir)?;
    let mut http = http.clone();
    http.config = Some(demo.config.clone());
    let access = crate::serve::load_access(http.config.as_ref())?;
    let mut running = crate::serve::start(
        Mode::Serve,
        &log_args,
        &http,
        &crate::serve::FoldArgs::default(),
        access,
    )
    .await?;
    running.started().await?;
    let base = format!("http://{}", running.addr);

    // Each partner submits its own lines, with its own token, through the gateway.
    let mut by_partner: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for line in DATASET.lines().filter(|l| !l.trim().is_empty()) {
        let object: Value = serde_json::from_str(line)
            .with_context(|| format!("{DATASET_NAME} holds a line that is not JSON"))?;
        let partner = object["partner_id"]
            .as_str()
            .with_context(|| format!("{DATASET_NAME} holds a line without a partner_id"))?
            .to_owned();
        by_partner.entry(partner).or_default().push(line);
    }
    println!("Submitting {DATASET_NAME} through the gateway at {base}:");
    for (partner, lines) in &by_partner {
        let client = Client::new(&base, token_of(&demo, partner)?)?;
        let results = client
            .post_events(
                "application/x-ndjson",
                (lines.join("\n") + "\n").into_bytes(),
                true,
            )
            .await?;
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for result in &results {
            *counts.entry(result.status.as_str()).or_default() += 1;
            if let Some(detail) = result.detail() {
                println!("  {partner}: {detail}");
            }
        }
        let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
        println!("  {partner:<8} {}", counts.join(", "));
    }

    let reviewer = Client::new(&base, token_of(&demo, "reviewer")?)?;
    // The report's own year, at a glance: what the programme's 2020 highlights state.
    let summary: fundflow_api::SummaryReply = reviewer
        .get("/v1/summary?from=2020-01-01&to=2020-12-31")
        .await?;
    println!();
    crate::analytics::print_summary(&summary);
    // The goods as the report itemises them: each donation to its recipient, area or country.
    let gifts: fundflow_api::FlowsReply = reviewer
        .get("/v1/flows?kind=in_kind&from=2020-01-01&to=2020-12-31")
        .await?;
    for flow in gifts.flows.iter().rev() {
        for allocation in &flow.allocations {
            for item in &allocation.items {
                let to = if allocation.organisation.is_empty() {
                    format!("{} ({})", allocation.name, allocation.key)
                } else {
                    format!(
                        "{}, {} ({})",
                        allocation.organisation, allocation.name, allocation.key
                    )
                };
                println!(
                    "    {} {:>8} {} of {} to {to}, worth {} {}",
                    flow.occurred_on,
                    item.quantity,
                    item.unit,
                    item.item,
                    flow.currency,
                    allocation.value
                );
            }
        }
    }
    for scope in ["global", "region", "country"] {
        let reply: fundflow_api::TotalsReply =
            reviewer.get(&format!("/v1/totals?scope={scope}")).await?;
        let title = match scope {
            "global" => "World totals",
            "region" => "Totals by M49 region",
            _ => "Totals by recipient country",
        };
        println!("\n{title} (as of seq {}):", reply.as_of_seq);
        crate::client::print_total_rows(&reply.rows);
    }
    let in_kind: fundflow_api::InKindReply = reviewer.get("/v1/in-kind?scope=country").await?;
    println!("\nIn-kind quantities by country:");
    for row in &in_kind.rows {
        println!(
            "  {:<4} {:<28} {:>12} {} of {}",
            row.key, row.name, row.quantity, row.unit, row.item,
        );
    }

    println!(
        "\nDemo tokens (kept in {}):",
        log_args.data_dir.join("quickstart-tokens.toml").display()
    );
    for (role, name, partner, token) in &demo.principals {
        let who = partner
            .as_deref()
            .map_or_else(|| role.clone(), |p| format!("partner {p}"));
        println!("  {who:<16} {token}   ({name})");
    }
    let reviewer_token = token_of(&demo, "reviewer")?;
    println!(
        "\nTry:\n  curl -s -H 'Authorization: Bearer {reviewer_token}' '{base}/v1/totals?scope=region&format=csv'"
    );
    println!("  curl -s {base}/metrics | grep fundflow_events");
    println!(
        "\nDashboard: open {base}/ in a browser and sign in with the reviewer token {reviewer_token}"
    );
    if exit {
        return Ok(running.stop().await?);
    }
    println!("\nServing on {base} until Ctrl-C.");
    Ok(running
        .run_until(crate::log_commands::shutdown_signal())
        .await?)
}
