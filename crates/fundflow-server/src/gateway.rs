//! Submitting events, the same way over HTTP and NATS: build the envelope, validate it with the
//! domain's gate, append it to the log, tell a resend from a conflict, and optionally wait for
//! the fold's verdict.
//!
//! Why a resend is safe: the log stores each (partner, event id) once and answers a second
//! append with the first record's seq (see `fundflow_log`), at any distance in time. The gateway
//! then reads that record back and compares content: the same content is a `duplicate`, other
//! content a 409 conflict naming the original. The fold keeps its own duplicate and conflict
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
use fundflow_domain::Event;
use fundflow_domain::wire::same_content;
use fundflow_log::{AppendRequest, Appended, EventLog};
use fundflow_projector::{FoldNotice, ReadModel};
use fundflow_proto::{Message, v1};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::json::{self, EventObject};
use crate::problem::Problem;

/// What a submission says, before validation.
#[derive(Debug)]
// Inputs live only while a request is handled; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Input {
    /// A JSON object (or a CSV event), or why it could not be read.
    Object(Result<EventObject, Problem>),
    /// A protobuf envelope from a NATS client.
    Envelope(v1::Envelope),
}

/// The verdict on one submitted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Appended to the log; the fold has not judged it yet (or `wait` ran out).
    Accepted,
    /// Already in the log with the same content: counted once.
    Duplicate,
    /// Folded and applied.
    Applied,
    /// Folded and rejected by a rule that needs ledger state (see `code`).
    Rejected,
    /// Refused before the log: invalid input (see `problem`).
    Refused,
    /// Refused: the id is taken by other content (see `problem`).
    Conflict,
}

/// One event's result, as HTTP and NATS return it.
#[derive(Debug, Clone, Serialize)]
pub struct SubmitResult {
    /// The line (NDJSON) or first row (CSV) it came from, counting from 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The event id, given or derived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Where it is in the log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The verdict.
    pub status: Status,
    /// For `rejected`: the rejection code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// For `rejected`: the field to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For `rejected`: the rule, in one sentence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For `refused` and `conflict`: the problem, as an HTTP error body would give it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
}

impl SubmitResult {
    fn problem(event_id: Option<String>, problem: Problem) -> SubmitResult {
        let status = if problem.code == "event_id_conflict" {
            Status::Conflict
        } else {
            Status::Refused
        };
        SubmitResult {
            line: None,
            event_id,
            seq: problem.seq,
            status,
            code: None,
            field: None,
            message: None,
            problem: Some(problem),
        }
    }

    fn appended(event_id: String, seq: u64, status: Status) -> SubmitResult {
        SubmitResult {
            line: None,
            event_id: Some(event_id),
            seq: Some(seq),
            status,
            code: None,
            field: None,
            message: None,
            problem: None,
        }
    }
}

/// Counts of a request's results.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Appended, not yet judged.
    pub accepted: usize,
    /// Already there.
    pub duplicate: usize,
    /// Folded and applied.
    pub applied: usize,
    /// Folded and rejected.
    pub rejected: usize,
    /// Invalid, not appended.
    pub refused: usize,
    /// Id taken by other content, not appended.
    pub conflict: usize,
}

impl Summary {
    /// Counts `results`.
    pub fn of(results: &[SubmitResult]) -> Summary {
        let mut summary = Summary::default();
        for result in results {
            *match result.status {
                Status::Accepted => &mut summary.accepted,
                Status::Duplicate => &mut summary.duplicate,
                Status::Applied => &mut summary.applied,
                Status::Rejected => &mut summary.rejected,
                Status::Refused => &mut summary.refused,
                Status::Conflict => &mut summary.conflict,
            } += 1;
        }
        summary
    }
}

/// Why an input was refused, with its event id when it has one.
type Refusal = (Option<String>, Problem);

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

/// The submit side of the server. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    log: EventLog,
    appender: mpsc::Sender<AppendJob>,
    notices: broadcast::Sender<Arc<FoldNotice>>,
    model: Option<ReadModel>,
    wait_max: Duration,
}

impl Gateway {
    /// A gateway appending to `log` (spawns its appender task: call within a tokio runtime);
    /// `notices` announce folded batches (from the projector in
    /// this process, or relayed from NATS); `model`, when this process has one, answers for
    /// batches whose notice was missed.
    pub fn new(
        log: EventLog,
        notices: broadcast::Sender<Arc<FoldNotice>>,
        model: Option<ReadModel>,
        wait_max: Duration,
    ) -> Gateway {
        let (appender, jobs) = mpsc::channel(1024);
        tokio::spawn(append_in_groups(log.clone(), jobs));
        Gateway {
            log,
            appender,
            notices,
            model,
            wait_max,
        }
    }

    /// The log events are appended to.
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// Validates, appends and (with `wait`) waits for the fold; one result per input, in order.
    /// Only a failure of the log itself is an error, and then nothing of the request is known
    /// to be appended: the caller reports 503 and the client sends again (safely).
    pub async fn submit(
        &self,
        partner_id: &str,
        inputs: Vec<Input>,
        wait: bool,
    ) -> Result<Vec<SubmitResult>, Problem> {
        let recorded_at = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default();
        let mut results: Vec<Option<SubmitResult>> = Vec::with_capacity(inputs.len());
        let mut requests = Vec::new();
        let mut envelopes = Vec::new();
        for input in inputs {
            match self.prepare(partner_id, input, &recorded_at) {
                Ok((envelope, request)) => {
                    results.push(None);
                    requests.push(request);
                    envelopes.push((results.len() - 1, envelope));
                }
                Err((event_id, problem)) => {
                    results.push(Some(SubmitResult::problem(event_id, problem)))
                }
            }
        }
        // Subscribed before appending, so that no notice of these events can pass unseen.
        let mut notices = self.notices.subscribe();
        let appended = if requests.is_empty() {
            Vec::new()
        } else {
            let (reply, appended) = oneshot::channel();
            self.appender
                .send((requests, reply))
                .await
                .map_err(|_| Problem::unavailable("the appender has stopped"))?;
            appended
                .await
                .map_err(|_| Problem::unavailable("the appender has stopped"))?
                .map_err(|err| {
                    Problem::unavailable(format!(
                        "the event log did not take the events ({err}); sending them again is safe"
                    ))
                })?
        };
        let mut waiting = BTreeMap::new();
        for ((index, envelope), appended) in envelopes.into_iter().zip(appended) {
            let event_id = envelope.event_id.clone();
            let result = match appended {
                Appended::Stored { seq } => {
                    waiting.insert(seq, index);
                    SubmitResult::appended(event_id, seq, Status::Accepted)
                }
                Appended::Duplicate { seq } => self.resend_or_conflict(&envelope, seq).await?,
            };
            metrics::counter!("fundflow_gateway_events_total", "status" => status_name(result.status)).increment(1);
            results[index] = Some(result);
        }
        for result in results.iter().flatten() {
            if result.status == Status::Refused {
                metrics::counter!("fundflow_gateway_events_total", "status" => status_name(result.status)).increment(1);
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
    ) -> Result<(v1::Envelope, AppendRequest), Refusal> {
        let envelope = match input {
            Input::Object(object) => {
                let object = object.map_err(|p| (None, p))?;
                let event_id = json::event_id_of(partner_id, &object).ok();
                json::to_envelope(partner_id, object, recorded_at).map_err(|p| (event_id, p))?
            }
            Input::Envelope(mut envelope) => {
                if envelope.partner_id != partner_id {
                    return Err((
                        Some(envelope.event_id),
                        Problem::forbidden(format!(
                            "partner_id {:?} is not the partner of this subject ({partner_id:?})",
                            envelope.partner_id
                        ))
                        .with_field("partner_id"),
                    ));
                }
                // The gateway's clock, not the sender's, says when the event was recorded.
                envelope.recorded_at = recorded_at.to_owned();
                envelope
            }
        };
        let event_id = Some(envelope.event_id.clone());
        if let Err(rejection) = Event::from_envelope(&envelope) {
            return Err((event_id, Problem::rejected(&rejection)));
        }
        let size = envelope.encoded_len();
        if size > fundflow_domain::limits::ENVELOPE_BYTES_MAX {
            return Err((
                event_id,
                Problem::bad_request(
                    "too_large",
                    "",
                    format!(
                        "the event encodes to {size} bytes, more than the limit of {}; split it",
                        fundflow_domain::limits::ENVELOPE_BYTES_MAX
                    ),
                ),
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
    ) -> Result<SubmitResult, Problem> {
        let stored =
            self.log.get(seq).await.map_err(|err| {
                Problem::unavailable(format!("cannot read record {seq} back: {err}"))
            })?;
        // A publish whose ack was lost and whose retry found its own first copy is reported
        // `duplicate` too: counted once either way, which is what matters.
        let same = stored
            .and_then(|record| v1::Envelope::decode(record.bytes.as_ref()).ok())
            .is_some_and(|earlier| same_content(&earlier, envelope));
        Ok(if same {
            SubmitResult::appended(envelope.event_id.clone(), seq, Status::Duplicate)
        } else {
            SubmitResult::problem(
                Some(envelope.event_id.clone()),
                Problem::conflict(&envelope.event_id, seq),
            )
        })
    }

    async fn wait_for_fold(
        &self,
        notices: &mut broadcast::Receiver<Arc<FoldNotice>>,
        mut waiting: BTreeMap<u64, usize>,
        results: &mut [Option<SubmitResult>],
    ) {
        let deadline = tokio::time::Instant::now() + self.wait_max;
        while !waiting.is_empty() {
            match tokio::time::timeout_at(deadline, notices.recv()).await {
                Ok(Ok(notice)) => {
                    let folded: Vec<u64> = waiting
                        .range(notice.first_seq..=notice.last_seq)
                        .map(|(seq, _)| *seq)
                        .collect();
                    for seq in folded {
                        let Some(index) = waiting.remove(&seq) else {
                            continue;
                        };
                        let rejection = notice
                            .rejected
                            .iter()
                            .find(|(s, _)| *s == seq)
                            .map(|(_, r)| r);
                        if let Some(result) = results[index].as_mut() {
                            judge(result, rejection);
                        }
                    }
                }
                // Too slow to keep up with the notices: the read model, where there is one,
                // has the verdicts that were missed.
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                    self.judge_from_model(&mut waiting, results);
                }
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => break,
            }
        }
        self.judge_from_model(&mut waiting, results);
    }

    fn judge_from_model(
        &self,
        waiting: &mut BTreeMap<u64, usize>,
        results: &mut [Option<SubmitResult>],
    ) {
        let Some(model) = &self.model else {
            return;
        };
        waiting.retain(|seq, index| match model.outcome(*seq) {
            Ok(Some(outcome)) => {
                if let Some(result) = results[*index].as_mut() {
                    judge(result, outcome.err().as_ref());
                }
                false
            }
            _ => true,
        });
    }
}

fn judge(result: &mut SubmitResult, rejection: Option<&fundflow_domain::Rejection>) {
    match rejection {
        None => result.status = Status::Applied,
        Some(rejection) => {
            result.status = Status::Rejected;
            result.code = Some(rejection.code.as_str().to_owned());
            result.field = (!rejection.field.is_empty()).then(|| rejection.field.clone());
            result.message = Some(rejection.message.clone());
        }
    }
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Accepted => "accepted",
        Status::Duplicate => "duplicate",
        Status::Applied => "applied",
        Status::Rejected => "rejected",
        Status::Refused => "refused",
        Status::Conflict => "conflict",
    }
}
