//! The fold: a pure, deterministic state machine from the log's records to exact totals.
//!
//! [`Ledger::apply`] takes a sequence number and the bytes of one log record and returns an
//! [`Outcome`]: `Applied`, or `Rejected` with a code. It never panics, never reads the clock, and
//! either applies an event completely or leaves the state exactly as it was (an overflow found
//! half-way is rolled back). Replaying the same records therefore gives the same state, totals
//! and digests on every machine.
//!
//! What is kept, and why:
//! - totals per (node, kind, currency), where a node is a country or an M49 area: an event adds
//!   each allocation to its recipient and to every area above it, so a region's total is kept,
//!   never summed at query time;
//! - in-kind quantities per (node, item, unit), rolled up the same way;
//! - pledges with pledged and paid amounts per recipient, to refuse over-payments;
//! - every event's identity, content fingerprint and state, to refuse repeats and to reverse;
//! - the effect of every applied event, so a reversal undoes exactly what the event did.

use fundflow_proto::Message;
use fundflow_proto::v1;
use fundflow_refdata::{CURRENCIES, CurrencyIndex};
use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};
use std::collections::hash_map::Entry;

use crate::event::{self, Event, EventBody, Flow};
use crate::limits;
use crate::model::{DirectQuantity, ModelState, PledgeRow};
use crate::node::{Node, Scope};
use crate::reject::{RejectCode, Rejection};

/// A SHA-256 digest.
pub type Digest32 = [u8; 32];

/// What became of one record of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The event changed the ledger.
    Applied,
    /// The event changed nothing but its own outcome; the rejection says why.
    Rejected(Rejection),
}

impl Outcome {
    /// The rejection code, or `None` when applied.
    pub fn code(&self) -> Option<RejectCode> {
        match self {
            Outcome::Applied => None,
            Outcome::Rejected(r) => Some(r.code),
        }
    }
}

/// The four kinds of total a flow can count towards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TotalKind {
    /// Promised (`PledgeRecorded`).
    Pledged,
    /// Paid (`ContributionPaid`).
    Paid,
    /// Mobilized alongside grants (`ParallelFundingMobilized`).
    ParallelFunding,
    /// Value of goods donated (`InKindDonationRecorded`).
    InKind,
}

impl TotalKind {
    /// Every kind, in report order.
    pub const ALL: [TotalKind; 4] = [
        TotalKind::Pledged,
        TotalKind::Paid,
        TotalKind::ParallelFunding,
        TotalKind::InKind,
    ];

    /// The name used in the API, reports and the model digest.
    pub fn as_str(self) -> &'static str {
        match self {
            TotalKind::Pledged => "pledged",
            TotalKind::Paid => "paid",
            TotalKind::ParallelFunding => "parallel_funding",
            TotalKind::InKind => "in_kind",
        }
    }

    /// The kind named `name`, the inverse of [`TotalKind::as_str`].
    pub fn parse(name: &str) -> Option<TotalKind> {
        TotalKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// One total: the amount in its currency, split into what was converted to USD and what was not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Total {
    /// Everything, in the row's currency.
    pub amount: Decimal,
    /// The USD equivalent of the converted part (the sum of per-allocation conversions).
    pub usd_equivalent: Decimal,
    /// The part of `amount` that came without a USD rate, in the row's currency.
    pub unconverted: Decimal,
}

impl Total {
    fn of(value: Decimal, usd: Option<Decimal>) -> Total {
        match usd {
            Some(usd) => Total {
                amount: value,
                usd_equivalent: usd,
                unconverted: Decimal::ZERO,
            },
            None => Total {
                amount: value,
                usd_equivalent: Decimal::ZERO,
                unconverted: value,
            },
        }
    }

    fn checked(self, other: Total, sign: Sign) -> Option<Total> {
        let op = |a: Decimal, b: Decimal| match sign {
            _ if b.is_zero() => Some(a),
            Sign::Add => a.checked_add(b),
            Sign::Subtract => a.checked_sub(b),
        };
        Some(Total {
            amount: op(self.amount, other.amount)?,
            usd_equivalent: op(self.usd_equivalent, other.usd_equivalent)?,
            unconverted: op(self.unconverted, other.unconverted)?,
        })
    }

    fn within(&self, max: Decimal) -> bool {
        self.amount <= max && self.usd_equivalent <= max
    }

    pub(crate) fn saturating_add(self, other: &Total) -> Total {
        Total {
            amount: self.amount.saturating_add(other.amount),
            usd_equivalent: self.usd_equivalent.saturating_add(other.usd_equivalent),
            unconverted: self.unconverted.saturating_add(other.unconverted),
        }
    }

    fn is_zero(&self) -> bool {
        self.amount.is_zero() && self.usd_equivalent.is_zero() && self.unconverted.is_zero()
    }
}

/// The key of a total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TotalKey {
    /// The country or area.
    pub node: Node,
    /// What the total counts.
    pub kind: TotalKind,
    /// The currency, an index into `fundflow_refdata::CURRENCIES`.
    pub currency: CurrencyIndex,
}

/// The key of an in-kind quantity: interned item and unit names, see [`Ledger::item_name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QuantityKey {
    /// The country or area.
    pub node: Node,
    /// Interned item name.
    pub item: u32,
    /// Interned unit name.
    pub unit: u32,
}

/// The identity of an event: partner and UUID. Split into two `u64` halves so that the key stays
/// 8-byte aligned (24 bytes, not 32) in the largest map the ledger keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct EventKey {
    partner: u32,
    id_high: u64,
    id_low: u64,
}

impl EventKey {
    fn new(partner: u32, id: u128) -> EventKey {
        // Splitting a u128 into its halves: the truncation is the point.
        #[allow(clippy::cast_possible_truncation)]
        EventKey {
            partner,
            id_high: (id >> 64) as u64,
            id_low: id as u64,
        }
    }
}

/// What the ledger remembers of every event with a valid identity.
#[derive(Debug, Clone, Copy)]
struct EventEntry {
    /// Where the event is in the log.
    seq: u64,
    /// Hash of the content (all but `event_id` and `recorded_at`), to tell a harmless resend
    /// (`duplicate`) from a reused key (`event_id_conflict`).
    fingerprint: u64,
    state: EntryState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryState {
    Rejected,
    /// Applied; its effect is `effects[index]`.
    Applied(u32),
    Reversed,
    /// An applied `EventReversed`.
    Reversal,
}

/// What an applied event did, kept so that its reversal can undo exactly that.
#[derive(Debug, Clone, Default)]
struct Effect {
    kind: Option<TotalKind>,
    currency: CurrencyIndex,
    parts: Box<[Part]>,
    items: Box<[ItemPart]>,
    pledge: Option<PledgeLink>,
}

#[derive(Debug, Clone, Copy)]
struct Part {
    node: Node,
    value: Decimal,
    usd: Option<Decimal>,
}

#[derive(Debug, Clone, Copy)]
struct ItemPart {
    node: Node,
    item: u32,
    unit: u32,
    quantity: Decimal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PledgeLink {
    Recorded(u32),
    Paid(u32),
}

/// A pledge's state: what was pledged and paid per recipient.
#[derive(Debug, Clone)]
struct PledgeState {
    partner: u32,
    pledge_id: Box<str>,
    currency: CurrencyIndex,
    lines: Vec<PledgeLine>,
    /// Applied, unreversed payments against the pledge; a pledge with any cannot be reversed.
    payments_open: u32,
    /// False once reversed; the id may then be pledged again.
    active: bool,
}

/// What was pledged to, and paid to, one recipient of a pledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PledgeLine {
    /// The recipient.
    pub node: Node,
    /// Promised.
    pub pledged: Decimal,
    /// Paid so far.
    pub paid: Decimal,
}

impl PledgeLine {
    /// What is still to be paid.
    pub fn outstanding(&self) -> Decimal {
        self.pledged - self.paid
    }
}

/// A pledge as the read side sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PledgeView<'a> {
    /// The partner that recorded it.
    pub partner_id: &'a str,
    /// The partner's identifier.
    pub pledge_id: &'a str,
    /// Its currency code.
    pub currency: &'static str,
    /// Per recipient.
    pub lines: &'a [PledgeLine],
}

/// A rejected record, as reports list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedEvent {
    /// Where it is in the log.
    pub seq: u64,
    /// The event id as given (empty when the record could not be decoded).
    pub event_id: String,
    /// The partner as given (empty when the record could not be decoded).
    pub partner_id: String,
    /// Why it was rejected.
    pub rejection: Rejection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sign {
    Add,
    Subtract,
}

/// Interns strings to dense ids, so keys stay small and hashing cheap.
#[derive(Debug, Clone, Default)]
struct Interner {
    ids: FxHashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

impl Interner {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }

    fn get(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |n| n)
    }
}

/// Where a record came from, for checks that need more than its bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Source<'a> {
    /// The partner token of the log subject the record was read from, if the log has subjects:
    /// an envelope naming another partner is rejected (`partner_mismatch`).
    pub subject_partner: Option<&'a str>,
}

/// The ledger's state and its fold. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    last_seq: u64,
    /// SHA-256 chain over (seq, bytes) of every record, in order: the log digest.
    log_digest: Digest32,
    /// SHA-256 chain over (seq, code) of every rejected record: with the counts, it binds every
    /// record's outcome into the model digest (a record not in the chain was applied) without a
    /// hash per applied event.
    rejected_digest: Digest32,
    applied_count: u64,
    rejected_count: u64,
    /// Totals per recipient as allocated; every roll-up is derived from these on read, so an
    /// allocation costs one map update, not one per level.
    direct_totals: FxHashMap<TotalKey, Total>,
    /// In-kind quantities per recipient as allocated, rolled up on read likewise.
    direct_quantities: FxHashMap<QuantityKey, Decimal>,
    events: FxHashMap<EventKey, EventEntry>,
    effects: Vec<Effect>,
    pledges: Vec<PledgeState>,
    /// Active pledges by (partner, interned pledge id) into `pledges`.
    pledge_index: FxHashMap<(u32, u32), u32>,
    pledge_ids: Interner,
    partners: Interner,
    item_names: Interner,
    unit_names: Interner,
    rejected: Vec<RejectedEvent>,
    /// Reused buffer for the content fingerprint's encoding.
    scratch: Vec<u8>,
    /// What changed since the read model last took the changes; `None` when nobody asks.
    dirty: Option<Dirty>,
}

impl Ledger {
    /// An empty ledger, the state before sequence 1.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// An empty ledger with room for about `events` events, for callers that know the log's
    /// length (a replay, a projector at start): the event index and the effects never rehash or
    /// move while it fills. A hint only: more events just grow the maps as usual.
    pub fn with_capacity(events: usize) -> Ledger {
        let events = events.min(limits::CAPACITY_HINT_MAX);
        let mut ledger = Ledger::default();
        ledger.events.reserve(events);
        ledger.effects.reserve(events);
        ledger
    }

    /// Applies the record at `seq`. See [`Ledger::apply_from`].
    pub fn apply(&mut self, seq: u64, bytes: &[u8]) -> Outcome {
        self.apply_from(seq, bytes, Source::default())
    }

    /// Applies the record at `seq` read from `source`. Sequence numbers must increase (gaps are
    /// allowed); a record whose `seq` does not is refused with `sequence_not_increasing` and
    /// changes nothing, not even the digests, since it is a caller's mistake, not log content.
    pub fn apply_from(&mut self, seq: u64, bytes: &[u8], source: Source<'_>) -> Outcome {
        if seq <= self.last_seq {
            return Outcome::Rejected(Rejection::new(
                RejectCode::SequenceNotIncreasing,
                "",
                format_args!(
                    "seq {seq} is not after the last applied seq {}",
                    self.last_seq
                ),
            ));
        }
        self.last_seq = seq;
        self.log_digest = chain_log(&self.log_digest, seq, bytes);
        match self.decide(seq, bytes, source) {
            Ok(()) => {
                self.applied_count += 1;
                Outcome::Applied
            }
            Err(rejected) => {
                self.rejected_count += 1;
                let code = outcome_code(rejected.rejection.code);
                self.rejected_digest = chain_outcome(&self.rejected_digest, seq, code);
                let outcome = Outcome::Rejected(rejected.rejection.clone());
                self.rejected.push(rejected);
                outcome
            }
        }
    }

    /// Decides and applies one record. On rejection nothing but the event index has changed.
    fn decide(&mut self, seq: u64, bytes: &[u8], source: Source<'_>) -> Result<(), RejectedEvent> {
        let unidentified = |rejection| RejectedEvent {
            seq,
            event_id: String::new(),
            partner_id: String::new(),
            rejection,
        };
        if bytes.len() > limits::ENVELOPE_BYTES_MAX {
            let detail = format_args!(
                "{} bytes is more than the limit of {}",
                bytes.len(),
                limits::ENVELOPE_BYTES_MAX
            );
            return Err(unidentified(Rejection::new(
                RejectCode::TooLarge,
                "",
                detail,
            )));
        }
        let mut envelope = v1::Envelope::decode(bytes).map_err(|err| {
            unidentified(Rejection::new(
                RejectCode::Undecodable,
                "",
                format_args!("not a fundflow.v1.Envelope: {err}"),
            ))
        })?;
        let identified = |envelope: &v1::Envelope, rejection| RejectedEvent {
            seq,
            event_id: envelope.event_id.clone(),
            partner_id: envelope.partner_id.clone(),
            rejection,
        };
        if let Some(subject_partner) = source.subject_partner
            && subject_partner != envelope.partner_id
        {
            let rejection = Rejection::new(
                RejectCode::PartnerMismatch,
                "partner_id",
                format_args!(
                    "the envelope names {:?} but was published on the subject of {subject_partner:?}",
                    envelope.partner_id
                ),
            );
            return Err(identified(&envelope, rejection));
        }
        let event_id = match event::identity(&envelope) {
            Ok((_, event_id)) => event_id,
            Err(rejection) => return Err(identified(&envelope, rejection)),
        };
        let partner = self.partners.intern(&envelope.partner_id);
        let key = EventKey::new(partner, event_id);
        let fingerprint = self.fingerprint(&mut envelope, bytes);
        if let Some(earlier) = self.events.get(&key) {
            let rejection = if earlier.fingerprint == fingerprint {
                Rejection::new(
                    RejectCode::Duplicate,
                    "event_id",
                    format_args!("already recorded at seq {}; it counts once", earlier.seq),
                )
            } else {
                Rejection::new(
                    RejectCode::EventIdConflict,
                    "event_id",
                    format_args!(
                        "already used at seq {} for an event with different content",
                        earlier.seq
                    ),
                )
            };
            return Err(identified(&envelope, rejection));
        }
        let result =
            Event::from_envelope(&envelope).and_then(|event| self.apply_event(partner, &event));
        let state = match &result {
            Ok(state) => *state,
            Err(_) => EntryState::Rejected,
        };
        self.events.insert(
            key,
            EventEntry {
                seq,
                fingerprint,
                state,
            },
        );
        result
            .map(drop)
            .map_err(|rejection| identified(&envelope, rejection))
    }

    /// Hashes the envelope's content without `event_id` and `recorded_at` (a resend may carry a
    /// new timestamp, and the id is the key itself). The hash is over the canonical encoding:
    /// for bytes that already are canonical (top-level fields in increasing order, as prost and
    /// every mainstream encoder write them) the raw bytes are hashed minus those two fields;
    /// anything else is re-encoded first. Either way equal content gives an equal hash.
    fn fingerprint(&mut self, envelope: &mut v1::Envelope, bytes: &[u8]) -> u64 {
        if let Some(hash) = fingerprint_canonical(bytes) {
            return hash;
        }
        let event_id = std::mem::take(&mut envelope.event_id);
        let recorded_at = std::mem::take(&mut envelope.recorded_at);
        self.scratch.clear();
        // Encoding into a Vec cannot fail: it grows as needed.
        let _ = envelope.encode(&mut self.scratch);
        envelope.event_id = event_id;
        envelope.recorded_at = recorded_at;
        xxhash_rust::xxh3::xxh3_64(&self.scratch)
    }

    fn apply_event(&mut self, partner: u32, event: &Event<'_>) -> Result<EntryState, Rejection> {
        let (kind, flow, pledge) = match &event.body {
            EventBody::EventReversed { reverses_event_id } => {
                return self.reverse(EventKey::new(partner, *reverses_event_id));
            }
            EventBody::PledgeRecorded { flow, pledge_id } => {
                if self
                    .pledge_key(partner, pledge_id)
                    .is_some_and(|k| self.pledge_index.contains_key(&k))
                {
                    return Err(Rejection::new(
                        RejectCode::PledgeExists,
                        "pledge_id",
                        format_args!("pledge {pledge_id:?} is already recorded"),
                    ));
                }
                (TotalKind::Pledged, flow, None)
            }
            EventBody::ContributionPaid {
                flow,
                pledge_id: Some(pledge_id),
            } => {
                let pledge = self.check_payment(partner, pledge_id, flow)?;
                (TotalKind::Paid, flow, Some(PledgeLink::Paid(pledge)))
            }
            EventBody::ContributionPaid {
                flow,
                pledge_id: None,
            } => (TotalKind::Paid, flow, None),
            EventBody::ParallelFundingMobilized { flow } => {
                (TotalKind::ParallelFunding, flow, None)
            }
            EventBody::InKindDonationRecorded { flow } => (TotalKind::InKind, flow, None),
        };

        let parts: Box<[Part]> = flow
            .allocations
            .iter()
            .map(|a| Part {
                node: a.recipient,
                value: a.value,
                usd: a.usd,
            })
            .collect();
        let items: Box<[ItemPart]> = flow
            .allocations
            .iter()
            .flat_map(|a| a.items.iter().map(move |item| (a.recipient, item)))
            .map(|(node, item)| ItemPart {
                node,
                item: self.item_names.intern(item.item),
                unit: self.unit_names.intern(item.unit),
                quantity: item.quantity,
            })
            .collect();
        let mut effect = Effect {
            kind: Some(kind),
            currency: flow.currency,
            parts,
            items,
            pledge: None,
        };
        self.change(&effect, Sign::Add)?;

        effect.pledge = match (&event.body, pledge) {
            (EventBody::PledgeRecorded { pledge_id, .. }, _) => Some(PledgeLink::Recorded(
                self.record_pledge(partner, pledge_id, flow),
            )),
            (_, Some(PledgeLink::Paid(index))) => {
                self.pay_pledge(index, &effect.parts, Sign::Add);
                Some(PledgeLink::Paid(index))
            }
            _ => None,
        };
        let index = u32::try_from(self.effects.len()).unwrap_or(u32::MAX);
        self.effects.push(effect);
        Ok(EntryState::Applied(index))
    }

    /// Checks a payment against its pledge without changing anything; returns the pledge.
    fn check_payment(
        &self,
        partner: u32,
        pledge_id: &str,
        flow: &Flow<'_>,
    ) -> Result<u32, Rejection> {
        let Some(&index) = self
            .pledge_key(partner, pledge_id)
            .and_then(|k| self.pledge_index.get(&k))
        else {
            return Err(Rejection::new(
                RejectCode::UnknownPledge,
                "pledge_id",
                format_args!("this partner has no pledge {pledge_id:?}"),
            ));
        };
        let pledge = &self.pledges[index as usize];
        if pledge.currency != flow.currency {
            return Err(Rejection::new(
                RejectCode::CurrencyMismatch,
                "amount.currency",
                format_args!(
                    "the payment is in {} but pledge {pledge_id:?} is in {}",
                    currency_code(flow.currency),
                    currency_code(pledge.currency)
                ),
            ));
        }
        // Several allocations may pay the same recipient: check what they add up to.
        let mut due: Vec<Decimal> = vec![Decimal::ZERO; pledge.lines.len()];
        for (i, allocation) in flow.allocations.iter().enumerate() {
            let Some(line) = pledge
                .lines
                .iter()
                .position(|l| l.node == allocation.recipient)
            else {
                return Err(Rejection::new(
                    RejectCode::RecipientNotPledged,
                    format!("allocations[{i}]"),
                    format_args!(
                        "pledge {pledge_id:?} has nothing for {}",
                        allocation.recipient.key()
                    ),
                ));
            };
            due[line] += allocation.value; // Bounded by the event's own checked sum.
            let l = &pledge.lines[line];
            if due[line] > l.outstanding() {
                let minor = u32::from(CURRENCIES[usize::from(pledge.currency)].minor_unit);
                return Err(Rejection::new(
                    RejectCode::Overpaid,
                    format!("allocations[{i}].value"),
                    format_args!(
                        "paying {} to {} exceeds the {} outstanding on pledge {pledge_id:?}",
                        crate::money::format_at_scale(due[line], minor),
                        allocation.recipient.key(),
                        crate::money::format_at_scale(l.outstanding(), minor)
                    ),
                ));
            }
        }
        Ok(index)
    }

    fn record_pledge(&mut self, partner: u32, pledge_id: &str, flow: &Flow<'_>) -> u32 {
        let mut lines: Vec<PledgeLine> = Vec::new();
        for allocation in &flow.allocations {
            match lines.iter_mut().find(|l| l.node == allocation.recipient) {
                // Bounded by the event's own checked sum of allocations.
                Some(line) => line.pledged += allocation.value,
                None => lines.push(PledgeLine {
                    node: allocation.recipient,
                    pledged: allocation.value,
                    paid: Decimal::ZERO,
                }),
            }
        }
        let index = u32::try_from(self.pledges.len()).unwrap_or(u32::MAX);
        self.pledges.push(PledgeState {
            partner,
            pledge_id: pledge_id.into(),
            currency: flow.currency,
            lines,
            payments_open: 0,
            active: true,
        });
        let name = self.pledge_ids.intern(pledge_id);
        self.pledge_index.insert((partner, name), index);
        self.mark_pledge(index);
        index
    }

    fn mark_pledge(&mut self, index: u32) {
        if let Some(dirty) = self.dirty.as_mut() {
            dirty.pledges.insert(index);
        }
    }

    fn pledge_key(&self, partner: u32, pledge_id: &str) -> Option<(u32, u32)> {
        Some((partner, self.pledge_ids.get(pledge_id)?))
    }

    /// Adds (or, for a reversal, removes) a payment's parts to its pledge. The amounts were
    /// checked against the pledge before, so this cannot fail.
    fn pay_pledge(&mut self, index: u32, parts: &[Part], sign: Sign) {
        self.mark_pledge(index);
        let Some(pledge) = self.pledges.get_mut(index as usize) else {
            return;
        };
        for part in parts {
            if let Some(line) = pledge.lines.iter_mut().find(|l| l.node == part.node) {
                match sign {
                    Sign::Add => line.paid += part.value,
                    Sign::Subtract => line.paid -= part.value,
                }
            }
        }
        match sign {
            Sign::Add => pledge.payments_open += 1,
            Sign::Subtract => pledge.payments_open = pledge.payments_open.saturating_sub(1),
        }
    }

    fn reverse(&mut self, target: EventKey) -> Result<EntryState, Rejection> {
        let field = "reverses_event_id";
        let entry = self.events.get(&target).copied().ok_or_else(|| {
            Rejection::new(
                RejectCode::ReversalTargetUnknown,
                field,
                "this partner has no event with that id",
            )
        })?;
        let effect_index = match entry.state {
            EntryState::Applied(index) => index,
            EntryState::Rejected => {
                return Err(Rejection::new(
                    RejectCode::ReversalTargetRejected,
                    field,
                    format_args!(
                        "the event at seq {} was rejected: nothing to undo",
                        entry.seq
                    ),
                ));
            }
            EntryState::Reversed => {
                return Err(Rejection::new(
                    RejectCode::ReversalTargetReversed,
                    field,
                    format_args!("the event at seq {} is already reversed", entry.seq),
                ));
            }
            EntryState::Reversal => {
                return Err(Rejection::new(
                    RejectCode::ReversalOfReversal,
                    field,
                    format_args!(
                        "the event at seq {} is itself a reversal; record the event anew instead",
                        entry.seq
                    ),
                ));
            }
        };
        let effect = std::mem::take(&mut self.effects[effect_index as usize]);
        if let Some(PledgeLink::Recorded(pledge)) = effect.pledge {
            let open = self.pledges[pledge as usize].payments_open;
            if open > 0 {
                self.effects[effect_index as usize] = effect;
                return Err(Rejection::new(
                    RejectCode::PledgeHasPayments,
                    field,
                    format_args!(
                        "the pledge at seq {} still has {open} applied payment(s); reverse them first",
                        entry.seq
                    ),
                ));
            }
        }
        if let Err(rejection) = self.change(&effect, Sign::Subtract) {
            self.effects[effect_index as usize] = effect;
            return Err(rejection);
        }
        match effect.pledge {
            Some(PledgeLink::Recorded(index)) => {
                self.mark_pledge(index);
                let pledge = &mut self.pledges[index as usize];
                pledge.active = false;
                let key = (pledge.partner, pledge.pledge_id.clone());
                if let Some(key) = self.pledge_key(key.0, &key.1) {
                    self.pledge_index.remove(&key);
                }
            }
            Some(PledgeLink::Paid(index)) => self.pay_pledge(index, &effect.parts, Sign::Subtract),
            None => {}
        }
        if let Some(target) = self.events.get_mut(&target) {
            target.state = EntryState::Reversed;
        }
        Ok(EntryState::Reversal)
    }

    /// Adds or subtracts an effect's allocations to their recipients' direct totals and
    /// quantities. All or nothing: if any would pass [`limits::total_max`], what was changed so
    /// far is changed back and the event is rejected as an overflow.
    fn change(&mut self, effect: &Effect, sign: Sign) -> Result<(), Rejection> {
        let Some(kind) = effect.kind else {
            return Ok(());
        };
        let undo = match sign {
            Sign::Add => Sign::Subtract,
            Sign::Subtract => Sign::Add,
        };
        let max = limits::total_max();
        let steps = effect.parts.iter().map(|part| {
            let key = TotalKey {
                node: part.node,
                kind,
                currency: effect.currency,
            };
            (key, Total::of(part.value, part.usd))
        });
        if let Some(dirty) = self.dirty.as_mut() {
            dirty.totals.extend(steps.clone().map(|(key, _)| key));
            dirty
                .quantities
                .extend(effect.items.iter().map(|i| QuantityKey {
                    node: i.node,
                    item: i.item,
                    unit: i.unit,
                }));
        }
        for (done, (key, delta)) in steps.clone().enumerate() {
            if !change_amount(&mut self.direct_totals, key, delta, sign, max) {
                for (key, delta) in steps.take(done) {
                    change_amount(&mut self.direct_totals, key, delta, undo, max);
                }
                return Err(overflow());
            }
        }
        let item_steps = effect.items.iter().map(|i| {
            (
                QuantityKey {
                    node: i.node,
                    item: i.item,
                    unit: i.unit,
                },
                i.quantity,
            )
        });
        for (done, (key, quantity)) in item_steps.clone().enumerate() {
            if !change_amount(&mut self.direct_quantities, key, quantity, sign, max) {
                for (key, quantity) in item_steps.take(done) {
                    change_amount(&mut self.direct_quantities, key, quantity, undo, max);
                }
                for (key, delta) in steps {
                    change_amount(&mut self.direct_totals, key, delta, undo, max);
                }
                return Err(overflow());
            }
        }
        Ok(())
    }

    /// The sequence number of the last record applied (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The log digest: a SHA-256 chain over (seq, bytes) of every record applied.
    pub fn log_digest(&self) -> Digest32 {
        self.log_digest
    }

    /// How many records were applied and rejected.
    pub fn counts(&self) -> (u64, u64) {
        (self.applied_count, self.rejected_count)
    }

    /// What was allocated directly to each recipient, before any roll-up; in no particular order.
    pub fn direct_totals(&self) -> impl Iterator<Item = (&TotalKey, &Total)> {
        self.direct_totals.iter()
    }

    /// What was given directly to each recipient in kind, with item and unit names.
    pub fn direct_quantities(&self) -> impl Iterator<Item = DirectQuantity> + '_ {
        self.direct_quantities.iter().map(|(k, q)| DirectQuantity {
            node: k.node,
            item: self.item_name(k.item).to_owned(),
            unit: self.unit_name(k.unit).to_owned(),
            quantity: *q,
        })
    }

    /// Every nonzero total at every level: each recipient's direct totals added to the recipient
    /// and to every M49 area above it. The cost is bounded by the reference data (countries ×
    /// kinds × currencies), never by the number of events.
    pub fn totals(&self) -> FxHashMap<TotalKey, Total> {
        crate::model::roll_up(
            self.direct_totals.iter().map(|(k, t)| (*k, *t)),
            |k, node| TotalKey { node, ..k },
            |k| k.node,
            |a, b| a.saturating_add(&b),
        )
    }

    /// One total at any level, if nonzero.
    pub fn total(&self, key: &TotalKey) -> Option<Total> {
        let mut sum: Option<Total> = None;
        for (direct, total) in &self.direct_totals {
            if direct.kind == key.kind
                && direct.currency == key.currency
                && direct.node.rollup().any(|n| n == key.node)
            {
                sum = Some(sum.unwrap_or_default().saturating_add(total));
            }
        }
        sum
    }

    /// Every nonzero in-kind quantity at every level, rolled up as [`Ledger::totals`] is.
    pub fn quantities(&self) -> FxHashMap<QuantityKey, Decimal> {
        crate::model::roll_up(
            self.direct_quantities.iter().map(|(k, q)| (*k, *q)),
            |k, node| QuantityKey { node, ..k },
            |k| k.node,
            Decimal::saturating_add,
        )
    }

    /// The name of an interned item id.
    pub fn item_name(&self, id: u32) -> &str {
        self.item_names.name(id)
    }

    /// The name of an interned unit id.
    pub fn unit_name(&self, id: u32) -> &str {
        self.unit_names.name(id)
    }

    /// The quantity of `item` in `unit` at `node` (any level), if any.
    pub fn quantity(&self, node: Node, item: &str, unit: &str) -> Option<Decimal> {
        let (item, unit) = (self.item_names.get(item)?, self.unit_names.get(unit)?);
        let key = QuantityKey { node, item, unit };
        self.quantities().get(&key).copied()
    }

    /// Every active pledge, in no particular order.
    pub fn pledges(&self) -> impl Iterator<Item = PledgeView<'_>> {
        self.pledges
            .iter()
            .filter(|p| p.active)
            .map(|p| self.pledge_view(p))
    }

    /// A partner's active pledge.
    pub fn pledge(&self, partner_id: &str, pledge_id: &str) -> Option<PledgeView<'_>> {
        let partner = self.partners.get(partner_id)?;
        let &index = self
            .pledge_index
            .get(&self.pledge_key(partner, pledge_id)?)?;
        self.pledges
            .get(index as usize)
            .map(|p| self.pledge_view(p))
    }

    fn pledge_view<'a>(&'a self, p: &'a PledgeState) -> PledgeView<'a> {
        PledgeView {
            partner_id: self.partners.name(p.partner),
            pledge_id: &p.pledge_id,
            currency: currency_code(p.currency),
            lines: &p.lines,
        }
    }

    /// Where a partner's event is in the log and whether it was applied (`None`: rejected).
    /// Returns `None` for an event the ledger has not seen.
    pub fn event_status(&self, partner_id: &str, event_id: u128) -> Option<(u64, EventStatus)> {
        let partner = self.partners.get(partner_id)?;
        let entry = self.events.get(&EventKey::new(partner, event_id))?;
        let status = match entry.state {
            EntryState::Rejected => EventStatus::Rejected,
            EntryState::Applied(_) | EntryState::Reversal => EventStatus::Applied,
            EntryState::Reversed => EventStatus::Reversed,
        };
        Some((entry.seq, status))
    }

    /// Every rejected record, in log order.
    pub fn rejected(&self) -> &[RejectedEvent] {
        &self.rejected
    }

    /// The model digest: SHA-256 of the canonical form of [`Ledger::model_state`].
    pub fn model_digest(&self) -> Digest32 {
        self.model_state().model_digest()
    }

    /// Where the fold stands: what a read model stores with its totals, so that a restart can
    /// check it against a refold of the log.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            last_seq: self.last_seq,
            log_digest: self.log_digest,
            applied: self.applied_count,
            rejected: self.rejected_count,
            rejected_digest: self.rejected_digest,
        }
    }

    /// The reportable state, detached from the fold's indexes (copies everything).
    pub fn model_state(&self) -> ModelState {
        ModelState {
            checkpoint: self.checkpoint(),
            direct_totals: self.direct_totals.iter().map(|(k, t)| (*k, *t)).collect(),
            direct_quantities: self.direct_quantities().collect(),
            pledges: self
                .pledges
                .iter()
                .filter(|p| p.active)
                .map(|p| self.pledge_row(p))
                .collect(),
            rejected_events: self.rejected.clone(),
        }
    }

    fn pledge_row(&self, p: &PledgeState) -> PledgeRow {
        PledgeRow {
            partner_id: self.partners.name(p.partner).to_owned(),
            pledge_id: p.pledge_id.to_string(),
            currency: p.currency,
            lines: p.lines.clone(),
        }
    }

    /// Starts recording which totals, quantities, pledges and rejections change, for
    /// [`Ledger::take_changes`]. A read model calls it once, then takes the changes per batch.
    pub fn track_changes(&mut self) {
        self.dirty = Some(Dirty {
            rejected_from: self.rejected.len(),
            ..Dirty::default()
        });
    }

    /// What changed since the last call (or since [`Ledger::track_changes`]); empty when not
    /// tracking.
    pub fn take_changes(&mut self) -> Changes {
        let Some(dirty) = self.dirty.as_mut() else {
            return Changes::default();
        };
        let dirty = std::mem::replace(
            dirty,
            Dirty {
                rejected_from: self.rejected.len(),
                ..Dirty::default()
            },
        );
        let totals = dirty
            .totals
            .into_iter()
            .map(|key| (key, self.direct_totals.get(&key).copied()))
            .collect();
        let quantities = dirty
            .quantities
            .into_iter()
            .map(|key| {
                let quantity = self.direct_quantities.get(&key).copied();
                let row = DirectQuantity {
                    node: key.node,
                    item: self.item_name(key.item).to_owned(),
                    unit: self.unit_name(key.unit).to_owned(),
                    quantity: quantity.unwrap_or_default(),
                };
                (row, quantity.is_some())
            })
            .collect();
        // A pledge id reversed and pledged again in one batch has two entries: the active one
        // wins, whatever the order.
        let mut pledges: FxHashMap<(String, String), Option<PledgeRow>> = FxHashMap::default();
        for index in dirty.pledges {
            let Some(p) = self.pledges.get(index as usize) else {
                continue;
            };
            let row = self.pledge_row(p);
            let key = (row.partner_id.clone(), row.pledge_id.clone());
            match (p.active, pledges.get(&key)) {
                (true, _) => drop(pledges.insert(key, Some(row))),
                (false, Some(Some(_))) => {}
                (false, _) => drop(pledges.insert(key, None)),
            }
        }
        let mut pledges: Vec<_> = pledges.into_iter().collect();
        pledges.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Changes {
            totals,
            quantities,
            pledges,
            rejected: self.rejected[dirty.rejected_from.min(self.rejected.len())..].to_vec(),
        }
    }
}

/// Where a fold stands after its last record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last sequence number applied.
    pub last_seq: u64,
    /// The log digest after it.
    pub log_digest: Digest32,
    /// How many records were applied.
    pub applied: u64,
    /// How many records were rejected.
    pub rejected: u64,
    /// The SHA-256 chain over (seq, code) of the rejections.
    pub rejected_digest: Digest32,
}

/// What changed in a batch, for a read model to write.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// Direct totals; `None` where a total went back to zero.
    pub totals: Vec<(TotalKey, Option<Total>)>,
    /// Direct quantities; `false` where one went back to zero (and should be removed).
    pub quantities: Vec<(DirectQuantity, bool)>,
    /// Pledges by (partner, pledge id); `None` where a pledge was reversed.
    pub pledges: Vec<((String, String), Option<PledgeRow>)>,
    /// Records rejected in the batch.
    pub rejected: Vec<RejectedEvent>,
}

#[derive(Debug, Clone, Default)]
struct Dirty {
    totals: rustc_hash::FxHashSet<TotalKey>,
    quantities: rustc_hash::FxHashSet<QuantityKey>,
    pledges: rustc_hash::FxHashSet<u32>,
    rejected_from: usize,
}

/// Whether a seen event counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Applied and in force.
    Applied,
    /// Rejected; it never counted.
    Rejected,
    /// Applied, then undone by a reversal.
    Reversed,
}

/// What a direct total or quantity needs to be changed all-or-nothing.
trait Amount: Copy + Default {
    fn checked(self, delta: Self, sign: Sign) -> Option<Self>;
    fn within(&self, max: Decimal) -> bool;
    fn is_zero(&self) -> bool;
}

impl Amount for Total {
    fn checked(self, delta: Total, sign: Sign) -> Option<Total> {
        Total::checked(self, delta, sign)
    }

    fn within(&self, max: Decimal) -> bool {
        Total::within(self, max)
    }

    fn is_zero(&self) -> bool {
        Total::is_zero(self)
    }
}

impl Amount for Decimal {
    fn checked(self, delta: Decimal, sign: Sign) -> Option<Decimal> {
        match sign {
            Sign::Add => self.checked_add(delta),
            Sign::Subtract => self.checked_sub(delta),
        }
    }

    fn within(&self, max: Decimal) -> bool {
        *self <= max
    }

    fn is_zero(&self) -> bool {
        Decimal::is_zero(self)
    }
}

/// Adds or subtracts `delta` at `key`, keeping no zero entries; `false` (and no change) when the
/// result would overflow or pass `max`.
fn change_amount<K: Eq + std::hash::Hash, V: Amount>(
    map: &mut FxHashMap<K, V>,
    key: K,
    delta: V,
    sign: Sign,
    max: Decimal,
) -> bool {
    let entry = map.entry(key);
    let current = match &entry {
        Entry::Occupied(entry) => *entry.get(),
        Entry::Vacant(_) => V::default(),
    };
    match current.checked(delta, sign).filter(|next| next.within(max)) {
        None => false,
        Some(next) => {
            match entry {
                Entry::Occupied(entry) if next.is_zero() => drop(entry.remove()),
                Entry::Occupied(mut entry) => *entry.get_mut() = next,
                Entry::Vacant(_) if next.is_zero() => {}
                Entry::Vacant(entry) => drop(entry.insert(next)),
            }
            true
        }
    }
}

/// The fingerprint of already-canonical bytes, or `None` when they are not plainly canonical
/// (fields out of order or repeated, unknown fields, odd wire types): the caller re-encodes then.
fn fingerprint_canonical(bytes: &[u8]) -> Option<u64> {
    const EVENT_ID: u64 = 1;
    const RECORDED_AT: u64 = 3;
    const KNOWN: [u64; 10] = [1, 2, 3, 4, 5, 10, 11, 12, 13, 14];
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut rest = bytes;
    let mut last_field = 0;
    while !rest.is_empty() {
        let start = rest;
        let key = prost::encoding::decode_varint(&mut rest).ok()?;
        let (field, wire_type) = (key >> 3, key & 7);
        if field <= last_field || !KNOWN.contains(&field) {
            return None;
        }
        last_field = field;
        let value_len = match wire_type {
            0 => {
                prost::encoding::decode_varint(&mut rest).ok()?;
                0
            }
            2 => usize::try_from(prost::encoding::decode_varint(&mut rest).ok()?).ok()?,
            _ => return None,
        };
        let value = rest.get(..value_len)?;
        rest = &rest[value_len..];
        let whole = &start[..start.len() - rest.len()];
        if value.is_empty() && wire_type == 2 {
            return None; // An explicit empty field: prost would omit it.
        }
        if field != EVENT_ID && field != RECORDED_AT {
            hasher.update(whole);
        }
    }
    Some(hasher.digest())
}

fn overflow() -> Rejection {
    Rejection::new(
        RejectCode::Overflow,
        "amount.value",
        "adding this event would take a total past the largest amount fundflow keeps (10^26)",
    )
}

/// The ISO code of a currency index.
pub fn currency_code(currency: CurrencyIndex) -> &'static str {
    CURRENCIES.get(usize::from(currency)).map_or("", |c| c.code)
}

/// One link of the log digest chain: SHA-256(previous ‖ seq as u64 big-endian ‖ byte length as
/// u64 big-endian ‖ bytes). The first link's `previous` is 32 zero bytes.
pub fn chain_log(previous: &Digest32, seq: u64, bytes: &[u8]) -> Digest32 {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(seq.to_be_bytes());
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
    hasher.finalize().into()
}

fn chain_outcome(previous: &Digest32, seq: u64, code: u8) -> Digest32 {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(seq.to_be_bytes());
    hasher.update([code]);
    hasher.finalize().into()
}

/// The outcome as one byte, as read models pack it: 0 for applied, else [`outcome_code`].
pub fn outcome_byte(outcome: &Outcome) -> u8 {
    outcome.code().map_or(0, outcome_code)
}

/// 1 + the code's position in [`RejectCode::ALL`] (codes are only appended, so the numbers are
/// stable); 0 is reserved for "applied".
pub fn outcome_code(code: RejectCode) -> u8 {
    RejectCode::ALL
        .iter()
        .position(|c| *c == code)
        .and_then(|i| u8::try_from(i + 1).ok())
        .unwrap_or(u8::MAX)
}

/// The rows of the totals at `scope` (all scopes when `None`), sorted by scope, key, kind and
/// currency: the order reports and the API use.
pub fn sorted_totals(state: &ModelState, scope: Option<Scope>) -> Vec<(TotalKey, Total)> {
    let mut rows: Vec<_> = state
        .totals()
        .into_iter()
        .filter(|(k, _)| scope.is_none_or(|s| k.node.scope() == s))
        .collect();
    rows.sort_unstable_by(|(a, _), (b, _)| {
        (
            a.node.scope(),
            a.node.key(),
            a.kind,
            currency_code(a.currency),
        )
            .cmp(&(
                b.node.scope(),
                b.node.key(),
                b.kind,
                currency_code(b.currency),
            ))
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> v1::Envelope {
        v1::Envelope {
            event_id: "9b2e4c1a-0000-4000-8000-000000000001".into(),
            partner_id: "icshp".into(),
            recorded_at: "2020-12-31T12:00:00Z".into(),
            occurred_on: "2020-12-15".into(),
            schema_version: 1,
            body: Some(v1::envelope::Body::EventReversed(v1::EventReversed {
                reverses_event_id: "9b2e4c1a-0000-4000-8000-000000000002".into(),
                reason: "entered twice".into(),
            })),
        }
    }

    #[test]
    fn the_raw_fingerprint_equals_the_re_encoded_one() {
        let bytes = envelope().encode_to_vec();
        let mut ledger = Ledger::new();
        let mut decoded = v1::Envelope::decode(bytes.as_slice()).unwrap();
        let raw = fingerprint_canonical(&bytes).unwrap();
        // Bytes that are not plainly canonical take the re-encoding path: same answer.
        let mut reordered = Vec::new();
        let mut fields: Vec<&[u8]> = Vec::new();
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            let start = rest;
            let key = prost::encoding::decode_varint(&mut rest).unwrap();
            let len = if key & 7 == 2 {
                usize::try_from(prost::encoding::decode_varint(&mut rest).unwrap()).unwrap()
            } else {
                prost::encoding::decode_varint(&mut rest).unwrap();
                0
            };
            rest = &rest[len..];
            fields.push(&start[..start.len() - rest.len()]);
        }
        for field in fields.iter().rev() {
            reordered.extend_from_slice(field);
        }
        assert_eq!(fingerprint_canonical(&reordered), None);
        assert_eq!(ledger.fingerprint(&mut decoded, &reordered), raw);
        assert_eq!(
            decoded,
            envelope(),
            "the envelope is restored after fingerprinting"
        );
    }

    #[test]
    fn a_resend_in_another_field_order_is_still_a_duplicate() {
        let original = envelope();
        let mut reversed = Vec::new();
        // Same content, fields written from the last to the first, and a new timestamp.
        let mut resend = original.clone();
        resend.recorded_at = "2021-01-01T00:00:00Z".into();
        let body = v1::Envelope {
            body: resend.body.clone(),
            ..Default::default()
        }
        .encode_to_vec();
        let head = v1::Envelope {
            body: None,
            ..resend
        }
        .encode_to_vec();
        reversed.extend_from_slice(&body);
        reversed.extend_from_slice(&head);
        let mut ledger = Ledger::new();
        ledger.apply(1, &original.encode_to_vec());
        let outcome = ledger.apply(2, &reversed);
        assert_eq!(outcome.code(), Some(RejectCode::Duplicate), "{outcome:?}");
    }
}
