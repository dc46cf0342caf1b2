//! The portable export of a log: length-delimited `LogRecord`s in sequence order, each with the
//! log digest after it, and a manifest beside the file (`PATH.manifest.json`). Written and read as
//! streams: memory stays flat however long the log is.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use fundflow_domain::digest::{Digest32, chain_log};
use fundflow_log::{EventLog, Record};
use fundflow_proto::{Message, RecordReader, v1};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::AuditError;

/// The manifest's `format` value.
pub const FORMAT: &str = "fundflow-log-export/1";

/// What `PATH.manifest.json` says about an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// The first record's seq (1), or 0 for an empty export.
    pub first_seq: u64,
    /// The last record's seq.
    pub last_seq: u64,
    /// How many records.
    pub count: u64,
    /// Hex log digest after the last record.
    pub log_digest: String,
    /// Hex export digest after the last record (see `LogRecord.export_digest`).
    pub export_digest: String,
    /// When the export was written (RFC 3339, UTC).
    pub exported_at: String,
    /// Where the records came from (`nats://host:port/STREAM` or `embedded:DIR`).
    pub source: String,
}

/// Where an export's manifest is.
pub fn manifest_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".manifest.json");
    PathBuf::from(name)
}

/// Reads an export's manifest.
pub fn read_manifest(path: &Path) -> Result<Manifest, AuditError> {
    let manifest = manifest_path(path);
    let text = std::fs::read_to_string(&manifest).map_err(|source| AuditError::Io {
        path: manifest.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|err| AuditError::Invalid {
        seq: None,
        message: format!("{} is not an export manifest: {err}", manifest.display()),
    })
}

/// Writes the records of `log` up to its last seq at the start to `out` and its manifest;
/// `progress` is called with the records written so far.
pub async fn export(
    log: &EventLog,
    source: &str,
    out: &Path,
    exported_at: OffsetDateTime,
    mut progress: impl FnMut(u64),
) -> Result<Manifest, AuditError> {
    let io = |source| AuditError::Io {
        path: out.to_owned(),
        source,
    };
    let last = log.last_seq().await?;
    let file = File::create(out).map_err(io)?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    let mut digest: Digest32 = [0; 32];
    let mut chain: Digest32 = [0; 32];
    let mut count = 0u64;
    let mut records = log.read_range(1..=last);
    let mut encoded = Vec::new();
    // `read_range` hands over 1..=last in order, each once, or fails naming the seq at fault.
    while let Some(batch) = records.next_batch().await? {
        for Record {
            seq,
            partner,
            bytes,
        } in batch
        {
            debug_assert_eq!(seq, count + 1, "read_range skipped or repeated a record");
            digest = chain_log(&digest, seq, &bytes);
            chain = chain_export(&chain, seq, &partner, &bytes);
            let record = v1::LogRecord {
                seq,
                envelope: bytes.to_vec(),
                log_digest: digest.to_vec(),
                subject_partner: partner,
                export_digest: chain.to_vec(),
            };
            encoded.clear();
            record
                .encode_length_delimited(&mut encoded)
                .map_err(|err| AuditError::Invalid {
                    seq: Some(seq),
                    message: format!("cannot encode: {err}"),
                })?;
            writer.write_all(&encoded).map_err(io)?;
            count += 1;
            if count.is_multiple_of(10_000) {
                progress(count);
            }
        }
    }
    writer.flush().map_err(io)?;
    writer.get_ref().sync_all().map_err(io)?;
    progress(count);
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        first_seq: u64::from(count > 0),
        last_seq: last,
        count,
        log_digest: hex::encode(digest),
        export_digest: hex::encode(chain),
        exported_at: rfc3339_seconds(exported_at)?,
        source: source.to_owned(),
    };
    let manifest_file = manifest_path(out);
    let text = serde_json::to_string_pretty(&manifest).map_err(|err| AuditError::Invalid {
        seq: None,
        message: format!("cannot write the manifest as JSON: {err}"),
    })?;
    std::fs::write(&manifest_file, text + "\n").map_err(|source| AuditError::Io {
        path: manifest_file,
        source,
    })?;
    Ok(manifest)
}

/// One link of the export chain: like the log digest's, over the subject partner as well.
pub(crate) fn chain_export(
    previous: &Digest32,
    seq: u64,
    partner: &str,
    envelope: &[u8],
) -> Digest32 {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(seq.to_be_bytes());
    hasher.update((partner.len() as u64).to_be_bytes());
    hasher.update(partner.as_bytes());
    hasher.update((envelope.len() as u64).to_be_bytes());
    hasher.update(envelope);
    hasher.finalize().into()
}

/// What `log verify` found in a sound export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// Records checked.
    pub count: u64,
    /// The last seq.
    pub last_seq: u64,
    /// The final log digest, as recomputed and as the manifest says.
    pub log_digest: String,
}

/// Recomputes the digest chain of an export and checks it against every record and the
/// manifest, and the sequence (no gap, no repeat). The first problem is an error naming its seq.
pub fn verify(path: &Path) -> Result<Verified, AuditError> {
    let manifest = read_manifest(path)?;
    if manifest.format != FORMAT {
        return Err(AuditError::Invalid {
            seq: None,
            message: format!(
                "the manifest's format is {:?}, not {FORMAT:?}",
                manifest.format
            ),
        });
    }
    let file = File::open(path).map_err(|source| AuditError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut reader = RecordReader::new(BufReader::with_capacity(1 << 20, file));
    let mut bytes = Vec::new();
    let mut digest: Digest32 = [0; 32];
    let mut chain: Digest32 = [0; 32];
    let mut expected = 1u64;
    loop {
        let more = reader
            .read_into(&mut bytes)
            .map_err(|err| AuditError::Invalid {
                seq: Some(expected),
                message: format!("the file is damaged at the record due as seq {expected}: {err}"),
            })?;
        if !more {
            break;
        }
        let record =
            v1::LogRecord::decode(bytes.as_slice()).map_err(|err| AuditError::Invalid {
                seq: Some(expected),
                message: format!("the record due as seq {expected} is not a LogRecord: {err}"),
            })?;
        if record.encoded_len() != bytes.len() {
            return Err(AuditError::Invalid {
                seq: Some(expected),
                message: format!(
                    "the record due as seq {expected} holds bytes that are not part of a LogRecord"
                ),
            });
        }
        let seq = record.seq;
        if seq != expected {
            let what = if seq < expected {
                "repeats or goes back"
            } else {
                "skips"
            };
            return Err(AuditError::Invalid {
                seq: Some(seq),
                message: format!("record seq {seq} {what}: seq {expected} was due"),
            });
        }
        digest = chain_log(&digest, seq, &record.envelope);
        chain = chain_export(&chain, seq, &record.subject_partner, &record.envelope);
        if record.export_digest != chain {
            return Err(AuditError::Invalid {
                seq: Some(seq),
                message: format!(
                    "record seq {seq}: its export digest does not match the chain recomputed from the records (its subject partner, its envelope or a record before it was changed)"
                ),
            });
        }
        if record.log_digest != digest {
            return Err(AuditError::Invalid {
                seq: Some(seq),
                message: format!(
                    "record seq {seq}: its log digest does not match the chain recomputed from the records (the record or one before it was changed)"
                ),
            });
        }
        expected += 1;
    }
    let count = expected - 1;
    let recomputed = hex::encode(digest);
    if count != manifest.count || count != manifest.last_seq {
        return Err(AuditError::Invalid {
            seq: Some(count + 1),
            message: format!(
                "the file holds {count} records but the manifest says {} (last seq {}): records are missing at the end",
                manifest.count, manifest.last_seq
            ),
        });
    }
    if recomputed != manifest.log_digest || hex::encode(chain) != manifest.export_digest {
        return Err(AuditError::Invalid {
            seq: Some(count),
            message: format!(
                "the final digests (log {recomputed}, export {}) differ from the manifest's (log {}, export {})",
                hex::encode(chain),
                manifest.log_digest,
                manifest.export_digest
            ),
        });
    }
    Ok(Verified {
        count,
        last_seq: count,
        log_digest: recomputed,
    })
}

/// `time` as RFC 3339 in whole seconds, UTC (`2026-12-02T01:30:00Z`).
fn rfc3339_seconds(time: OffsetDateTime) -> Result<String, AuditError> {
    time.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .ok_or_else(|| AuditError::Invalid {
            seq: None,
            message: format!("the export time {time} cannot be written as RFC 3339"),
        })
}
