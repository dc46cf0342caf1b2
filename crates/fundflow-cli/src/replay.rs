//! `replay-file` and `gen-log`: the offline path from a file of envelopes to a report.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use fundflow_domain::{Ledger, Report};
use fundflow_gen::{GenConfig, LogGenerator};
use fundflow_proto::RecordReader;

use crate::Format;

/// Folds `path` from scratch and prints the report.
pub fn replay_file(path: &Path, format: Format) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // Envelopes are a few hundred bytes: the file's size sizes the fold's event index.
    let length = file.metadata().map_or(0, |m| m.len());
    let mut reader = RecordReader::new(BufReader::with_capacity(1 << 20, file));
    let mut ledger = Ledger::with_capacity(usize::try_from(length / 256).unwrap_or(0));
    let mut record = Vec::new();
    let mut seq = 0u64;
    let span = tracing::info_span!("replay_file", path = %path.display());
    let _guard = span.enter();
    while reader
        .read_into(&mut record)
        .with_context(|| format!("cannot read {}", path.display()))?
    {
        seq += 1;
        ledger.apply(seq, &record);
    }
    let (applied, rejected) = ledger.counts();
    tracing::info!(seq, applied, rejected, "replayed");
    print_report(&Report::of(&ledger), format)
}

/// Prints a report to standard output.
pub fn print_report(report: &Report, format: Format) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, report).context("cannot write the report")?;
            writeln!(out)?;
        }
        Format::Csv => {
            writeln!(
                out,
                "scope,key,kind,currency,amount,usd_equivalent,unconverted"
            )?;
            for row in &report.totals {
                // Every field is a code or a decimal: no quoting is ever needed.
                writeln!(
                    out,
                    "{},{},{},{},{},{},{}",
                    row.scope.as_str(),
                    row.key,
                    row.kind,
                    row.currency,
                    row.amount,
                    row.usd_equivalent,
                    row.unconverted
                )?;
            }
        }
        Format::Table => {
            writeln!(out, "last_seq      {}", report.last_seq)?;
            writeln!(out, "log_digest    {}", report.log_digest)?;
            writeln!(out, "model_digest  {}", report.model_digest)?;
            writeln!(out, "rejected      {}", report.rejected.len())?;
            writeln!(out)?;
            writeln!(
                out,
                "{:<13} {:<4} {:<17} {:<3} {:>22} {:>20} {:>22}",
                "scope", "key", "kind", "cur", "amount", "usd_equivalent", "unconverted"
            )?;
            for row in &report.totals {
                writeln!(
                    out,
                    "{:<13} {:<4} {:<17} {:<3} {:>22} {:>20} {:>22}",
                    row.scope.as_str(),
                    row.key,
                    row.kind,
                    row.currency,
                    row.amount,
                    row.usd_equivalent,
                    row.unconverted
                )?;
            }
        }
    }
    out.flush().context("cannot write the report")
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
