//! What "the same content" means for two envelopes with one identity: equal in everything but
//! `event_id` (the key itself) and `recorded_at` (a resend may carry a new timestamp). The fold
//! tells a harmless resend (`duplicate`) from a reused key (`event_id_conflict`) by it, and the
//! gateway tells a resend from a 409 conflict by it, so both use this one definition.
//!
//! The content is the envelope's canonical encoding (prost's, fields in number order at every
//! depth, defaults omitted) with those two fields cleared. Bytes in any other field order or
//! with explicit defaults decode to the same message and so have the same content. For records
//! that are already canonical, which is every record fundflow writes, these are exactly the
//! record's bytes minus the two fields: the fingerprint of such a record is the one it always had.

use fundflow_proto::Message;
use fundflow_proto::v1;

/// Writes the content of `envelope` (see the module docs) into `out`, which is cleared first.
/// The two fields are taken out for the encoding and put back, so nothing is cloned.
pub(crate) fn encode_content(envelope: &mut v1::Envelope, out: &mut Vec<u8>) {
    let event_id = std::mem::take(&mut envelope.event_id);
    let recorded_at = std::mem::take(&mut envelope.recorded_at);
    out.clear();
    out.reserve(envelope.encoded_len());
    // Encoding into a Vec with room for the whole message cannot fail.
    let _ = envelope.encode(out);
    envelope.event_id = event_id;
    envelope.recorded_at = recorded_at;
}

/// The fold's hash of [`encode_content`]'s bytes.
pub(crate) fn hash_content(content: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(content)
}

/// The fingerprint the fold keeps of an envelope's content: equal content, equal fingerprint,
/// whatever the field order of the bytes it was decoded from.
pub fn content_fingerprint(envelope: &v1::Envelope) -> u64 {
    let mut content = Vec::new();
    encode_content(&mut envelope.clone(), &mut content);
    hash_content(&content)
}

/// Whether two envelopes have the same content (see the module docs). Compares the content
/// itself, not its fingerprint, so that a hash collision cannot make a conflict a resend.
pub fn same_content(a: &v1::Envelope, b: &v1::Envelope) -> bool {
    let (mut a_content, mut b_content) = (Vec::new(), Vec::new());
    encode_content(&mut a.clone(), &mut a_content);
    encode_content(&mut b.clone(), &mut b_content);
    a_content == b_content
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a failed test, with its location.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use fundflow_gen::{envelope, flow, in_kind, pledge, with_rate};
    use fundflow_proto::v1::envelope::Body;

    use super::*;
    use crate::{Ledger, RejectCode};

    /// The top-level fields of an encoded message, each with its field number.
    fn fields(mut rest: &[u8]) -> Vec<(u64, &[u8])> {
        let mut fields = Vec::new();
        while !rest.is_empty() {
            let start = rest;
            let key = prost::encoding::decode_varint(&mut rest).unwrap();
            let len = match key & 7 {
                0 => {
                    prost::encoding::decode_varint(&mut rest).unwrap();
                    0
                }
                2 => usize::try_from(prost::encoding::decode_varint(&mut rest).unwrap()).unwrap(),
                other => panic!("wire type {other} is not used by fundflow.v1"),
            };
            rest = &rest[len..];
            fields.push((key >> 3, &start[..start.len() - rest.len()]));
        }
        fields
    }

    /// The field number of the only field set in `message`, from its prost encoding.
    fn field_number(message: &impl Message) -> u64 {
        let bytes = message.encode_to_vec();
        let fields = fields(&bytes);
        assert_eq!(fields.len(), 1);
        fields[0].0
    }

    /// The key (tag) bytes of the only field of `message`, an empty nested message.
    fn key_of(message: &impl Message) -> Vec<u8> {
        let bytes = message.encode_to_vec();
        assert_eq!(
            bytes.last(),
            Some(&0),
            "an empty nested message has length 0"
        );
        bytes[..bytes.len() - 1].to_vec()
    }

    /// `key` ‖ length ‖ `value`: one length-delimited field.
    fn field(key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut bytes = key.to_vec();
        prost::encoding::encode_varint(value.len() as u64, &mut bytes);
        bytes.extend_from_slice(value);
        bytes
    }

    /// The fields of an encoded message from the highest number to the lowest; a repeated
    /// field's elements keep their order, so the content is the same.
    fn reversed(bytes: &[u8]) -> Vec<u8> {
        let mut fields = fields(bytes);
        fields.sort_by_key(|(number, _)| std::cmp::Reverse(*number));
        fields.concat_bytes()
    }

    trait ConcatBytes {
        fn concat_bytes(&self) -> Vec<u8>;
    }

    impl ConcatBytes for Vec<(u64, &[u8])> {
        fn concat_bytes(&self) -> Vec<u8> {
            self.iter().flat_map(|(_, b)| b.iter().copied()).collect()
        }
    }

    fn a_pledge() -> v1::Envelope {
        envelope(
            "icshp",
            1,
            pledge(
                "pl-1",
                with_rate(
                    flow("30.00", "EUR", &[("NGA", "10.00"), ("KEN", "20.00")]),
                    "1.2215",
                ),
            ),
        )
    }

    /// The same pledge, written with every field of the body and of its flow in reverse order
    /// (as a writer other than prost may), the top level in order, and a new `recorded_at`.
    fn the_pledge_reordered_within() -> Vec<u8> {
        let mut resend = a_pledge();
        resend.recorded_at = "2021-01-01T00:00:00Z".into();
        let Some(Body::PledgeRecorded(body)) = resend.body.take() else {
            unreachable!("a pledge");
        };
        let flow = body.flow.clone().unwrap();
        let flow_key = key_of(&v1::PledgeRecorded {
            flow: Some(v1::Flow::default()),
            ..Default::default()
        });
        let rest_of_body = v1::PledgeRecorded { flow: None, ..body }.encode_to_vec();
        let mut body_bytes = reversed(&rest_of_body);
        body_bytes.extend(field(&flow_key, &reversed(&flow.encode_to_vec())));
        let body_key = key_of(&v1::Envelope {
            body: Some(Body::PledgeRecorded(v1::PledgeRecorded::default())),
            ..Default::default()
        });
        let mut bytes = resend.encode_to_vec();
        bytes.extend(field(&body_key, &body_bytes));
        bytes
    }

    #[test]
    fn the_content_of_canonical_bytes_is_the_record_without_event_id_and_recorded_at() {
        // The fingerprint of a record as prost writes it is the hash of its own bytes minus the
        // two fields, as it always was: digests of existing logs do not move.
        let event_id = field_number(&v1::Envelope {
            event_id: "x".into(),
            ..Default::default()
        });
        let recorded_at = field_number(&v1::Envelope {
            recorded_at: "x".into(),
            ..Default::default()
        });
        assert_eq!((event_id, recorded_at), (1, 3), "the numbers in proto/");
        let mut envelope = envelope(
            "icshp",
            2,
            in_kind(
                "d-1",
                flow("5.00", "USD", &[("NGA", "5.00")]),
                &[("rice", "kg", "12.5")],
            ),
        );
        let bytes = envelope.encode_to_vec();
        let raw: Vec<u8> = fields(&bytes)
            .into_iter()
            .filter(|(number, _)| *number != event_id && *number != recorded_at)
            .collect::<Vec<_>>()
            .concat_bytes();
        let before = envelope.clone();
        let mut content = Vec::new();
        encode_content(&mut envelope, &mut content);
        assert_eq!(content, raw);
        assert_eq!(envelope, before, "the envelope is restored");
        assert_eq!(content_fingerprint(&envelope), hash_content(&raw));
    }

    #[test]
    fn field_order_at_any_depth_does_not_change_the_content() {
        let bytes = the_pledge_reordered_within();
        assert_ne!(bytes, a_pledge().encode_to_vec(), "the bytes differ");
        let resend = v1::Envelope::decode(bytes.as_slice()).unwrap();
        assert!(same_content(&a_pledge(), &resend));
        assert_eq!(
            content_fingerprint(&a_pledge()),
            content_fingerprint(&resend)
        );
        let mut other = resend.clone();
        other.occurred_on = "2020-12-16".into();
        assert!(!same_content(&a_pledge(), &other));
        assert_ne!(
            content_fingerprint(&a_pledge()),
            content_fingerprint(&other)
        );
    }

    #[test]
    fn a_resend_reordered_within_its_body_is_a_duplicate() {
        let mut ledger = Ledger::new();
        assert_eq!(ledger.apply(1, &a_pledge().encode_to_vec()).code(), None);
        let outcome = ledger.apply(2, &the_pledge_reordered_within());
        assert_eq!(outcome.code(), Some(RejectCode::Duplicate), "{outcome:?}");
        let mut changed = a_pledge();
        if let Some(Body::PledgeRecorded(body)) = &mut changed.body {
            body.donor = "someone else".into();
        }
        let outcome = ledger.apply(3, &changed.encode_to_vec());
        assert_eq!(
            outcome.code(),
            Some(RejectCode::EventIdConflict),
            "{outcome:?}"
        );
    }
}
