//! `fundflow export iati|fts` and `fundflow import fts`: the field's formats, written from a
//! server, a stopped data directory or a log export, and FTS API flows submitted as a partner's
//! events through the gateway (the mappings and the import's refusals are
//! `fundflow_interop`'s).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use fundflow_api::{EventOutcome, EventReply, FlowsReply, Status, SubmitResult, derived_event_id};
use fundflow_interop::fts_import::{self, FtsFile, NotImported};
use fundflow_interop::{fts, iati};
use fundflow_log::{EventLog, embedded::EmbeddedLog};
use fundflow_projector::{Projector, ProjectorConfig, RunUntil};
use fundflow_server::query::{FlowsParams, Queries};

use crate::args::{ExportSource, FlowFilters, PublisherArgs};
use crate::client::{Client, SUBMIT_CHUNK};

/// `fundflow export iati`.
pub async fn export_iati(
    out: &Path,
    source: &ExportSource,
    token: Option<&str>,
    publisher: &PublisherArgs,
    filters: &FlowFilters,
) -> anyhow::Result<()> {
    if let Some(url) = &source.url {
        anyhow::ensure!(
            publisher.iati_ref.is_none(),
            "with --url the server's reporting organisation applies (its --iati-ref); leave out --iati-ref"
        );
        let xml = Client::new(url, token.unwrap_or(""))?
            .get_text("/v1/exports/iati.xml", filters)
            .await?;
        write(out, xml.as_bytes())?;
        println!("wrote {} ({} bytes) from {url}", out.display(), xml.len());
        return Ok(());
    }
    let publisher = publisher.publisher()?.context(
        "say who publishes: --iati-ref, --iati-org-type and --iati-org-name (or FUNDFLOW_IATI_REF, ...)",
    )?;
    let reply = flows(source, filters).await?;
    let export =
        iati::activities(&reply.flows, &publisher, reply.as_of_seq).with_context(|| {
            format!(
                "cannot write an IATI file of the flows as of seq {}",
                reply.as_of_seq
            )
        })?;
    write(out, &export.xml)?;
    println!(
        "wrote {} activities with {} transactions as of seq {} to {}",
        export.activities,
        export.transactions,
        reply.as_of_seq,
        out.display()
    );
    Ok(())
}

/// `fundflow export fts`.
pub async fn export_fts(
    out: &Path,
    source: &ExportSource,
    token: Option<&str>,
    filters: &FlowFilters,
) -> anyhow::Result<()> {
    let json = match out.extension().and_then(|e| e.to_str()) {
        Some("json") => true,
        Some("csv") => false,
        _ => anyhow::bail!(
            "--out {} must end in .csv or .json (the format is chosen by it)",
            out.display()
        ),
    };
    if let Some(url) = &source.url {
        let path = if json {
            "/v1/exports/fts.json"
        } else {
            "/v1/exports/fts.csv"
        };
        let text = Client::new(url, token.unwrap_or(""))?
            .get_text(path, filters)
            .await?;
        write(out, text.as_bytes())?;
        println!("wrote {} ({} bytes) from {url}", out.display(), text.len());
        return Ok(());
    }
    let reply = flows(source, filters).await?;
    let rows = fts::rows(&reply.flows)
        .with_context(|| format!("cannot write the FTS table as of seq {}", reply.as_of_seq))?;
    let bytes = if json {
        serde_json::to_vec_pretty(&fts::FtsReply {
            as_of_seq: reply.as_of_seq,
            flows: rows.clone(),
        })?
    } else {
        fts::csv(&rows)?
    };
    write(out, &bytes)?;
    println!(
        "wrote {} rows ({} flows) as of seq {} to {}",
        rows.len(),
        reply.flows.len(),
        reply.as_of_seq,
        out.display()
    );
    Ok(())
}

fn write(out: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(out, bytes).with_context(|| format!("cannot write {}", out.display()))
}

/// The applied flows the filters select, from a stopped data directory or a log export folded
/// afresh (into a temporary read model, by the projector's own code).
async fn flows(source: &ExportSource, filters: &FlowFilters) -> anyhow::Result<FlowsReply> {
    let value = serde_json::to_value(filters).context("cannot read the filters")?;
    let params: FlowsParams = serde_json::from_value(value).context("cannot read the filters")?;
    if let Some(dir) = &source.data_dir {
        return crate::analytics::offline(dir)?
            .export_flows(&params)
            .await
            .context("cannot select the flows");
    }
    let Some(file) = &source.file else {
        anyhow::bail!("give --url, --data-dir or --file");
    };
    let scratch = tempfile::tempdir().context("cannot make a temporary directory")?;
    let log = EventLog::Embedded(EmbeddedLog::open(&scratch.path().join("log")).await?);
    fundflow_audit::import(&log, file, |_, _| {})
        .await
        .with_context(|| format!("cannot read the export {}", file.display()))?;
    let projector = Projector::open(
        &scratch.path().join("model"),
        &log,
        ProjectorConfig::default(),
    )
    .await?;
    let last = log.last_seq().await?;
    let projector = projector.run(log, RunUntil::Seq(last)).await?;
    Queries::offline(projector.model().clone())
        .export_flows(&params)
        .await
        .context("cannot select the flows")
}

/// Not-imported flows listed one per line before the rest are counted.
const LISTED_MAX: usize = 50;

/// `fundflow import fts`.
pub async fn import_fts(
    files: &[PathBuf],
    partner: &str,
    url: &str,
    token: &str,
) -> anyhow::Result<()> {
    let mut parsed = Vec::with_capacity(files.len());
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let reply = FtsFile::parse(&text).with_context(|| {
            format!(
                "{} is neither an FTS API reply of flows ({{\"data\": {{\"flows\": [...]}}}}) nor a fundflow FTS export",
                file.display()
            )
        })?;
        parsed.push(reply);
    }
    let plan = fts_import::plan(&parsed);
    let client = Client::new(url, token)?;
    // Each request line is (the flow's index, whether it is a reversal).
    let mut lines: Vec<(usize, bool)> = Vec::new();
    let mut body = Vec::new();
    let mut counts = Counts::default();
    let mut not_imported: Vec<NotImported> = plan.not_imported.clone();
    for (index, flow) in plan.flows.iter().enumerate() {
        let mut held = Vec::new();
        for (old, reference) in flow.earlier_refs() {
            let id = derived_event_id(partner, &reference);
            if let Some(reply) = client
                .get_optional::<EventReply>(&format!("/v1/events/{id}"))
                .await?
                && reply.outcome == EventOutcome::Applied
            {
                held.push(old);
            }
        }
        for mut reversal in flow.reversals(&held) {
            reversal.partner_id = Some(partner.to_owned());
            serde_json::to_writer(&mut body, &reversal)?;
            body.push(b'\n');
            lines.push((index, true));
        }
        let mut event = flow.event.clone();
        event.partner_id = Some(partner.to_owned());
        serde_json::to_writer(&mut body, &event)?;
        body.push(b'\n');
        lines.push((index, false));
        if lines.len() >= SUBMIT_CHUNK || index + 1 == plan.flows.len() {
            let results = client
                .post_events("application/x-ndjson", std::mem::take(&mut body), true)
                .await?;
            counts.tally(&plan, &lines, &results, &mut not_imported)?;
            lines.clear();
        }
    }
    let mut out = std::io::stdout().lock();
    let skipped = not_imported.iter().filter(|n| !n.refused).count();
    let refused = not_imported.len() - skipped;
    writeln!(
        out,
        "imported {} flows, {} duplicates (imported before), {} earlier versions reversed, {} repeated in the files, {skipped} skipped, {refused} refused",
        counts.imported, counts.duplicates, counts.reversed, plan.repeated
    )?;
    not_imported.sort_by(|a, b| (&a.id, a.version).cmp(&(&b.id, b.version)));
    for n in not_imported.iter().take(LISTED_MAX) {
        let verdict = if n.refused { "refused" } else { "skipped" };
        writeln!(
            out,
            "  flow {} version {}: {verdict}: {}",
            n.id, n.version, n.reason
        )?;
    }
    if not_imported.len() > LISTED_MAX {
        writeln!(out, "  and {} more", not_imported.len() - LISTED_MAX)?;
    }
    if refused > 0 {
        anyhow::bail!("{refused} flows were refused (see above); the others went through");
    }
    Ok(())
}

#[derive(Default)]
struct Counts {
    imported: usize,
    duplicates: usize,
    reversed: usize,
}

impl Counts {
    fn tally(
        &mut self,
        plan: &fts_import::ImportPlan,
        lines: &[(usize, bool)],
        results: &[SubmitResult],
        not_imported: &mut Vec<NotImported>,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            results.len() == lines.len(),
            "the server answered {} results for {} events",
            results.len(),
            lines.len()
        );
        for (result, &(index, is_reversal)) in results.iter().zip(lines) {
            let flow = &plan.flows[index];
            match (result.status, is_reversal) {
                (Status::Applied | Status::Accepted, true) => self.reversed += 1,
                (Status::Applied | Status::Accepted, false) => self.imported += 1,
                (Status::Duplicate, false) => self.duplicates += 1,
                (Status::Duplicate, true) => {}
                (Status::Rejected | Status::Refused | Status::Conflict, _) => {
                    let what = if is_reversal {
                        "the reversal of an earlier version was "
                    } else {
                        ""
                    };
                    not_imported.push(NotImported {
                        id: flow.id.clone(),
                        version: flow.version,
                        reason: format!(
                            "{what}{} by the ledger: {}",
                            result.status.as_str(),
                            result.detail().unwrap_or("")
                        ),
                        refused: true,
                    });
                }
            }
        }
        Ok(())
    }
}
