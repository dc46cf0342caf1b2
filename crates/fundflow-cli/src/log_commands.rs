//! Commands over the event log and the read model: `publish-file`, `project`, `rebuild`,
//! `totals`.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context;
use fundflow_api::Report;
use fundflow_log::{AppendRequest, Appended, EventLog};
use fundflow_projector::{Projector, RunUntil};
use fundflow_proto::{Message, RecordReader, v1};

use crate::args::TotalsArgs;
use crate::serve::FoldArgs;
use crate::{Format, LogArgs};

/// Records published per call of `append_batch` (which keeps its own window of acks in flight).
const PUBLISH_CHUNK: usize = 10_000;

/// Opens the log the arguments name.
pub async fn open_log(args: &LogArgs) -> anyhow::Result<EventLog> {
    Ok(fundflow_server::app::open_log(&args.config()).await?)
}

/// `fundflow publish-file`.
pub async fn publish_file(path: &Path, args: &LogArgs) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = RecordReader::new(BufReader::with_capacity(1 << 20, file));
    let log = open_log(args).await?;
    let started = Instant::now();
    let (mut stored, mut duplicates, mut skipped) = (0u64, 0u64, 0u64);
    let mut chunk = Vec::with_capacity(PUBLISH_CHUNK);
    let mut record = Vec::new();
    loop {
        let more = reader
            .read_into(&mut record)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if more {
            // The log routes by partner and deduplicates by event id: both come from the envelope.
            match v1::Envelope::decode(record.as_slice()) {
                Ok(envelope)
                    if fundflow_domain::wire::is_valid_partner_id(&envelope.partner_id) =>
                {
                    chunk.push(AppendRequest {
                        partner_id: envelope.partner_id,
                        event_id: envelope.event_id,
                        envelope: bytes::Bytes::copy_from_slice(&record),
                    });
                }
                _ => skipped += 1,
            }
        }
        if chunk.len() >= PUBLISH_CHUNK || (!more && !chunk.is_empty()) {
            for result in log
                .append_batch(&chunk)
                .await
                .context("publishing failed")?
            {
                match result {
                    Appended::Stored { .. } => stored += 1,
                    Appended::Duplicate { .. } => duplicates += 1,
                }
            }
            chunk.clear();
        }
        if !more {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "stored {stored}, duplicates {duplicates}, skipped {skipped} (not an envelope with a valid partner_id) in {seconds:.1} s"
    );
    Ok(())
}

/// `fundflow project`.
pub async fn project(args: &LogArgs, once: bool, fold: &FoldArgs) -> anyhow::Result<()> {
    let log = open_log(args).await?;
    let model_dir = args.data_dir.join("model");
    let opening = Instant::now();
    let projector = Projector::open(&model_dir, &log, fold.projector()).await?;
    let at = projector.ledger().last_seq();
    match projector.metrics().resumed_from_seq.load(Ordering::Relaxed) {
        0 if at > 0 => println!(
            "refolded the log to the read model's checkpoint (seq {at}) and checked it, in {:.1} s",
            opening.elapsed().as_secs_f64()
        ),
        0 => {}
        from => println!(
            "started from the fold's snapshot at seq {from} and the log's {} records after it, at the read model's checkpoint (seq {at}), in {:.1} s",
            at - from,
            opening.elapsed().as_secs_f64()
        ),
    }
    let started = Instant::now();
    let from = projector.ledger().last_seq();
    let until = if once {
        RunUntil::Seq(log.last_seq().await?)
    } else {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("stopping after the batch in hand");
            let _ = stop_tx.send(true);
        });
        RunUntil::Stopped(stop_rx)
    };
    let projector = projector.run(log, until).await?;
    let metrics = projector.metrics();
    let to = metrics.checkpoint_seq.load(Ordering::Relaxed);
    let (applied, rejected) = projector.ledger().counts();
    let seconds = started.elapsed().as_secs_f64();
    if to > from {
        println!(
            "folded seq {}..={to} in {seconds:.1} s; the read model holds {applied} applied and {rejected} rejected events",
            from + 1
        );
    } else {
        println!(
            "nothing to fold after seq {to}; the read model holds {applied} applied and {rejected} rejected events"
        );
    }
    Ok(())
}

/// `fundflow rebuild`.
pub async fn rebuild(args: &LogArgs) -> anyhow::Result<()> {
    let model_dir = args.data_dir.join("model");
    Projector::clear(&model_dir)
        .with_context(|| format!("cannot clear {}", model_dir.display()))?;
    project(args, true, &FoldArgs::default()).await
}

/// `fundflow totals` from a stopped data directory: the report of its read model, the totals
/// grouped and filtered by the server's own query code.
pub async fn totals(data_dir: &Path, format: Format, totals: &TotalsArgs) -> anyhow::Result<()> {
    let query = totals.query()?;
    let queries = crate::analytics::offline(data_dir)?;
    let model = queries.model().clone();
    let state = tokio::task::spawn_blocking(move || model.state())
        .await
        .context("the read failed")??;
    let mut report = Report::of_state(&state);
    report.totals = queries
        .totals(&totals.params())
        .await
        .context("cannot read the totals")?
        .rows;
    crate::replay::print_report(&report, &query.group_by, format)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
