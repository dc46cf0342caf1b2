//! The log's one error type, with a small kind enum so callers `match err.kind()` (async-nats's
//! shape).

use std::fmt;

/// What failed, so a caller can decide what to do. [`LogErrorKind::is_transient`] says which
/// kinds are worth retrying unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogErrorKind {
    /// Could not reach NATS or JetStream (the server is down, JetStream is unavailable or timed
    /// out during a leader election). Transient: a service retries later.
    Connect,
    /// The log's settings are wrong: a URL that does not parse, a credentials or NKey file that
    /// cannot be read or holds no key. Fix the settings; retrying does not help.
    Config,
    /// The stream exists with settings that contradict fundflow's (or could not be created).
    /// Fix the stream or the settings; retrying does not help.
    StreamConfig,
    /// An append did not complete (after its retries). Nothing is known to be lost: appending
    /// the same request again is safe, it deduplicates.
    Append,
    /// Reading failed, or a reader delivered nothing for longer than its patience while records
    /// were due. Transient: the caller reopens a reader from its own checkpoint.
    Read,
    /// The log skips a sequence number a range read was due to deliver: records are missing.
    /// Report it and stop; rereading gives the same answer.
    Gap,
    /// The embedded store failed (I/O, corruption). Report it and stop.
    Storage,
}

impl LogErrorKind {
    /// Whether the same call may succeed later with nothing changed: `Connect` and `Read`. The
    /// others need a fix first (`Config`, `StreamConfig`, `Gap`, `Storage`), or have retried
    /// already (`Append` retries for `retry_for` before it reports).
    pub fn is_transient(self) -> bool {
        matches!(self, LogErrorKind::Connect | LogErrorKind::Read)
    }
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

    /// An error of `kind` caused by `source` (an error, or an already boxed one as async-nats
    /// returns them).
    pub fn with_source(
        kind: LogErrorKind,
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> LogError {
        LogError {
            kind,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// What failed.
    pub fn kind(&self) -> LogErrorKind {
        self.kind
    }

    /// Whether retrying unchanged may succeed: see [`LogErrorKind::is_transient`].
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
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
