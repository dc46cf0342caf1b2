//! What auditors use to check fundflow without trusting it: a portable export of the log with a
//! digest chain ([`export`]), its verification record by record, the restoring of a log from it
//! ([`restore`]), replays of the log in memory as of a sequence or a date ([`replay`]), and a
//! report a person can sign ([`report`]). Everything streams: a replay holds the fold's state,
//! never the log.

pub mod export;
pub mod replay;
pub mod report;
pub mod restore;

use std::path::PathBuf;

pub use export::{Manifest, Verified, export, verify};
pub use replay::{Cutoff, Details, Replay, replay_file, replay_log};
pub use restore::{Imported, import};

/// Why an audit step failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The log could not be read.
    #[error("cannot read the event log: {0}")]
    Log(#[from] fundflow_log::LogError),
    /// An export or a log is not what it should be; `seq` names the first bad record.
    #[error("{message}")]
    Invalid {
        /// The first record at fault, when one is.
        seq: Option<u64>,
        /// What is wrong, in one sentence.
        message: String,
    },
}
