//! The embedded log: the same semantics as the JetStream log, in a local sled store, for one
//! machine with no server.
//!
//! Layout (one sled database, two trees):
//! - `records`: seq as u64 big-endian → partner length (1 byte) ‖ partner ‖ envelope bytes.
//!   Big-endian keys make sled's order the log's order.
//! - `ids`: message id (`partner:event token`) → seq as u64 big-endian: each (partner, event id)
//!   is stored once, as on JetStream.
//!
//! An append batch is one sled transaction over both trees followed by a flush, so a crash keeps
//! either the whole batch or none of it, and an acknowledged append is on disk.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use tokio::sync::{Mutex, Notify};

use crate::{AppendRequest, Appended, LogError, LogErrorKind, Record};

/// A log in a local sled store. Cheap to clone: clones share the store.
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    records: sled::Tree,
    ids: sled::Tree,
    /// Serializes appends, so that sequence numbers are assigned without gaps or races.
    append_lock: Mutex<()>,
    /// Wakes readers waiting at the end of the log.
    appended: Notify,
}

impl EmbeddedLog {
    /// Opens (or creates) the log in `dir`. sled locks the directory: one process at a time.
    pub fn open(dir: &Path) -> Result<EmbeddedLog, LogError> {
        // Appends flush explicitly before they are acknowledged; no background flusher needed.
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            .open()
            .map_err(|err| {
                LogError::with_source(
                    LogErrorKind::Storage,
                    format!("cannot open the embedded log in {}", dir.display()),
                    err,
                )
            })?;
        let records = db.open_tree("records")?;
        let ids = db.open_tree("ids")?;
        Ok(EmbeddedLog {
            inner: Arc::new(Inner {
                db,
                records,
                ids,
                append_lock: Mutex::new(()),
                appended: Notify::new(),
            }),
        })
    }

    /// The last sequence number (0 when empty).
    pub fn last_seq(&self) -> Result<u64, LogError> {
        Ok(self
            .inner
            .records
            .last()?
            .map_or(0, |(key, _)| seq_of_key(&key)))
    }

    /// Appends in order, in one transaction, then flushes.
    pub async fn append_batch(
        &self,
        requests: &[AppendRequest],
    ) -> Result<Vec<Appended>, LogError> {
        let _guard = self.inner.append_lock.lock().await;
        let inner = Arc::clone(&self.inner);
        let requests = requests.to_vec();
        let results = tokio::task::spawn_blocking(move || inner.append_blocking(&requests))
            .await
            .map_err(|err| {
                LogError::with_source(LogErrorKind::Append, "the append task failed", err)
            })??;
        self.inner.appended.notify_waiters();
        Ok(results)
    }

    /// The record at `seq`, if there is one.
    pub fn get(&self, seq: u64) -> Result<Option<Record>, LogError> {
        let Some(value) = self.inner.records.get(seq.to_be_bytes())? else {
            return Ok(None);
        };
        let (partner, bytes) = split_value(&value).ok_or_else(|| corrupt(seq))?;
        Ok(Some(Record {
            seq,
            partner,
            bytes,
        }))
    }

    /// The record of (partner, event id), if the log holds one.
    pub fn find(&self, partner_id: &str, event_id: &str) -> Result<Option<Record>, LogError> {
        let id = crate::message_id(partner_id, event_id);
        match self.inner.ids.get(id.as_bytes())? {
            Some(seq) => self.get(seq_of_key(&seq)),
            None => Ok(None),
        }
    }

    /// A reader from `from_seq` on.
    pub fn reader(&self, from_seq: u64) -> EmbeddedReader {
        EmbeddedReader {
            log: self.clone(),
            next_seq: from_seq.max(1),
        }
    }
}

impl Inner {
    fn append_blocking(&self, requests: &[AppendRequest]) -> Result<Vec<Appended>, LogError> {
        let last = self.records.last()?.map_or(0, |(key, _)| seq_of_key(&key));
        let result = (&self.records, &self.ids).transaction(|(records, ids)| {
            let mut next = last;
            let mut results = Vec::with_capacity(requests.len());
            for request in requests {
                let id = crate::message_id(&request.partner_id, &request.event_id);
                if let Some(seq) = ids.get(id.as_bytes())? {
                    results.push(Appended::Duplicate {
                        seq: seq_of_key(&seq),
                    });
                    continue;
                }
                let partner = request.partner_id.as_bytes();
                let Ok(partner_len) = u8::try_from(partner.len()) else {
                    return Err(ConflictableTransactionError::Abort(format!(
                        "partner id {:?} is longer than 255 bytes",
                        request.partner_id
                    )));
                };
                next += 1;
                let mut value = Vec::with_capacity(1 + partner.len() + request.envelope.len());
                value.push(partner_len);
                value.extend_from_slice(partner);
                value.extend_from_slice(&request.envelope);
                records.insert(&next.to_be_bytes(), value)?;
                ids.insert(id.as_bytes(), &next.to_be_bytes())?;
                results.push(Appended::Stored { seq: next });
            }
            Ok(results)
        });
        let results = result.map_err(|err| match err {
            TransactionError::Abort(message) => LogError::new(LogErrorKind::Append, message),
            TransactionError::Storage(err) => LogError::from(err),
        })?;
        self.db.flush()?;
        Ok(results)
    }
}

/// Reads an embedded log in order.
pub struct EmbeddedReader {
    log: EmbeddedLog,
    next_seq: u64,
}

impl EmbeddedReader {
    /// Up to `max` records from where the reader is, waiting up to `wait` when at the end.
    pub async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Record>, LogError> {
        let log = self.log.clone();
        let notified = log.inner.appended.notified();
        tokio::pin!(notified);
        // Registered before reading, so an append between the read and the wait is not missed.
        notified.as_mut().enable();
        let batch = self.read_now(max)?;
        if !batch.is_empty() {
            return Ok(batch);
        }
        let _ = tokio::time::timeout(wait, notified).await;
        self.read_now(max)
    }

    fn read_now(&mut self, max: usize) -> Result<Vec<Record>, LogError> {
        let mut batch = Vec::new();
        for entry in self
            .log
            .inner
            .records
            .range(self.next_seq.to_be_bytes()..)
            .take(max)
        {
            let (key, value) = entry?;
            let seq = seq_of_key(&key);
            let (partner, bytes) = split_value(&value).ok_or_else(|| corrupt(seq))?;
            batch.push(Record {
                seq,
                partner,
                bytes,
            });
            self.next_seq = seq + 1;
        }
        Ok(batch)
    }
}

/// Opens a sled database, waiting up to [`SLED_LOCK_WAIT`] for its directory lock: sled's
/// background I/O can hold the lock a moment after the last handle of the same process dropped,
/// so a prompt reopen in one process must not fail. Another process holding it still fails, with
/// sled's "could not acquire lock" error, after the wait.
pub fn open_sled(config: &sled::Config) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + SLED_LOCK_WAIT;
    loop {
        match config.open() {
            Err(sled::Error::Io(err))
                if err.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

/// How long [`open_sled`] waits for a database's directory lock.
pub const SLED_LOCK_WAIT: Duration = Duration::from_secs(2);

fn corrupt(seq: u64) -> LogError {
    LogError::new(
        LogErrorKind::Storage,
        format!("record {seq} of the embedded log is corrupt"),
    )
}

fn seq_of_key(key: &[u8]) -> u64 {
    key.try_into().map_or(0, u64::from_be_bytes)
}

fn split_value(value: &sled::IVec) -> Option<(String, Bytes)> {
    let (&len, rest) = value.split_first()?;
    let partner = rest.get(..usize::from(len))?;
    let partner = std::str::from_utf8(partner).ok()?.to_owned();
    Some((partner, Bytes::copy_from_slice(&rest[usize::from(len)..])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(partner: &str, event: &str, bytes: &'static [u8]) -> AppendRequest {
        AppendRequest {
            partner_id: partner.into(),
            event_id: event.into(),
            envelope: Bytes::from_static(bytes),
        }
    }

    #[tokio::test]
    async fn appends_in_order_and_deduplicates_per_partner() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        let results = log
            .append_batch(&[
                request("a", "e1", b"one"),
                request("b", "e1", b"two"),
                request("a", "e1", b"one again"),
            ])
            .await
            .unwrap();
        assert_eq!(
            results,
            [
                Appended::Stored { seq: 1 },
                Appended::Stored { seq: 2 },
                Appended::Duplicate { seq: 1 }
            ]
        );
        assert_eq!(log.last_seq().unwrap(), 2);
        let mut reader = log.reader(2);
        let batch = reader
            .next_batch(10, Duration::from_millis(1))
            .await
            .unwrap();
        assert_eq!(
            batch,
            [Record {
                seq: 2,
                partner: "b".into(),
                bytes: Bytes::from_static(b"two")
            }]
        );
    }

    #[tokio::test]
    async fn survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = EmbeddedLog::open(dir.path()).unwrap();
            log.append_batch(&[request("a", "e1", b"one")])
                .await
                .unwrap();
        }
        let log = EmbeddedLog::open(dir.path()).unwrap();
        assert_eq!(
            log.append_batch(&[request("a", "e1", b"x")]).await.unwrap(),
            [Appended::Duplicate { seq: 1 }]
        );
        assert_eq!(
            log.append_batch(&[request("a", "e2", b"y")]).await.unwrap(),
            [Appended::Stored { seq: 2 }]
        );
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_on_append() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        let mut reader = log.reader(1);
        let writer = log.clone();
        let append = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            writer
                .append_batch(&[request("a", "e1", b"one")])
                .await
                .unwrap();
        });
        let batch = reader
            .next_batch(10, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(batch.len(), 1);
        append.await.unwrap();
    }
}
