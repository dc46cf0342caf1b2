//! The finance reviewer's reads, from the sled read model: totals and in-kind quantities (one
//! consistent snapshot, read in time bounded by the reference data, not by the number of
//! events), one pledge (one point read), one event (the log's record and the model's outcome),
//! and the checkpoint.
//!
//! The model digest covers the whole model (pledges and rejections included), so it costs one
//! pass over the model; it is computed at most once per checkpoint and cached, and every reply
//! at that checkpoint reuses it.

use std::sync::Arc;

use fundflow_domain::currency_code;
use fundflow_domain::minor_unit;
use fundflow_domain::money::format_at_scale;
use fundflow_domain::report::{ItemRow, TotalRow, item_rows, total_rows};
use fundflow_domain::{ModelState, Scope, TotalKind};
use fundflow_log::EventLog;
use fundflow_projector::{ProjectorError, ReadModel};
use fundflow_proto::{Message, v1};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::json::envelope_to_json;
use crate::problem::Problem;

/// Filters of `GET /v1/totals`.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotalsFilter {
    /// `country`, `region`, `subregion`, `intermediate` or `global`.
    pub scope: Option<String>,
    /// `pledged`, `paid`, `parallel_funding` or `in_kind`.
    pub kind: Option<String>,
    /// ISO 4217 code.
    pub currency: Option<String>,
    /// A country's alpha-3 or an area's M49 code.
    pub key: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// `GET /v1/totals`.
#[derive(Debug, Serialize)]
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
#[derive(Debug, Serialize)]
pub struct InKindReply {
    /// The checkpoint the rows are at.
    pub as_of_seq: u64,
    /// The rows.
    pub rows: Vec<ItemRow>,
}

/// `GET /v1/pledges/{pledge_id}`.
#[derive(Debug, Serialize)]
pub struct PledgeReply {
    /// The checkpoint.
    pub as_of_seq: u64,
    /// Whose pledge.
    pub partner_id: String,
    /// The partner's id of it.
    pub pledge_id: String,
    /// Its currency.
    pub currency: &'static str,
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
#[derive(Debug, Serialize)]
pub struct PledgeLineReply {
    /// Its scope.
    pub scope: Scope,
    /// Its code.
    pub key: &'static str,
    /// Its name.
    pub name: &'static str,
    /// Promised.
    pub pledged: String,
    /// Paid so far.
    pub paid: String,
    /// Still to pay.
    pub outstanding: String,
}

/// `GET /v1/events/{event_id}`.
#[derive(Debug, Serialize)]
pub struct EventReply {
    /// The event id as stored.
    pub event_id: String,
    /// Whose.
    pub partner_id: String,
    /// Where it is in the log.
    pub seq: u64,
    /// `applied`, `rejected`, or `pending` (not folded yet).
    pub outcome: &'static str,
    /// For `rejected`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// For `rejected`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The event as JSON (absent when the record is not a readable envelope).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<serde_json::Value>,
}

/// `GET /v1/checkpoint`.
#[derive(Debug, Serialize)]
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

/// The read side. Cheap to clone.
#[derive(Clone)]
pub struct Queries {
    model: ReadModel,
    log: EventLog,
    digest: Arc<Mutex<Option<(u64, String)>>>,
}

fn unavailable(err: ProjectorError) -> Problem {
    Problem::unavailable(format!("the read model cannot be read: {err}"))
}

impl Queries {
    /// Reads from `model`, and from `log` for events.
    pub fn new(model: ReadModel, log: EventLog) -> Queries {
        Queries {
            model,
            log,
            digest: Arc::new(Mutex::new(None)),
        }
    }

    /// The read model.
    pub fn model(&self) -> &ReadModel {
        &self.model
    }

    async fn snapshot(&self) -> Result<ModelState, Problem> {
        let model = self.model.clone();
        tokio::task::spawn_blocking(move || model.totals_snapshot())
            .await
            .map_err(|err| Problem::unavailable(format!("the read failed: {err}")))?
            .map_err(unavailable)
    }

    /// The model digest at `seq`, from the cache or computed once; `None` when the projector
    /// moved on while it was computed (a busy projector: ask again once it has caught up).
    async fn model_digest(&self, seq: u64) -> Result<Option<String>, Problem> {
        let mut cached = self.digest.lock().await;
        if let Some((at, digest)) = &*cached
            && *at == seq
        {
            return Ok(Some(digest.clone()));
        }
        let model = self.model.clone();
        let read = tokio::task::spawn_blocking(move || {
            let state = model.state()?;
            let after = model.checkpoint()?.unwrap_or_default();
            Ok::<_, ProjectorError>((state, after))
        });
        let (state, after) = read
            .await
            .map_err(|err| Problem::unavailable(format!("the read failed: {err}")))?
            .map_err(unavailable)?;
        // The state's parts are read one after another; it is one fold's state only if no batch
        // landed meanwhile, which the checkpoint read before (in `state`) and after tells.
        if state.checkpoint != after {
            return Ok(None);
        }
        let digest = hex::encode(state.model_digest());
        *cached = Some((after.last_seq, digest.clone()));
        Ok((after.last_seq == seq).then_some(digest))
    }

    /// `GET /v1/totals`.
    pub async fn totals(&self, filter: &TotalsFilter) -> Result<TotalsReply, Problem> {
        let scope = match filter.scope.as_deref() {
            None => None,
            Some(name) => Some(Scope::parse(name).ok_or_else(|| {
                Problem::bad_query(
                    "invalid_scope",
                    format!(
                        "scope {name:?} is not one of country, region, subregion, intermediate, global"
                    ),
                )
            })?),
        };
        let kind = match filter.kind.as_deref() {
            None => None,
            Some(name) => Some(TotalKind::parse(name).ok_or_else(|| {
                Problem::bad_query(
                    "invalid_kind",
                    format!("kind {name:?} is not one of pledged, paid, parallel_funding, in_kind"),
                )
            })?),
        };
        if let Some(code) = &filter.currency
            && fundflow_refdata::currency_by_code(code).is_none()
        {
            return Err(Problem::bad_query(
                "invalid_currency",
                format!("currency {code:?} is not an ISO 4217 code"),
            ));
        }
        let state = self.snapshot().await?;
        let seq = state.checkpoint.last_seq;
        let rows = total_rows(&state, scope)
            .into_iter()
            .filter(|row| kind.is_none_or(|k| row.kind == k.as_str()))
            .filter(|row| filter.currency.as_deref().is_none_or(|c| row.currency == c))
            .filter(|row| filter.key.as_deref().is_none_or(|k| row.key == k))
            .collect();
        Ok(TotalsReply {
            as_of_seq: seq,
            log_digest: hex::encode(state.checkpoint.log_digest),
            model_digest: self.model_digest(seq).await?,
            rows,
        })
    }

    /// `GET /v1/in-kind`.
    pub async fn in_kind(&self, scope: Option<&str>) -> Result<InKindReply, Problem> {
        let scope = match scope {
            None => None,
            Some(name) => Some(Scope::parse(name).ok_or_else(|| {
                Problem::bad_query("invalid_scope", format!("scope {name:?} is not a scope"))
            })?),
        };
        let state = self.snapshot().await?;
        Ok(InKindReply {
            as_of_seq: state.checkpoint.last_seq,
            rows: item_rows(&state, scope),
        })
    }

    /// `GET /v1/pledges/{pledge_id}` of one partner.
    pub async fn pledge(&self, partner_id: &str, pledge_id: &str) -> Result<PledgeReply, Problem> {
        let checkpoint = self
            .model
            .checkpoint()
            .map_err(unavailable)?
            .unwrap_or_default();
        let row = self
            .model
            .pledge(partner_id, pledge_id)
            .map_err(unavailable)?
            .ok_or_else(|| {
                Problem::not_found(format!(
                    "partner {partner_id} has no active pledge {pledge_id:?} as of seq {}",
                    checkpoint.last_seq
                ))
            })?;
        let currency = currency_code(row.currency);
        let scale = minor_unit(currency);
        let money = |d| format_at_scale(d, scale);
        let (mut pledged, mut paid) = (rust_decimal::Decimal::ZERO, rust_decimal::Decimal::ZERO);
        let lines = row
            .lines
            .iter()
            .map(|line| {
                // Bounded: each line is at most the domain's total limit, far below Decimal::MAX.
                pledged = pledged.saturating_add(line.pledged);
                paid = paid.saturating_add(line.paid);
                PledgeLineReply {
                    scope: line.node.scope(),
                    key: line.node.key(),
                    name: line.node.name(),
                    pledged: money(line.pledged),
                    paid: money(line.paid),
                    outstanding: money(line.outstanding()),
                }
            })
            .collect();
        Ok(PledgeReply {
            as_of_seq: checkpoint.last_seq,
            partner_id: row.partner_id,
            pledge_id: row.pledge_id,
            currency,
            lines,
            pledged: money(pledged),
            paid: money(paid),
            outstanding: money(pledged - paid),
        })
    }

    /// `GET /v1/events/{event_id}` of one partner.
    pub async fn event(&self, partner_id: &str, event_id: &str) -> Result<EventReply, Problem> {
        let record = self
            .log
            .find(partner_id, event_id)
            .await
            .map_err(|err| Problem::unavailable(format!("the event log cannot be read: {err}")))?
            .ok_or_else(|| {
                Problem::not_found(format!("partner {partner_id} has no event {event_id}"))
            })?;
        let envelope = v1::Envelope::decode(record.bytes.as_ref()).ok();
        let (outcome, code, message) = match self.model.outcome(record.seq).map_err(unavailable)? {
            None => ("pending", None, None),
            Some(Ok(())) => ("applied", None, None),
            Some(Err(rejection)) => (
                "rejected",
                Some(rejection.code.as_str()),
                Some(rejection.message),
            ),
        };
        Ok(EventReply {
            event_id: envelope
                .as_ref()
                .map_or_else(|| event_id.to_owned(), |e| e.event_id.clone()),
            partner_id: partner_id.to_owned(),
            seq: record.seq,
            outcome,
            code,
            message,
            event: envelope.as_ref().map(envelope_to_json),
        })
    }

    /// `GET /v1/checkpoint`.
    pub async fn checkpoint(&self) -> Result<CheckpointReply, Problem> {
        let state = self.snapshot().await?;
        let checkpoint = state.checkpoint;
        Ok(CheckpointReply {
            seq: checkpoint.last_seq,
            log_digest: hex::encode(checkpoint.log_digest),
            model_digest: self.model_digest(checkpoint.last_seq).await?,
            applied: checkpoint.applied,
            rejected: checkpoint.rejected,
        })
    }
}

/// The totals rows as CSV, the columns of `fundflow totals --format csv` plus the name.
pub fn totals_csv(rows: &[TotalRow]) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let _ = writer.write_record([
        "scope",
        "key",
        "name",
        "kind",
        "currency",
        "amount",
        "usd_equivalent",
        "unconverted",
    ]);
    for row in rows {
        let _ = writer.write_record([
            row.scope.as_str(),
            row.key,
            row.name,
            row.kind,
            row.currency,
            &row.amount,
            &row.usd_equivalent,
            &row.unconverted,
        ]);
    }
    String::from_utf8(writer.into_inner().unwrap_or_default()).unwrap_or_default()
}
