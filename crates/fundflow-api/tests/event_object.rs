//! The event object: the issue's example both ways, the intake's error codes, the tables against
//! the serde derive, and the round trip of generated envelopes.

use fundflow_api::schema::{EventType, FLOW_FIELDS, body_fields};
use fundflow_api::{EventBody, EventError, EventObject, derived_event_id, parse_event};
use fundflow_proto::{Message, v1};
use proptest::prelude::*;
use serde_json::{Value, json};

const MASKS: &str = r#"{"type": "in_kind_donation_recorded", "ref": "ICSHP-2020-12-nepal", "occurred_on": "2020-12-15",
    "donation_id": "icshp-masks-nepal", "donor": "International Center on Small Hydro Power",
    "amount": {"value": "31500.00", "currency": "USD"},
    "allocations": [{"country": "NP", "value": "31500.00",
                     "items": [{"item": "disposable surgical mask", "unit": "piece", "quantity": "210000"}]}],
    "description": "Masks for the municipalities of Khajura and Bardaghat"}"#;

const RECORDED_AT: &str = "2020-12-16T08:00:00Z";

fn invalid(text: &str) -> fundflow_api::InvalidEvent {
    match parse_event(text.as_bytes()) {
        Err(invalid) => invalid,
        Ok(object) => match object.into_envelope("icshp", RECORDED_AT) {
            Err(EventError::Invalid(invalid)) => invalid,
            other => panic!("not invalid: {other:?}"),
        },
    }
}

#[test]
fn the_issue_example_becomes_a_valid_envelope_and_back() {
    let object = parse_event(MASKS.as_bytes()).unwrap();
    let envelope = object.into_envelope("icshp", RECORDED_AT).unwrap();
    assert_eq!(
        envelope.event_id,
        derived_event_id("icshp", "ICSHP-2020-12-nepal")
    );
    fundflow_domain::Event::from_envelope(&envelope).unwrap();
    let json = serde_json::to_value(EventObject::of_envelope(&envelope).unwrap()).unwrap();
    assert_eq!(json["allocations"][0]["country"], "NPL");
    assert_eq!(json["amount"]["value"], "31500.00");
    assert_eq!(json["type"], "in_kind_donation_recorded");
    assert_eq!(json["valuation_basis"], "declared");
    assert_eq!(json["recorded_at"], RECORDED_AT);
}

const PAYMENT: &str = r#"{"event_id": "5f0c6b1e-8d2a-4c3b-9e7f-1a2b3c4d5e6f", "partner_id": "icshp",
    "occurred_on": "2020-06-01", "type": "contribution_paid", "payment_id": "pay-1",
    "pledge_id": "pl-1", "donor": "Government of Japan",
    "amount": {"value": "10.00", "currency": "USD"},
    "allocations": [{"country": "TZA", "value": "10.00"}], "description": "First instalment"}"#;

#[test]
fn a_payments_donor_survives_json_to_envelope_to_json_and_its_absence_too() {
    // The text through the intake to an envelope, and the envelope back to JSON.
    let through_the_log = |text: &str| {
        let envelope = parse_event(text.as_bytes())
            .unwrap()
            .into_envelope("icshp", RECORDED_AT)
            .unwrap();
        let json = serde_json::to_value(EventObject::of_envelope(&envelope).unwrap()).unwrap();
        (envelope, json)
    };
    let mut expected: Value = serde_json::from_str(PAYMENT).unwrap();
    expected["recorded_at"] = json!(RECORDED_AT);
    let (envelope, json) = through_the_log(PAYMENT);
    let Some(v1::envelope::Body::ContributionPaid(body)) = &envelope.body else {
        panic!("not a payment: {envelope:?}");
    };
    assert_eq!(body.donor, "Government of Japan");
    assert_eq!(json, expected);

    // Without one the payment counts under its pledge's donor: none is made up on the way.
    let without = PAYMENT.replace(r#""donor": "Government of Japan","#, "");
    let (envelope, json) = through_the_log(&without);
    let Some(v1::envelope::Body::ContributionPaid(body)) = &envelope.body else {
        panic!("not a payment: {envelope:?}");
    };
    assert_eq!(body.donor, "");
    let Value::Object(mut expected) = expected else {
        panic!("not an object: {expected}");
    };
    expected.remove("donor");
    assert_eq!(json, Value::Object(expected));
}

#[test]
fn a_ref_gives_the_same_id_for_the_same_partner_only() {
    assert_eq!(derived_event_id("a", "r1"), derived_event_id("a", "r1"));
    assert_ne!(derived_event_id("a", "r1"), derived_event_id("b", "r1"));
    assert_ne!(derived_event_id("a", "r1"), derived_event_id("a", "r2"));
    assert!(fundflow_domain::wire::parse_event_id(&derived_event_id("a", "r1")).is_some());
}

#[test]
fn a_number_for_an_amount_is_refused_naming_the_field() {
    let text = MASKS.replace(
        r#""value": "31500.00", "currency""#,
        r#""value": 31500.00, "currency""#,
    );
    let problem = invalid(&text);
    assert_eq!(problem.field, "amount.value");
    assert_eq!(problem.code, "invalid_type");
    assert!(
        problem
            .message
            .starts_with("amount.value: must be a JSON string")
    );
    let text = MASKS.replace(r#""quantity": "210000""#, r#""quantity": 210000"#);
    let problem = invalid(&text);
    assert_eq!(problem.field, "allocations[0].items[0].quantity");
    let problem = invalid(&MASKS.replace(r#""allocations": ["#, r#""allocations": [3, "#));
    assert_eq!(
        (problem.code, problem.field.as_str()),
        ("invalid_type", "allocations[0]")
    );
}

#[test]
fn unknown_and_misplaced_fields_are_refused() {
    let problem = invalid(&MASKS.replace(r#""donor""#, r#""donour""#));
    assert_eq!(
        (problem.code, problem.field.as_str()),
        ("unknown_field", "donour")
    );
    let problem = invalid(&MASKS.replace(r#""unit""#, r#""units""#));
    assert_eq!(
        (problem.code, problem.field.as_str()),
        ("unknown_field", "allocations[0].items[0].units")
    );
    let problem = invalid(&MASKS.replace(r#""donor""#, r#""payment_id": "p", "donor""#));
    assert_eq!(
        (problem.code, problem.field.as_str()),
        ("unexpected_field", "payment_id")
    );
    // A submission does not say when it was recorded: the gateway's clock does.
    let problem = invalid(&MASKS.replace(r#""donor""#, r#""recorded_at": "x", "donor""#));
    assert_eq!(
        (problem.code, problem.field.as_str()),
        ("unknown_field", "recorded_at")
    );
    let problem = invalid(&MASKS.replace(r#""donor""#, r#""donor": "a", "donor""#));
    assert_eq!(
        (problem.code, problem.field.as_str()),
        ("invalid_json", "donor")
    );
}

#[test]
fn the_checks_keep_their_order_identity_before_type() {
    let no_type_no_ref = MASKS
        .replace(r#""type": "in_kind_donation_recorded", "#, "")
        .replace(r#""ref": "ICSHP-2020-12-nepal", "#, "");
    let problem = invalid(&no_type_no_ref);
    assert_eq!(
        (problem.code, problem.field.as_str()),
        ("missing_field", "ref")
    );
    let problem = invalid(&MASKS.replace("in_kind_donation_recorded", "gift"));
    assert_eq!(
        (problem.code, problem.field.as_str()),
        ("unknown_kind", "type")
    );
    let problem = invalid("{not json");
    assert_eq!((problem.code, problem.field.as_str()), ("invalid_json", ""));
}

#[test]
fn another_partners_id_in_the_body_is_forbidden() {
    let text = MASKS.replace(r#""type""#, r#""partner_id": "cabc", "type""#);
    let object = parse_event(text.as_bytes()).unwrap();
    let err = object.into_envelope("icshp", RECORDED_AT).unwrap_err();
    assert!(matches!(err, EventError::NotThePartner { .. }), "{err:?}");
}

/// A value of the right JSON shape for a body field.
fn sample(field: &str) -> Value {
    match field {
        "amount" => json!({"value": "1.00", "currency": "USD"}),
        "allocations" => json!([{"country": "TZA", "value": "1.00"}]),
        _ => json!("x"),
    }
}

#[test]
fn the_serde_derive_takes_exactly_the_fields_of_the_tables() {
    for kind in EventType::ALL {
        let object: EventObject =
            serde_json::from_value(json!({"type": kind.as_str(), "event_id": "e"})).unwrap();
        assert_eq!(
            serde_json::to_value(&object.body).unwrap()["type"],
            kind.as_str()
        );
        for (field, _) in body_fields() {
            let mut value = json!({"type": kind.as_str()});
            value[field] = sample(field);
            let taken = serde_json::from_value::<EventBody>(value.clone()).is_ok();
            assert_eq!(taken, kind.takes(field), "{} {field}", kind.as_str());
            if taken {
                let again = serde_json::to_value(
                    serde_json::from_value::<EventBody>(value.clone()).unwrap(),
                )
                .unwrap();
                assert_eq!(again, value, "{} {field}", kind.as_str());
            }
        }
    }
    assert_eq!(FLOW_FIELDS.len(), 5);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn every_valid_envelope_survives_the_json_round_trip(seed in any::<u64>()) {
        let config = fundflow_gen::GenConfig { events: 60, partners: 4, invalid_per_mille: 0 };
        for bytes in fundflow_gen::LogGenerator::new(seed, config) {
            let Ok(envelope) = v1::Envelope::decode(bytes.as_slice()) else { continue };
            if fundflow_domain::Event::from_envelope(&envelope).is_err() {
                continue;
            }
            let object = EventObject::of_envelope(&envelope).unwrap();
            let text = serde_json::to_string(&object).unwrap();
            let read: EventObject = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(&read, &object);
            let back = read.into_envelope(&envelope.partner_id, &envelope.recorded_at).unwrap();
            prop_assert_eq!(&back, &envelope);
            // And through the intake a partner's submission takes (which may not say when it
            // was recorded).
            let submitted = EventObject { recorded_at: None, ..object };
            let text = serde_json::to_vec(&submitted).unwrap();
            let back = parse_event(&text)
                .unwrap()
                .into_envelope(&envelope.partner_id, &envelope.recorded_at)
                .unwrap();
            prop_assert_eq!(&back, &envelope);
        }
    }
}
