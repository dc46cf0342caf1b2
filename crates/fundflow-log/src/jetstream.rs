//! The production log: a NATS JetStream stream (`FUNDFLOW` on `fundflow.v1.events.>`).
//!
//! - Each event E of partner P is published on its own subject, `fundflow.v1.events.P.E`, with
//!   `Nats-Msg-Id: P:E` and `Nats-Expected-Last-Subject-Sequence: 0`. The header makes the
//!   server refuse a second record for (P, E) at any distance in time, atomically, so the log
//!   holds each event id once, exactly like the embedded log, and the gateway can tell a resend
//!   from a conflict by reading the one record back. The message id still makes an unacknowledged
//!   publish safe to repeat (a repeat inside the duplicate window is acknowledged as a duplicate
//!   before the subject check).
//! - The stream is file-backed, never expires anything, and has `deny_delete` and `deny_purge`
//!   set, so the ledger's log cannot be edited through the stream API. Every command that touches
//!   the stream creates it when missing and refuses one whose settings contradict these.
//! - Publishing keeps a bounded window of acks in flight. An ack that times out, or a "no
//!   responders" during a leader election, means "unknown": the envelope is published again with
//!   the same `Nats-Msg-Id`, with backoff, until the stream acknowledges it (stored or
//!   duplicate). Nothing is lost and a retry never counts twice (within the duplicate window).
//! - Reading uses an ordered consumer starting at the reader's own checkpoint + 1; no consumer
//!   state on the server says where a reader is.
//!
//! Only fields a 2.10 server understands are set: async-nats's defaults for newer features
//! (per-message TTL, atomic batches, consumer pause, ...) stay off.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use futures::{FutureExt, StreamExt};
use std::future::IntoFuture;

use crate::{AppendRequest, Appended, LogError, LogErrorKind, Record};

/// How to reach and shape the stream.
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    /// `nats://host:port` (or `tls://...` to require TLS); several servers of one cluster are
    /// separated by commas, and the client also learns the cluster's other servers from the one
    /// it reaches.
    pub url: String,
    /// A NATS credentials file (JWT and seed), if the server requires one.
    pub credentials: Option<PathBuf>,
    /// A file holding a user's NKey seed (`SU...`), for servers that list users by NKey, as
    /// `deploy/nats` does.
    pub nkey_seed_file: Option<PathBuf>,
    /// The connection's name, as the server's monitoring pages show it.
    pub client_name: String,
    /// Whether a missing stream is created (the services), or reported (readers such as the
    /// auditor's tools, whose NATS users may not create it).
    pub create_stream: bool,
    /// The stream's name.
    pub stream: String,
    /// Replicas when creating the stream (1 on one node, 3 in a cluster); when `None`, an
    /// existing stream's count is accepted and a new one gets 1.
    pub replicas: Option<usize>,
    /// JetStream's duplicate window when creating the stream; `None` accepts an existing one's
    /// and gives a new one 2 minutes.
    pub duplicate_window: Option<Duration>,
    /// Most publishes awaiting their ack at once.
    pub acks_in_flight_max: usize,
    /// How long one publish waits for its ack before it counts as unknown and is sent again.
    pub ack_timeout: Duration,
    /// How long an append keeps retrying before it reports an error.
    pub retry_for: Duration,
}

impl JetStreamConfig {
    /// Defaults for `url`: stream `FUNDFLOW`, 256 acks in flight, 5 s ack timeout, retrying for
    /// 5 minutes.
    pub fn new(url: impl Into<String>) -> JetStreamConfig {
        JetStreamConfig {
            url: url.into(),
            credentials: None,
            nkey_seed_file: None,
            client_name: "fundflow".into(),
            create_stream: true,
            stream: "FUNDFLOW".into(),
            replicas: None,
            duplicate_window: None,
            acks_in_flight_max: 256,
            ack_timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(300),
        }
    }
}

/// Connection state an operator watches.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// False between a disconnect and the next reconnect.
    pub connected: AtomicBool,
    /// How many times the connection was lost.
    pub disconnects: AtomicU64,
    /// How many publishes were sent again because their outcome was unknown.
    pub publish_retries: AtomicU64,
}

/// A connected JetStream log. Cheap to clone.
#[derive(Clone)]
pub struct JetStreamLog {
    client: async_nats::Client,
    context: jetstream::Context,
    config: Arc<JetStreamConfig>,
    stats: Arc<ConnectionStats>,
    /// One append batch at a time per handle (and its clones): each keeps its own window of
    /// acks in flight, and several windows at once would exhaust the client's ack permits and
    /// stall each other until their acks time out.
    appending: Arc<tokio::sync::Mutex<()>>,
}

/// How long connecting keeps asking for the stream while JetStream is unavailable.
const STREAM_SETUP_PATIENCE: Duration = Duration::from_secs(30);

/// The server versions fundflow supports start at 2.10: 2.9 has no `sync_interval` and known
/// replication bugs fixed later.
fn supported(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (2, 10)
}

impl JetStreamLog {
    /// Connects, checks the server version (warns below 2.10), and makes sure the stream exists
    /// with fundflow's settings.
    pub async fn connect(config: JetStreamConfig) -> Result<JetStreamLog, LogError> {
        let stats = Arc::new(ConnectionStats::default());
        let events = Arc::clone(&stats);
        let servers = server_addrs(&config.url)?;
        let mut options = async_nats::ConnectOptions::new()
            .name(&config.client_name)
            .require_tls(
                config
                    .url
                    .split(',')
                    .any(|u| u.trim().starts_with("tls://")),
            )
            .max_reconnects(None)
            .event_callback(move |event| {
                let stats = Arc::clone(&events);
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            stats.connected.store(true, Ordering::Relaxed);
                            tracing::info!("connected to NATS");
                        }
                        async_nats::Event::Disconnected => {
                            stats.connected.store(false, Ordering::Relaxed);
                            stats.disconnects.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!("disconnected from NATS; reconnecting");
                        }
                        // A permissions violation, an authorization error: the server refused
                        // something, and the request behind it will only time out.
                        async_nats::Event::ServerError(err) => {
                            tracing::error!(error = %err, "the NATS server refused a request");
                        }
                        other => tracing::info!(event = %other, "NATS connection event"),
                    }
                }
            });
        if let Some(path) = &config.credentials {
            options = options.credentials_file(path).await.map_err(|err| {
                LogError::with_source(
                    LogErrorKind::Connect,
                    format!("cannot read the credentials file {}", path.display()),
                    err,
                )
            })?;
        }
        if let Some(path) = &config.nkey_seed_file {
            options = options.nkey(read_nkey_seed(path)?);
        }
        let client = options.connect(servers).await.map_err(|err| {
            LogError::with_source(
                LogErrorKind::Connect,
                format!("cannot connect to {}", config.url),
                err,
            )
        })?;
        stats.connected.store(true, Ordering::Relaxed);
        let version = client.server_info().version;
        if !supported(&version) {
            tracing::warn!(
                %version,
                "nats-server {version} is older than 2.10, which fundflow needs: acknowledged \
                 writes may reach the disk late and replication has known bugs; upgrade the server"
            );
        }
        let context = jetstream::new(client.clone());
        let log = JetStreamLog {
            client,
            context,
            config: Arc::new(config),
            stats,
            appending: Arc::new(tokio::sync::Mutex::new(())),
        };
        // During a leader election or while nodes start, the JetStream API times out or answers
        // "unavailable" for a few seconds: a process started then waits rather than exits.
        let deadline = tokio::time::Instant::now() + STREAM_SETUP_PATIENCE;
        let mut backoff = Duration::from_millis(200);
        loop {
            match log.ensure_stream().await {
                Ok(()) => return Ok(log),
                Err(err)
                    if err.kind() == LogErrorKind::Connect
                        && tokio::time::Instant::now() + backoff < deadline =>
                {
                    tracing::warn!(error = %err, ?backoff, "the stream cannot be set up yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// The server's version string, as it reported it at connect.
    pub fn server_version(&self) -> String {
        self.client.server_info().version
    }

    /// Connection state and counters, shared with the connection's event handler.
    pub fn stats(&self) -> Arc<ConnectionStats> {
        Arc::clone(&self.stats)
    }

    /// The NATS client, for services that also serve subjects.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

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
                .unwrap_or(Duration::from_secs(120)),
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

    async fn ensure_stream(&self) -> Result<(), LogError> {
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

    /// Publishes in order with a bounded window of acks in flight; see the module docs.
    ///
    /// The sends are awaited one after another, so the stream stores the records in request
    /// order; only the acks overlap. A record whose ack fails is sent again on its own (same
    /// `Nats-Msg-Id`): if records after it were stored meanwhile, it lands after them. The log's
    /// order is the order of acknowledgement: a writer that needs one event before another (a
    /// payment after its pledge) must wait for the first ack before sending the second. The
    /// gateway does not reorder within a request; partners send dependent events in a later
    /// request (README, "Submitting").
    pub async fn append_batch(
        &self,
        requests: &[AppendRequest],
    ) -> Result<Vec<Appended>, LogError> {
        let _one_at_a_time = self.appending.lock().await;
        let window = self.config.acks_in_flight_max.max(1);
        let mut results = Vec::with_capacity(requests.len());
        // Acks are awaited together, each with a deadline fixed when it was sent (tokio's
        // timeout starts at creation), so a connection lost with a full window costs one ack
        // timeout, not one per record.
        let mut in_flight = futures::stream::FuturesOrdered::new();
        for request in requests {
            if in_flight.len() >= window
                && let Some((request, acked)) = in_flight.next().await
            {
                results.push(self.settle(request, acked).await?);
            }
            let sent = self.send(request).await;
            let timeout = self.config.ack_timeout;
            in_flight.push_back(async move {
                let acked = match sent {
                    Ok(ack) => match tokio::time::timeout(timeout, ack.into_future()).await {
                        Ok(result) => result,
                        Err(_) => Err(jetstream::context::PublishError::new(
                            jetstream::context::PublishErrorKind::TimedOut,
                        )),
                    },
                    Err(err) => Err(err),
                };
                (request, acked)
            });
        }
        while let Some((request, acked)) = in_flight.next().await {
            results.push(self.settle(request, acked).await?);
        }
        Ok(results)
    }

    async fn send(
        &self,
        request: &AppendRequest,
    ) -> Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError> {
        let id = crate::message_id(&request.partner_id, &request.event_id);
        let message = PublishMessage::build()
            .message_id(id.as_str())
            .expected_last_subject_sequence(0)
            .payload(request.envelope.clone());
        self.context
            .send_publish(
                crate::subject(&request.partner_id, &request.event_id),
                message,
            )
            .await
    }

    /// Turns an ack into a result; when the outcome is unknown, sends the record again until it
    /// is known.
    async fn settle(
        &self,
        request: &AppendRequest,
        acked: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    ) -> Result<Appended, LogError> {
        match acked {
            Ok(ack) if ack.duplicate => Ok(Appended::Duplicate { seq: ack.sequence }),
            Ok(ack) => Ok(Appended::Stored { seq: ack.sequence }),
            Err(err) if err.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                self.already_stored(request).await
            }
            Err(err) => {
                self.stats.publish_retries.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(event_id = %request.event_id, error = %err, "publish outcome unknown; sending again");
                self.publish_until_acknowledged(request).await
            }
        }
    }

    async fn publish_until_acknowledged(
        &self,
        request: &AppendRequest,
    ) -> Result<Appended, LogError> {
        let deadline = tokio::time::Instant::now() + self.config.retry_for;
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = async {
                let ack = self.send(request).await?;
                // The ack future's timeout only starts when it is first polled: poll it now, and
                // bound it ourselves as well.
                match tokio::time::timeout(self.config.ack_timeout, ack.into_future()).await {
                    Ok(result) => result,
                    Err(_) => Err(jetstream::context::PublishError::new(
                        jetstream::context::PublishErrorKind::TimedOut,
                    )),
                }
            };
            match attempt.await {
                Ok(ack) if ack.duplicate => return Ok(Appended::Duplicate { seq: ack.sequence }),
                Ok(ack) => return Ok(Appended::Stored { seq: ack.sequence }),
                Err(err)
                    if err.kind() == jetstream::context::PublishErrorKind::WrongLastSequence =>
                {
                    return self.already_stored(request).await;
                }
                Err(err)
                    if err.kind() == jetstream::context::PublishErrorKind::MaxPayloadExceeded =>
                {
                    return Err(LogError::with_source(
                        LogErrorKind::Append,
                        format!(
                            "event {} is larger than the server accepts",
                            request.event_id
                        ),
                        err,
                    ));
                }
                Err(err) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(LogError::with_source(
                            LogErrorKind::Append,
                            format!(
                                "event {} was not acknowledged within {:?}",
                                request.event_id, self.config.retry_for
                            ),
                            err,
                        ));
                    }
                    self.stats.publish_retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(event_id = %request.event_id, error = %err, ?backoff, "publish outcome unknown; sending again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// The server refused the append because the event's subject holds a record: that record is
    /// the duplicate.
    async fn already_stored(&self, request: &AppendRequest) -> Result<Appended, LogError> {
        match self.find(&request.partner_id, &request.event_id).await? {
            Some(record) => Ok(Appended::Duplicate { seq: record.seq }),
            None => Err(LogError::new(
                LogErrorKind::Append,
                format!(
                    "the stream refused event {} as already stored but does not hold it",
                    request.event_id
                ),
            )),
        }
    }

    /// The record of (partner, event id), if the stream holds one.
    pub async fn find(&self, partner_id: &str, event_id: &str) -> Result<Option<Record>, LogError> {
        let stream = self.stream().await?;
        let subject = crate::subject(partner_id, event_id);
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => Ok(Some(Record {
                seq: message.sequence,
                partner: partner_id.to_owned(),
                bytes: message.payload,
            })),
            Err(err) if err.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(err) => Err(LogError::with_source(
                LogErrorKind::Read,
                format!("cannot look event {event_id} up"),
                err,
            )),
        }
    }

    /// The record at `seq`, if there is one.
    pub async fn get(&self, seq: u64) -> Result<Option<Record>, LogError> {
        let stream = self.stream().await?;
        match stream.get_raw_message(seq).await {
            Ok(message) => Ok(Some(Record {
                seq,
                partner: crate::partner_of_subject(message.subject.as_str()).to_owned(),
                bytes: message.payload,
            })),
            Err(err) if err.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(err) => Err(LogError::with_source(
                LogErrorKind::Read,
                format!("cannot read record {seq}"),
                err,
            )),
        }
    }

    /// A handle on the stream without asking the server for its info (one round trip saved per
    /// lookup).
    async fn stream(&self) -> Result<stream::Stream<()>, LogError> {
        self.context
            .get_stream_no_info(&self.config.stream)
            .await
            .map_err(|err| {
                LogError::with_source(LogErrorKind::Read, "cannot look the stream up", err)
            })
    }

    /// A reader from `from_seq` on, through an ordered consumer.
    pub async fn reader(&self, from_seq: u64) -> Result<JetStreamReader, LogError> {
        let read_error = |what: &str, err: Box<dyn std::error::Error + Send + Sync>| {
            LogError::new(LogErrorKind::Read, format!("{what}: {err}"))
        };
        let stream = self
            .context
            .get_stream(&self.config.stream)
            .await
            .map_err(|err| read_error("cannot look the stream up", err.into()))?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from_seq.max(1),
                },
                ..Default::default()
            })
            .await
            .map_err(|err| read_error("cannot create an ordered consumer", err.into()))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|err| read_error("cannot read the stream", err.into()))?;
        Ok(JetStreamReader { messages })
    }
}

/// The servers of a comma-separated URL list.
fn server_addrs(urls: &str) -> Result<Vec<async_nats::ServerAddr>, LogError> {
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse::<async_nats::ServerAddr>().map_err(|err| {
                LogError::with_source(
                    LogErrorKind::Connect,
                    format!("{url:?} is not a NATS server URL"),
                    err,
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|servers| {
            if servers.is_empty() {
                Err(LogError::new(
                    LogErrorKind::Connect,
                    "no NATS server URL given",
                ))
            } else {
                Ok(servers)
            }
        })
}

/// Reads an NKey seed file: one line, a user seed (`SU...`), which is checked here so that a
/// wrong file is named rather than reported as an authorization failure.
fn read_nkey_seed(path: &std::path::Path) -> Result<String, LogError> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        LogError::with_source(
            LogErrorKind::Connect,
            format!("cannot read the NKey seed file {}", path.display()),
            err,
        )
    })?;
    let seed = text.trim().to_owned();
    if !seed.starts_with("SU") || nkeys::KeyPair::from_seed(&seed).is_err() {
        return Err(LogError::new(
            LogErrorKind::Connect,
            format!(
                "{} does not hold a NATS user NKey seed (one line starting with SU, as `fundflow nkey new` writes)",
                path.display()
            ),
        ));
    }
    Ok(seed)
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

/// Reads the stream in order.
pub struct JetStreamReader {
    messages: consumer::pull::Ordered,
}

impl JetStreamReader {
    /// Up to `max` records, waiting at most `wait` for the first.
    pub async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Record>, LogError> {
        let mut batch = Vec::new();
        let first = match tokio::time::timeout(wait, self.messages.next()).await {
            Err(_) => return Ok(batch),
            Ok(None) => {
                return Err(LogError::new(
                    LogErrorKind::Read,
                    "the stream's consumer ended",
                ));
            }
            Ok(Some(message)) => message,
        };
        batch.push(record(first)?);
        while batch.len() < max {
            match self.messages.next().now_or_never() {
                Some(Some(message)) => batch.push(record(message)?),
                _ => break,
            }
        }
        Ok(batch)
    }
}

fn record(
    message: Result<jetstream::Message, consumer::pull::OrderedError>,
) -> Result<Record, LogError> {
    let message = message.map_err(|err| {
        LogError::with_source(LogErrorKind::Read, "reading the stream failed", err)
    })?;
    let seq = message
        .info()
        .map_err(|err| {
            LogError::new(
                LogErrorKind::Read,
                format!("a message without stream metadata: {err}"),
            )
        })?
        .stream_sequence;
    let partner = crate::partner_of_subject(message.subject.as_str()).to_owned();
    Ok(Record {
        seq,
        partner,
        // A copy, so that a queued record does not keep the connection's read buffer alive.
        bytes: bytes::Bytes::copy_from_slice(&message.payload),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_2_10_are_supported() {
        assert!(supported("2.10.27"));
        assert!(supported("2.11.1"));
        assert!(!supported("2.9.10"));
    }
}
