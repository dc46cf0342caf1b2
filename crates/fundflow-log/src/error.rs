//! The log's one error type, with a small kind enum so callers `match err.kind()` (async-nats's
//! shape).

use std::fmt;

/// What failed, so a caller can decide what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogErrorKind {
    /// Could not connect to NATS. The caller reports it; a service retries later.
    Connect,
    /// The stream exists with settings that contradict fundflow's (or could not be created).
    /// Fix the stream or the settings; retrying does not help.
    StreamConfig,
    /// An append did not complete (after its retries). Nothing is known to be lost: appending
    /// the same request again is safe, it deduplicates.
    Append,
    /// Reading failed. The caller reopens a reader from its own checkpoint.
    Read,
    /// The embedded store failed (I/O, corruption). Report it and stop.
    Storage,
}

/// An error of the event log.
#[derive(Debug)]
pub struct LogError {
    kind: LogErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl LogError {
    /// An error of `kind` described by `message`.
    pub fn new(kind: LogErrorKind, message: impl Into<String>) -> LogError {
        LogError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error of `kind` caused by `source`.
    pub fn with_source(
        kind: LogErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> LogError {
        LogError {
            kind,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// What failed.
    pub fn kind(&self) -> LogErrorKind {
        self.kind
    }
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The cause is reported through `source()`, so chains print it once.
        f.write_str(&self.message)
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<sled::Error> for LogError {
    fn from(err: sled::Error) -> LogError {
        LogError::with_source(
            LogErrorKind::Storage,
            "the embedded log's store failed",
            err,
        )
    }
}
