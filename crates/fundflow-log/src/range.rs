//! Reading every record of a range of the log, `from..=to`: what the projector's refold at
//! start and the auditor's export and replay need. One reader for the three, so that all of them
//! get the same guarantees: records in order, each once, an error on a gap, and patience with
//! the stalls of a live cluster (a consumer lost with its node, a replica catching up, a leader
//! election), after which the reader is reopened where it got to.

use std::ops::RangeInclusive;
use std::time::Duration;

use tokio::time::Instant;

use crate::{Backoff, EventLog, LogError, LogErrorKind, LogReader, Record};

/// How long a range read waits for the next due record before it gives up (counted while it
/// waits, from the last record that arrived, so a stream that keeps delivering is never given up
/// on, and a caller that takes its time between batches spends none of it): longer
/// than a leader election and a reconnect together, short enough that a log that really lost
/// its records is reported while someone is still watching.
pub const RANGE_READ_PATIENCE: Duration = Duration::from_secs(120);

/// How long one read of a range waits for records. Records are due, so an empty read means the
/// reader is stuck, and it is reopened.
pub const RANGE_READ_WAIT: Duration = Duration::from_secs(5);

/// Most records a range read hands over at once.
pub const RANGE_BATCH_MAX: usize = 4096;

/// The pace of reopening a reader after a read error or a stall: quick at first (a reconnect),
/// then every few seconds (an election, a node restarting).
pub const READ_REOPEN_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

impl EventLog {
    /// A reader of the records `range` (`1..=last` for the whole log), in order; see
    /// [`RangeReader`]. The records must exist: `range.end()` is at most [`EventLog::last_seq`].
    pub fn read_range(&self, range: RangeInclusive<u64>) -> RangeReader {
        let (from, to) = range.into_inner();
        RangeReader {
            log: self.clone(),
            next_seq: from.max(1),
            to,
            reader: None,
            reader_delivered: false,
            batch_max: RANGE_BATCH_MAX,
            read_wait: RANGE_READ_WAIT,
            patience: RANGE_READ_PATIENCE,
            backoff: READ_REOPEN_BACKOFF,
            waiting_since: None,
            reopened: 0,
        }
    }
}

/// Reads a range of the log, `from..=to`, handing over each record once, in order, until `to`.
///
/// - A record missing from the range (the log delivers seq 7 where 6 was due, to a fresh
///   reader) is a [`LogErrorKind::Gap`] error naming the missing seq; the records before it are
///   handed over first.
/// - A read that delivers nothing while records are due is a stall: the reader is reopened from
///   the next due seq, with [`READ_REOPEN_BACKOFF`], and so is one after a transient read error.
/// - When no record has arrived for the patience ([`RANGE_READ_PATIENCE`] unless
///   [`RangeReader::patience`] says otherwise), the read stops with a [`LogErrorKind::Read`]
///   error naming the seq it waited for, caused by the last stall or read error.
/// - Records delivered again after a reopen are dropped.
pub struct RangeReader {
    /// The log, to reopen readers on.
    log: EventLog,
    /// The next record due.
    next_seq: u64,
    /// The last record of the range.
    to: u64,
    /// The current reader; `None` until the first read and after a stall or error, so that the
    /// next read opens a fresh one from `next_seq`.
    reader: Option<LogReader>,
    /// Whether the current reader has delivered records: a gap seen by a reader that has is
    /// checked again with a fresh one before it is reported (the old one may be at fault).
    reader_delivered: bool,
    /// Most records per batch handed over.
    batch_max: usize,
    /// How long one read waits before it counts as a stall.
    read_wait: Duration,
    /// How long without a record before the read gives up.
    patience: Duration,
    /// The pause before reopening; reset by every record that arrives.
    backoff: Backoff,
    /// Since when the read has been waiting for the next due record: set when a call begins
    /// waiting, cleared when records arrive. Patience counts from here.
    waiting_since: Option<Instant>,
    /// How many times a reader was reopened since the last record, for the error.
    reopened: u32,
}

impl RangeReader {
    /// Most records per batch (at least 1).
    #[must_use]
    pub fn batch_max(mut self, batch_max: usize) -> RangeReader {
        self.batch_max = batch_max.max(1);
        self
    }

    /// How long the read waits for the next due record before it gives up.
    #[must_use]
    pub fn patience(mut self, patience: Duration) -> RangeReader {
        self.patience = patience;
        self
    }

    /// How long one read waits for records before the reader counts as stuck and is reopened.
    #[must_use]
    pub fn read_wait(mut self, read_wait: Duration) -> RangeReader {
        self.read_wait = read_wait;
        self
    }

    /// The next record due (`to + 1` once the range is read).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The next records of the range, in order, at most `batch_max`; `None` once the range has
    /// been read.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<Record>>, LogError> {
        self.waiting_since.get_or_insert_with(Instant::now);
        loop {
            if self.next_seq > self.to {
                return Ok(None);
            }
            let wait = self
                .read_wait
                .min(self.patience_left())
                .max(Duration::from_millis(1));
            let reader = match &mut self.reader {
                Some(reader) => reader,
                None => match self.log.reader(self.next_seq).await {
                    Ok(reader) => {
                        self.reader_delivered = false;
                        self.reader.insert(reader)
                    }
                    Err(err) if err.is_transient() => {
                        self.retry_after(err).await?;
                        continue;
                    }
                    Err(err) => return Err(err),
                },
            };
            match reader.next_batch(self.batch_max, wait).await {
                Ok(batch) if batch.is_empty() => {
                    let stall = LogError::new(
                        LogErrorKind::Read,
                        format!(
                            "the reader delivered nothing for {wait:?} while seq {} was due",
                            self.next_seq
                        ),
                    );
                    self.retry_after(stall).await?;
                }
                Ok(batch) => {
                    if let Some(batch) = self.due(batch)? {
                        return Ok(Some(batch));
                    }
                }
                Err(err) if err.is_transient() => self.retry_after(err).await?,
                Err(err) => return Err(err),
            }
        }
    }

    /// The records of `batch` that are due, checked: `None` when all were delivered before.
    fn due(&mut self, mut batch: Vec<Record>) -> Result<Option<Vec<Record>>, LogError> {
        batch.retain(|record| record.seq >= self.next_seq);
        if let Some(beyond) = batch.iter().position(|record| record.seq > self.to) {
            batch.truncate(beyond.max(1));
        }
        let gap_at = (0..)
            .zip(&batch)
            .position(|(offset, record)| record.seq != self.next_seq + offset);
        match gap_at {
            // A reader that has delivered before may be the one skipping: ask a fresh one.
            Some(0) if self.reader_delivered => {
                self.reader = None;
                return Ok(None);
            }
            Some(0) => {
                return Err(LogError::new(
                    LogErrorKind::Gap,
                    format!(
                        "the log has no record at seq {} of {}: it delivered seq {} next",
                        self.next_seq, self.to, batch[0].seq
                    ),
                ));
            }
            // The records before the gap are sound: they go first, and the next call, from a
            // fresh reader, reports the gap.
            Some(gap_at) => {
                batch.truncate(gap_at);
                self.reader = None;
            }
            None => {}
        }
        let Some(last) = batch.last() else {
            return Ok(None);
        };
        self.next_seq = last.seq + 1;
        self.reader_delivered = true;
        self.waiting_since = None;
        self.backoff.reset();
        self.reopened = 0;
        Ok(Some(batch))
    }

    /// After a stall or a transient error: drops the reader and pauses, or gives up once the
    /// patience is spent.
    async fn retry_after(&mut self, err: LogError) -> Result<(), LogError> {
        self.reader = None;
        let waited = self.waited();
        if waited >= self.patience {
            let message = format!(
                "the log stopped delivering records at seq {} of {}: nothing came for {waited:?} (patience {:?}, the reader reopened {} times)",
                self.next_seq, self.to, self.patience, self.reopened
            );
            return Err(LogError::with_source(LogErrorKind::Read, message, err));
        }
        tracing::warn!(
            error = %err,
            next_seq = self.next_seq,
            to_seq = self.to,
            backoff = ?self.backoff.delay(),
            "reading the log stalled or failed; reopening the reader"
        );
        self.reopened += 1;
        tokio::time::sleep(self.backoff.advance().min(self.patience_left())).await;
        Ok(())
    }

    fn waited(&self) -> Duration {
        self.waiting_since
            .map_or(Duration::ZERO, |since| since.elapsed())
    }

    fn patience_left(&self) -> Duration {
        self.patience.saturating_sub(self.waited())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::EmbeddedLog;

    #[tokio::test]
    async fn a_gap_in_the_range_is_an_error_naming_the_missing_seq() {
        let dir = tempfile::tempdir().unwrap();
        let embedded = EmbeddedLog::open(dir.path()).await.unwrap();
        for seq in [1, 2, 4] {
            embedded.insert_raw(seq, "a", b"x");
        }
        let log = EventLog::from(embedded);
        let mut reader = log.read_range(1..=4);
        let err = loop {
            match reader.next_batch().await {
                Ok(Some(batch)) => {
                    let seqs: Vec<u64> = batch.iter().map(|r| r.seq).collect();
                    assert_eq!(seqs, [1, 2], "the records before the gap come first");
                }
                Ok(None) => panic!("a range with a gap was read to its end"),
                Err(err) => break err,
            }
        };
        assert_eq!(err.kind(), LogErrorKind::Gap);
        assert!(!err.is_transient());
        assert!(err.to_string().contains("no record at seq 3 of 4"), "{err}");
        assert_eq!(reader.next_seq(), 3);
    }

    #[tokio::test]
    async fn a_gap_at_the_end_of_the_range_is_an_error_too() {
        let dir = tempfile::tempdir().unwrap();
        let embedded = EmbeddedLog::open(dir.path()).await.unwrap();
        for seq in [1, 3] {
            embedded.insert_raw(seq, "a", b"x");
        }
        let log = EventLog::from(embedded);
        let mut reader = log.read_range(2..=2);
        let err = reader.next_batch().await.unwrap_err();
        assert_eq!(err.kind(), LogErrorKind::Gap, "{err}");
    }
}
