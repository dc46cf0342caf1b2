//! `replay-file` and `gen-log`: the offline path from a file of envelopes to a report.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use fundflow_api::{Report, TotalRow};
use fundflow_gen::{GenConfig, LogGenerator};

use crate::Format;

/// Folds `path` from scratch and prints the report.
pub fn replay_file(path: &Path, format: Format) -> anyhow::Result<()> {
    let span = tracing::info_span!("replay_file", path = %path.display());
    let _guard = span.enter();
    let replay = fundflow_audit::replay_file(
        path,
        fundflow_audit::Cutoff::All,
        fundflow_audit::Details::None,
    )
    .map_err(|err| match err {
        fundflow_audit::AuditError::Io { path, source } => {
            anyhow::anyhow!("cannot open {}: {source}", path.display())
        }
        other => anyhow::anyhow!("cannot read {}: {other}", path.display()),
    })?;
    let (applied, rejected) = replay.ledger.counts();
    tracing::info!(seq = replay.read, applied, rejected, "replayed");
    print_report(&Report::of(&replay.ledger), format)
}

/// The columns of a totals row, in the order every format prints them.
pub const COLUMNS: [&str; 7] = [
    "scope",
    "key",
    "kind",
    "currency",
    "amount",
    "usd_equivalent",
    "unconverted",
];

/// The [`COLUMNS`] of a row.
pub fn fields(row: &TotalRow) -> [&str; 7] {
    [
        row.scope.as_str(),
        &row.key,
        &row.kind,
        &row.currency,
        &row.amount,
        &row.usd_equivalent,
        &row.unconverted,
    ]
}

/// Prints a report to standard output.
pub fn print_report(report: &Report, format: Format) -> anyhow::Result<()> {
    match write_report(
        &mut BufWriter::new(std::io::stdout().lock()),
        report,
        format,
    ) {
        // A reader that stopped early (`| head`) is not an error of ours.
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("cannot write the report"),
    }
}

fn write_report(out: &mut impl Write, report: &Report, format: Format) -> std::io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, report)?;
            writeln!(out)?;
        }
        Format::Csv => {
            writeln!(out, "{}", COLUMNS.join(","))?;
            for row in &report.totals {
                // Every field is a code or a decimal: no quoting is ever needed.
                writeln!(out, "{}", fields(row).join(","))?;
            }
        }
        Format::Table => {
            writeln!(out, "last_seq      {}", report.last_seq)?;
            writeln!(out, "log_digest    {}", report.log_digest)?;
            writeln!(out, "model_digest  {}", report.model_digest)?;
            writeln!(out, "rejected      {}", report.rejected.len())?;
            writeln!(out)?;
            for row in std::iter::once(COLUMNS).chain(report.totals.iter().map(fields)) {
                let [scope, key, kind, currency, amount, usd, unconverted] = row;
                writeln!(
                    out,
                    "{scope:<13} {key:<4} {kind:<17} {currency:<8} {amount:>22} {usd:>20} {unconverted:>22}"
                )?;
            }
        }
    }
    out.flush()
}

/// Writes a generated log of `events` records from `seed` to `path`.
pub fn gen_log(path: &Path, events: u64, seed: u64) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let config = GenConfig {
        events,
        ..GenConfig::default()
    };
    for record in LogGenerator::new(seed, config) {
        fundflow_proto::write_record(&mut out, &record)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}
