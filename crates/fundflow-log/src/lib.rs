//! The event log, fundflow's source of truth: append an encoded envelope under its partner and
//! event id and get back its sequence number (or "duplicate of seq N"); read records in sequence
//! order from any sequence number; ask for the last sequence number.
//!
//! Two implementations behave the same: [`jetstream::JetStreamLog`], the production log on NATS
//! JetStream (replicated, shared by many processes), and [`embedded::EmbeddedLog`], a local sled
//! store for one machine with no server (quickstart, offline replays, fast tests). [`EventLog`]
//! picks one at run time. The log stores bytes; it never decodes or judges an envelope — the fold
//! does that, for records from either log alike. `tests/log_contract.rs` runs one contract
//! against both.
//!
//! Whoever needs a whole range of the log (the projector's refold, the auditor's export and
//! replay) reads it with [`EventLog::read_range`], which checks for gaps and rides out stalls;
//! every retry loop paces itself with a [`Backoff`].

mod backoff;
pub mod embedded;
mod error;
pub mod jetstream;
mod range;

use std::time::Duration;

use bytes::Bytes;

pub use backoff::Backoff;
pub use error::{LogError, LogErrorKind};
pub use range::{
    RANGE_BATCH_MAX, RANGE_READ_PATIENCE, RANGE_READ_WAIT, READ_REOPEN_BACKOFF, RangeReader,
};

/// Subjects of the events stream: `fundflow.v1.events.<partner_id>.<event token>`.
pub const SUBJECT_PREFIX: &str = "fundflow.v1.events.";

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its position: 1, 2, 3, ... (JetStream's stream sequence).
    pub seq: u64,
    /// The partner token of the subject it was appended under; the fold checks that the
    /// envelope names the same partner.
    pub partner: String,
    /// The encoded envelope, exactly as appended.
    pub bytes: Bytes,
}

/// What to append.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// The submitting partner; becomes the subject token and scopes the dedupe id.
    pub partner_id: String,
    /// The envelope's event id.
    pub event_id: String,
    /// The encoded envelope.
    pub envelope: Bytes,
}

/// What the log did with an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored as a new record at `seq`.
    Stored {
        /// The new record's sequence number.
        seq: u64,
    },
    /// The same (partner, event id) was appended before, at `seq`, whatever its content: nothing
    /// was stored. The caller compares contents when it needs to tell a resend from a conflict.
    Duplicate {
        /// The earlier record's sequence number.
        seq: u64,
    },
}

impl Appended {
    /// The sequence number, new or earlier.
    pub fn seq(self) -> u64 {
        match self {
            Appended::Stored { seq } | Appended::Duplicate { seq } => seq,
        }
    }
}

/// A record put back at the position it had in another log (`fundflow log import`): appended
/// only if the log's last seq is `seq - 1`.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// The position it must land at.
    pub seq: u64,
    /// The subject partner, event id (the dedupe key) and bytes.
    pub append: AppendRequest,
}

/// What the log did with a restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restored {
    /// Stored at the requested seq (also when an earlier attempt of the same request had
    /// stored it and its answer was lost).
    Stored,
    /// The (partner, event id) is held already, at `seq`: nothing was stored.
    Occupied {
        /// Where the log holds it.
        seq: u64,
    },
    /// The log's last seq was not the requested seq − 1: nothing was stored.
    Misplaced {
        /// The log's last seq.
        last_seq: u64,
    },
}

/// The event id as a subject token and dedupe key: a UUID in its canonical lowercase form, so
/// that spellings of one UUID are one key (as they are for the fold); any other id, which the
/// fold will reject anyway, as `x` and a hash of it, so that it is a valid, unique NATS token.
pub fn event_token(event_id: &str) -> String {
    match uuid::Uuid::try_parse(event_id) {
        Ok(uuid) if event_id.len() == 36 => uuid.hyphenated().to_string(),
        _ => format!("x{:032x}", xxhash_rust::xxh3::xxh3_128(event_id.as_bytes())),
    }
}

/// The dedupe id of an event: scoped by partner, so that no partner can suppress another's event
/// by reusing its id (JetStream deduplicates `Nats-Msg-Id` across the whole stream).
pub fn message_id(partner_id: &str, event_id: &str) -> String {
    format!("{partner_id}:{}", event_token(event_id))
}

/// The subject an event is appended under: one subject per (partner, event id), which is what lets
/// the JetStream log refuse a second record for an id at any distance in time (see
/// [`jetstream`]).
pub fn subject(partner_id: &str, event_id: &str) -> String {
    format!("{SUBJECT_PREFIX}{partner_id}.{}", event_token(event_id))
}

/// The partner token of an events subject; empty when the subject is not
/// `fundflow.v1.events.<partner>[.<event>]` (the fold then rejects the record as a partner
/// mismatch).
pub fn partner_of_subject(subject: &str) -> &str {
    let Some(rest) = subject.strip_prefix(SUBJECT_PREFIX) else {
        return "";
    };
    let mut tokens = rest.split('.');
    match (tokens.next(), tokens.next(), tokens.next()) {
        (Some(partner), _, None) => partner,
        _ => "",
    }
}

/// The log, embedded or on JetStream.
#[derive(Clone)]
pub enum EventLog {
    /// A sled store in one process.
    Embedded(embedded::EmbeddedLog),
    /// A JetStream stream (boxed: the client is large, the embedded handle one pointer).
    JetStream(Box<jetstream::JetStreamLog>),
}

impl EventLog {
    /// Appends records in order, pipelined where the log allows; returns one result per request.
    pub async fn append_batch(
        &self,
        requests: &[AppendRequest],
    ) -> Result<Vec<Appended>, LogError> {
        match self {
            EventLog::Embedded(log) => log.append_batch(requests).await,
            EventLog::JetStream(log) => log.append_batch(requests).await,
        }
    }

    /// Appends one record.
    pub async fn append(&self, request: AppendRequest) -> Result<Appended, LogError> {
        let mut results = self.append_batch(std::slice::from_ref(&request)).await?;
        results
            .pop()
            .ok_or_else(|| LogError::new(LogErrorKind::Append, "no result for the append"))
    }

    /// Puts records back at their seqs, in order, pipelined where the log allows; returns one
    /// result per request. After the first request that is not [`Restored::Stored`], the
    /// later ones are [`Restored::Misplaced`] (or not tried): the caller resolves that one and
    /// sends the rest again. Unlike `append_batch`, a record never lands anywhere but at its
    /// seq.
    pub async fn restore_batch(
        &self,
        requests: &[RestoreRequest],
    ) -> Result<Vec<Restored>, LogError> {
        match self {
            EventLog::Embedded(log) => log.restore_batch(requests).await,
            EventLog::JetStream(log) => log.restore_batch(requests).await,
        }
    }

    /// The last sequence number (0 for an empty log).
    pub async fn last_seq(&self) -> Result<u64, LogError> {
        match self {
            EventLog::Embedded(log) => log.last_seq().await,
            EventLog::JetStream(log) => log.last_seq().await,
        }
    }

    /// The record at `seq`, if there is one.
    pub async fn get(&self, seq: u64) -> Result<Option<Record>, LogError> {
        match self {
            EventLog::Embedded(log) => log.get(seq).await,
            EventLog::JetStream(log) => log.get(seq).await,
        }
    }

    /// The record of (partner, event id), if the log holds one: each is stored at most once.
    pub async fn find(&self, partner_id: &str, event_id: &str) -> Result<Option<Record>, LogError> {
        match self {
            EventLog::Embedded(log) => log.find(partner_id, event_id).await,
            EventLog::JetStream(log) => log.find(partner_id, event_id).await,
        }
    }

    /// A reader that yields records from `from_seq` on, in order, and then waits for new ones.
    /// To read a known range in full, [`EventLog::read_range`] adds gap checks, reopening and
    /// patience.
    pub async fn reader(&self, from_seq: u64) -> Result<LogReader, LogError> {
        match self {
            EventLog::Embedded(log) => Ok(LogReader::Embedded(log.reader(from_seq))),
            EventLog::JetStream(log) => {
                Ok(LogReader::JetStream(Box::new(log.reader(from_seq).await?)))
            }
        }
    }

    /// A short name for logs and metrics: `embedded` or `jetstream`.
    pub fn kind(&self) -> &'static str {
        match self {
            EventLog::Embedded(_) => "embedded",
            EventLog::JetStream(_) => "jetstream",
        }
    }
}

impl From<jetstream::JetStreamLog> for EventLog {
    fn from(log: jetstream::JetStreamLog) -> EventLog {
        EventLog::JetStream(Box::new(log))
    }
}

impl From<embedded::EmbeddedLog> for EventLog {
    fn from(log: embedded::EmbeddedLog) -> EventLog {
        EventLog::Embedded(log)
    }
}

/// Reads a log in sequence order.
pub enum LogReader {
    /// Reading an embedded log.
    Embedded(embedded::EmbeddedReader),
    /// Reading a JetStream stream through an ordered consumer (boxed: it is large).
    JetStream(Box<jetstream::JetStreamReader>),
}

impl LogReader {
    /// Up to `max` next records, waiting at most `wait` for the first; an empty batch means none
    /// arrived in time.
    pub async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Record>, LogError> {
        match self {
            LogReader::Embedded(reader) => reader.next_batch(max, wait).await,
            LogReader::JetStream(reader) => reader.next_batch(max, wait).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_ids_are_scoped_by_partner() {
        let id = "6F9619FF-8B86-D011-B42D-00C04FC964FF";
        assert_eq!(
            subject("icshp", id),
            "fundflow.v1.events.icshp.6f9619ff-8b86-d011-b42d-00c04fc964ff"
        );
        assert_eq!(subject("icshp", id), subject("icshp", &id.to_lowercase()));
        assert_eq!(partner_of_subject(&subject("icshp", id)), "icshp");
        assert_eq!(partner_of_subject("fundflow.v1.events.icshp"), "icshp");
        assert_eq!(partner_of_subject("fundflow.v1.events.a.b.c"), "");
        assert_eq!(partner_of_subject("other.icshp"), "");
        assert_eq!(
            message_id("icshp", id),
            "icshp:6f9619ff-8b86-d011-b42d-00c04fc964ff"
        );
        assert_ne!(message_id("icshp", id), message_id("cabc", id));
        // Ids that are not UUIDs still make valid, distinct tokens.
        let odd = event_token("not a uuid.*>");
        assert!(odd.starts_with('x') && odd.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(odd, event_token("not a uuid"));
    }
}
