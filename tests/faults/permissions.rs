//! Fault 3: a partner that oversteps. Its NATS user may publish only on its own submit subject:
//! the server refuses another partner's submit subject, the stream's subjects and the JetStream
//! API as permission violations; an auditor may read the stream but not write it; and the gateway
//! refuses an envelope that names another partner on the partner's own subject. No total moves.

use std::time::Duration;

use fundflow_proto::{Message, v1};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::support::{Fundflow, Nats, Setup, audit_replay, connect_as, report, stream_state};

const TEST: &str = "fault 3: permissions";

fn masks(reference: &str, country: &str, value: &str) -> Value {
    json!({"type": "in_kind_donation_recorded", "ref": reference, "occurred_on": "2020-12-15",
        "donation_id": reference, "donor": "ICSHP", "valuation_basis": "declared",
        "amount": {"value": value, "currency": "USD"},
        "allocations": [{"country": country, "value": value,
            "items": [{"item": "surgical masks", "quantity": "1000", "unit": "piece"}]}]})
}

fn envelope(partner: &str, event: &Value) -> v1::Envelope {
    let object = fundflow_api::parse_event(event.to_string().as_bytes()).unwrap();
    object
        .into_envelope(partner, "2020-12-16T08:00:00Z")
        .unwrap()
}

async fn submit_json(client: &async_nats::Client, subject: &str, event: &Value) -> Value {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/json");
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.request_with_headers(subject.to_owned(), headers, event.to_string().into()),
    )
    .await
    .expect("a reply within 10 s")
    .unwrap();
    serde_json::from_slice(&reply.payload).unwrap()
}

/// Waits for the server's error about `subject` on a client's error channel.
async fn refused(errors: &mut mpsc::UnboundedReceiver<String>, subject: &str) -> String {
    let wait = async {
        while let Some(error) = errors.recv().await {
            if error.contains(subject) {
                return error;
            }
        }
        panic!("the error channel closed")
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("no permissions violation for {subject} within 10 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_cannot_publish_as_another_or_onto_the_stream() {
    let _alone = crate::one_at_a_time().await;
    let setup = Setup::new(&["icshp", "cabc"]);
    let nats = Nats::single(&setup).await;
    let mut server = Fundflow::spawn(
        &setup,
        &nats,
        "serve",
        &[
            "serve",
            "--data-dir",
            setup.path("serve").to_str().unwrap(),
            "--config",
            setup.config.to_str().unwrap(),
        ],
        1,
    );
    server.wait_ready(Duration::from_secs(30)).await;
    report(
        TEST,
        "one NATS node (deploy/nats/single.conf, users from `fundflow nats-config`), `fundflow serve`",
    );

    let (icshp_errors_tx, mut icshp_errors) = mpsc::unbounded_channel();
    let icshp = connect_as(
        &nats.urls(),
        setup.partner_seeds["icshp"].clone(),
        Some("_INBOX_icshp".into()),
        Some(icshp_errors_tx),
    )
    .await;

    // The partner's own submission goes through.
    let own = submit_json(
        &icshp,
        "fundflow.v1.submit.icshp",
        &masks("own-1", "NPL", "150.00"),
    )
    .await;
    assert_eq!(own["status"], "accepted", "{own}");
    let before = server
        .wait_for_seq(&setup, 1, Duration::from_secs(20))
        .await;
    let (_, totals_before) = server.get("/v1/totals", &setup.reviewer_token).await;
    let service = connect_as(
        &nats.urls(),
        crate::support::seed_of(&setup.service_seed),
        None,
        None,
    )
    .await;
    let (messages_before, last_before, _) = stream_state(&service).await;
    report(
        TEST,
        format!(
            "icshp submitted one event on its own subject: accepted at seq {}",
            own["seq"]
        ),
    );

    // Another partner's submit subject, the stream's subjects, the JetStream API.
    let stray = envelope("icshp", &masks("stray-1", "NGA", "999.00"));
    let forged = envelope("cabc", &masks("forged-1", "NGA", "999.00"));
    let attempts = [
        ("fundflow.v1.submit.cabc", forged.encode_to_vec()),
        (
            &*fundflow_log::subject("icshp", &stray.event_id),
            stray.encode_to_vec(),
        ),
        (
            &*fundflow_log::subject("cabc", &forged.event_id),
            forged.encode_to_vec(),
        ),
        ("$JS.API.STREAM.INFO.FUNDFLOW", Vec::new()),
        ("$JS.API.STREAM.DELETE.FUNDFLOW", Vec::new()),
        ("fundflow.v1.folded", b"{}".to_vec()),
    ];
    for (subject, payload) in &attempts {
        icshp
            .publish(subject.to_string(), payload.clone().into())
            .await
            .unwrap();
        icshp.flush().await.unwrap();
        let error = refused(&mut icshp_errors, subject).await;
        assert!(
            error.contains("Permissions Violation for Publish"),
            "{error}"
        );
        report(
            TEST,
            format!("icshp publishing on {subject}: refused by the server ({error})"),
        );
    }
    // Listening to other users' replies.
    let _sniffer = icshp.subscribe("_INBOX.>").await.unwrap();
    icshp.flush().await.unwrap();
    let error = refused(&mut icshp_errors, "_INBOX.>").await;
    assert!(
        error.contains("Permissions Violation for Subscription"),
        "{error}"
    );
    report(
        TEST,
        format!("icshp subscribing to _INBOX.>: refused ({error})"),
    );

    // Another partner's inbox, to listen to its replies.
    let _eavesdropper = icshp.subscribe("_INBOX_cabc.>").await.unwrap();
    icshp.flush().await.unwrap();
    let error = refused(&mut icshp_errors, "_INBOX_cabc.>").await;
    assert!(
        error.contains("Permissions Violation for Subscription"),
        "{error}"
    );
    report(
        TEST,
        format!("icshp subscribing to cabc's inbox _INBOX_cabc.>: refused ({error})"),
    );

    // A request whose reply subject is the stream's: the gateway must not publish its answer
    // there (it would be a record under cabc's subject).
    let injected = fundflow_log::subject("cabc", &forged.event_id);
    icshp
        .publish_with_reply(
            "fundflow.v1.submit.icshp",
            injected.clone(),
            envelope("icshp", &masks("own-2", "NPL", "1.00"))
                .encode_to_vec()
                .into(),
        )
        .await
        .unwrap();
    icshp.flush().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server
        .metric("fundflow_nats_submissions_dropped_total")
        .await
        < 1.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway did not drop the request"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report(
        TEST,
        format!(
            "icshp submitting with reply subject {injected}: the gateway drops it unanswered and appends nothing (fundflow_nats_submissions_dropped_total 1)"
        ),
    );

    // The auditor reads the stream and writes nothing.
    let (auditor_errors_tx, mut auditor_errors) = mpsc::unbounded_channel();
    let auditor = connect_as(
        &nats.urls(),
        crate::support::seed_of(&setup.auditor_seed),
        None,
        Some(auditor_errors_tx),
    )
    .await;
    let (auditor_sees, _, _) = stream_state(&auditor).await;
    assert_eq!(auditor_sees, messages_before);
    let subject = fundflow_log::subject("icshp", &stray.event_id);
    auditor
        .publish(subject.clone(), stray.encode_to_vec().into())
        .await
        .unwrap();
    auditor.flush().await.unwrap();
    let error = refused(&mut auditor_errors, &subject).await;
    report(
        TEST,
        format!(
            "auditor reads the stream info ({auditor_sees} messages); publishing on {subject}: refused ({error})"
        ),
    );

    // On its own subject, an envelope or a JSON event that names another partner: the gateway.
    let reply = icshp
        .request("fundflow.v1.submit.icshp", forged.encode_to_vec().into())
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["status"], "refused", "{reply}");
    assert_eq!(reply["problem"]["status"], 403, "{reply}");
    assert_eq!(reply["problem"]["field"], "partner_id", "{reply}");
    report(
        TEST,
        format!(
            "icshp sending cabc's envelope on its own subject: the gateway refuses it: {}",
            reply["problem"]["detail"]
        ),
    );
    let mut as_cabc = masks("forged-2", "NGA", "999.00");
    as_cabc["partner_id"] = json!("cabc");
    let reply = submit_json(&icshp, "fundflow.v1.submit.icshp", &as_cabc).await;
    assert_eq!(reply["status"], "refused", "{reply}");
    assert_eq!(reply["problem"]["status"], 403, "{reply}");
    report(
        TEST,
        format!(
            "icshp sending a JSON event with partner_id cabc: refused: {}",
            reply["problem"]["detail"]
        ),
    );

    // Over HTTP, icshp's token cannot submit for cabc either.
    let reply = crate::support::http()
        .post(format!("{}/v1/events", server.url()))
        .bearer_auth(&setup.partner_tokens["icshp"])
        .json(&as_cabc)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 403);
    report(TEST, "icshp's token posting a cabc event over HTTP: 403");

    // Nothing moved.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (messages_after, last_after, _) = stream_state(&service).await;
    assert_eq!((messages_after, last_after), (messages_before, last_before));
    let after = server.checkpoint(&setup).await;
    assert_eq!(after["seq"], before["seq"]);
    assert_eq!(after["model_digest"], before["model_digest"]);
    let (_, totals_after) = server.get("/v1/totals", &setup.reviewer_token).await;
    assert_eq!(totals_after["rows"], totals_before["rows"]);
    let replay = audit_replay(&setup, &nats);
    assert_eq!(replay["model_digest"], after["model_digest"]);
    let logged = nats.violations();
    assert!(logged.len() >= attempts.len() + 2, "{logged:#?}");
    report(
        TEST,
        format!(
            "afterwards: stream {messages_after} message(s), last seq {last_after}, unchanged; model digest {} unchanged and equal to the auditor's replay; the server logged {} violations",
            after["model_digest"],
            logged.len()
        ),
    );
    server.terminate().await;
}
