//! The fold, given / when / then: exact totals, roll-ups, pledges, reversals, and one test of every
//! rejection code with the input that triggers it.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::large_enum_variant)]

use fundflow_domain::{Ledger, Node, Outcome, RejectCode, Scope, TotalKey, TotalKind};
use fundflow_gen::{
    envelope, flow, in_kind, parallel_funding, payment, pledge, reversal, with_rate,
};
use fundflow_proto::{Message, v1};

const P: &str = "icshp";

/// A ledger with some events applied, each of which must apply.
struct Given {
    ledger: Ledger,
    seq: u64,
}

fn given(events: impl IntoIterator<Item = v1::Envelope>) -> Given {
    let mut given = Given {
        ledger: Ledger::new(),
        seq: 0,
    };
    for event in events {
        given.seq += 1;
        let outcome = given.ledger.apply(given.seq, &event.encode_to_vec());
        assert_eq!(
            outcome,
            Outcome::Applied,
            "given event {} must apply",
            given.seq
        );
    }
    given
}

struct Then {
    ledger: Ledger,
    outcome: Outcome,
}

impl Given {
    fn when(self, event: v1::Envelope) -> Then {
        self.when_bytes(&event.encode_to_vec())
    }

    fn when_bytes(mut self, bytes: &[u8]) -> Then {
        let outcome = self.ledger.apply(self.seq + 1, bytes);
        Then {
            ledger: self.ledger,
            outcome,
        }
    }
}

impl Then {
    fn then_applied(self) -> Ledger {
        assert_eq!(self.outcome, Outcome::Applied);
        self.ledger
    }

    #[track_caller]
    fn then_rejected(self, code: RejectCode) -> Ledger {
        match &self.outcome {
            Outcome::Rejected(r) => assert_eq!(r.code, code, "rejected, but: {}", r.message),
            Outcome::Applied => panic!("applied, expected rejection {code}"),
        }
        self.ledger
    }
}

/// A total as strings (amount, usd_equivalent, unconverted), or `None` when zero.
fn total(
    ledger: &Ledger,
    scope: Scope,
    key: &str,
    kind: TotalKind,
    currency: &str,
) -> Option<[String; 3]> {
    let node = Node::from_scope_key(scope, key).expect("known node");
    let currency = fundflow_refdata::currency_by_code(currency).expect("known currency");
    ledger
        .total(&TotalKey {
            node,
            kind,
            currency,
        })
        .map(|t| {
            [
                t.amount.to_string(),
                t.usd_equivalent.to_string(),
                t.unconverted.to_string(),
            ]
        })
}

fn s(values: [&str; 3]) -> Option<[String; 3]> {
    Some(values.map(str::to_owned))
}

fn masks_to_nepal(id: u128) -> v1::Envelope {
    envelope(
        P,
        id,
        in_kind(
            "icshp-masks-nepal",
            flow("31500.00", "USD", &[("NPL", "31500.00")]),
            &[("disposable surgical mask", "piece", "210000")],
        ),
    )
}

#[test]
fn an_in_kind_donation_counts_its_value_and_goods_at_every_level() {
    let ledger = given([masks_to_nepal(1)]).ledger;
    let usd = ["31500.00", "31500.00", "0"];
    assert_eq!(
        total(&ledger, Scope::Country, "NPL", TotalKind::InKind, "USD"),
        s(usd)
    );
    assert_eq!(
        total(&ledger, Scope::Subregion, "034", TotalKind::InKind, "USD"),
        s(usd)
    );
    assert_eq!(
        total(&ledger, Scope::Region, "142", TotalKind::InKind, "USD"),
        s(usd)
    );
    assert_eq!(
        total(&ledger, Scope::Global, "001", TotalKind::InKind, "USD"),
        s(usd)
    );
    assert_eq!(
        total(&ledger, Scope::Country, "NPL", TotalKind::Paid, "USD"),
        None
    );
    let npl = Node::country("NPL").unwrap();
    let quantity = ledger.quantity(npl, "disposable surgical mask", "piece");
    assert_eq!(quantity.map(|q| q.to_string()), Some("210000".into()));
    let asia = Node::region("142").unwrap();
    assert!(
        ledger
            .quantity(asia, "disposable surgical mask", "piece")
            .is_some()
    );
}

#[test]
fn a_region_total_is_its_countries_plus_its_direct_allocations() {
    // COMESA's secretariat receives for Eastern Africa as a whole; Tanzania and Rwanda directly.
    let comesa = envelope(
        P,
        1,
        parallel_funding(
            "pf-1",
            flow(
                "300.00",
                "USD",
                &[("014", "100.00"), ("TZA", "120.00"), ("RWA", "80.00")],
            ),
        ),
    );
    let ledger = given([comesa]).ledger;
    let kind = TotalKind::ParallelFunding;
    assert_eq!(
        total(&ledger, Scope::Intermediate, "014", kind, "USD"),
        s(["300.00", "300.00", "0"])
    );
    assert_eq!(
        total(&ledger, Scope::Subregion, "202", kind, "USD"),
        s(["300.00", "300.00", "0"])
    );
    assert_eq!(
        total(&ledger, Scope::Country, "TZA", kind, "USD"),
        s(["120.00", "120.00", "0"])
    );
    assert_eq!(
        total(&ledger, Scope::Region, "002", kind, "USD"),
        s(["300.00", "300.00", "0"])
    );
}

#[test]
fn usd_equivalents_round_half_even_per_allocation_and_unrated_amounts_stay_apart() {
    // 0.125 and 0.135 USD: half-even gives 0.12 and 0.14, so the total is 0.26, not 0.27.
    let rated = envelope(
        P,
        1,
        payment(
            "pay-1",
            "",
            with_rate(
                flow("200.00", "EUR", &[("NPL", "100.00"), ("IND", "100.00")]),
                "0.00125",
            ),
        ),
    );
    let rated_2 = envelope(
        P,
        2,
        payment(
            "pay-2",
            "",
            with_rate(flow("100.00", "EUR", &[("NPL", "100.00")]), "0.00135"),
        ),
    );
    let unrated = envelope(
        P,
        3,
        payment("pay-3", "", flow("50.00", "EUR", &[("NPL", "50.00")])),
    );
    let ledger = given([rated, rated_2, unrated]).ledger;
    assert_eq!(
        total(&ledger, Scope::Country, "NPL", TotalKind::Paid, "EUR"),
        s(["250.00", "0.26", "50.00"])
    );
    assert_eq!(
        total(&ledger, Scope::Region, "142", TotalKind::Paid, "EUR"),
        s(["350.00", "0.38", "50.00"])
    );
}

#[test]
fn payments_reduce_what_is_outstanding_on_a_pledge() {
    let pledged = envelope(
        P,
        1,
        pledge(
            "pl-1",
            flow("1000.00", "USD", &[("NGA", "600.00"), ("NPL", "400.00")]),
        ),
    );
    let paid = envelope(
        P,
        2,
        payment(
            "pay-1",
            "pl-1",
            flow("650.00", "USD", &[("NGA", "600.00"), ("NPL", "50.00")]),
        ),
    );
    let ledger = given([pledged, paid]).ledger;
    let view = ledger.pledge(P, "pl-1").unwrap();
    let lines: Vec<_> = view
        .lines
        .iter()
        .map(|l| {
            (
                l.node.key(),
                l.pledged.to_string(),
                l.paid.to_string(),
                l.outstanding().to_string(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("NGA", "600.00".into(), "600.00".into(), "0.00".into()),
            ("NPL", "400.00".into(), "50.00".into(), "350.00".into())
        ]
    );
    assert_eq!(
        total(&ledger, Scope::Global, "001", TotalKind::Pledged, "USD"),
        s(["1000.00", "1000.00", "0"])
    );
    assert_eq!(
        total(&ledger, Scope::Global, "001", TotalKind::Paid, "USD"),
        s(["650.00", "650.00", "0"])
    );
}

#[test]
fn a_reversal_undoes_exactly_the_event_and_the_digest_returns_to_the_same_totals() {
    let before = given([masks_to_nepal(1)]).ledger;
    let ledger = given([masks_to_nepal(1), masks_to_nepal(2)])
        .when(envelope(P, 3, reversal(2)))
        .then_applied();
    assert_eq!(
        fundflow_api::Report::of(&ledger).totals,
        fundflow_api::Report::of(&before).totals
    );
    let npl = Node::country("NPL").unwrap();
    assert_eq!(
        ledger
            .quantity(npl, "disposable surgical mask", "piece")
            .map(|q| q.to_string()),
        Some("210000".into())
    );
}

#[test]
fn a_reversed_pledge_can_be_recorded_again() {
    let pledged = envelope(
        P,
        1,
        pledge("pl-1", flow("10.00", "USD", &[("NGA", "10.00")])),
    );
    let ledger = given([pledged.clone(), envelope(P, 2, reversal(1))]).ledger;
    assert!(ledger.pledge(P, "pl-1").is_none());
    let mut again = pledged;
    again.event_id = fundflow_gen::uuid_text(3);
    let ledger = Given { ledger, seq: 2 }.when(again).then_applied();
    assert_eq!(
        ledger
            .pledge(P, "pl-1")
            .map(|p| p.lines[0].pledged.to_string()),
        Some("10.00".into())
    );
}

#[test]
fn a_resend_with_a_new_timestamp_is_a_duplicate_and_counts_once() {
    let mut resend = masks_to_nepal(1);
    resend.recorded_at = "2021-01-02T00:00:00Z".into();
    let ledger = given([masks_to_nepal(1)])
        .when(resend)
        .then_rejected(RejectCode::Duplicate);
    assert_eq!(
        total(&ledger, Scope::Country, "NPL", TotalKind::InKind, "USD"),
        s(["31500.00", "31500.00", "0"])
    );
}

#[test]
fn event_ids_are_scoped_by_partner() {
    let mut other = masks_to_nepal(1);
    other.partner_id = "cabc".into();
    given([masks_to_nepal(1)]).when(other).then_applied();
}

#[test]
fn a_partner_cannot_reverse_another_partners_event() {
    let mut theirs = envelope("cabc", 9, reversal(1));
    theirs.partner_id = "cabc".into();
    given([masks_to_nepal(1)])
        .when(theirs)
        .then_rejected(RejectCode::ReversalTargetUnknown);
}

#[test]
fn digests_are_the_same_on_every_replay() {
    let log: Vec<Vec<u8>> = fundflow_gen::LogGenerator::new(
        3,
        fundflow_gen::GenConfig {
            events: 5_000,
            ..Default::default()
        },
    )
    .collect();
    let replay = || {
        let mut ledger = Ledger::new();
        for (i, record) in log.iter().enumerate() {
            ledger.apply(i as u64 + 1, record);
        }
        (
            hex(&ledger.log_digest()),
            hex(&ledger.model_digest()),
            ledger.counts(),
        )
    };
    let first = replay();
    assert_eq!(first, replay());
    let (applied, rejected) = first.2;
    assert_eq!(applied + rejected, 5_000);
    assert!(
        rejected > 0 && applied > 4_500,
        "{applied} applied, {rejected} rejected"
    );
}

#[test]
fn the_log_digest_is_a_sha256_chain_over_seq_length_and_bytes() {
    use sha2::{Digest, Sha256};
    let mut ledger = Ledger::new();
    ledger.apply(1, b"ab");
    let mut expected = Sha256::new();
    expected.update([0u8; 32]);
    expected.update(1u64.to_be_bytes());
    expected.update(2u64.to_be_bytes());
    expected.update(b"ab");
    assert_eq!(ledger.log_digest(), <[u8; 32]>::from(expected.finalize()));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One input per rejection code. `check` applies `setup` (all must apply), then `input`, and
/// asserts the code and that no total or quantity changed; the table test asserts it covers
/// every code.
fn check(setup: Vec<v1::Envelope>, input: Input, code: RejectCode) -> RejectCode {
    let mut given = given(setup);
    let before = fundflow_api::Report::of(&given.ledger);
    let then = match input {
        Input::Event(e) => given.when(e),
        Input::Bytes(b) => given.when_bytes(&b),
        Input::Seq(seq, e) => {
            let outcome = given.ledger.apply(seq, &e.encode_to_vec());
            Then {
                ledger: given.ledger,
                outcome,
            }
        }
        Input::FromSubject(subject, e) => {
            let source = fundflow_domain::Source {
                subject_partner: Some(subject),
            };
            let outcome = given
                .ledger
                .apply_from(given.seq + 1, &e.encode_to_vec(), source);
            Then {
                ledger: given.ledger,
                outcome,
            }
        }
        Input::AfterRejected(rejected, e) => {
            let outcome = given.ledger.apply(given.seq + 1, &rejected.encode_to_vec());
            assert!(
                matches!(outcome, Outcome::Rejected(_)),
                "the first event must be rejected"
            );
            let outcome = given.ledger.apply(given.seq + 2, &e.encode_to_vec());
            Then {
                ledger: given.ledger,
                outcome,
            }
        }
    };
    let after = fundflow_api::Report::of(&then.then_rejected(code));
    assert_eq!(before.totals, after.totals, "{code} changed a total");
    assert_eq!(
        before.in_kind_items, after.in_kind_items,
        "{code} changed a quantity"
    );
    code
}

enum Input {
    Event(v1::Envelope),
    Bytes(Vec<u8>),
    Seq(u64, v1::Envelope),
    FromSubject(&'static str, v1::Envelope),
    /// The first event is rejected, then the second is checked.
    AfterRejected(v1::Envelope, v1::Envelope),
}

fn usd(value: &str, to: &str) -> v1::Flow {
    flow(value, "USD", &[(to, value)])
}

fn ev(body: v1::envelope::Body) -> v1::Envelope {
    envelope(P, 100, body)
}

fn edit(mut e: v1::Envelope, f: impl FnOnce(&mut v1::Envelope)) -> v1::Envelope {
    f(&mut e);
    e
}

fn edit_flow(body: v1::envelope::Body, f: impl FnOnce(&mut v1::Flow)) -> v1::envelope::Body {
    let mut body = body;
    if let v1::envelope::Body::ContributionPaid(p) = &mut body {
        f(p.flow.as_mut().unwrap());
    }
    body
}

fn pay(f: impl FnOnce(&mut v1::Flow)) -> v1::Envelope {
    ev(edit_flow(payment("pay-1", "", usd("10.00", "NPL")), f))
}

#[test]
fn every_rejection_code_has_an_input_that_triggers_it() {
    use Input::*;
    use RejectCode as C;
    let pledged = || {
        envelope(
            P,
            1,
            pledge("pl-1", flow("100.00", "USD", &[("NGA", "100.00")])),
        )
    };
    let paid = || envelope(P, 2, payment("pay-1", "pl-1", usd("40.00", "NGA")));
    let mut seen = vec![
        check(vec![], Bytes(vec![0xff, 0xff, 0xff]), C::Undecodable),
        check(
            vec![],
            Bytes(vec![0; fundflow_domain::limits::ENVELOPE_BYTES_MAX + 1]),
            C::TooLarge,
        ),
        check(
            vec![],
            Event(edit(masks_to_nepal(1), |e| e.schema_version = 2)),
            C::UnsupportedSchemaVersion,
        ),
        check(
            vec![],
            Event(edit(masks_to_nepal(1), |e| e.body = None)),
            C::UnknownKind,
        ),
        check(
            vec![],
            Event(edit(masks_to_nepal(1), |e| e.partner_id = "ICSHP".into())),
            C::InvalidPartnerId,
        ),
        check(
            vec![],
            FromSubject("cabc", masks_to_nepal(1)),
            C::PartnerMismatch,
        ),
        check(
            vec![],
            Event(edit(masks_to_nepal(1), |e| {
                e.event_id = "not-a-uuid".into()
            })),
            C::InvalidEventId,
        ),
        check(
            vec![],
            Event(edit(masks_to_nepal(1), |e| {
                e.recorded_at = "2020-12-31T12:00:00+08:00".into()
            })),
            C::InvalidTimestamp,
        ),
        check(
            vec![],
            Event(edit(masks_to_nepal(1), |e| {
                e.occurred_on = "2020-13-01".into()
            })),
            C::InvalidDate,
        ),
        check(
            vec![],
            Event(edit(masks_to_nepal(1), |e| {
                e.occurred_on = "2021-01-02".into()
            })),
            C::OccurredAfterRecorded,
        ),
        check(
            vec![],
            Event(ev(payment("", "", usd("10.00", "NPL")))),
            C::MissingField,
        ),
        check(
            vec![],
            Event(ev(payment(&"x".repeat(129), "", usd("10.00", "NPL")))),
            C::FieldTooLong,
        ),
        check(
            vec![],
            Event(pay(|f| f.allocations[0].value = "1e1".into())),
            C::InvalidDecimal,
        ),
        check(
            vec![],
            Event(ev(payment(
                "p",
                "",
                flow("-10.00", "USD", &[("NPL", "-10.00")]),
            ))),
            C::NonPositiveAmount,
        ),
        check(
            vec![],
            Event(ev(payment("p", "", usd("10.005", "NPL")))),
            C::TooManyDecimals,
        ),
        check(
            vec![],
            Event(ev(payment("p", "", flow("10", "XYZ", &[("NPL", "10")])))),
            C::UnknownCurrency,
        ),
        check(
            vec![],
            Event(ev(payment("p", "", usd("10.00", "XKX")))),
            C::UnknownCountry,
        ),
        check(
            vec![],
            Event(ev(payment("p", "", usd("10.00", "999")))),
            C::UnknownRegion,
        ),
        check(
            vec![],
            Event(pay(|f| f.allocations[0].recipient = None)),
            C::MissingRecipient,
        ),
        check(
            vec![],
            Event(pay(|f| f.allocations.clear())),
            C::NoAllocations,
        ),
        check(
            vec![],
            Event(pay(|f| {
                let one = f.allocations[0].clone();
                f.allocations = vec![one; fundflow_domain::limits::ALLOCATIONS_MAX + 1];
            })),
            C::TooManyAllocations,
        ),
        check(
            vec![],
            Event(ev(payment(
                "p",
                "",
                flow("10.00", "USD", &[("NPL", "9.99")]),
            ))),
            C::AllocationsMismatch,
        ),
        check(
            vec![],
            Event(ev(payment("p", "", with_rate(usd("10.00", "NPL"), "1.1")))),
            C::InvalidUsdRate,
        ),
        check(
            vec![],
            Event(edit(masks_to_nepal(1), |e| {
                if let Some(v1::envelope::Body::InKindDonationRecorded(d)) = &mut e.body {
                    d.flow.as_mut().unwrap().allocations[0].items.clear();
                }
            })),
            C::MissingItems,
        ),
        check(
            vec![],
            Event(pay(|f| {
                f.allocations[0].items.push(v1::InKindItem::default())
            })),
            C::UnexpectedItems,
        ),
        check(
            vec![],
            Event(edit(masks_to_nepal(1), |e| {
                if let Some(v1::envelope::Body::InKindDonationRecorded(d)) = &mut e.body {
                    d.flow.as_mut().unwrap().allocations[0].items[0].quantity = "0".into();
                }
            })),
            C::InvalidQuantity,
        ),
        check(
            vec![],
            Event(edit(masks_to_nepal(1), |e| {
                if let Some(v1::envelope::Body::InKindDonationRecorded(d)) = &mut e.body {
                    d.valuation_basis = 0;
                }
            })),
            C::InvalidValuationBasis,
        ),
        check(
            vec![masks_to_nepal(1)],
            Event(masks_to_nepal(1)),
            C::Duplicate,
        ),
        check(
            vec![masks_to_nepal(1)],
            Event(edit(masks_to_nepal(1), |e| {
                e.occurred_on = "2020-12-14".into()
            })),
            C::EventIdConflict,
        ),
        check(
            vec![pledged()],
            Event(envelope(P, 5, pledge("pl-1", usd("1.00", "NGA")))),
            C::PledgeExists,
        ),
        check(
            vec![],
            Event(ev(payment("p", "pl-9", usd("1.00", "NGA")))),
            C::UnknownPledge,
        ),
        check(
            vec![pledged()],
            Event(ev(payment(
                "p",
                "pl-1",
                flow("1.00", "EUR", &[("NGA", "1.00")]),
            ))),
            C::CurrencyMismatch,
        ),
        check(
            vec![pledged()],
            Event(ev(payment("p", "pl-1", usd("1.00", "NPL")))),
            C::RecipientNotPledged,
        ),
        check(
            vec![pledged(), paid()],
            Event(ev(payment("p", "pl-1", usd("60.01", "NGA")))),
            C::Overpaid,
        ),
        check(vec![], Event(ev(reversal(42))), C::ReversalTargetUnknown),
        check(
            vec![],
            AfterRejected(
                envelope(P, 1, payment("p", "", flow("1", "XYZ", &[("NPL", "1")]))),
                envelope(P, 2, reversal(1)),
            ),
            C::ReversalTargetRejected,
        ),
        check(
            vec![masks_to_nepal(1), envelope(P, 2, reversal(1))],
            Event(envelope(P, 3, reversal(1))),
            C::ReversalTargetReversed,
        ),
        check(
            vec![masks_to_nepal(1), envelope(P, 2, reversal(1))],
            Event(envelope(P, 3, reversal(2))),
            C::ReversalOfReversal,
        ),
        check(
            vec![pledged(), paid()],
            Event(envelope(P, 3, reversal(1))),
            C::PledgeHasPayments,
        ),
        check(
            vec![],
            Event(ev(payment(
                "p",
                "",
                with_rate(flow("10", "JPY", &[("NPL", "10")]), &"9".repeat(28)),
            ))),
            C::Overflow,
        ),
        check(
            vec![masks_to_nepal(1)],
            Seq(1, masks_to_nepal(2)),
            C::SequenceNotIncreasing,
        ),
    ];
    seen.sort();
    seen.dedup();
    let all: Vec<_> = RejectCode::ALL.to_vec();
    assert_eq!(seen, all, "every code needs a case here");
}

#[test]
fn overflow_of_a_total_is_rejected_and_changes_nothing() {
    let big = "90000000000000000000000000"; // 9 × 10^25, under the 10^26 limit
    let first = envelope(P, 1, payment("p1", "", flow(big, "JPY", &[("NPL", big)])));
    let second = envelope(P, 2, payment("p2", "", flow(big, "JPY", &[("IND", big)])));
    let third = envelope(
        P,
        3,
        payment(
            "p3",
            "",
            flow(
                "10000000000000000000000001",
                "JPY",
                &[("NPL", "10000000000000000000000001")],
            ),
        ),
    );
    let ledger = given([first, second])
        .when(third)
        .then_rejected(RejectCode::Overflow);
    assert_eq!(
        total(&ledger, Scope::Region, "142", TotalKind::Paid, "JPY"),
        s([
            "180000000000000000000000000",
            "0",
            "180000000000000000000000000"
        ])
    );
}

#[test]
fn rejection_messages_name_the_field_and_the_rule() {
    let bad = ev(payment(
        "p",
        "",
        flow("10.00", "USD", &[("NPL", "5.00"), ("IND", "5.001")]),
    ));
    let Outcome::Rejected(r) = Ledger::new().apply(1, &bad.encode_to_vec()) else {
        panic!()
    };
    assert_eq!(r.field, "allocations[1].value");
    assert_eq!(
        r.message,
        "allocations[1].value: \"5.001\" has more decimals than USD allows (2)"
    );
}

/// A cell as (day, partner, grant, sector, donor, recipient, kind, amount).
type DayCell = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
);

fn day_cells(ledger: &Ledger) -> Vec<DayCell> {
    let mut cells: Vec<_> = ledger
        .cells(fundflow_domain::CellLevel::Day)
        .into_iter()
        .map(|c| {
            (
                c.day.unwrap().to_string(),
                c.partner.to_owned(),
                c.grant.unwrap().to_owned(),
                c.sector.unwrap().to_owned(),
                c.donor.unwrap().to_owned(),
                c.node.key().to_owned(),
                c.kind.as_str().to_owned(),
                c.total.amount.to_string(),
            )
        })
        .collect();
    cells.sort();
    cells
}

#[test]
fn a_payment_counts_under_its_pledges_grant_sector_and_donor_unless_it_names_its_own_donor() {
    let pledged = envelope(
        P,
        1,
        pledge("sg-2020-01", flow("100.00", "USD", &[("NGA", "100.00")])),
    );
    let paid = envelope(
        P,
        2,
        payment(
            "pay-1",
            "sg-2020-01",
            flow("30.00", "USD", &[("NGA", "30.00")]),
        ),
    );
    let mut named = payment(
        "pay-2",
        "sg-2020-01",
        flow("20.00", "USD", &[("NGA", "20.00")]),
    );
    if let v1::envelope::Body::ContributionPaid(p) = &mut named {
        p.donor = "Municipality of Abuja".into();
    }
    let named = edit(envelope(P, 3, named), |e| {
        e.occurred_on = "2021-03-04".into();
        e.recorded_at = "2021-03-05T09:00:00Z".into();
    });
    let mut elsewhere = parallel_funding("pf-1", flow("7.00", "USD", &[("NGA", "7.00")]));
    if let v1::envelope::Body::ParallelFundingMobilized(p) = &mut elsewhere {
        p.grant_id = "sg-2020-01".into();
    }
    let elsewhere = envelope("nbrc", 4, elsewhere);
    let ledger = given([pledged, paid, named, elsewhere]).ledger;
    let row = |day: &str, partner: &str, sector: &str, donor: &str, kind: &str, amount: &str| {
        (
            day.to_owned(),
            partner.to_owned(),
            "sg-2020-01".to_owned(),
            sector.to_owned(),
            donor.to_owned(),
            "NGA".to_owned(),
            kind.to_owned(),
            amount.to_owned(),
        )
    };
    assert_eq!(
        day_cells(&ledger),
        [
            row(
                "2020-12-15",
                P,
                "health",
                "Test Foundation",
                "paid",
                "30.00"
            ),
            row(
                "2020-12-15",
                P,
                "health",
                "Test Foundation",
                "pledged",
                "100.00"
            ),
            row(
                "2020-12-15",
                "nbrc",
                "",
                "Implementing partner",
                "parallel_funding",
                "7.00"
            ),
            row(
                "2021-03-04",
                P,
                "health",
                "Municipality of Abuja",
                "paid",
                "20.00"
            ),
        ]
    );
    let funding = ledger.grant_funding("sg-2020-01");
    assert_eq!(funding.len(), 1);
    assert_eq!(funding[0].1.usd_equivalent.to_string(), "7.00");
    let pledge = ledger.pledge_row(P, "sg-2020-01").unwrap();
    assert_eq!(
        (
            pledge.donor.as_str(),
            pledge.sector.as_str(),
            pledge.pledged_usd.map(|d| d.to_string()),
            pledge.paid_usd.to_string(),
            pledge.payments_unconverted
        ),
        (
            "Test Foundation",
            "health",
            Some("100.00".into()),
            "50.00".into(),
            0
        )
    );
}

#[test]
fn a_reversal_takes_a_flow_out_of_the_cells_of_its_own_day_and_outcomes_count_by_day() {
    let paid = edit(
        envelope(
            P,
            1,
            payment("pay-1", "", flow("5.00", "EUR", &[("NPL", "5.00")])),
        ),
        |e| e.occurred_on = "2020-06-30".into(),
    );
    let bad = edit(
        envelope(
            P,
            2,
            payment("pay-2", "", flow("5.00", "XYZ", &[("NPL", "5.00")])),
        ),
        |e| e.occurred_on = "2020-06-30".into(),
    );
    let mut ledger = Ledger::new();
    assert_eq!(ledger.apply(1, &paid.encode_to_vec()), Outcome::Applied);
    let outcome = ledger.apply(2, &bad.encode_to_vec());
    assert_eq!(outcome.code(), Some(RejectCode::UnknownCurrency));
    assert_eq!(day_cells(&ledger).len(), 1);
    let days: Vec<_> = ledger
        .day_outcomes()
        .map(|(d, o)| (d.to_string(), o.applied, o.rejected))
        .collect();
    assert_eq!(days, [("2020-06-30".to_owned(), 1, 1)]);
    let ledger = given([paid, envelope(P, 3, reversal(1))]).ledger;
    assert!(
        day_cells(&ledger).is_empty(),
        "counted in no period once reversed"
    );
    assert!(ledger.cells(fundflow_domain::CellLevel::Year).is_empty());
    let days: Vec<_> = ledger
        .day_outcomes()
        .map(|(d, o)| (d.to_string(), o.applied, o.rejected))
        .collect();
    assert_eq!(
        days,
        [
            ("2020-06-30".to_owned(), 1, 0),
            ("2020-12-15".to_owned(), 1, 0)
        ]
    );
}
