//! The fold's state in a file beside the read model (`<model dir>.fold`), so that a restart
//! reads it and folds only the records after it, instead of the whole log.
//!
//! The file is written whole or not at all: into `<model dir>.fold.tmp`, flushed and synced,
//! then renamed over the old one and the directory synced, so a crash (`kill -9` included) at
//! any instant leaves the previous snapshot or the new one, never a mix. It is trusted only as
//! far as it is checked on load:
//! - a SHA-256 over every byte before the trailer, which refuses a torn, truncated or altered
//!   file before the state it holds is used;
//! - the domain's own format check ([`fundflow_domain::snapshot`]: another build's state is
//!   refused, every table index is checked as it is decoded);
//! - the decoded ledger's checkpoint must be the one in the header;
//! - the projector then checks that the log still holds the record the snapshot ends on (its
//!   SHA-256 is in the header) and that the snapshot plus the log's tail gives exactly the read
//!   model's checkpoint (log digest, counts, rejection chain). Anything else and it refolds
//!   from seq 1, as without a snapshot.
//!
//! Layout: `MAGIC` (16 bytes), the header (the checkpoint's fields and the last record's
//! SHA-256, fixed width, little-endian), the domain's encoding of the ledger, then the trailer:
//! the length of everything before it (u64 LE) and its SHA-256.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fundflow_domain::snapshot::{self, SnapshotError};
use fundflow_domain::{Checkpoint, Digest32, Ledger};
use sha2::{Digest, Sha256};

const MAGIC: [u8; 16] = *b"fundflow-fold\0\0\x01";
const HEADER_BYTES: usize = 8 + 32 + 8 + 8 + 32 + 32;
const TRAILER_BYTES: u64 = TRAILER_LEN as u64;
const TRAILER_LEN: usize = 8 + 32;
/// Buffers between the encoder and the file, so that hashing and writing see large chunks.
const BUFFER_BYTES: usize = 1 << 20;

/// Why a snapshot file was not written or not used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    /// Reading, writing, syncing or renaming failed.
    #[error("{doing} {path}: {source}")]
    Io {
        /// What was being done.
        doing: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The file is not a whole snapshot as written (torn, truncated, altered, not ours).
    #[error("{path} is not a whole snapshot: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What check failed.
        reason: String,
    },
    /// The state in it does not decode, or is another build's.
    #[error("{path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// The domain's reason.
        #[source]
        source: SnapshotError,
    },
}

/// A snapshot read back, checked as far as the file alone allows.
pub(crate) struct LoadedSnapshot {
    pub(crate) ledger: Ledger,
    /// SHA-256 of the bytes of the record at the ledger's last seq (zero bytes at seq 0).
    pub(crate) last_record: Digest32,
    /// The file's length.
    pub(crate) bytes: u64,
}

/// What writing one cost.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written {
    pub(crate) bytes: u64,
    pub(crate) took: Duration,
}

/// Where the snapshot of the read model in `model_dir` lives: beside it, not inside the
/// directory sled owns.
pub(crate) fn path_for(model_dir: &Path) -> PathBuf {
    // Through components, so that a trailing `/` does not put it inside.
    let mut path = model_dir.components().collect::<PathBuf>().into_os_string();
    path.push(".fold");
    PathBuf::from(path)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// SHA-256 of a record's bytes, as the header keeps the last one's.
pub(crate) fn record_digest(bytes: &[u8]) -> Digest32 {
    Sha256::digest(bytes).into()
}

/// Writes `ledger` to `path` atomically (see the module docs). `last_record` is the SHA-256 of
/// the bytes of the record at `ledger.last_seq()`.
pub(crate) fn write(
    path: &Path,
    ledger: &Ledger,
    last_record: Digest32,
) -> Result<Written, SnapshotFileError> {
    let started = Instant::now();
    let temp = temp_path(path);
    let io_error = |doing, source| SnapshotFileError::Io {
        doing,
        path: temp.clone(),
        source,
    };
    let written = (|| {
        let file = File::create(&temp).map_err(|e| io_error("cannot create", e))?;
        let mut out = BufWriter::with_capacity(
            BUFFER_BYTES,
            Hashing {
                inner: file,
                hasher: Sha256::new(),
                bytes: 0,
            },
        );
        out.write_all(&MAGIC)
            .and_then(|()| out.write_all(&header(&ledger.checkpoint(), &last_record)))
            .map_err(|e| io_error("cannot write", e))?;
        let mut out = snapshot::write(ledger, out).map_err(|source| SnapshotFileError::State {
            path: temp.clone(),
            source,
        })?;
        out.flush().map_err(|e| io_error("cannot write", e))?;
        let Hashing {
            inner: mut file,
            hasher,
            bytes,
        } = out
            .into_inner()
            .map_err(|e| io_error("cannot write", e.into_error()))?;
        file.write_all(&bytes.to_le_bytes())
            .and_then(|()| file.write_all(&hasher.finalize()))
            .map_err(|e| io_error("cannot write", e))?;
        file.sync_all().map_err(|e| io_error("cannot sync", e))?;
        Ok(bytes + TRAILER_BYTES)
    })();
    let bytes = match written {
        Ok(bytes) => bytes,
        Err(err) => {
            // Nothing half-written stays behind; the previous snapshot is untouched.
            let _ = std::fs::remove_file(&temp);
            return Err(err);
        }
    };
    std::fs::rename(&temp, path).map_err(|source| SnapshotFileError::Io {
        doing: "cannot rename into place",
        path: path.to_owned(),
        source,
    })?;
    sync_parent(path)?;
    Ok(Written {
        bytes,
        took: started.elapsed(),
    })
}

/// Removes the snapshot at `path` (and any temporary file), if there is one.
pub(crate) fn remove(path: &Path) -> Result<(), SnapshotFileError> {
    let mut removed = false;
    for file in [path.to_owned(), temp_path(path)] {
        match std::fs::remove_file(&file) {
            Ok(()) => removed = true,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(SnapshotFileError::Io {
                    doing: "cannot remove",
                    path: file,
                    source,
                });
            }
        }
    }
    // A removal is durable once the directory is synced; with nothing removed there may be
    // no directory yet.
    if removed { sync_parent(path) } else { Ok(()) }
}

fn sync_parent(path: &Path) -> Result<(), SnapshotFileError> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| SnapshotFileError::Io {
            doing: "cannot sync the directory of",
            path: path.to_owned(),
            source,
        })
}

/// Reads and checks the snapshot at `path`; `None` when there is none.
pub(crate) fn load(path: &Path) -> Result<Option<LoadedSnapshot>, SnapshotFileError> {
    let io_error = |doing, source| SnapshotFileError::Io {
        doing,
        path: path.to_owned(),
        source,
    };
    let damaged = |reason: String| SnapshotFileError::Damaged {
        path: path.to_owned(),
        reason,
    };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(io_error("cannot open", err)),
    };
    let length = file
        .metadata()
        .map_err(|e| io_error("cannot read", e))?
        .len();
    let least = MAGIC.len() as u64 + HEADER_BYTES as u64 + TRAILER_BYTES;
    if length < least {
        return Err(damaged(format!(
            "{length} bytes, fewer than a snapshot has"
        )));
    }
    let mut trailer = [0u8; TRAILER_LEN];
    file.seek(SeekFrom::Start(length - TRAILER_BYTES))
        .and_then(|_| file.read_exact(&mut trailer))
        .map_err(|e| io_error("cannot read", e))?;
    let Some((covered, digest)) = trailer.split_first_chunk::<8>() else {
        return Err(damaged("its trailer is short".into()));
    };
    let covered = u64::from_le_bytes(*covered);
    if covered != length - TRAILER_BYTES {
        return Err(damaged(format!(
            "its trailer says {covered} bytes, the file has {}",
            length - TRAILER_BYTES
        )));
    }
    file.seek(SeekFrom::Start(0))
        .map_err(|e| io_error("cannot read", e))?;
    let mut input = BufReader::with_capacity(
        BUFFER_BYTES,
        Hashing {
            inner: file.take(covered),
            hasher: Sha256::new(),
            bytes: 0,
        },
    );
    let mut head = [0u8; MAGIC.len() + HEADER_BYTES];
    input
        .read_exact(&mut head)
        .map_err(|e| io_error("cannot read", e))?;
    let (magic, header_bytes) = head.split_at(MAGIC.len());
    if magic != MAGIC {
        return Err(damaged(
            "it does not start as a fundflow fold snapshot".into(),
        ));
    }
    let (checkpoint, last_record) =
        parse_header(header_bytes).ok_or_else(|| damaged("its header is short".into()))?;
    // The state is decoded while it is hashed, and used only if the digest then agrees.
    let decoded = snapshot::read(&mut input);
    // Whatever the decoder left is read and hashed too, so that the digest covers the file.
    let mut rest = Vec::new();
    input
        .read_to_end(&mut rest)
        .map_err(|e| io_error("cannot read", e))?;
    let hashed = input.into_inner();
    if hashed.bytes != covered || hashed.hasher.finalize()[..] != *digest {
        return Err(damaged("its SHA-256 does not match its bytes".into()));
    }
    let ledger = decoded.map_err(|source| SnapshotFileError::State {
        path: path.to_owned(),
        source,
    })?;
    if !rest.is_empty() {
        return Err(damaged(format!("{} bytes follow the state", rest.len())));
    }
    if ledger.checkpoint() != checkpoint {
        return Err(damaged(format!(
            "its state is at seq {}, its header says seq {}",
            ledger.last_seq(),
            checkpoint.last_seq
        )));
    }
    Ok(Some(LoadedSnapshot {
        ledger,
        last_record,
        bytes: length,
    }))
}

fn header(checkpoint: &Checkpoint, last_record: &Digest32) -> [u8; HEADER_BYTES] {
    let mut out = [0u8; HEADER_BYTES];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&checkpoint.last_seq.to_le_bytes());
    put(&checkpoint.log_digest);
    put(&checkpoint.applied.to_le_bytes());
    put(&checkpoint.rejected.to_le_bytes());
    put(&checkpoint.rejected_digest);
    put(last_record);
    out
}

/// The header's fields; `None` if `bytes` is shorter than a header, which the caller's fixed
/// read rules out.
fn parse_header(bytes: &[u8]) -> Option<(Checkpoint, Digest32)> {
    let (last_seq, bytes) = bytes.split_first_chunk::<8>()?;
    let (log_digest, bytes) = bytes.split_first_chunk::<32>()?;
    let (applied, bytes) = bytes.split_first_chunk::<8>()?;
    let (rejected, bytes) = bytes.split_first_chunk::<8>()?;
    let (rejected_digest, bytes) = bytes.split_first_chunk::<32>()?;
    let (last_record, _) = bytes.split_first_chunk::<32>()?;
    let checkpoint = Checkpoint {
        last_seq: u64::from_le_bytes(*last_seq),
        log_digest: *log_digest,
        applied: u64::from_le_bytes(*applied),
        rejected: u64::from_le_bytes(*rejected),
        rejected_digest: *rejected_digest,
    };
    Some((checkpoint, *last_record))
}

/// A reader or writer that hashes and counts what passes through it.
struct Hashing<T> {
    inner: T,
    hasher: Sha256,
    bytes: u64,
}

impl<T: Write> Write for Hashing<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Read> Read for Hashing<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}
