//! `replay-file` and `gen-log`: the offline path from a file of envelopes to a report.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use fundflow_api::{Dimension, Report, TotalRow, TotalsQuery};
use fundflow_domain::Ledger;
use fundflow_gen::{GenConfig, LogGenerator};

use crate::Format;
use crate::args::TotalsArgs;

/// Folds `path` from scratch and prints the report, its totals as `totals` asks.
pub fn replay_file(path: &Path, format: Format, totals: &TotalsArgs) -> anyhow::Result<()> {
    let query = totals.query()?;
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
    let memory = replay.ledger.memory();
    tracing::info!(
        seq = replay.read,
        applied,
        rejected,
        fold_bytes = memory.total(),
        events_bytes = memory.events,
        effects_bytes = memory.effects,
        cells_bytes = memory.cells,
        pledges_bytes = memory.pledges,
        names_bytes = memory.names,
        "replayed"
    );
    print_report(
        &report_for(&replay.ledger, &query)?,
        &query.group_by,
        format,
    )
}

/// The report of `ledger` with its totals as `query` asks: the rows `GET /v1/totals` gives
/// for the same query at the same seq, computed by the same code from the fold's own cells.
pub fn report_for(ledger: &Ledger, query: &TotalsQuery) -> anyhow::Result<Report> {
    let mut report = Report::of(ledger);
    if query.is_plain() {
        // Today's rows, from the direct totals, as the server answers a query without the
        // analytics parameters.
        report.totals.retain(|row| {
            query.scope.is_none_or(|s| row.scope == s)
                && query.kind.is_none_or(|k| row.kind == k.as_str())
                && query
                    .currency
                    .is_none_or(|c| row.currency == fundflow_domain::currency_code(c))
                && query.key.as_deref().is_none_or(|k| row.key == k)
        });
    } else {
        report.totals = fundflow_api::grouped_total_rows(ledger.cells(query.level()), query)
            .context("cannot sum the totals")?;
    }
    Ok(report)
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

/// Prints a report to standard output; `group_by` names the dimension columns of its rows.
pub fn print_report(report: &Report, group_by: &[Dimension], format: Format) -> anyhow::Result<()> {
    match write_report(
        &mut BufWriter::new(std::io::stdout().lock()),
        report,
        group_by,
        format,
    ) {
        // A reader that stopped early (`| head`) is not an error of ours.
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("cannot write the report"),
    }
}

fn write_report(
    out: &mut impl Write,
    report: &Report,
    group_by: &[Dimension],
    format: Format,
) -> std::io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, report)?;
            writeln!(out)?;
        }
        Format::Csv if group_by.is_empty() => {
            writeln!(out, "{}", COLUMNS.join(","))?;
            for row in &report.totals {
                // Every field is a code or a decimal: no quoting is ever needed.
                writeln!(out, "{}", fields(row).join(","))?;
            }
        }
        Format::Csv => {
            // Dimension values are partners' free text: the API's writer quotes them.
            let csv = fundflow_api::totals_csv(&report.totals, group_by)
                .map_err(std::io::Error::other)?;
            out.write_all(&csv)?;
        }
        Format::Table => {
            writeln!(out, "last_seq      {}", report.last_seq)?;
            writeln!(out, "log_digest    {}", report.log_digest)?;
            writeln!(out, "model_digest  {}", report.model_digest)?;
            writeln!(out, "rejected      {}", report.rejected.len())?;
            writeln!(out)?;
            write_table(out, &report.totals, group_by)?;
        }
    }
    out.flush()
}

/// Totals rows as an aligned table, with a column per grouped dimension.
pub fn write_table(
    out: &mut impl Write,
    rows: &[TotalRow],
    group_by: &[Dimension],
) -> std::io::Result<()> {
    let dims = |row: &TotalRow| -> String {
        group_by
            .iter()
            .map(|d| format!("{:<16}", d.value_of(row).unwrap_or("")))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let header: String = group_by
        .iter()
        .map(|d| format!("{:<16}", d.as_str()))
        .collect::<Vec<_>>()
        .join(" ");
    for (row, dims) in
        std::iter::once((COLUMNS, header)).chain(rows.iter().map(|row| (fields(row), dims(row))))
    {
        let [scope, key, kind, currency, amount, usd, unconverted] = row;
        writeln!(
            out,
            "{scope:<13} {key:<4} {dims}{}{kind:<17} {currency:<8} {amount:>22} {usd:>20} {unconverted:>22}",
            if dims.is_empty() { "" } else { " " }
        )?;
    }
    Ok(())
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
