//! The replies keep their wire shape, and what the server writes the client reads back.

use fundflow_api::{ProblemBody, Status, SubmitReply, SubmitResult, Summary, TotalsReply};
use serde_json::json;

#[test]
fn a_refusal_reads_as_it_always_has() {
    let result = SubmitResult {
        line: Some(3),
        event_id: None,
        seq: None,
        status: Status::Refused,
        code: None,
        field: None,
        message: None,
        problem: Some(ProblemBody {
            kind: "urn:fundflow:problem:invalid_type".into(),
            title: "invalid event".into(),
            status: 400,
            detail: "amount.value: must be a JSON string".into(),
            code: "invalid_type".into(),
            field: Some("amount.value".into()),
            event_id: None,
            seq: None,
        }),
    };
    let wire = serde_json::to_value(&result).unwrap();
    assert_eq!(
        wire,
        json!({"line": 3, "status": "refused", "problem": {
            "type": "urn:fundflow:problem:invalid_type", "title": "invalid event", "status": 400,
            "detail": "amount.value: must be a JSON string", "code": "invalid_type",
            "field": "amount.value"}})
    );
    assert_eq!(
        serde_json::from_value::<SubmitResult>(wire).unwrap(),
        result
    );
}

#[test]
fn every_status_has_one_name_both_ways() {
    for status in Status::ALL {
        let wire = serde_json::to_value(status).unwrap();
        assert_eq!(wire, status.as_str());
        assert_eq!(serde_json::from_value::<Status>(wire).unwrap(), status);
    }
    assert!(serde_json::from_value::<Status>(json!("lost")).is_err());
    let summary = Summary::of([Status::Applied, Status::Applied, Status::Conflict]);
    let reply = SubmitReply {
        results: Vec::new(),
        summary,
    };
    assert_eq!(
        serde_json::to_value(&reply).unwrap()["summary"],
        json!({"accepted": 0, "duplicate": 0, "applied": 2, "rejected": 0, "refused": 0, "conflict": 1})
    );
}

#[test]
fn the_totals_of_a_ledger_read_back_as_written() {
    let mut ledger = fundflow_domain::Ledger::new();
    for (seq, bytes) in fundflow_gen::LogGenerator::new(
        7,
        fundflow_gen::GenConfig {
            events: 200,
            partners: 3,
            invalid_per_mille: 0,
        },
    )
    .enumerate()
    {
        ledger.apply(seq as u64 + 1, &bytes);
    }
    let report = fundflow_api::Report::of(&ledger);
    assert!(!report.totals.is_empty());
    let reply = TotalsReply {
        as_of_seq: report.last_seq,
        log_digest: report.log_digest.clone(),
        model_digest: Some(report.model_digest.clone()),
        rows: report.totals.clone(),
    };
    let text = serde_json::to_string(&reply).unwrap();
    assert_eq!(serde_json::from_str::<TotalsReply>(&text).unwrap(), reply);
    let report_text = serde_json::to_string(&report).unwrap();
    assert_eq!(
        serde_json::from_str::<fundflow_api::Report>(&report_text).unwrap(),
        report
    );
}
