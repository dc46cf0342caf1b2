//! The finance reviewer's reads, from the sled read model: totals and in-kind quantities (one
//! consistent snapshot, read in time bounded by the reference data, not by the number of
//! events), one pledge (one point read), one event (the log's record and the model's outcome),
//! and the checkpoint.
//!
//! The model digest covers the whole model (pledges and rejections included), so it costs one
//! pass over the model; it is computed at most once per checkpoint and cached, and every reply
//! at that checkpoint reuses it.

use std::sync::{Arc, Mutex};

use fundflow_api::{
    CheckpointReply, EventObject, EventOutcome, EventReply, InKindReply, PledgeLineReply,
    PledgeReply, TotalRow, TotalsReply, item_rows, total_rows,
};
use fundflow_domain::money::format_at_scale;
use fundflow_domain::{ModelState, Scope, TotalKind};
use fundflow_domain::{currency_code, minor_unit};
use fundflow_log::EventLog;
use fundflow_projector::{ProjectorError, ReadModel};
use fundflow_proto::{Message, v1};

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

/// Why a read has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A filter names no scope, kind or currency there is; the client fixes the request.
    #[error("{detail}")]
    InvalidFilter {
        /// `invalid_scope`, `invalid_kind` or `invalid_currency`.
        code: &'static str,
        /// The filter and the values it may take.
        detail: String,
    },
    /// Nothing by that id (as of the checkpoint the message names).
    #[error("{0}")]
    NotFound(String),
    /// The read model or the log cannot be read now; the client may ask again.
    #[error("{0}")]
    Unavailable(String),
}

/// The read side. Cheap to clone.
#[derive(Clone)]
pub struct Queries {
    model: ReadModel,
    log: EventLog,
    digest: Arc<Mutex<Option<(u64, String)>>>,
}

fn unavailable(err: ProjectorError) -> QueryError {
    QueryError::Unavailable(format!("the read model cannot be read: {err}"))
}

fn join_failed(err: tokio::task::JoinError) -> QueryError {
    QueryError::Unavailable(format!("the read failed: {err}"))
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

    async fn snapshot(&self) -> Result<ModelState, QueryError> {
        let model = self.model.clone();
        tokio::task::spawn_blocking(move || model.totals_snapshot())
            .await
            .map_err(join_failed)?
            .map_err(unavailable)
    }

    /// The model digest at `seq`, from the cache or computed once; `None` when the projector
    /// moved on while it was computed (a busy projector: ask again once it has caught up).
    fn cached_digest(&self) -> std::sync::MutexGuard<'_, Option<(u64, String)>> {
        // A panic while holding it can only have left a whole value or none: keep using it.
        self.digest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn model_digest(&self, seq: u64) -> Result<Option<String>, QueryError> {
        // The lock is held only to look and to store, never across the scan: requests at a
        // seq already digested are answered at once while another computes a newer one.
        if let Some((at, digest)) = &*self.cached_digest()
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
        let (state, after) = read.await.map_err(join_failed)?.map_err(unavailable)?;
        // The state's parts are read one after another; it is one fold's state only if no batch
        // landed meanwhile, which the checkpoint read before (in `state`) and after tells.
        if state.checkpoint != after {
            return Ok(None);
        }
        let digest = hex::encode(state.model_digest());
        *self.cached_digest() = Some((after.last_seq, digest.clone()));
        Ok((after.last_seq == seq).then_some(digest))
    }

    /// `GET /v1/totals`.
    pub async fn totals(&self, filter: &TotalsFilter) -> Result<TotalsReply, QueryError> {
        let scope = match filter.scope.as_deref() {
            None => None,
            Some(name) => Some(Scope::parse(name).ok_or_else(|| {
                let names = Scope::ALL.map(Scope::as_str).join(", ");
                QueryError::InvalidFilter {
                    code: "invalid_scope",
                    detail: format!("scope {name:?} is not one of {names}"),
                }
            })?),
        };
        let kind = match filter.kind.as_deref() {
            None => None,
            Some(name) => Some(TotalKind::parse(name).ok_or_else(|| {
                let names = TotalKind::ALL.map(TotalKind::as_str).join(", ");
                QueryError::InvalidFilter {
                    code: "invalid_kind",
                    detail: format!("kind {name:?} is not one of {names}"),
                }
            })?),
        };
        if let Some(code) = &filter.currency
            && fundflow_refdata::currency_by_code(code).is_none()
        {
            return Err(QueryError::InvalidFilter {
                code: "invalid_currency",
                detail: format!("currency {code:?} is not an ISO 4217 code"),
            });
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
    pub async fn in_kind(&self, scope: Option<&str>) -> Result<InKindReply, QueryError> {
        let scope = match scope {
            None => None,
            Some(name) => Some(Scope::parse(name).ok_or_else(|| QueryError::InvalidFilter {
                code: "invalid_scope",
                detail: format!("scope {name:?} is not a scope"),
            })?),
        };
        let state = self.snapshot().await?;
        Ok(InKindReply {
            as_of_seq: state.checkpoint.last_seq,
            rows: item_rows(&state, scope),
        })
    }

    /// `GET /v1/pledges/{pledge_id}` of one partner.
    pub async fn pledge(
        &self,
        partner_id: &str,
        pledge_id: &str,
    ) -> Result<PledgeReply, QueryError> {
        let model = self.model.clone();
        let (partner, pledge) = (partner_id.to_owned(), pledge_id.to_owned());
        let (checkpoint, row) =
            tokio::task::spawn_blocking(move || model.pledge_at_checkpoint(&partner, &pledge))
                .await
                .map_err(join_failed)?
                .map_err(unavailable)?;
        let row = row.ok_or_else(|| {
            QueryError::NotFound(format!(
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
                    key: line.node.key().to_owned(),
                    name: line.node.name().to_owned(),
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
            currency: currency.to_owned(),
            lines,
            pledged: money(pledged),
            paid: money(paid),
            outstanding: money(pledged - paid),
        })
    }

    /// `GET /v1/events/{event_id}` of one partner.
    pub async fn event(&self, partner_id: &str, event_id: &str) -> Result<EventReply, QueryError> {
        let record = self
            .log
            .find(partner_id, event_id)
            .await
            .map_err(|err| QueryError::Unavailable(format!("the event log cannot be read: {err}")))?
            .ok_or_else(|| {
                QueryError::NotFound(format!("partner {partner_id} has no event {event_id}"))
            })?;
        let envelope = v1::Envelope::decode(record.bytes.as_ref()).ok();
        let model = self.model.clone();
        let seq = record.seq;
        let outcome = tokio::task::spawn_blocking(move || model.outcome(seq))
            .await
            .map_err(join_failed)?
            .map_err(unavailable)?;
        let (outcome, code, message) = match outcome {
            None => (EventOutcome::Pending, None, None),
            Some(Ok(())) => (EventOutcome::Applied, None, None),
            Some(Err(rejection)) => (
                EventOutcome::Rejected,
                Some(rejection.code.as_str().to_owned()),
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
            event: envelope.as_ref().and_then(EventObject::of_envelope),
        })
    }

    /// `GET /v1/checkpoint`.
    pub async fn checkpoint(&self) -> Result<CheckpointReply, QueryError> {
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
pub fn totals_csv(rows: &[TotalRow]) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record([
        "scope",
        "key",
        "name",
        "kind",
        "currency",
        "amount",
        "usd_equivalent",
        "unconverted",
    ])?;
    for row in rows {
        writer.write_record([
            row.scope.as_str(),
            &row.key,
            &row.name,
            &row.kind,
            &row.currency,
            &row.amount,
            &row.usd_equivalent,
            &row.unconverted,
        ])?;
    }
    writer
        .into_inner()
        .map_err(|err| csv::Error::from(err.into_error()))
}
