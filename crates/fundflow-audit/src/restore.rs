//! Restoring a log from an export (`fundflow log import`): the export is verified first, then
//! its records are put back in order, each at its own seq under its own subject partner, into
//! an empty log or one that holds a prefix of the export (a restore that was interrupted), so
//! that the new log's seq, log digest and export digest are the export's.
//!
//! Each record is placed with the log's `restore_batch`, which stores it only at its seq (on
//! JetStream the server checks the stream's last seq), so a rerun after a kill -9 can neither
//! skip nor repeat a record: it checks what the target holds against the export and goes on
//! after it.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use bytes::Bytes;
use fundflow_domain::digest::{Digest32, chain_log};
use fundflow_log::{AppendRequest, EventLog, Record, RestoreRequest, Restored};
use fundflow_proto::{Message, RecordReader, v1};

use crate::AuditError;
use crate::export::{chain_export, read_manifest, verify};

/// Records sent to the log per `restore_batch` call.
const RESTORE_CHUNK: usize = 1_000;

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// Records the target held already (a prefix of the export), checked and kept.
    pub kept: u64,
    /// Records appended now.
    pub appended: u64,
    /// The target's last seq afterwards: the export's.
    pub last_seq: u64,
    /// Hex log digest after the last record: the manifest's.
    pub log_digest: String,
    /// Hex export digest after the last record: the manifest's.
    pub export_digest: String,
    /// Records whose (partner, event id) the log held already under an earlier seq (the source
    /// log took them under another subject), stored under an id derived from their seq.
    pub renamed: u64,
}

/// Reads an export's records in order (the file has been verified).
struct ExportRecords {
    reader: RecordReader<BufReader<File>>,
    bytes: Vec<u8>,
    path: std::path::PathBuf,
}

impl ExportRecords {
    fn open(path: &Path) -> Result<ExportRecords, AuditError> {
        let file = File::open(path).map_err(|source| AuditError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(ExportRecords {
            reader: RecordReader::new(BufReader::with_capacity(1 << 20, file)),
            bytes: Vec::new(),
            path: path.to_owned(),
        })
    }

    fn next(&mut self) -> Result<Option<v1::LogRecord>, AuditError> {
        let more = self
            .reader
            .read_into(&mut self.bytes)
            .map_err(|err| AuditError::Invalid {
                seq: None,
                message: format!("{} changed while it was read: {err}", self.path.display()),
            })?;
        if !more {
            return Ok(None);
        }
        v1::LogRecord::decode(self.bytes.as_slice())
            .map(Some)
            .map_err(|err| AuditError::Invalid {
                seq: None,
                message: format!("{} changed while it was read: {err}", self.path.display()),
            })
    }
}

/// Verifies the export at `path`, then restores it into `log`; `progress` is called with the
/// records in the target so far and the export's count.
pub async fn import(
    log: &EventLog,
    path: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<Imported, AuditError> {
    let owned = path.to_owned();
    let verified = tokio::task::spawn_blocking(move || verify(&owned))
        .await
        .map_err(|err| AuditError::Invalid {
            seq: None,
            message: format!("the verification failed: {err}"),
        })??;
    let manifest = read_manifest(path)?;
    let total = verified.count;
    let held = log.last_seq().await?;
    if held > total {
        return Err(AuditError::Invalid {
            seq: Some(total + 1),
            message: format!(
                "the target log holds {held} records, more than the export's {total}: it is not a prefix of the export, so nothing was imported"
            ),
        });
    }
    let mut export = ExportRecords::open(path)?;
    let mut log_digest: Digest32 = [0; 32];
    let mut export_digest: Digest32 = [0; 32];
    // The records the target holds must be the export's first ones, byte for byte.
    if held > 0 {
        let mut target = log.read_range(1..=held);
        while let Some(batch) = target.next_batch().await? {
            for Record {
                seq,
                partner,
                bytes,
            } in batch
            {
                let expected = export.next()?.ok_or_else(|| AuditError::Invalid {
                    seq: Some(seq),
                    message: "the export ended early".into(),
                })?;
                if expected.seq != seq
                    || expected.subject_partner != partner
                    || expected.envelope != bytes
                {
                    return Err(AuditError::Invalid {
                        seq: Some(seq),
                        message: format!(
                            "the target log is not a prefix of the export: its record at seq {seq} differs from the export's, so nothing was imported"
                        ),
                    });
                }
                log_digest = chain_log(&log_digest, seq, &bytes);
                export_digest = chain_export(&export_digest, seq, &partner, &bytes);
            }
            progress(target.next_seq() - 1, total);
        }
    }
    let mut appended = 0u64;
    let mut renamed = 0u64;
    let mut chunk: Vec<RestoreRequest> = Vec::with_capacity(RESTORE_CHUNK);
    loop {
        while chunk.len() < RESTORE_CHUNK {
            let Some(record) = export.next()? else { break };
            log_digest = chain_log(&log_digest, record.seq, &record.envelope);
            export_digest = chain_export(
                &export_digest,
                record.seq,
                &record.subject_partner,
                &record.envelope,
            );
            chunk.push(restore_request(record));
        }
        if chunk.is_empty() {
            break;
        }
        let mut from = 0;
        while from < chunk.len() {
            let results = log.restore_batch(&chunk[from..]).await?;
            let stored = results
                .iter()
                .take_while(|r| **r == Restored::Stored)
                .count();
            appended += stored as u64;
            from += stored;
            if from == chunk.len() {
                break;
            }
            match results.get(stored) {
                Some(Restored::Stored) => unreachable!("take_while stopped at a stored record"),
                // The log stopped after the stored ones: the rest are sent again, and their
                // answer is the one that counts.
                None | Some(Restored::Misplaced { .. }) if stored > 0 => {}
                Some(Restored::Occupied { seq }) => {
                    // The source log held this (partner, event id) twice, under two subjects
                    // (a record published by hand): keep it, under an id of its own.
                    let request = &mut chunk[from];
                    let renamed_id = format!("restored-seq-{}", request.seq);
                    if request.append.event_id == renamed_id {
                        return Err(AuditError::Invalid {
                            seq: Some(request.seq),
                            message: format!(
                                "the record due at seq {} cannot be stored: its id is held at seq {seq}",
                                request.seq
                            ),
                        });
                    }
                    request.append.event_id = renamed_id;
                    renamed += 1;
                }
                Some(Restored::Misplaced { last_seq }) => {
                    let due = chunk[from].seq;
                    return Err(AuditError::Invalid {
                        seq: Some(due),
                        message: format!(
                            "the target log moved while importing: record {due} was due after seq {}, but the log's last seq is {last_seq} (is another writer appending to it?)",
                            due - 1
                        ),
                    });
                }
                None => {
                    return Err(AuditError::Invalid {
                        seq: Some(chunk[from].seq),
                        message: "the log answered no result for a record".into(),
                    });
                }
            }
        }
        progress(chunk.last().map_or(held, |r| r.seq), total);
        chunk.clear();
    }
    let last_seq = log.last_seq().await?;
    let (log_hex, export_hex) = (hex::encode(log_digest), hex::encode(export_digest));
    if last_seq != manifest.last_seq
        || log_hex != manifest.log_digest
        || export_hex != manifest.export_digest
    {
        return Err(AuditError::Invalid {
            seq: Some(last_seq),
            message: format!(
                "after the import the target ends at seq {last_seq} with log digest {log_hex}, but the export's manifest says seq {} and {}",
                manifest.last_seq, manifest.log_digest
            ),
        });
    }
    Ok(Imported {
        kept: held,
        appended,
        last_seq,
        log_digest: log_hex,
        export_digest: export_hex,
        renamed,
    })
}

/// The request that puts `record` back: under its subject partner, deduplicated by its
/// envelope's event id as the gateway would have appended it (so that a partner's resend
/// after the restore is still a duplicate); an envelope that does not decode gets an id from
/// its seq.
fn restore_request(record: v1::LogRecord) -> RestoreRequest {
    let event_id = match v1::Envelope::decode(record.envelope.as_slice()) {
        Ok(envelope) => envelope.event_id,
        Err(_) => format!("restored-seq-{}", record.seq),
    };
    RestoreRequest {
        seq: record.seq,
        append: AppendRequest {
            partner_id: record.subject_partner,
            event_id,
            envelope: Bytes::from(record.envelope),
        },
    }
}
