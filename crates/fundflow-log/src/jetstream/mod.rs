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
//!
//! One file per job: `connect` (options, TLS, credentials, the version check), `stream`
//! (provisioning and the settings check), `append` (the publish pipeline) and `read` (lookups
//! and the ordered-consumer reader).

mod append;
mod connect;
mod read;
mod stream;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use async_nats::jetstream;

pub use read::JetStreamReader;

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
    /// The connection, kept for its server info and for services that also serve subjects.
    client: async_nats::Client,
    /// The JetStream API over `client`.
    context: jetstream::Context,
    /// The settings it was connected with; shared by clones.
    config: Arc<JetStreamConfig>,
    /// Updated by the connection's event callback, read by whoever serves metrics.
    stats: Arc<ConnectionStats>,
    /// One append batch at a time per handle (and its clones): each keeps its own window of
    /// acks in flight, and several windows at once would exhaust the client's ack permits and
    /// stall each other until their acks time out.
    appending: Arc<tokio::sync::Mutex<()>>,
}

impl JetStreamLog {
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
}
