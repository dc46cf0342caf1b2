//! The auditor's two readers of a log, export and replay, over the embedded log: both read it
//! whole (through `EventLog::read_range`) and agree with each other and with the export file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use fundflow_audit::{Cutoff, Details, export, replay_file, replay_log, verify};
use fundflow_gen::{GenConfig, LogGenerator};
use fundflow_log::embedded::EmbeddedLog;
use fundflow_log::{AppendRequest, EventLog};
use fundflow_proto::{Message, v1};

async fn filled_log(dir: &std::path::Path, events: u64) -> EventLog {
    let log = EventLog::from(EmbeddedLog::open(dir).await.unwrap());
    let requests: Vec<_> = LogGenerator::new(
        11,
        GenConfig {
            events,
            ..GenConfig::default()
        },
    )
    .filter_map(|record| {
        let e = v1::Envelope::decode(record.as_slice()).ok()?;
        fundflow_domain::wire::is_valid_partner_id(&e.partner_id).then(|| AppendRequest {
            partner_id: e.partner_id,
            event_id: e.event_id,
            envelope: Bytes::from(record),
        })
    })
    .collect();
    log.append_batch(&requests).await.unwrap();
    log
}

#[tokio::test(flavor = "multi_thread")]
async fn export_and_replay_read_the_whole_log_and_agree() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled_log(&dir.path().join("log"), 10_000).await;
    let last = log.last_seq().await.unwrap();
    assert!(last > 4096, "more than one batch: {last}");

    let out = dir.path().join("export.bin");
    let manifest = export(
        &log,
        "embedded:test",
        &out,
        time::OffsetDateTime::now_utc(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!((manifest.count, manifest.last_seq), (last, last));
    assert_eq!(verify(&out).unwrap().count, last);

    let from_log = replay_log(&log, Cutoff::All, Details::None).await.unwrap();
    let from_file = replay_file(&out, Cutoff::All, Details::None).unwrap();
    assert_eq!(from_log.read, last);
    assert_eq!(from_log.ledger.last_seq(), last);
    assert_eq!(
        hex::encode(from_log.ledger.log_digest()),
        manifest.log_digest
    );
    assert_eq!(
        from_log.ledger.model_digest(),
        from_file.ledger.model_digest()
    );

    let until = replay_log(&log, Cutoff::UntilSeq(100), Details::None)
        .await
        .unwrap();
    assert_eq!((until.read, until.ledger.last_seq()), (100, 100));
}
