//! Submitting events, the same way over HTTP and NATS: build the envelope, validate it with the
//! domain's gate, append it to the log, tell a resend from a conflict, and optionally wait for
//! the fold's verdict.
//!
//! Why a resend is safe: the log stores each (partner, event id) once and answers a second
//! append with the first record's seq (see `fundflow_log`), at any distance in time. The gateway
//! then reads that record back and compares content: the same content is a `duplicate`, other
//! content a conflict naming the original. The fold keeps its own duplicate and conflict
//! checks for records that reach the log by other paths.
//!
//! Why nothing is half-written: a request's events are handed to one appender task as a unit, so
//! a client that disconnects or times out does not cancel their append midway; the whole batch is
//! appended, and sending it again is harmless.
//!
//! Why one appender: it appends whatever requests have queued up while the previous append was
//! acknowledged as one pipelined batch (group commit). Concurrent requests then cost one log
//! round trip between them instead of one each, and the log's window of acks in flight is never
//! oversubscribed by many batches at once (which would stall them all on acks nobody polls).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fundflow_api::{InvalidEvent, ReceivedEvent, Status};
use fundflow_domain::wire::same_content;
use fundflow_domain::{Event, RejectCode, Rejection};
use fundflow_log::{AppendRequest, Appended, EventLog};
use fundflow_proto::v1::FoldNotice;
use fundflow_proto::{Message, v1};
use futures::future::BoxFuture;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{broadcast, mpsc, oneshot};

/// What a submission says, before validation.
#[derive(Debug)]
// Inputs live only while a request is handled; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Input {
    /// A JSON object (or a CSV event), or why it could not be read.
    Object(Result<ReceivedEvent, InvalidEvent>),
    /// A protobuf envelope from a NATS client.
    Envelope(v1::Envelope),
}

/// Why one event was refused before the log. The client fixes the event (or, for a conflict,
/// sends a reversal and a new event); sending it unchanged again is refused the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The event breaks a rule that needs no ledger state.
    #[error(transparent)]
    Invalid(#[from] InvalidEvent),
    /// The event names another partner than the one submitting it (field `partner_id`).
    #[error("{message}")]
    NotThePartner {
        /// The rule, naming both partners.
        message: String,
    },
    /// The id is taken by an event with other content.
    #[error("event {event_id} was recorded at seq {seq} with different content")]
    Conflict {
        /// The id.
        event_id: String,
        /// Where the event recorded under it is.
        seq: u64,
    },
}

impl From<fundflow_api::EventError> for Refusal {
    fn from(error: fundflow_api::EventError) -> Refusal {
        match error {
            fundflow_api::EventError::Invalid(invalid) => Refusal::Invalid(invalid),
            fundflow_api::EventError::NotThePartner { message } => {
                Refusal::NotThePartner { message }
            }
        }
    }
}

/// The verdict on one submitted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Appended to the log; the fold has not judged it yet (or `wait` ran out).
    Accepted,
    /// Already in the log with the same content: counted once.
    Duplicate,
    /// Folded and applied.
    Applied,
    /// Folded and rejected by a rule that needs ledger state.
    Rejected(Rejection),
    /// Refused before the log.
    Refused(Refusal),
}

impl Verdict {
    /// The verdict's name on the wire.
    pub fn status(&self) -> Status {
        match self {
            Verdict::Accepted => Status::Accepted,
            Verdict::Duplicate => Status::Duplicate,
            Verdict::Applied => Status::Applied,
            Verdict::Rejected(_) => Status::Rejected,
            Verdict::Refused(Refusal::Conflict { .. }) => Status::Conflict,
            Verdict::Refused(_) => Status::Refused,
        }
    }
}

/// One event's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The event id, given or derived, when there is one.
    pub event_id: Option<String>,
    /// Where it is in the log (for a conflict: where the other event is).
    pub seq: Option<u64>,
    /// What became of it.
    pub verdict: Verdict,
}

impl Submitted {
    fn refused(event_id: Option<String>, refusal: Refusal) -> Submitted {
        let seq = match &refusal {
            Refusal::Conflict { seq, .. } => Some(*seq),
            _ => None,
        };
        Submitted {
            event_id,
            seq,
            verdict: Verdict::Refused(refusal),
        }
    }

    fn appended(event_id: String, seq: u64, verdict: Verdict) -> Submitted {
        Submitted {
            event_id: Some(event_id),
            seq: Some(seq),
            verdict,
        }
    }
}

/// Why a request's events are not known to be appended: the log or the appender failed. The
/// client sends the request again (safely: resends count once).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The appender task is gone (the process is stopping).
    #[error("the appender has stopped")]
    AppenderStopped,
    /// The log refused or failed the append.
    #[error("the event log did not take the events ({0}); sending them again is safe")]
    NotAppended(String),
    /// The server's clock gave a time that cannot be written as RFC 3339 (before year 0 or past
    /// 9999): nothing is appended with a made-up `recorded_at`.
    #[error("the server's clock reads {0}, which cannot be recorded")]
    Clock(String),
    /// A resend's first copy could not be read back to compare.
    #[error("cannot read record {seq} back: {message}")]
    ReadBack {
        /// The record.
        seq: u64,
        /// The log's error.
        message: String,
    },
}

/// Why an input was refused, with its event id when it has one.
type Refused = (Option<String>, Refusal);

/// Most records one group append takes.
const GROUP_RECORDS_MAX: usize = 8192;

type AppendJob = (
    Vec<AppendRequest>,
    oneshot::Sender<Result<Vec<Appended>, String>>,
);

/// Appends the jobs queued on `jobs`, together, for as long as any gateway handle lives.
async fn append_in_groups(log: EventLog, mut jobs: mpsc::Receiver<AppendJob>) {
    while let Some(first) = jobs.recv().await {
        let mut group = vec![first];
        let mut records = group[0].0.len();
        while records < GROUP_RECORDS_MAX {
            match jobs.try_recv() {
                Ok(job) => {
                    records += job.0.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        let requests: Vec<AppendRequest> =
            group.iter().flat_map(|(r, _)| r.iter().cloned()).collect();
        let span = tracing::debug_span!("group_append", requests = group.len(), records);
        let result = tracing::Instrument::instrument(log.append_batch(&requests), span).await;
        match result {
            Ok(appended) => {
                let mut appended = appended.into_iter();
                for (requests, reply) in group {
                    let mine: Vec<Appended> = appended.by_ref().take(requests.len()).collect();
                    let _ = reply.send(Ok(mine));
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "append failed");
                let message = err.to_string();
                for (_, reply) in group {
                    let _ = reply.send(Err(message.clone()));
                }
            }
        }
    }
}

/// Requests whose events wait for the appender; more wait for room (backpressure on the
/// fronts, not memory).
const APPEND_QUEUE_CAPACITY: usize = 1024;

/// How the gateway learns the fold's verdicts: the port the fold's side implements. In a
/// process with a projector, its notices and its read model; in a gateway process, the notices
/// relayed from `fundflow.v1.folded`. The gateway itself never reads a read model, so the write
/// side does not depend on the read side.
pub trait Verdicts: Send + Sync + 'static {
    /// The notices of the batches folded from now on.
    fn subscribe(&self) -> broadcast::Receiver<Arc<FoldNotice>>;

    /// The verdicts this side already knows for `seqs` (asked when a receiver fell behind the
    /// notices): `Ok(())` applied, `Err` rejected; a seq not yet folded, or not known here, is
    /// left out.
    fn known(&self, seqs: Vec<u64>) -> BoxFuture<'_, BTreeMap<u64, Result<(), Rejection>>>;
}

/// The submit side of the server. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    log: EventLog,
    appender: mpsc::Sender<AppendJob>,
    verdicts: Arc<dyn Verdicts>,
    wait_max: Duration,
}

impl Gateway {
    /// A gateway appending to `log`, learning verdicts from `verdicts`, and the appender that
    /// does its appends: the caller runs that future (in its task set), which ends once every
    /// clone of the gateway is gone and the appends in hand are done.
    pub fn new(
        log: EventLog,
        verdicts: Arc<dyn Verdicts>,
        wait_max: Duration,
    ) -> (Gateway, impl Future<Output = ()> + Send + 'static) {
        let (appender, jobs) = mpsc::channel(APPEND_QUEUE_CAPACITY);
        let appending = append_in_groups(log.clone(), jobs);
        let gateway = Gateway {
            log,
            appender,
            verdicts,
            wait_max,
        };
        (gateway, appending)
    }

    /// The log events are appended to.
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// Validates, appends and (with `wait`) waits for the fold; one result per input, in order.
    /// Only a failure of the log itself is an error, and then nothing of the request is known
    /// to be appended: the front reports it as unavailable and the client sends again (safely).
    pub async fn submit(
        &self,
        partner_id: &str,
        inputs: Vec<Input>,
        wait: bool,
    ) -> Result<Vec<Submitted>, SubmitError> {
        let now = OffsetDateTime::now_utc();
        let recorded_at = now
            .replace_nanosecond(0)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .ok_or_else(|| SubmitError::Clock(now.to_string()))?;
        let mut results: Vec<Option<Submitted>> = Vec::with_capacity(inputs.len());
        let mut requests = Vec::new();
        let mut envelopes = Vec::new();
        for input in inputs {
            match self.prepare(partner_id, input, &recorded_at) {
                Ok((envelope, request)) => {
                    results.push(None);
                    requests.push(request);
                    envelopes.push((results.len() - 1, envelope));
                }
                Err((event_id, refusal)) => {
                    results.push(Some(Submitted::refused(event_id, refusal)))
                }
            }
        }
        // Subscribed before appending, so that no notice of these events can pass unseen.
        let mut notices = self.verdicts.subscribe();
        let appended = if requests.is_empty() {
            Vec::new()
        } else {
            let (reply, appended) = oneshot::channel();
            self.appender
                .send((requests, reply))
                .await
                .map_err(|_| SubmitError::AppenderStopped)?;
            appended
                .await
                .map_err(|_| SubmitError::AppenderStopped)?
                .map_err(SubmitError::NotAppended)?
        };
        let mut waiting = BTreeMap::new();
        for ((index, envelope), appended) in envelopes.into_iter().zip(appended) {
            let event_id = envelope.event_id.clone();
            let result = match appended {
                Appended::Stored { seq } => {
                    waiting.insert(seq, index);
                    Submitted::appended(event_id, seq, Verdict::Accepted)
                }
                Appended::Duplicate { seq } => self.resend_or_conflict(&envelope, seq).await?,
            };
            metrics::counter!("fundflow_gateway_events_total", "status" => result.verdict.status().as_str()).increment(1);
            results[index] = Some(result);
        }
        for result in results.iter().flatten() {
            let status = result.verdict.status();
            if status == Status::Refused {
                metrics::counter!("fundflow_gateway_events_total", "status" => status.as_str())
                    .increment(1);
            }
        }
        if wait && !waiting.is_empty() {
            self.wait_for_fold(&mut notices, waiting, &mut results)
                .await;
        }
        Ok(results.into_iter().flatten().collect())
    }

    fn prepare(
        &self,
        partner_id: &str,
        input: Input,
        recorded_at: &str,
    ) -> Result<(v1::Envelope, AppendRequest), Refused> {
        let envelope = match input {
            Input::Object(object) => {
                let object = object.map_err(|invalid| (None, invalid.into()))?;
                let event_id = object.event_id(partner_id).ok();
                object
                    .into_envelope(partner_id, recorded_at)
                    .map_err(|error| (event_id, error.into()))?
            }
            Input::Envelope(mut envelope) => {
                if envelope.partner_id != partner_id {
                    let message = format!(
                        "partner_id {:?} is not the partner of this subject ({partner_id:?})",
                        envelope.partner_id
                    );
                    return Err((Some(envelope.event_id), Refusal::NotThePartner { message }));
                }
                // The gateway's clock, not the sender's, says when the event was recorded.
                envelope.recorded_at = recorded_at.to_owned();
                envelope
            }
        };
        let event_id = Some(envelope.event_id.clone());
        if let Err(rejection) = Event::from_envelope(&envelope) {
            return Err((event_id, InvalidEvent::from(&rejection).into()));
        }
        let size = envelope.encoded_len();
        if size > fundflow_domain::limits::ENVELOPE_BYTES_MAX {
            return Err((
                event_id,
                InvalidEvent::new(
                    "too_large",
                    "",
                    format!(
                        "the event encodes to {size} bytes, more than the limit of {}; split it",
                        fundflow_domain::limits::ENVELOPE_BYTES_MAX
                    ),
                )
                .into(),
            ));
        }
        let request = AppendRequest {
            partner_id: partner_id.to_owned(),
            event_id: envelope.event_id.clone(),
            envelope: Bytes::from(envelope.encode_to_vec()),
        };
        Ok((envelope, request))
    }

    async fn resend_or_conflict(
        &self,
        envelope: &v1::Envelope,
        seq: u64,
    ) -> Result<Submitted, SubmitError> {
        let stored = self
            .log
            .get(seq)
            .await
            .map_err(|err| SubmitError::ReadBack {
                seq,
                message: err.to_string(),
            })?;
        // A publish whose ack was lost and whose retry found its own first copy is reported
        // `duplicate` too: counted once either way, which is what matters.
        let same = stored
            .and_then(|record| v1::Envelope::decode(record.bytes.as_ref()).ok())
            .is_some_and(|earlier| same_content(&earlier, envelope));
        Ok(if same {
            Submitted::appended(envelope.event_id.clone(), seq, Verdict::Duplicate)
        } else {
            Submitted::refused(
                Some(envelope.event_id.clone()),
                Refusal::Conflict {
                    event_id: envelope.event_id.clone(),
                    seq,
                },
            )
        })
    }

    async fn wait_for_fold(
        &self,
        notices: &mut broadcast::Receiver<Arc<FoldNotice>>,
        mut waiting: BTreeMap<u64, usize>,
        results: &mut [Option<Submitted>],
    ) {
        let deadline = tokio::time::Instant::now() + self.wait_max;
        while !waiting.is_empty() {
            match tokio::time::timeout_at(deadline, notices.recv()).await {
                Ok(Ok(notice)) => {
                    if notice.first_seq > notice.last_seq {
                        tracing::warn!(
                            first = notice.first_seq,
                            last = notice.last_seq,
                            "a fold notice with an empty range; ignored"
                        );
                        continue;
                    }
                    // A code this build does not know (a newer projector) makes the notice
                    // unusable: its waiters time out as `accepted` rather than be told `applied`.
                    let Some(rejected) = rejections(&notice) else {
                        tracing::warn!("a fold notice with an unknown rejection code; ignored");
                        continue;
                    };
                    let folded: Vec<u64> = waiting
                        .range(notice.first_seq..=notice.last_seq)
                        .map(|(seq, _)| *seq)
                        .collect();
                    for seq in folded {
                        let Some(index) = waiting.remove(&seq) else {
                            continue;
                        };
                        if let Some(result) = results[index].as_mut() {
                            judge(result, rejected.get(&seq));
                        }
                    }
                }
                // Too slow to keep up with the notices: the fold's side may know the verdicts
                // that were missed.
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                    self.judge_known(&mut waiting, results).await;
                }
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => break,
            }
        }
        self.judge_known(&mut waiting, results).await;
    }

    async fn judge_known(
        &self,
        waiting: &mut BTreeMap<u64, usize>,
        results: &mut [Option<Submitted>],
    ) {
        if waiting.is_empty() {
            return;
        }
        let known = self.verdicts.known(waiting.keys().copied().collect()).await;
        waiting.retain(|seq, index| match known.get(seq) {
            Some(outcome) => {
                if let Some(result) = results[*index].as_mut() {
                    judge(result, outcome.as_ref().err());
                }
                false
            }
            None => true,
        });
    }
}

/// The notice's rejections by seq, or `None` if one has a code this build does not know.
fn rejections(notice: &FoldNotice) -> Option<BTreeMap<u64, Rejection>> {
    notice
        .rejected
        .iter()
        .map(|r| {
            Some((
                r.seq,
                Rejection {
                    code: RejectCode::from_str_code(&r.code)?,
                    field: r.field.clone(),
                    message: r.message.clone(),
                },
            ))
        })
        .collect()
}

fn judge(result: &mut Submitted, rejection: Option<&Rejection>) {
    result.verdict = match rejection {
        None => Verdict::Applied,
        Some(rejection) => Verdict::Rejected(rejection.clone()),
    };
}
