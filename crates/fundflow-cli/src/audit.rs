//! `log export`, `log verify`, `audit replay`, `audit verify` and `audit report`: the auditor's
//! commands, over `fundflow-audit`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use fundflow_api::{CheckpointReply, TotalRow, TotalsReply, total_rows};
use fundflow_audit::report::{DocFormat, Scope};
use fundflow_audit::{Cutoff, Details, Replay};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Format;
use fundflow_server::app::LogConfig;

/// Where a replay reads the log from: exactly one of a file, a NATS server, a data directory.
#[derive(Args, Clone, Debug)]
#[group(required = true, multiple = false, id = "log_source")]
pub struct SourceArgs {
    /// An export (`log export`) or a plain file of envelopes.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// The NATS servers of the JetStream log, comma-separated.
    #[arg(long)]
    pub nats_url: Option<String>,
    /// A data directory with an embedded log (`DIR/log`; no process may hold it open).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// Where `log import` writes: a NATS server's stream or a data directory's embedded log.
#[derive(Args, Clone, Debug)]
#[group(required = true, multiple = false, id = "log_target")]
pub struct TargetArgs {
    /// The NATS servers of the JetStream log, comma-separated.
    #[arg(long)]
    pub nats_url: Option<String>,
    /// A data directory whose embedded log (`DIR/log`) is restored (no process may hold it
    /// open).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// Options of the JetStream source.
#[derive(Args, Clone, Debug)]
pub struct StreamArgs {
    /// A NATS credentials file (JWT and seed).
    #[arg(long, env = "FUNDFLOW_NATS_CREDS", conflicts_with = "nats_nkey")]
    pub nats_creds: Option<PathBuf>,
    /// A file holding the NATS user's NKey seed (an auditor's, see `fundflow nkey new`).
    #[arg(long, env = "FUNDFLOW_NATS_NKEY")]
    pub nats_nkey: Option<PathBuf>,
    /// The JetStream stream's name.
    #[arg(long, env = "FUNDFLOW_STREAM", default_value = "FUNDFLOW")]
    pub stream: String,
}

/// Which records count.
#[derive(Args, Clone, Debug)]
#[group(multiple = false)]
pub struct CutoffArgs {
    /// Only records up to this sequence number.
    #[arg(long)]
    pub until_seq: Option<u64>,
    /// Only events that occurred on or before this date (YYYY-MM-DD), in log order.
    #[arg(long)]
    pub as_of: Option<String>,
}

impl CutoffArgs {
    fn cutoff(&self) -> anyhow::Result<Cutoff> {
        Ok(match (self.until_seq, &self.as_of) {
            (Some(seq), _) => Cutoff::UntilSeq(seq),
            (None, Some(date)) => Cutoff::AsOf(
                fundflow_domain::wire::parse_date(date)
                    .with_context(|| format!("--as-of {date:?} is not a date (YYYY-MM-DD)"))?,
            ),
            (None, None) => Cutoff::All,
        })
    }

    fn describe(&self) -> String {
        match (self.until_seq, &self.as_of) {
            (Some(seq), _) => format!("records up to seq {seq}"),
            (None, Some(date)) => format!("events that occurred on or before {date}"),
            (None, None) => "the whole log".into(),
        }
    }
}

fn log_config(source: &SourceArgs, stream: &StreamArgs) -> LogConfig {
    LogConfig {
        nats_url: source.nats_url.clone().unwrap_or_default(),
        nats_creds: stream.nats_creds.clone(),
        nats_nkey: stream.nats_nkey.clone(),
        nats_name: Some("fundflow audit".into()),
        read_only: true,
        embedded: source.data_dir.is_some(),
        stream: stream.stream.clone(),
        replicas: None,
        duplicate_window: None,
        data_dir: source.data_dir.clone().unwrap_or_default(),
    }
}

fn describe_source(source: &SourceArgs, stream: &StreamArgs) -> String {
    match (&source.file, &source.nats_url, &source.data_dir) {
        (Some(file), _, _) => format!("file {}", file.display()),
        (_, Some(url), _) => format!("{url}, stream {}", stream.stream),
        (_, _, Some(dir)) => format!("embedded log in {}", dir.join("log").display()),
        _ => String::new(),
    }
}

/// Replays the source with the cutoff.
pub async fn replay(
    source: &SourceArgs,
    stream: &StreamArgs,
    cutoff: Cutoff,
    details: Details,
) -> anyhow::Result<Replay> {
    let started = std::time::Instant::now();
    let replay = match &source.file {
        Some(file) => {
            let file = file.clone();
            tokio::task::spawn_blocking(move || fundflow_audit::replay_file(&file, cutoff, details))
                .await
                .context("the replay failed")??
        }
        None => {
            let log = fundflow_server::app::open_log(&log_config(source, stream)).await?;
            fundflow_audit::replay_log(&log, cutoff, details).await?
        }
    };
    tracing::info!(records = replay.read, elapsed = ?started.elapsed(), "replayed");
    Ok(replay)
}

/// `fundflow log export`.
pub async fn export(source: &SourceArgs, stream: &StreamArgs, out: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        source.file.is_none(),
        "log export reads a log (--nats-url or --data-dir), not a file"
    );
    let log = fundflow_server::app::open_log(&log_config(source, stream)).await?;
    let source = match (&source.nats_url, &source.data_dir) {
        (Some(url), _) => format!("{url}/{}", stream.stream),
        (_, Some(dir)) => format!("embedded:{}", dir.join("log").display()),
        _ => String::new(),
    };
    let last = log.last_seq().await?;
    let bar = indicatif::ProgressBar::new(last);
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} records, {per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let exported_at = OffsetDateTime::now_utc();
    let manifest = fundflow_audit::export(&log, &source, out, exported_at, |n| bar.set_position(n))
        .await
        .with_context(|| format!("cannot export the log to {}", out.display()))?;
    bar.finish_and_clear();
    println!(
        "exported {} records (seq {}..={}) to {} in {:.1} s; log digest {}",
        manifest.count,
        manifest.first_seq,
        manifest.last_seq,
        out.display(),
        started.elapsed().as_secs_f64(),
        manifest.log_digest
    );
    Ok(())
}

/// `fundflow log import`.
pub async fn import(
    path: &Path,
    target: &TargetArgs,
    stream: &StreamArgs,
    replicas: Option<usize>,
) -> anyhow::Result<()> {
    let config = LogConfig {
        nats_url: target.nats_url.clone().unwrap_or_default(),
        nats_creds: stream.nats_creds.clone(),
        nats_nkey: stream.nats_nkey.clone(),
        nats_name: Some("fundflow log import".into()),
        read_only: false,
        embedded: target.data_dir.is_some(),
        stream: stream.stream.clone(),
        replicas,
        duplicate_window: None,
        data_dir: target.data_dir.clone().unwrap_or_default(),
    };
    let log = fundflow_server::app::open_log(&config).await?;
    let bar = indicatif::ProgressBar::new(0);
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} records, {per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let imported = fundflow_audit::import(&log, path, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .await
    .with_context(|| format!("cannot import {}", path.display()))?;
    bar.finish_and_clear();
    let kept = if imported.kept > 0 {
        format!(
            " after the {} records the target held already (checked against the export)",
            imported.kept
        )
    } else {
        String::new()
    };
    let renamed = if imported.renamed > 0 {
        format!(
            "; {} records whose event id the source held twice were stored under ids from their seq",
            imported.renamed
        )
    } else {
        String::new()
    };
    println!(
        "imported {} records{kept} in {:.1} s: the log ends at seq {} with log digest {} and export digest {}, as the manifest says{renamed}",
        imported.appended,
        started.elapsed().as_secs_f64(),
        imported.last_seq,
        imported.log_digest,
        imported.export_digest
    );
    Ok(())
}

/// `fundflow log verify`.
pub fn verify_export(path: &Path) -> anyhow::Result<()> {
    let verified = fundflow_audit::verify(path)
        .with_context(|| format!("{} does not verify", path.display()))?;
    println!(
        "{}: {} records, seq 1..={} in order with no gap, every digest in the chain matches; log digest {}",
        path.display(),
        verified.count,
        verified.last_seq,
        verified.log_digest
    );
    Ok(())
}

/// `fundflow audit replay`: the report of a replay, its totals grouped and filtered as the
/// server's `/v1/totals` would give them for the same flags.
pub async fn audit_replay(
    source: &SourceArgs,
    stream: &StreamArgs,
    cutoff: &CutoffArgs,
    totals: &crate::args::TotalsArgs,
    format: Format,
) -> anyhow::Result<()> {
    let query = totals.query()?;
    let replay = replay(source, stream, cutoff.cutoff()?, Details::None).await?;
    let report = crate::replay::report_for(&replay.ledger, &query)?;
    crate::replay::print_report(&report, &query.group_by, format)
}

/// `fundflow audit report`.
pub async fn audit_report(
    source: &SourceArgs,
    stream: &StreamArgs,
    cutoff: &CutoffArgs,
    out: &Path,
    html: bool,
) -> anyhow::Result<()> {
    let replay = replay(source, stream, cutoff.cutoff()?, Details::ForReport).await?;
    let scope = Scope {
        source: describe_source(source, stream),
        cutoff: cutoff.describe(),
        generated_at: OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .context("the clock's time cannot be written as RFC 3339")?,
    };
    let format = if html {
        DocFormat::Html
    } else {
        DocFormat::Markdown
    };
    let text = fundflow_audit::report::render(&replay, &scope, format);
    std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "wrote {} (seq {}, model digest {})",
        out.display(),
        replay.ledger.last_seq(),
        hex::encode(replay.ledger.model_digest())
    );
    Ok(())
}

/// `fundflow audit verify`: the server's checkpoint against an independent replay.
pub async fn audit_verify(
    url: &str,
    token: &str,
    source: &SourceArgs,
    stream: &StreamArgs,
) -> anyhow::Result<()> {
    let client = crate::client::Client::new(url, token)?;
    // A busy server gives no model digest until it can compute one at a checkpoint that holds.
    let mut checkpoint: CheckpointReply = client.get("/v1/checkpoint").await?;
    for _ in 0..20 {
        if checkpoint.model_digest.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        checkpoint = client.get("/v1/checkpoint").await?;
    }
    anyhow::ensure!(
        checkpoint.model_digest.is_some(),
        "inconclusive: the server gave no model digest for 10 s (too busy to compute one); try again when it is quieter"
    );
    let seq = checkpoint.seq;
    let replay = replay(source, stream, Cutoff::UntilSeq(seq), Details::None).await?;
    let ledger = &replay.ledger;
    anyhow::ensure!(
        ledger.last_seq() == seq,
        "the log replayed ends at seq {} but the server's checkpoint is seq {seq}: the source holds fewer records than the server folded",
        ledger.last_seq()
    );
    let log_digest = hex::encode(ledger.log_digest());
    let model_digest = hex::encode(ledger.model_digest());
    let server_log = checkpoint.log_digest.as_str();
    let server_model = checkpoint.model_digest.as_deref();
    if server_log == log_digest && server_model == Some(model_digest.as_str()) {
        println!(
            "match at seq {seq}: log digest {log_digest}, model digest {model_digest} (server {url}, replay of {})",
            describe_source(source, stream)
        );
        return Ok(());
    }
    println!("MISMATCH at seq {seq}");
    println!("  log digest    server {server_log}\n                replay {log_digest}");
    println!(
        "  model digest  server {}\n                replay {model_digest}",
        server_model.unwrap_or("(not given: the server was busy; run again)")
    );
    // Name the first totals that differ, if the server's totals are still at `seq`.
    let totals: TotalsReply = client.get("/v1/totals").await?;
    if totals.as_of_seq != seq {
        anyhow::bail!(
            "the server's read model does not match an independent replay of the log at seq {seq} (it has moved on to seq {}, so its totals cannot be compared row by row)",
            totals.as_of_seq
        );
    }
    let theirs: Vec<String> = totals.rows.iter().map(row_line).collect();
    let state = ledger.model_state();
    let ours: Vec<String> = total_rows(&state, None).iter().map(row_line).collect();
    let first = theirs
        .iter()
        .zip(&ours)
        .find(|(a, b)| a != b)
        .map(|(a, b)| format!("server: {a}\n  replay: {b}"))
        .or_else(|| {
            (theirs.len() != ours.len()).then(|| {
                format!(
                    "the server has {} total rows, the replay {}",
                    theirs.len(),
                    ours.len()
                )
            })
        });
    match first {
        Some(difference) => println!("first totals that differ:\n  {difference}"),
        None => println!(
            "the totals rows agree (as of the server's seq {}); the difference is in pledges, rejections or counts",
            totals.as_of_seq
        ),
    }
    anyhow::bail!(
        "the server's read model does not match an independent replay of the log at seq {seq}"
    )
}

fn row_line(row: &TotalRow) -> String {
    crate::replay::fields(row).join(" ")
}
