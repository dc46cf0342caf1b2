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
    CheckpointReply, Dimension, EventObject, EventOutcome, EventReply, FlowAllocation, FlowItem,
    FlowsCursor, FlowsReply, InKindReply, ItemQuantity, Period, Periods, PledgeLineReply,
    PledgeReply, PledgesCursor, PledgesReply, QueryParamError, RejectionItem, RejectionsReply,
    SummaryQuery, SummaryReply, SummarySums, TotalsParams, TotalsQuery, TotalsReply, item_rows,
    parse_limit, total_rows,
};
use fundflow_domain::money::format_at_scale;
use fundflow_domain::{CellLevel, ModelState, Node, Scope, TotalKind};
use fundflow_domain::{currency_code, minor_unit};
use fundflow_log::EventLog;
use fundflow_projector::{
    FlowQuery, FlowRecord, FlowStatus, PledgeFilter, ProjectorError, ReadModel,
};
use fundflow_proto::{Message, v1};
use rust_decimal::Decimal;

/// The query of `GET /v1/totals`: the API's parameters and the reply's format.
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
    /// A comma list of dimensions.
    pub group_by: Option<String>,
    /// A partner id.
    pub partner: Option<String>,
    /// A grant id.
    pub grant: Option<String>,
    /// A sector.
    pub sector: Option<String>,
    /// A donor.
    pub donor: Option<String>,
    /// The first `occurred_on` counted.
    pub from: Option<String>,
    /// The last `occurred_on` counted.
    pub to: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

impl TotalsFilter {
    /// The API's parameters, without the format.
    pub fn params(&self) -> TotalsParams {
        TotalsParams {
            scope: self.scope.clone(),
            kind: self.kind.clone(),
            currency: self.currency.clone(),
            key: self.key.clone(),
            group_by: self.group_by.clone(),
            partner: self.partner.clone(),
            grant: self.grant.clone(),
            sector: self.sector.clone(),
            donor: self.donor.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
        }
    }
}

/// The query of `GET /v1/flows` (and `fundflow flows`), as strings, validated by
/// [`Queries::flows`].
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowsParams {
    /// `pledged`, `paid`, `parallel_funding` or `in_kind`.
    pub kind: Option<String>,
    /// A partner id.
    pub partner: Option<String>,
    /// A country, ISO 3166-1 alpha-2 or alpha-3.
    pub country: Option<String>,
    /// An M49 area: flows to it and to every node in it.
    pub region: Option<String>,
    /// A grant id.
    pub grant: Option<String>,
    /// A donor.
    pub donor: Option<String>,
    /// A sector.
    pub sector: Option<String>,
    /// The first `occurred_on`.
    pub from: Option<String>,
    /// The last `occurred_on`.
    pub to: Option<String>,
    /// `applied` (default), `reversed` or `all`.
    pub status: Option<String>,
    /// Flows per page, 1 to 1,000 (default 100).
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// The query of `GET /v1/pledges` (and `fundflow pledges`).
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PledgesParams {
    /// A partner id.
    pub partner: Option<String>,
    /// A pledge id (the grant).
    pub grant: Option<String>,
    /// A sector.
    pub sector: Option<String>,
    /// `open`, `paid` or `all` (default).
    pub status: Option<String>,
    /// The first `occurred_on` of a pledge.
    pub from: Option<String>,
    /// The last `occurred_on` of a pledge.
    pub to: Option<String>,
    /// Pledges per page, 1 to 1,000 (default 100).
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// The query of `GET /v1/rejections`.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectionsParams {
    /// Rejections per page, 1 to 1,000 (default 100).
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// The query of `GET /v1/summary`.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryParams {
    /// The first day counted.
    pub from: Option<String>,
    /// The last day counted.
    pub to: Option<String>,
}

/// Why a read has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A query parameter breaks its rule; the client fixes the request.
    #[error("{detail}")]
    InvalidFilter {
        /// `invalid_scope`, `invalid_group_by`, `invalid_date`, ... (see the OpenAPI document).
        code: &'static str,
        /// The parameter, as the API names it.
        parameter: &'static str,
        /// The parameter and its rule, in one sentence that starts with the parameter's name.
        detail: String,
    },
    /// Nothing by that id (as of the checkpoint the message names).
    #[error("{0}")]
    NotFound(String),
    /// The read model or the log cannot be read now; the client may ask again.
    #[error("{0}")]
    Unavailable(String),
}

impl From<QueryParamError> for QueryError {
    fn from(err: QueryParamError) -> QueryError {
        QueryError::InvalidFilter {
            code: err.code,
            parameter: err.parameter,
            detail: err.detail,
        }
    }
}

/// The read side. Cheap to clone.
#[derive(Clone)]
pub struct Queries {
    model: ReadModel,
    /// The log, for single events; `None` for a stopped data directory read offline.
    log: Option<EventLog>,
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
            log: Some(log),
            digest: Arc::new(Mutex::new(None)),
        }
    }

    /// Reads from a read model alone (a stopped data directory, for the CLI): every query but
    /// single events, which need the log.
    pub fn offline(model: ReadModel) -> Queries {
        Queries {
            model,
            log: None,
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

    pub(crate) async fn model_digest(&self, seq: u64) -> Result<Option<String>, QueryError> {
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

    /// `GET /v1/totals`: today's rows from the direct totals when the query asks nothing more,
    /// else the cells of the coarsest level that answers it, grouped by the API's own code (the
    /// code a replay runs, so both give the same rows); with the dimensions grouped by, for a
    /// CSV's columns.
    pub async fn totals_grouped(
        &self,
        params: &TotalsParams,
    ) -> Result<(TotalsReply, Vec<Dimension>), QueryError> {
        let query = TotalsQuery::parse(params)?;
        let (checkpoint, rows) = if query.is_plain() {
            let state = self.snapshot().await?;
            let rows = total_rows(&state, query.scope)
                .into_iter()
                .filter(|row| query.kind.is_none_or(|k| row.kind == k.as_str()))
                .filter(|row| {
                    query
                        .currency
                        .is_none_or(|c| row.currency == currency_code(c))
                })
                .filter(|row| query.key.as_deref().is_none_or(|k| row.key == k))
                .collect();
            (state.checkpoint, rows)
        } else {
            let model = self.model.clone();
            let query = query.clone();
            tokio::task::spawn_blocking(move || {
                let cells = model
                    .cells(
                        query.level(),
                        ranges(query.periods()),
                        query.partner.as_deref(),
                    )
                    .map_err(unavailable)?;
                let decoded: Vec<_> = cells
                    .iter()
                    .collect::<Result<_, _>>()
                    .map_err(unavailable)?;
                let rows = fundflow_api::grouped_total_rows(decoded, &query)
                    .map_err(|err| QueryError::Unavailable(err.to_string()))?;
                Ok::<_, QueryError>((cells.checkpoint, rows))
            })
            .await
            .map_err(join_failed)??
        };
        let seq = checkpoint.last_seq;
        let reply = TotalsReply {
            as_of_seq: seq,
            log_digest: hex::encode(checkpoint.log_digest),
            model_digest: self.model_digest(seq).await?,
            rows,
        };
        Ok((reply, query.group_by))
    }

    /// [`Queries::totals_grouped`]'s reply.
    pub async fn totals(&self, params: &TotalsParams) -> Result<TotalsReply, QueryError> {
        Ok(self.totals_grouped(params).await?.0)
    }

    /// `GET /v1/flows`: a page of the flows behind the totals, newest `occurred_on` first. A
    /// first page is answered as of the current checkpoint; its cursor pins that seq, so the
    /// following pages read the same snapshot (the flows' storage is append-only) and no flow
    /// comes twice or goes missing while events arrive. `own` is a partner principal's id: it
    /// sees its own flows only.
    pub async fn flows(
        &self,
        params: &FlowsParams,
        own: Option<&str>,
    ) -> Result<FlowsReply, QueryError> {
        let query = FlowsQuery::parse(params)?;
        let model = self.model.clone();
        let own = own.map(str::to_owned);
        tokio::task::spawn_blocking(move || flows_page(&model, &query, own))
            .await
            .map_err(join_failed)?
    }

    /// Every applied flow the filters of `params` select, at one checkpoint (its status, limit
    /// and cursor are the export's own): what the IATI and FTS exports are written from. At
    /// most [`EXPORT_FLOWS_MAX`], so that an export's memory is bounded; a larger selection is
    /// refused with a request to narrow it.
    pub async fn export_flows(&self, params: &FlowsParams) -> Result<FlowsReply, QueryError> {
        let mut query = FlowsQuery::parse(&FlowsParams {
            status: None,
            limit: None,
            cursor: None,
            format: None,
            ..params.clone()
        })?;
        query.limit = fundflow_api::PAGE_LIMIT_MAX;
        let model = self.model.clone();
        tokio::task::spawn_blocking(move || {
            let mut first = flows_page(&model, &query, None)?;
            let as_of_seq = first.as_of_seq;
            while let Some(cursor) = first.next_cursor.take() {
                if first.flows.len() >= EXPORT_FLOWS_MAX {
                    return Err(param_error(
                        "export_too_large",
                        "from",
                        format!(
                            "the export would hold more than {EXPORT_FLOWS_MAX} flows; narrow it with from and to or a filter"
                        ),
                    ));
                }
                query.after = Some(FlowsCursor::decode(&cursor)?);
                let next = flows_page(&model, &query, None)?;
                first.flows.extend(next.flows);
                first.next_cursor = next.next_cursor;
            }
            first.as_of_seq = as_of_seq;
            Ok(first)
        })
        .await
        .map_err(join_failed)?
    }

    /// `GET /v1/pledges`: a page of the pledge book in (partner, pledge id) order, each pledge
    /// with the parallel funding that names it as its grant. `own` as for [`Queries::flows`].
    pub async fn pledges(
        &self,
        params: &PledgesParams,
        own: Option<&str>,
    ) -> Result<PledgesReply, QueryError> {
        let query = PledgesQuery::parse(params)?;
        let model = self.model.clone();
        let own = own.map(str::to_owned);
        tokio::task::spawn_blocking(move || pledges_page(&model, &query, own))
            .await
            .map_err(join_failed)?
    }

    /// `GET /v1/summary`: the figures at a glance for a period, from one snapshot of the
    /// model, by the code a replay runs: a period of whole years from the years' summary parts,
    /// any other from its cells and quantities; the outcomes from the counts per day.
    pub async fn summary(
        &self,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<SummaryReply, QueryError> {
        let query = SummaryQuery::parse(from, to)?;
        let model = self.model.clone();
        tokio::task::spawn_blocking(move || {
            model.read(|snapshot| {
                let outcomes = snapshot
                    .day_outcomes(query.period.from, query.period.to)
                    .map_err(unavailable)?;
                if query.on_year_boundaries() {
                    let years = ranges(query.period.periods(CellLevel::Year));
                    let parts = snapshot.summary_parts(years).map_err(unavailable)?;
                    let mut sums = SummarySums::default();
                    for part in parts.iter() {
                        let (_, part) = part.map_err(unavailable)?;
                        sums.add(part)
                            .map_err(|err| QueryError::Unavailable(err.to_string()))?;
                    }
                    let seq = parts.checkpoint.last_seq;
                    return sums
                        .reply(outcomes, &query, seq)
                        .map_err(|err| QueryError::Unavailable(err.to_string()));
                }
                let cells = snapshot
                    .cells(query.level(), ranges(query.periods()), None)
                    .map_err(unavailable)?;
                let months = match query.periods() {
                    None => None,
                    Some(_) => ranges(query.period.periods(CellLevel::Month)),
                };
                let quantities = snapshot.quantity_cells(months, None).map_err(unavailable)?;
                let cells: Vec<_> = cells
                    .iter()
                    .collect::<Result<_, _>>()
                    .map_err(unavailable)?;
                let quantities: Vec<_> = quantities
                    .iter()
                    .collect::<Result<_, _>>()
                    .map_err(unavailable)?;
                let seq = snapshot.checkpoint().map_err(unavailable)?.last_seq;
                fundflow_api::summary(cells, quantities, outcomes, &query, seq)
                    .map_err(|err| QueryError::Unavailable(err.to_string()))
            })
        })
        .await
        .map_err(join_failed)?
    }

    /// `GET /v1/rejections`: a page of the rejected records, newest first, from one snapshot.
    /// The cursor is the seq the next page starts below; rejections are only ever added at
    /// higher seqs, so later pages neither repeat nor miss one.
    pub async fn rejections(
        &self,
        params: &RejectionsParams,
    ) -> Result<RejectionsReply, QueryError> {
        let limit = parse_limit(params.limit.as_deref())?;
        let before = params
            .cursor
            .as_deref()
            .map(|text| {
                text.parse::<u64>().map_err(|_| QueryError::InvalidFilter {
                    code: "invalid_cursor",
                    parameter: "cursor",
                    detail: format!("cursor: {text:?} is not a cursor this route returned"),
                })
            })
            .transpose()?;
        let model = self.model.clone();
        tokio::task::spawn_blocking(move || {
            model.read(|snapshot| {
                // One more than a page tells whether there is a next one.
                let mut rejected = snapshot
                    .rejections(before, limit + 1)
                    .map_err(unavailable)?;
                let more = rejected.len() > limit;
                rejected.truncate(limit);
                let checkpoint = snapshot.checkpoint().map_err(unavailable)?;
                let next_cursor = more
                    .then(|| rejected.last().map(|r| r.seq.to_string()))
                    .flatten();
                Ok(RejectionsReply {
                    as_of_seq: checkpoint.last_seq,
                    rejections: rejected
                        .into_iter()
                        .map(|r| RejectionItem {
                            seq: r.seq,
                            event_id: r.event_id,
                            partner: r.partner_id,
                            code: r.rejection.code.as_str().to_owned(),
                            field: r.rejection.field,
                            message: r.rejection.message,
                        })
                        .collect(),
                    next_cursor,
                })
            })
        })
        .await
        .map_err(join_failed)?
    }

    /// `GET /v1/in-kind`.
    pub async fn in_kind(&self, scope: Option<&str>) -> Result<InKindReply, QueryError> {
        let scope = match scope {
            None => None,
            Some(name) => Some(Scope::parse(name).ok_or_else(|| QueryError::InvalidFilter {
                code: "invalid_scope",
                parameter: "scope",
                detail: format!("scope: {name:?} is not a scope"),
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
        let (mut pledged, mut paid) = (Decimal::ZERO, Decimal::ZERO);
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
        let log = self.log.as_ref().ok_or_else(|| {
            QueryError::Unavailable("this process has no log to read events from".into())
        })?;
        let record = log
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

/// Which flows' status a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// Flows that count (the default).
    Applied,
    /// Flows undone by a reversal.
    Reversed,
    /// Both.
    All,
}

/// A validated `GET /v1/flows` query.
#[derive(Debug, Clone)]
pub struct FlowsQuery {
    /// Only flows of this kind.
    pub kind: Option<TotalKind>,
    /// Only this partner's.
    pub partner: Option<String>,
    /// Only flows with an allocation to this country.
    pub country: Option<Node>,
    /// Only flows with an allocation to this area or to a node in it.
    pub region: Option<Node>,
    /// Only this grant's.
    pub grant: Option<String>,
    /// Only this donor's.
    pub donor: Option<String>,
    /// Only this sector's.
    pub sector: Option<String>,
    /// Only flows that occurred in this period.
    pub period: Period,
    /// Which statuses.
    pub status: StatusFilter,
    /// Flows per page.
    pub limit: usize,
    /// Where the previous page ended, and the seq it was answered as of.
    pub after: Option<FlowsCursor>,
}

/// The most flows an IATI or FTS export holds (see [`Queries::export_flows`]).
pub const EXPORT_FLOWS_MAX: usize = 250_000;

fn param_error(code: &'static str, parameter: &'static str, rule: String) -> QueryError {
    QueryError::InvalidFilter {
        code,
        parameter,
        detail: format!("{parameter}: {rule}"),
    }
}

fn parse_kind(text: Option<&str>) -> Result<Option<TotalKind>, QueryError> {
    text.map(|name| {
        TotalKind::parse(name).ok_or_else(|| {
            let names = TotalKind::ALL.map(TotalKind::as_str).join(", ");
            param_error(
                "invalid_kind",
                "kind",
                format!("{name:?} is not one of {names}"),
            )
        })
    })
    .transpose()
}

fn parse_partner(text: Option<&str>) -> Result<Option<String>, QueryError> {
    match text {
        Some(partner) if !fundflow_domain::wire::is_valid_partner_id(partner) => Err(param_error(
            "invalid_partner",
            "partner",
            format!("{partner:?} is not a partner id ([a-z0-9][a-z0-9-]{{0,63}})"),
        )),
        other => Ok(other.map(str::to_owned)),
    }
}

impl FlowsQuery {
    /// Validates `params`; each error names its parameter and the rule.
    pub fn parse(params: &FlowsParams) -> Result<FlowsQuery, QueryError> {
        let country = params
            .country
            .as_deref()
            .map(|code| {
                let alpha3 = match code.len() {
                    2 => fundflow_refdata::country_by_alpha2(code)
                        .and_then(|i| fundflow_refdata::COUNTRIES.get(usize::from(i)))
                        .map(|c| c.alpha3),
                    _ => Some(code),
                };
                alpha3.and_then(Node::country).ok_or_else(|| {
                    param_error(
                        "invalid_country",
                        "country",
                        format!("{code:?} is not an ISO 3166-1 alpha-2 or alpha-3 country code"),
                    )
                })
            })
            .transpose()?;
        let region = params
            .region
            .as_deref()
            .map(|code| {
                Node::region(code).ok_or_else(|| {
                    param_error(
                        "invalid_region",
                        "region",
                        format!("{code:?} is not a UN M49 area code (three digits)"),
                    )
                })
            })
            .transpose()?;
        let status = match params.status.as_deref() {
            None | Some("applied") => StatusFilter::Applied,
            Some("reversed") => StatusFilter::Reversed,
            Some("all") => StatusFilter::All,
            Some(other) => {
                return Err(param_error(
                    "invalid_status",
                    "status",
                    format!("{other:?} is not applied, reversed or all"),
                ));
            }
        };
        Ok(FlowsQuery {
            kind: parse_kind(params.kind.as_deref())?,
            partner: parse_partner(params.partner.as_deref())?,
            country,
            region,
            grant: params.grant.clone(),
            donor: params.donor.clone(),
            sector: params.sector.clone(),
            period: Period::parse(params.from.as_deref(), params.to.as_deref())?,
            status,
            limit: parse_limit(params.limit.as_deref())?,
            after: params
                .cursor
                .as_deref()
                .map(FlowsCursor::decode)
                .transpose()?,
        })
    }
}

/// Which pledges the book lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PledgeStatus {
    /// Something is outstanding.
    Open,
    /// Paid in full.
    Paid,
    /// Both (the default).
    All,
}

/// A validated `GET /v1/pledges` query.
#[derive(Debug, Clone)]
pub struct PledgesQuery {
    /// Only this partner's.
    pub partner: Option<String>,
    /// Only this pledge id.
    pub grant: Option<String>,
    /// Only this sector's.
    pub sector: Option<String>,
    /// Open, paid or all.
    pub status: PledgeStatus,
    /// Only pledges that occurred in this period.
    pub period: Period,
    /// Pledges per page.
    pub limit: usize,
    /// Where the previous page ended.
    pub after: Option<PledgesCursor>,
}

impl PledgesQuery {
    /// Validates `params`; each error names its parameter and the rule.
    pub fn parse(params: &PledgesParams) -> Result<PledgesQuery, QueryError> {
        let status = match params.status.as_deref() {
            None | Some("all") => PledgeStatus::All,
            Some("open") => PledgeStatus::Open,
            Some("paid") => PledgeStatus::Paid,
            Some(other) => {
                return Err(param_error(
                    "invalid_status",
                    "status",
                    format!("{other:?} is not open, paid or all"),
                ));
            }
        };
        Ok(PledgesQuery {
            partner: parse_partner(params.partner.as_deref())?,
            grant: params.grant.clone(),
            sector: params.sector.clone(),
            status,
            period: Period::parse(params.from.as_deref(), params.to.as_deref())?,
            limit: parse_limit(params.limit.as_deref())?,
            after: params
                .cursor
                .as_deref()
                .map(PledgesCursor::decode)
                .transpose()?,
        })
    }
}

/// The read model's period ranges (years, or `Month.0`) for the API's planned periods.
fn ranges(periods: Option<Periods>) -> Option<std::ops::RangeInclusive<u32>> {
    let year = |y: i32| u32::try_from(y).unwrap_or(0);
    match periods? {
        Periods::Years { first, last } => Some(first.map_or(0, year)..=last.map_or(u32::MAX, year)),
        Periods::Months { first, last } => {
            Some(first.map_or(0, |m| m.0)..=last.map_or(u32::MAX, |m| m.0))
        }
    }
}

/// One page of flows; see [`Queries::flows`].
fn flows_page(
    model: &ReadModel,
    query: &FlowsQuery,
    own: Option<String>,
) -> Result<FlowsReply, QueryError> {
    let as_of_seq = match &query.after {
        Some(cursor) => cursor.as_of_seq,
        None => {
            model
                .checkpoint()
                .map_err(unavailable)?
                .unwrap_or_default()
                .last_seq
        }
    };
    let node = match (query.country, query.region) {
        // A country outside the region named too has no flow in both.
        (Some(country), Some(region)) if !country.rollup().any(|n| n == region) => {
            return Ok(FlowsReply {
                as_of_seq,
                flows: Vec::new(),
                next_cursor: None,
            });
        }
        (Some(country), _) => Some(country),
        (None, region) => region,
    };
    let filter = FlowQuery {
        kind: query.kind,
        partner: own.or_else(|| query.partner.clone()),
        node,
        grant: query.grant.clone(),
        donor: query.donor.clone(),
        sector: query.sector.clone(),
        from: query.period.from,
        to: query.period.to,
        status: match query.status {
            StatusFilter::Applied => FlowStatus::Applied,
            StatusFilter::Reversed => FlowStatus::Reversed,
            StatusFilter::All => FlowStatus::All,
        },
    };
    let after = query.after.as_ref().map(|c| (c.occurred_on, c.seq));
    let (records, next) = model
        .flows(&filter, as_of_seq, after, query.limit)
        .map_err(unavailable)?;
    let flows = records
        .iter()
        .map(flow_item)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(FlowsReply {
        as_of_seq,
        flows,
        next_cursor: next.map(|(occurred_on, seq)| {
            FlowsCursor {
                as_of_seq,
                occurred_on,
                seq,
            }
            .encode()
        }),
    })
}

/// A stored flow as the API shows it: the envelope's own fields, and what the fold decided
/// that the envelope does not say (the kind, a payment's inherited grant, sector and donor,
/// the USD equivalents, the reversal).
fn flow_item(record: &FlowRecord) -> Result<FlowItem, QueryError> {
    let corrupt = |what: &str| {
        QueryError::Unavailable(format!(
            "the read model's flow at seq {} is unreadable ({what}); rebuild it",
            record.seq
        ))
    };
    let envelope = record.decode_envelope().map_err(unavailable)?;
    let kind = record.kind().ok_or_else(|| corrupt("kind"))?;
    let occurred_on = record.occurred_on().ok_or_else(|| corrupt("date"))?;
    let currency = u16::try_from(record.currency)
        .map(currency_code)
        .map_err(|_| corrupt("currency"))?;
    let scale = minor_unit(currency);
    let usd = |d: Decimal| format_at_scale(d, fundflow_domain::money::USD_SCALE);
    let (event_type, own_id, flow, description) = match &envelope.body {
        Some(v1::envelope::Body::PledgeRecorded(b)) => {
            ("pledge_recorded", &b.pledge_id, &b.flow, &b.description)
        }
        Some(v1::envelope::Body::ContributionPaid(b)) => {
            ("contribution_paid", &b.payment_id, &b.flow, &b.description)
        }
        Some(v1::envelope::Body::ParallelFundingMobilized(b)) => (
            "parallel_funding_mobilized",
            &b.funding_id,
            &b.flow,
            &b.description,
        ),
        Some(v1::envelope::Body::InKindDonationRecorded(b)) => (
            "in_kind_donation_recorded",
            &b.donation_id,
            &b.flow,
            &b.description,
        ),
        _ => return Err(corrupt("not a flow")),
    };
    let flow = flow.as_ref().ok_or_else(|| corrupt("no flow"))?;
    let given = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    let money = |text: &str| {
        fundflow_domain::money::parse_decimal(text)
            .map(|d| format_at_scale(d, scale))
            .map_err(|_| corrupt("amount"))
    };
    let usd_of = record.allocation_usd().collect::<Vec<_>>();
    let nodes = record.recipients().collect::<Vec<_>>();
    let allocations = flow
        .allocations
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let node = nodes
                .get(i)
                .copied()
                .flatten()
                .ok_or_else(|| corrupt("recipient"))?;
            Ok(FlowAllocation {
                scope: node.scope(),
                key: node.key().to_owned(),
                name: node.name().to_owned(),
                organisation: a.organisation.clone(),
                value: money(&a.value)?,
                usd_equivalent: usd_of.get(i).copied().flatten().map(usd),
                items: a
                    .items
                    .iter()
                    .map(|item| ItemQuantity {
                        item: item.item.clone(),
                        unit: item.unit.clone(),
                        quantity: fundflow_domain::money::parse_decimal(&item.quantity)
                            .map(fundflow_domain::money::format_quantity)
                            .unwrap_or_else(|_| item.quantity.clone()),
                    })
                    .collect(),
            })
        })
        .collect::<Result<Vec<_>, QueryError>>()?;
    let reversed = record.is_reversed();
    Ok(FlowItem {
        seq: record.seq,
        event_id: envelope.event_id.clone(),
        partner: record.partner.clone(),
        event_type: event_type.to_owned(),
        own_id: own_id.clone(),
        kind: kind.as_str().to_owned(),
        occurred_on: occurred_on.to_string(),
        recorded_at: envelope.recorded_at.clone(),
        donor: record.donor.clone(),
        grant: record.grant.clone(),
        sector: record.sector.clone(),
        description: description.clone(),
        currency: currency.to_owned(),
        amount: money(flow.amount.as_ref().map_or("", |m| m.value.as_str()))?,
        usd_rate: given(&flow.usd_rate).or_else(|| (currency == "USD").then(|| "1".to_owned())),
        usd_rate_date: given(&flow.usd_rate_date),
        usd_rate_source: given(&flow.usd_rate_source),
        usd_equivalent: record.usd_equivalent().map(usd),
        status: if reversed {
            fundflow_api::FlowStatus::Reversed
        } else {
            fundflow_api::FlowStatus::Applied
        },
        reversed_by: reversed.then(|| record.reversed_by.clone()),
        reversed_seq: reversed.then_some(record.reversed_seq),
        reason: reversed.then(|| record.reason.clone()),
        allocations,
    })
}

/// One page of the pledge book; see [`Queries::pledges`].
fn pledges_page(
    model: &ReadModel,
    query: &PledgesQuery,
    own: Option<String>,
) -> Result<PledgesReply, QueryError> {
    let filter = PledgeFilter {
        partner: own.or_else(|| query.partner.clone()),
        grant: query.grant.clone(),
        sector: query.sector.clone(),
        status: match query.status {
            PledgeStatus::Open => fundflow_projector::PledgeStatus::Open,
            PledgeStatus::Paid => fundflow_projector::PledgeStatus::Paid,
            PledgeStatus::All => fundflow_projector::PledgeStatus::All,
        },
        from: query.period.from,
        to: query.period.to,
    };
    let after = query
        .after
        .as_ref()
        .map(|c| (c.partner.clone(), c.pledge_id.clone()));
    model.read(|snapshot| {
        let as_of_seq = snapshot.checkpoint().map_err(unavailable)?.last_seq;
        let (rows, next) = snapshot
            .pledges(&filter, after.as_ref(), query.limit)
            .map_err(unavailable)?;
        let mut pledges = Vec::with_capacity(rows.len());
        for row in &rows {
            let funding = snapshot
                .grant_funding(&row.pledge_id)
                .map_err(unavailable)?;
            pledges.push(
                fundflow_api::pledge_item(row, &funding)
                    .map_err(|err| QueryError::Unavailable(err.to_string()))?,
            );
        }
        Ok(PledgesReply {
            as_of_seq,
            pledges,
            next_cursor: next.map(|(partner, pledge_id)| {
                PledgesCursor {
                    as_of_seq,
                    partner,
                    pledge_id,
                }
                .encode()
            }),
        })
    })
}
