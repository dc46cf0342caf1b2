//! Replays in memory: the fold needs no store. Records come from a file (an export, or a plain
//! file of envelopes) or from a log, and the replay stops at a sequence or counts only what had
//! occurred by a date.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use fundflow_domain::{Ledger, Source};
use fundflow_log::EventLog;
use fundflow_proto::v1::envelope::Body;
use fundflow_proto::{Message, RecordReader, v1};
use time::Date;

use crate::AuditError;

/// Which records a replay counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cutoff {
    /// Every record.
    All,
    /// Records up to this seq.
    UntilSeq(u64),
    /// Records, in log order, whose `occurred_on` is on or before this date (a reversal counts
    /// when it occurred; a record with no readable date counts, and is judged by the fold).
    AsOf(Date),
}

/// A USD rate the replayed events used.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RateUsed {
    /// ISO 4217 code.
    pub currency: String,
    /// USD per unit, as given.
    pub rate: String,
    /// The date the rate is for.
    pub date: String,
    /// Where it comes from.
    pub source: String,
}

/// An applied reversal, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReversalRow {
    /// Where it is in the log.
    pub seq: u64,
    /// Whose.
    pub partner_id: String,
    /// The reversal's own id.
    pub event_id: String,
    /// The event undone.
    pub reverses_event_id: String,
    /// Why.
    pub reason: String,
}

/// A finished replay.
#[derive(Debug, Default)]
pub struct Replay {
    /// The fold's state.
    pub ledger: Ledger,
    /// Records read (counted or not).
    pub read: u64,
    /// Records skipped by an `AsOf` cutoff.
    pub skipped: u64,
    /// Rates used by applied events, with how many allocations each.
    pub rates: BTreeMap<RateUsed, u64>,
    /// Applied reversals.
    pub reversals: Vec<ReversalRow>,
}

/// What a replay gathers beyond the fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Details {
    /// Only the fold (fastest).
    None,
    /// Rates and reversals too, for a report.
    ForReport,
}

impl Replay {
    fn new(capacity: usize) -> Replay {
        Replay {
            ledger: Ledger::with_capacity(capacity),
            ..Replay::default()
        }
    }

    /// Folds one record unless the cutoff excludes it; `false` once past an `UntilSeq`.
    fn take(
        &mut self,
        seq: u64,
        bytes: &[u8],
        partner: Option<&str>,
        cutoff: Cutoff,
        details: Details,
    ) -> bool {
        if let Cutoff::UntilSeq(until) = cutoff
            && seq > until
        {
            return false;
        }
        self.read += 1;
        let envelope = match (cutoff, details) {
            (Cutoff::AsOf(_), _) | (_, Details::ForReport) => v1::Envelope::decode(bytes).ok(),
            _ => None,
        };
        if let (Cutoff::AsOf(date), Some(envelope)) = (cutoff, &envelope)
            && fundflow_domain::wire::parse_date(&envelope.occurred_on).is_some_and(|d| d > date)
        {
            self.skipped += 1;
            return true;
        }
        let outcome = self.ledger.apply_from(
            seq,
            bytes,
            Source {
                subject_partner: partner,
            },
        );
        if details == Details::ForReport
            && outcome.code().is_none()
            && let Some(envelope) = envelope
        {
            self.note(seq, envelope);
        }
        true
    }

    fn note(&mut self, seq: u64, envelope: v1::Envelope) {
        let flow = match envelope.body {
            Some(Body::PledgeRecorded(b)) => b.flow,
            Some(Body::ContributionPaid(b)) => b.flow,
            Some(Body::ParallelFundingMobilized(b)) => b.flow,
            Some(Body::InKindDonationRecorded(b)) => b.flow,
            Some(Body::EventReversed(r)) => {
                self.reversals.push(ReversalRow {
                    seq,
                    partner_id: envelope.partner_id,
                    event_id: envelope.event_id,
                    reverses_event_id: r.reverses_event_id,
                    reason: r.reason,
                });
                None
            }
            None => None,
        };
        if let Some(flow) = flow
            && !flow.usd_rate.is_empty()
        {
            let key = RateUsed {
                currency: flow.amount.map(|m| m.currency).unwrap_or_default(),
                rate: flow.usd_rate,
                date: flow.usd_rate_date,
                source: flow.usd_rate_source,
            };
            *self.rates.entry(key).or_default() += flow.allocations.len() as u64;
        }
    }
}

/// The two file formats, told apart by their first byte: a `LogRecord` starts with field 1, a
/// varint (`0x08`); an `Envelope` with field 1, a string (`0x0a`), or a later field.
fn is_export(reader: &mut impl BufRead) -> std::io::Result<bool> {
    let buf = reader.fill_buf()?;
    // Skip the varint length prefix, then look at the first tag.
    let prefix = buf.iter().position(|b| b & 0x80 == 0).map_or(0, |i| i + 1);
    Ok(buf.get(prefix) == Some(&0x08))
}

/// Replays a file: an export (`LogRecord`s, with their subject partners and seqs) or a plain
/// file of envelopes (seq 1, 2, 3 ... in file order). Streams: one record in memory at a time.
pub fn replay_file(path: &Path, cutoff: Cutoff, details: Details) -> Result<Replay, AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let length = file.metadata().map_or(0, |m| m.len());
    let mut buffered = BufReader::with_capacity(1 << 20, file);
    let export = is_export(&mut buffered).map_err(io)?;
    let mut reader = RecordReader::new(buffered);
    // Envelopes are a few hundred bytes: the file's size sizes the fold's event index.
    let mut replay = Replay::new(usize::try_from(length / 256).unwrap_or(0));
    let mut bytes = Vec::new();
    let mut index = 0u64;
    while reader
        .read_into(&mut bytes)
        .map_err(|err| AuditError::Invalid {
            seq: Some(index + 1),
            message: format!("{}: {err}", path.display()),
        })?
    {
        index += 1;
        let more = if export {
            let record =
                v1::LogRecord::decode(bytes.as_slice()).map_err(|err| AuditError::Invalid {
                    seq: Some(index),
                    message: format!(
                        "record {index} of {} is not a LogRecord: {err}",
                        path.display()
                    ),
                })?;
            if record.seq != index {
                return Err(AuditError::Invalid {
                    seq: Some(record.seq),
                    message: format!(
                        "record {index} of {} has seq {}: the export is out of order or incomplete (run log verify)",
                        path.display(),
                        record.seq
                    ),
                });
            }
            let more = replay.take(
                record.seq,
                &record.envelope,
                Some(&record.subject_partner),
                cutoff,
                details,
            );
            // Every record folded must leave the fold's log digest where the export says; a
            // date cutoff leaves records out of the chain, so it is checked only without one.
            if more
                && !matches!(cutoff, Cutoff::AsOf(_))
                && replay.ledger.log_digest().as_slice() != record.log_digest.as_slice()
            {
                return Err(AuditError::Invalid {
                    seq: Some(record.seq),
                    message: format!(
                        "record seq {} of {}: the log digest after it differs from the export's (run log verify)",
                        record.seq,
                        path.display()
                    ),
                });
            }
            more
        } else {
            replay.take(index, &bytes, None, cutoff, details)
        };
        if !more {
            break;
        }
    }
    Ok(replay)
}

/// How many batches the log's reader may run ahead of the fold.
const BATCHES_AHEAD: usize = 32;

/// Replays a log (JetStream or embedded) from seq 1 to its last seq at the start (or the cutoff).
/// A reader task fetches the next batch while the fold applies the previous one; the log is read
/// with [`EventLog::read_range`], which rides out a stalled reader and fails on a gap.
pub async fn replay_log(
    log: &EventLog,
    cutoff: Cutoff,
    details: Details,
) -> Result<Replay, AuditError> {
    let mut last = log.last_seq().await?;
    if let Cutoff::UntilSeq(until) = cutoff {
        last = last.min(until);
    }
    let (batches, mut received) = tokio::sync::mpsc::channel(BATCHES_AHEAD);
    let mut records = log.read_range(1..=last);
    let reading = tokio::spawn(async move {
        while let Some(batch) = records.next_batch().await? {
            if batches.send(batch).await.is_err() {
                break; // The fold stopped.
            }
        }
        Ok::<(), AuditError>(())
    });
    let folding = tokio::task::spawn_blocking(move || {
        let mut replay = Replay::new(usize::try_from(last).unwrap_or(0));
        // `read_range` hands over 1..=last in order, each once: every record is folded.
        while let Some(batch) = received.blocking_recv() {
            for record in batch {
                replay.take(
                    record.seq,
                    &record.bytes,
                    Some(&record.partner),
                    cutoff,
                    details,
                );
            }
        }
        replay
    });
    let replay = folding.await.map_err(|err| AuditError::Invalid {
        seq: None,
        message: format!("the fold failed: {err}"),
    })?;
    reading.await.map_err(|err| AuditError::Invalid {
        seq: None,
        message: format!("the reader failed: {err}"),
    })??;
    Ok(replay)
}
