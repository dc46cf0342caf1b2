//! The replies of the HTTP and NATS APIs, as the server writes them and clients (the CLI) read
//! them: one definition of each shape, `Serialize` and `Deserialize` both.

use fundflow_domain::Scope;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::event::EventObject;
use crate::report::{ItemRow, TotalRow, scope_name};

/// An RFC 9457 problem details object (`application/problem+json`): a status, a stable `code`,
/// the offending `field` as the JSON API names it, and a one-sentence `detail` with the rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemBody {
    /// `urn:fundflow:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short, fixed summary of the kind of problem.
    pub title: String,
    /// The HTTP status (NATS replies carry it too, so that one client reads both).
    pub status: u16,
    /// The field and the rule, in one sentence.
    pub detail: String,
    /// A stable code: a domain rejection code or one of the API's own.
    pub code: String,
    /// The offending field's path, when one field is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For a conflict: the event already recorded under the id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// For a conflict: where that event is in the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// The verdict on one submitted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

impl Status {
    /// Every status.
    pub const ALL: [Status; 6] = [
        Status::Accepted,
        Status::Duplicate,
        Status::Applied,
        Status::Rejected,
        Status::Refused,
        Status::Conflict,
    ];

    /// The wire name (also the metrics label): the one place it is spelled.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Duplicate => "duplicate",
            Status::Applied => "applied",
            Status::Rejected => "rejected",
            Status::Refused => "refused",
            Status::Conflict => "conflict",
        }
    }

    /// Whether the event did not go through (refused, a conflict, or rejected by the fold).
    pub fn is_failure(self) -> bool {
        matches!(self, Status::Refused | Status::Conflict | Status::Rejected)
    }
}

impl Serialize for Status {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Status, D::Error> {
        let name = String::deserialize(deserializer)?;
        Status::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| de::Error::invalid_value(de::Unexpected::Str(&name), &"a status"))
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event's result, as HTTP and NATS return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitResult {
    /// The line (NDJSON) or first row (CSV) it came from, counting from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The event id, given or derived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Where it is in the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The verdict.
    pub status: Status,
    /// For `rejected`: the rejection code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// For `rejected`: the field to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For `rejected`: the rule, in one sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For `refused` and `conflict`: the problem, as an HTTP error body would give it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<ProblemBody>,
}

impl SubmitResult {
    /// What went wrong, in one sentence, when something did.
    pub fn detail(&self) -> Option<&str> {
        self.problem
            .as_ref()
            .map(|p| p.detail.as_str())
            .or(self.message.as_deref())
    }
}

/// Counts of a request's results.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Counts `statuses`.
    pub fn of(statuses: impl IntoIterator<Item = Status>) -> Summary {
        let mut summary = Summary::default();
        for status in statuses {
            *match status {
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

/// `POST /v1/events` with NDJSON or CSV: one result per event, and their counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitReply {
    /// In the order of the request.
    pub results: Vec<SubmitResult>,
    /// Counts of `results`.
    pub summary: Summary,
}

/// `GET /v1/totals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotalsReply {
    /// The checkpoint the rows are at.
    pub as_of_seq: u64,
    /// The log digest at that checkpoint.
    pub log_digest: String,
    /// The model digest at that checkpoint; `null` while the projector is too busy for it to be
    /// computed at a checkpoint that still holds.
    pub model_digest: Option<String>,
    /// The rows.
    pub rows: Vec<TotalRow>,
}

/// `GET /v1/in-kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InKindReply {
    /// The checkpoint the rows are at.
    pub as_of_seq: u64,
    /// The rows.
    pub rows: Vec<ItemRow>,
}

/// `GET /v1/pledges/{pledge_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PledgeReply {
    /// The checkpoint.
    pub as_of_seq: u64,
    /// Whose pledge.
    pub partner_id: String,
    /// The partner's id of it.
    pub pledge_id: String,
    /// Its currency.
    pub currency: String,
    /// Per recipient.
    pub lines: Vec<PledgeLineReply>,
    /// Sum over the recipients.
    pub pledged: String,
    /// Sum over the recipients.
    pub paid: String,
    /// Sum over the recipients.
    pub outstanding: String,
}

/// One recipient of a pledge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PledgeLineReply {
    /// Its scope.
    #[serde(with = "scope_name")]
    pub scope: Scope,
    /// Its code.
    pub key: String,
    /// Its name.
    pub name: String,
    /// Promised.
    pub pledged: String,
    /// Paid so far.
    pub paid: String,
    /// Still to pay.
    pub outstanding: String,
}

/// What became of a record in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventOutcome {
    /// Folded and applied.
    Applied,
    /// Folded and rejected (see `code`).
    Rejected,
    /// Not folded yet.
    Pending,
}

/// `GET /v1/events/{event_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventReply {
    /// The event id as stored.
    pub event_id: String,
    /// Whose.
    pub partner_id: String,
    /// Where it is in the log.
    pub seq: u64,
    /// Applied, rejected, or pending.
    pub outcome: EventOutcome,
    /// For `rejected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// For `rejected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The event as JSON (absent when the record is not a readable envelope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventObject>,
}

/// `GET /v1/checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointReply {
    /// The last sequence folded.
    pub seq: u64,
    /// The log digest after it.
    pub log_digest: String,
    /// The model digest at it (`null` as for totals).
    pub model_digest: Option<String>,
    /// Records applied.
    pub applied: u64,
    /// Records rejected.
    pub rejected: u64,
}

/// `GET /v1/rejections`: a page of the records the fold rejected, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectionsReply {
    /// The checkpoint the page is at.
    pub as_of_seq: u64,
    /// The page.
    pub rejections: Vec<RejectionItem>,
    /// The cursor of the next (older) page, `null` after the last.
    pub next_cursor: Option<String>,
}

/// One rejected record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectionItem {
    /// Where it is in the log.
    pub seq: u64,
    /// The event id as given (`""` when the record could not be decoded).
    pub event_id: String,
    /// The partner as given (`""` when the record could not be decoded).
    pub partner: String,
    /// The rejection code.
    pub code: String,
    /// The field that broke the rule (`""` when the rule is of the whole record).
    pub field: String,
    /// The field and the rule, in one sentence.
    pub message: String,
}

/// The rejections as CSV, one row each.
pub fn rejections_csv(rejections: &[RejectionItem]) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(["seq", "event_id", "partner", "code", "field", "message"])?;
    for r in rejections {
        writer.write_record([
            r.seq.to_string().as_str(),
            &r.event_id,
            &r.partner,
            &r.code,
            &r.field,
            &r.message,
        ])?;
    }
    writer
        .into_inner()
        .map_err(|err| csv::Error::from(err.into_error()))
}
