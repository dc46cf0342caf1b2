//! Reading a record and checking its identity: the size limit, decoding, the subject's partner,
//! a valid (partner, event id), and whether that identity was seen before. A repeat is refused
//! here, before any rule: a `duplicate` when its content is the same, `event_id_conflict` when
//! not, told apart by the content fingerprint (see [`crate::fingerprint`]).

use fundflow_proto::Message;
use fundflow_proto::v1;
use serde::{Deserialize, Serialize};

use super::{Ledger, Source};
use crate::event;
use crate::fingerprint::{encode_content, hash_content};
use crate::limits;
use crate::reject::{RejectCode, Rejection};
use crate::values::RejectedEvent;

/// The identity of an event: partner and UUID. Split into two `u64` halves so that the key stays
/// 8-byte aligned (24 bytes, not 32) in the largest map the ledger keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(super) struct EventKey {
    partner: u32,
    id_high: u64,
    id_low: u64,
}

impl EventKey {
    pub(super) fn new(partner: u32, id: u128) -> EventKey {
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
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) struct EventEntry {
    /// Where the event is in the log.
    pub(super) seq: u64,
    /// Hash of the content (all but `event_id` and `recorded_at`), to tell a harmless resend
    /// (`duplicate`) from a reused key (`event_id_conflict`).
    fingerprint: u64,
    pub(super) state: EntryState,
}

/// What became of a remembered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum EntryState {
    Rejected,
    /// Applied; its effect is `effects[index]`.
    Applied(u32),
    Reversed,
    /// An applied `EventReversed`.
    Reversal,
}

/// A new event's identity, checked: what the ledger remembers it by once it has a verdict.
#[derive(Debug, Clone, Copy)]
pub(super) struct Identity {
    /// The partner's interned id; `None` for a partner never seen, who has nothing yet.
    pub(super) partner: Option<u32>,
    event_id: u128,
    fingerprint: u64,
}

/// Decodes the record, or says why it cannot be read as an event at all (with the day it
/// occurred on, when it has a readable one).
pub(super) fn read(
    seq: u64,
    bytes: &[u8],
    source: Source<'_>,
) -> Result<v1::Envelope, (RejectedEvent, Option<time::Date>)> {
    let unidentified = |rejection| {
        let rejected = RejectedEvent {
            seq,
            event_id: String::new(),
            partner_id: String::new(),
            rejection,
        };
        (rejected, None)
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
    let envelope = v1::Envelope::decode(bytes).map_err(|err| {
        unidentified(Rejection::new(
            RejectCode::Undecodable,
            "",
            format_args!("not a fundflow.v1.Envelope: {err}"),
        ))
    })?;
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
        let day = event::parse_date(&envelope.occurred_on);
        return Err((rejected(seq, &envelope, rejection), day));
    }
    Ok(envelope)
}

/// A rejection of a decoded envelope, with the identity it gave (valid or not).
pub(super) fn rejected(seq: u64, envelope: &v1::Envelope, rejection: Rejection) -> RejectedEvent {
    RejectedEvent {
        seq,
        event_id: envelope.event_id.clone(),
        partner_id: envelope.partner_id.clone(),
        rejection,
    }
}

impl Ledger {
    /// Checks the envelope's identity and that it is new. The envelope is `&mut` only so that
    /// its content can be encoded without a copy; it is unchanged on return.
    pub(super) fn identify(&mut self, envelope: &mut v1::Envelope) -> Result<Identity, Rejection> {
        let event_id = event::identity(envelope)?.1;
        encode_content(envelope, &mut self.scratch);
        let fingerprint = hash_content(&self.scratch);
        let partner = self.partners.get(&envelope.partner_id);
        let earlier = partner.and_then(|p| self.events.get(&EventKey::new(p, event_id)));
        if let Some(earlier) = earlier {
            return Err(if earlier.fingerprint == fingerprint {
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
            });
        }
        Ok(Identity {
            partner,
            event_id,
            fingerprint,
        })
    }

    /// Remembers a new event of `partner_id` under its identity, with its verdict; returns the
    /// partner's interned id.
    pub(super) fn remember(
        &mut self,
        seq: u64,
        partner_id: &str,
        identity: &Identity,
        state: EntryState,
    ) -> u32 {
        let partner = self.partners.intern(partner_id);
        debug_assert!(identity.partner.is_none_or(|p| p == partner));
        let entry = EventEntry {
            seq,
            fingerprint: identity.fingerprint,
            state,
        };
        self.events
            .insert_new(EventKey::new(partner, identity.event_id), entry);
        partner
    }
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
