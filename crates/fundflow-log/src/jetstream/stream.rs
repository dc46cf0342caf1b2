//! Stream provisioning: the settings fundflow wants, creating the stream when it is missing
//! (telling a transient refusal from a settled one), and refusing a stream whose settings
//! contradict them.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use super::{JetStreamConfig, JetStreamLog};
use crate::{LogError, LogErrorKind};

/// The duplicate window a new stream gets when none is configured: JetStream's own default.
const DUPLICATE_WINDOW_DEFAULT: Duration = Duration::from_secs(120);

impl JetStreamLog {
    fn wanted_config(&self) -> stream::Config {
        stream::Config {
            name: self.config.stream.clone(),
            description: Some("fundflow event log: append-only, never edited".into()),
            subjects: vec![format!("{}>", crate::SUBJECT_PREFIX)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::New,
            num_replicas: self.config.replicas.unwrap_or(1),
            duplicate_window: self
                .config
                .duplicate_window
                .unwrap_or(DUPLICATE_WINDOW_DEFAULT),
            deny_delete: true,
            deny_purge: true,
            allow_rollup: false,
            max_age: Duration::ZERO,
            max_messages: -1,
            max_bytes: -1,
            max_messages_per_subject: -1,
            ..Default::default()
        }
    }

    /// Makes sure the stream exists with fundflow's settings; `Connect` errors are transient
    /// (JetStream unavailable, a cluster still forming) and worth another try.
    pub(super) async fn ensure_stream(&self) -> Result<(), LogError> {
        let wanted = self.wanted_config();
        match self.context.get_stream(&wanted.name).await {
            Ok(mut existing) => {
                let info = existing.info().await.map_err(|err| {
                    LogError::with_source(
                        LogErrorKind::Connect,
                        "cannot read the stream's settings",
                        err,
                    )
                })?;
                let problems = contradictions(&info.config, &wanted, &self.config);
                if problems.is_empty() {
                    Ok(())
                } else {
                    Err(LogError::new(
                        LogErrorKind::StreamConfig,
                        format!(
                            "stream {} exists with settings that contradict fundflow's: {}",
                            wanted.name,
                            problems.join("; ")
                        ),
                    ))
                }
            }
            Err(err)
                if matches!(err.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref e)
                    if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                if !self.config.create_stream {
                    return Err(LogError::new(
                        LogErrorKind::StreamConfig,
                        format!("there is no stream {} on the server", wanted.name),
                    ));
                }
                if self.config.replicas.is_none()
                    && let Some(cluster) = self.client.server_info().cluster
                {
                    return Err(LogError::new(
                        LogErrorKind::StreamConfig,
                        format!(
                            "the server is part of cluster {cluster:?}: say how many replicas the new stream {} gets (--replicas or FUNDFLOW_REPLICAS; 3 for a three-node cluster)",
                            wanted.name
                        ),
                    ));
                }
                tracing::info!(stream = %wanted.name, replicas = wanted.num_replicas, "creating the stream");
                self.context
                    .create_stream(wanted)
                    .await
                    .map(drop)
                    .map_err(|err| {
                        // A timeout or an unavailable JetStream (a leader election, a node
                        // starting) is worth another try; a refusal of the settings is not.
                        // So is "no suitable peers" just after a cluster starts, before every node
                        // has announced itself.
                        let kind = match err.kind() {
                            jetstream::context::CreateStreamErrorKind::TimedOut
                            | jetstream::context::CreateStreamErrorKind::JetStreamUnavailable => {
                                LogErrorKind::Connect
                            }
                            jetstream::context::CreateStreamErrorKind::JetStream(e)
                                if e.code() >= 500
                                    || e.error_code() == jetstream::ErrorCode::CLUSTER_NO_PEERS
                                    || e.error_code()
                                        == jetstream::ErrorCode::CLUSTER_NOT_AVAILABLE =>
                            {
                                LogErrorKind::Connect
                            }
                            _ => LogErrorKind::StreamConfig,
                        };
                        LogError::with_source(kind, "cannot create the stream", err)
                    })
            }
            Err(err) => Err(LogError::with_source(
                LogErrorKind::Connect,
                "cannot look the stream up",
                err,
            )),
        }
    }

    /// The stream's last sequence number.
    pub async fn last_seq(&self) -> Result<u64, LogError> {
        let stream = self
            .context
            .get_stream(&self.config.stream)
            .await
            .map_err(|err| {
                LogError::with_source(LogErrorKind::Read, "cannot look the stream up", err)
            })?;
        Ok(stream.cached_info().state.last_sequence)
    }
}

/// What about `existing` contradicts fundflow's settings, one phrase each.
fn contradictions(
    existing: &stream::Config,
    wanted: &stream::Config,
    config: &JetStreamConfig,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };
    check(
        existing.subjects == wanted.subjects,
        format!(
            "subjects {:?}, not {:?}",
            existing.subjects, wanted.subjects
        ),
    );
    check(
        existing.storage == stream::StorageType::File,
        "storage is not file".into(),
    );
    check(existing.deny_delete, "deny_delete is off".into());
    check(existing.deny_purge, "deny_purge is off".into());
    check(!existing.allow_rollup, "allow_rollup is on".into());
    check(
        existing.retention == stream::RetentionPolicy::Limits,
        "retention is not limits".into(),
    );
    check(
        existing.max_age.is_zero(),
        format!("max_age {:?} would expire events", existing.max_age),
    );
    check(
        existing.max_messages < 0 && existing.max_bytes < 0,
        "message or byte limits would drop events".into(),
    );
    if let Some(replicas) = config.replicas {
        check(
            existing.num_replicas == replicas,
            format!("{} replicas, not {replicas}", existing.num_replicas),
        );
    }
    if let Some(window) = config.duplicate_window {
        check(
            existing.duplicate_window == window,
            format!(
                "duplicate window {:?}, not {window:?}",
                existing.duplicate_window
            ),
        );
    }
    problems
}
