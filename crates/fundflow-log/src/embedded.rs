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
//!
//! sled blocks: every call into it runs on tokio's blocking pool, never on the async runtime.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use tokio::sync::Notify;

use crate::{AppendRequest, Appended, LogError, LogErrorKind, Record, RestoreRequest, Restored};

/// A log in a local sled store. Cheap to clone: clones share the store.
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    records: sled::Tree,
    ids: sled::Tree,
    /// Serializes appends, so that sequence numbers are assigned without gaps or races. A std
    /// mutex taken inside the blocking append, so that it stays held until the append is done
    /// even when the caller stops waiting for it (a tokio guard held across the blocking task
    /// would be dropped with the cancelled caller while the append still runs).
    append_lock: Mutex<()>,
    /// Wakes readers waiting at the end of the log.
    appended: Notify,
}

impl EmbeddedLog {
    /// Opens (or creates) the log in `dir`. sled locks the directory: one process at a time; a
    /// lock still held by a handle of this process that is closing is waited for (see
    /// [`open_sled`]), on the blocking pool.
    pub async fn open(dir: &Path) -> Result<EmbeddedLog, LogError> {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || EmbeddedLog::open_blocking(&dir))
            .await
            .map_err(|err| {
                LogError::with_source(
                    LogErrorKind::Storage,
                    "opening the embedded log failed",
                    err,
                )
            })?
    }

    fn open_blocking(dir: &Path) -> Result<EmbeddedLog, LogError> {
        // Appends flush explicitly before they are acknowledged; no background flusher needed.
        // sled caches 1 GiB by default, and a log is read front to back: what it caches is
        // mostly the event ids an append looks up, a few tens of bytes an event.
        let config = sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            .cache_capacity(LOG_CACHE_BYTES);
        let db = open_sled(&config).map_err(|err| {
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

    /// Runs `task` against the store on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        task: impl FnOnce(&Inner) -> Result<T, LogError> + Send + 'static,
    ) -> Result<T, LogError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || task(&inner))
            .await
            .map_err(|err| {
                LogError::with_source(
                    LogErrorKind::Storage,
                    "a task on the embedded log's store failed",
                    err,
                )
            })?
    }

    /// The last sequence number (0 when empty).
    pub async fn last_seq(&self) -> Result<u64, LogError> {
        self.blocking(Inner::last_seq).await
    }

    /// Appends in order, in one transaction, then flushes.
    ///
    /// Cancel-safe in the sense that matters: dropped mid-way, the batch still completes or
    /// fails as a whole, and no other append starts before it has.
    pub async fn append_batch(
        &self,
        requests: &[AppendRequest],
    ) -> Result<Vec<Appended>, LogError> {
        let requests = requests.to_vec();
        self.blocking(move |inner| inner.append_blocking(&requests))
            .await
    }

    /// Puts records back at their seqs (see [`crate::EventLog::restore_batch`]), in one
    /// transaction, then flushes.
    pub async fn restore_batch(
        &self,
        requests: &[RestoreRequest],
    ) -> Result<Vec<Restored>, LogError> {
        let requests = requests.to_vec();
        self.blocking(move |inner| inner.restore_blocking(&requests))
            .await
    }

    /// The record at `seq`, if there is one.
    pub async fn get(&self, seq: u64) -> Result<Option<Record>, LogError> {
        self.blocking(move |inner| inner.get(seq)).await
    }

    /// The record of (partner, event id), if the log holds one.
    pub async fn find(&self, partner_id: &str, event_id: &str) -> Result<Option<Record>, LogError> {
        let id = crate::message_id(partner_id, event_id);
        self.blocking(move |inner| match inner.ids.get(id.as_bytes())? {
            Some(seq) => inner.get(seq_of_key(&seq)),
            None => Ok(None),
        })
        .await
    }

    /// A reader from `from_seq` on.
    pub fn reader(&self, from_seq: u64) -> EmbeddedReader {
        EmbeddedReader {
            log: self.clone(),
            next_seq: from_seq.max(1),
        }
    }
}

#[cfg(test)]
impl EmbeddedLog {
    /// Stores a record at `seq` without an append, to make the log that no append can: one with
    /// a gap.
    pub(crate) fn insert_raw(&self, seq: u64, partner: &str, envelope: &[u8]) {
        let mut value = vec![u8::try_from(partner.len()).unwrap()];
        value.extend_from_slice(partner.as_bytes());
        value.extend_from_slice(envelope);
        self.inner.records.insert(seq.to_be_bytes(), value).unwrap();
    }
}

impl Inner {
    fn last_seq(&self) -> Result<u64, LogError> {
        Ok(self.records.last()?.map_or(0, |(key, _)| seq_of_key(&key)))
    }

    fn get(&self, seq: u64) -> Result<Option<Record>, LogError> {
        let Some(value) = self.records.get(seq.to_be_bytes())? else {
            return Ok(None);
        };
        let (partner, bytes) = split_value(&value).ok_or_else(|| corrupt(seq))?;
        Ok(Some(Record {
            seq,
            partner,
            bytes,
        }))
    }

    fn append_blocking(&self, requests: &[AppendRequest]) -> Result<Vec<Appended>, LogError> {
        // The lock guards `()`: a panic in an earlier append left nothing half-done that it
        // protects (the transaction is all or nothing), so a poisoned lock is taken as it is.
        let _one_at_a_time = self
            .append_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Read under the lock, which every append takes: no other append can move it.
        let last = self.last_seq()?;
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
        // Here rather than after the caller's await: the wake-up must not depend on the caller
        // still waiting.
        self.appended.notify_waiters();
        Ok(results)
    }

    fn restore_blocking(&self, requests: &[RestoreRequest]) -> Result<Vec<Restored>, LogError> {
        let _one_at_a_time = self
            .append_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let last = self.last_seq()?;
        let result = (&self.records, &self.ids).transaction(|(records, ids)| {
            let mut next = last;
            let mut results = Vec::with_capacity(requests.len());
            for RestoreRequest { seq, append } in requests {
                if *seq != next + 1 {
                    results.push(Restored::Misplaced { last_seq: next });
                    break;
                }
                let id = crate::message_id(&append.partner_id, &append.event_id);
                if let Some(held) = ids.get(id.as_bytes())? {
                    results.push(Restored::Occupied {
                        seq: seq_of_key(&held),
                    });
                    break;
                }
                let partner = append.partner_id.as_bytes();
                let Ok(partner_len) = u8::try_from(partner.len()) else {
                    return Err(ConflictableTransactionError::Abort(format!(
                        "partner id {:?} is longer than 255 bytes",
                        append.partner_id
                    )));
                };
                next += 1;
                let mut value = Vec::with_capacity(1 + partner.len() + append.envelope.len());
                value.push(partner_len);
                value.extend_from_slice(partner);
                value.extend_from_slice(&append.envelope);
                records.insert(&next.to_be_bytes(), value)?;
                ids.insert(id.as_bytes(), &next.to_be_bytes())?;
                results.push(Restored::Stored);
            }
            Ok(results)
        });
        let results = result.map_err(|err| match err {
            TransactionError::Abort(message) => LogError::new(LogErrorKind::Append, message),
            TransactionError::Storage(err) => LogError::from(err),
        })?;
        self.db.flush()?;
        self.appended.notify_waiters();
        Ok(results)
    }

    /// Up to `max` records from `from_seq` on.
    fn read_from(&self, from_seq: u64, max: usize) -> Result<Vec<Record>, LogError> {
        let mut batch = Vec::new();
        for entry in self.records.range(from_seq.to_be_bytes()..).take(max) {
            let (key, value) = entry?;
            let seq = seq_of_key(&key);
            let (partner, bytes) = split_value(&value).ok_or_else(|| corrupt(seq))?;
            batch.push(Record {
                seq,
                partner,
                bytes,
            });
        }
        Ok(batch)
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
        let batch = self.read_now(max).await?;
        if !batch.is_empty() {
            return Ok(batch);
        }
        let _ = tokio::time::timeout(wait, notified).await;
        self.read_now(max).await
    }

    async fn read_now(&mut self, max: usize) -> Result<Vec<Record>, LogError> {
        let from_seq = self.next_seq;
        let batch = self
            .log
            .blocking(move |inner| inner.read_from(from_seq, max))
            .await?;
        if let Some(last) = batch.last() {
            self.next_seq = last.seq + 1;
        }
        Ok(batch)
    }
}

/// Opens a sled database, waiting up to [`SLED_LOCK_WAIT`] for its directory lock: sled's
/// background I/O can hold the lock a moment after the last handle of the same process dropped,
/// so a prompt reopen in one process must not fail. Another process holding it still fails, with
/// sled's "could not acquire lock" error, after the wait.
///
/// This blocks (sled does, and so does the wait): async callers run it with
/// `tokio::task::spawn_blocking`, as [`EmbeddedLog::open`] does.
pub fn open_sled(config: &sled::Config) -> Result<sled::Db, sled::Error> {
    let deadline = Instant::now() + SLED_LOCK_WAIT;
    loop {
        match config.open() {
            Err(sled::Error::Io(err))
                if lock_was_contended(&err, &config.path) && Instant::now() < deadline =>
            {
                std::thread::sleep(SLED_LOCK_RETRY_AFTER);
            }
            result => return result,
        }
    }
}

/// What sled may cache of the embedded log.
const LOG_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// How long [`open_sled`] waits for a database's directory lock.
pub const SLED_LOCK_WAIT: Duration = Duration::from_secs(2);

/// How often [`open_sled`] tries the lock again while it waits.
const SLED_LOCK_RETRY_AFTER: Duration = Duration::from_millis(20);

/// Whether sled's open failed on its directory lock (`flock` on `DIR/db`). sled 0.34 reports a
/// held lock as an `io::ErrorKind::Other` whose cause survives only as text (`Config::try_lock`
/// in its `config.rs`), so the kind narrows it down and the lock itself decides: taken by
/// someone else (`WouldBlock`), or free again because its holder has just let go. Any other
/// answer (no `db` file, a file that cannot be opened) means the error was about something
/// else.
fn lock_was_contended(err: &std::io::Error, dir: &Path) -> bool {
    if err.kind() != std::io::ErrorKind::Other {
        return false;
    }
    let Ok(file) = std::fs::File::open(dir.join("db")) else {
        return false;
    };
    // Taking the lock here, when it is free, lasts until `file` drops at the end of this call.
    match file.try_lock() {
        Ok(()) | Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(_)) => false,
    }
}

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
    // What both logs must do is in `tests/log_contract.rs`; these are the embedded log's own.
    use super::*;

    fn request(partner: &str, event: &str, bytes: &'static [u8]) -> AppendRequest {
        AppendRequest {
            partner_id: partner.into(),
            event_id: event.into(),
            envelope: Bytes::from_static(bytes),
        }
    }

    #[tokio::test]
    async fn survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = EmbeddedLog::open(dir.path()).await.unwrap();
            log.append_batch(&[request("a", "e1", b"one")])
                .await
                .unwrap();
        }
        // Reopened at once: sled may still hold the lock a moment; `open_sled` waits for it.
        let log = EmbeddedLog::open(dir.path()).await.unwrap();
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
        let log = EmbeddedLog::open(dir.path()).await.unwrap();
        let mut reader = log.reader(1);
        let writer = log.clone();
        let append = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            writer
                .append_batch(&[request("a", "e1", b"one")])
                .await
                .unwrap();
        });
        let wait = Duration::from_secs(10);
        let started = Instant::now();
        let batch = reader.next_batch(10, wait).await.unwrap();
        let waited = started.elapsed();
        assert_eq!(batch.len(), 1);
        // Without the wake-up the reader would still find the record, by reading again after
        // the whole wait: only the time tells the two apart.
        assert!(
            waited < wait / 4,
            "the reader waited {waited:?}: the append did not wake it"
        );
        append.await.unwrap();
    }

    #[tokio::test]
    async fn a_cancelled_append_still_completes_before_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path()).await.unwrap();
        let batch: Vec<_> = (0..2_000)
            .map(|i| AppendRequest {
                partner_id: "a".into(),
                event_id: format!("first-{i}"),
                envelope: Bytes::from_static(b"x"),
            })
            .collect();
        // Dropped at its first await: the blocking append goes on without its caller.
        let cancelled = tokio::time::timeout(Duration::ZERO, log.append_batch(&batch)).await;
        assert!(
            cancelled.is_err(),
            "the append should still have been running"
        );
        let next = log
            .append_batch(&[request("a", "second", b"y")])
            .await
            .unwrap();
        // The cancelled batch ran before or after the second append, never beside it: one seq
        // each, none used twice, none skipped.
        assert!(
            next == [Appended::Stored { seq: 1 }] || next == [Appended::Stored { seq: 2_001 }],
            "{next:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while log.last_seq().await.unwrap() < 2_001 {
            assert!(
                Instant::now() < deadline,
                "the cancelled append never completed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut reader = log.reader(1);
        let mut seqs = Vec::new();
        loop {
            let records = reader.next_batch(4096, Duration::ZERO).await.unwrap();
            if records.is_empty() {
                break;
            }
            seqs.extend(records.iter().map(|r| r.seq));
        }
        assert_eq!(seqs, (1..=2_001).collect::<Vec<_>>());
        assert_eq!(
            log.find("a", "second").await.unwrap().map(|r| r.seq),
            Some(next[0].seq())
        );
    }

    #[tokio::test]
    async fn a_lock_held_by_another_handle_is_waited_for_then_reported() {
        let dir = tempfile::tempdir().unwrap();
        let _held = EmbeddedLog::open(dir.path()).await.unwrap();
        let started = Instant::now();
        let Err(err) = EmbeddedLog::open(dir.path()).await else {
            panic!("a second handle on a locked store must fail");
        };
        assert_eq!(err.kind(), LogErrorKind::Storage);
        assert!(started.elapsed() >= SLED_LOCK_WAIT, "{err}");
    }
}
