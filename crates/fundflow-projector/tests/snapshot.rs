//! The fold's snapshot: a projector that starts from it and folds the log's tail is, bit for bit,
//! a projector that refolded the whole log; a snapshot that does not check out is refused,
//! never used, and replaced.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::{filled_log, requests};
use fundflow_domain::{Ledger, Source};
use fundflow_gen::{GenConfig, LogGenerator};
use fundflow_log::embedded::EmbeddedLog;
use fundflow_log::{AppendRequest, EventLog};
use fundflow_projector::{Projector, ProjectorConfig, RunUntil};
use fundflow_proto::{Message, v1};

/// A fold in memory of the log's records up to `until`, the way an auditor would.
async fn replay_until(log: &EventLog, until: u64) -> Ledger {
    let mut ledger = Ledger::new();
    let mut records = log.read_range(1..=until).batch_max(1000);
    while let Some(batch) = records.next_batch().await.unwrap() {
        for r in batch {
            let source = Source {
                subject_partner: Some(&r.partner),
            };
            ledger.apply_from(r.seq, &r.bytes, source);
        }
    }
    ledger
}

fn config(snapshot_every: Option<Duration>) -> ProjectorConfig {
    ProjectorConfig {
        batch_max: 500,
        snapshot_every,
        ..ProjectorConfig::default()
    }
}

const HOURLY: Option<Duration> = Some(Duration::from_secs(3600));

fn snapshot_of(model_dir: &Path) -> PathBuf {
    model_dir.with_file_name("model.fold")
}

/// Opens, checks the start against a replay, runs to `until`; returns (resumed from, stopped at).
async fn stage(
    model_dir: &Path,
    log: &EventLog,
    config: ProjectorConfig,
    until: u64,
) -> (u64, u64) {
    let projector = Projector::open(model_dir, log, config).await.unwrap();
    let resumed_from = projector.metrics().resumed_from_seq.load(Ordering::Relaxed);
    let at = projector.ledger().last_seq();
    let replayed = replay_until(log, at).await;
    assert_eq!(projector.ledger().checkpoint(), replayed.checkpoint());
    assert_eq!(
        projector.ledger().model_digest(),
        replayed.model_digest(),
        "started from {resumed_from}, at {at}"
    );
    let projector = projector
        .run(log.clone(), RunUntil::Seq(until))
        .await
        .unwrap();
    (resumed_from, projector.ledger().last_seq())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_start_from_the_snapshot_and_the_tail_is_a_refold_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled_log(&dir.path().join("log"), 9, 6_000).await;
    let last = log.last_seq().await.unwrap();
    let model_dir = dir.path().join("model");

    // A first run writes a snapshot when it ends.
    let (from, first_stop) = stage(&model_dir, &log, config(HOURLY), 1_500).await;
    assert_eq!(from, 0);
    assert!(snapshot_of(&model_dir).exists());
    // A run that writes none leaves the snapshot behind the model: the next start folds the
    // records between the two.
    let (from, second_stop) = stage(&model_dir, &log, config(None), 4_000).await;
    assert_eq!(from, first_stop);
    assert!(second_stop > first_stop);
    let (from, third_stop) = stage(&model_dir, &log, config(HOURLY), last).await;
    assert_eq!(
        from, first_stop,
        "the snapshot of the first run, then the tail"
    );
    assert_eq!(third_stop, last);
    // Then from the snapshot at the end, with nothing to fold.
    let (from, _) = stage(&model_dir, &log, config(HOURLY), last).await;
    assert_eq!(from, last);
    // --verify refolds from seq 1 whatever snapshot there is, and agrees.
    let verify = ProjectorConfig {
        verify: true,
        ..config(HOURLY)
    };
    let (from, _) = stage(&model_dir, &log, verify, last).await;
    assert_eq!(from, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_are_written_while_running_at_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled_log(&dir.path().join("log"), 4, 4_000).await;
    let last = log.last_seq().await.unwrap();
    let model_dir = dir.path().join("model");
    // Every batch is due (a zero interval), but a run cut short keeps only what was written
    // while running: dropped without the final snapshot, as a crash would leave it.
    let projector = Projector::open(&model_dir, &log, config(Some(Duration::ZERO)))
        .await
        .unwrap();
    let metrics = projector.metrics();
    let projector = projector
        .run(log.clone(), RunUntil::Seq(last))
        .await
        .unwrap();
    assert_eq!(metrics.snapshot_seq.load(Ordering::Relaxed), last);
    assert_eq!(metrics.snapshot_failures.load(Ordering::Relaxed), 0);
    drop(projector);
    let (from, _) = stage(&model_dir, &log, config(None), last).await;
    assert_eq!(from, last);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_that_does_not_check_out_is_refused_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled_log(&dir.path().join("log"), 5, 3_000).await;
    let last = log.last_seq().await.unwrap();
    let model_dir = dir.path().join("model");
    let path = snapshot_of(&model_dir);
    stage(&model_dir, &log, config(HOURLY), last).await;
    let good = std::fs::read(&path).unwrap();

    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x10;
    let damaged: Vec<(&str, Vec<u8>)> = vec![
        ("one bit flipped", flipped),
        ("cut in half", good[..good.len() / 2].to_vec()),
        ("cut before its trailer", good[..good.len() - 40].to_vec()),
        ("not a snapshot", b"hello".to_vec()),
        ("empty", Vec::new()),
    ];
    for (what, bytes) in damaged {
        std::fs::write(&path, &bytes).unwrap();
        // Refused: the start refolds from seq 1 (and `stage` checks it against a replay) ...
        let (from, _) = stage(&model_dir, &log, config(HOURLY), last).await;
        assert_eq!(from, 0, "{what}");
        // ... and writes a good one in its place.
        let (from, _) = stage(&model_dir, &log, config(HOURLY), last).await;
        assert_eq!(from, last, "{what}");
    }

    // A whole snapshot of another model, of another log, is refused too.
    let other_log = filled_log(&dir.path().join("other-log"), 6, 3_000).await;
    let other_model = dir.path().join("other").join("model");
    std::fs::create_dir_all(other_model.parent().unwrap()).unwrap();
    let other_last = other_log.last_seq().await.unwrap();
    stage(&other_model, &other_log, config(HOURLY), other_last).await;
    std::fs::copy(snapshot_of(&other_model), &path).unwrap();
    let (from, _) = stage(&model_dir, &log, config(HOURLY), last).await;
    assert_eq!(from, 0, "another log's snapshot");
}

#[tokio::test(flavor = "multi_thread")]
async fn rebuild_drops_the_snapshot_with_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled_log(&dir.path().join("log"), 3, 1_000).await;
    let last = log.last_seq().await.unwrap();
    let model_dir = dir.path().join("model");
    stage(&model_dir, &log, config(HOURLY), last).await;
    assert!(snapshot_of(&model_dir).exists());
    Projector::clear(&model_dir).unwrap();
    assert!(!snapshot_of(&model_dir).exists());
    let (from, at) = stage(&model_dir, &log, config(HOURLY), last).await;
    assert_eq!((from, at), (0, last));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reversal_after_a_restart_undoes_exactly_an_event_from_before_the_snapshot() {
    use fundflow_gen::{envelope, flow, pledge, reversal, uuid_text};
    let dir = tempfile::tempdir().unwrap();
    let log = filled_log(&dir.path().join("log"), 8, 2_000).await;
    let model_dir = dir.path().join("model");
    // An early pledge of its own partner, then many events, then a restart from the snapshot.
    let early = envelope(
        "far-back-partner",
        0xfa4,
        pledge(
            "fb-1",
            flow("1234.56", "USD", &[("KEN", "1000.00"), ("NPL", "234.56")]),
        ),
    );
    assert_eq!(uuid_text(0xfa4), early.event_id);
    log.append_batch(&requests([early.encode_to_vec()]))
        .await
        .unwrap();
    let more = GenConfig {
        events: 2_000,
        ..GenConfig::default()
    };
    log.append_batch(&requests(LogGenerator::new(18, more)))
        .await
        .unwrap();
    let last = log.last_seq().await.unwrap();
    stage(&model_dir, &log, config(HOURLY), last).await;
    let undo = envelope("far-back-partner", 0xfa5, reversal(0xfa4));
    log.append_batch(&requests([undo.encode_to_vec()]))
        .await
        .unwrap();
    let (from, at) = stage(&model_dir, &log, config(HOURLY), last + 1).await;
    assert_eq!((from, at), (last, last + 1));
    let projector = Projector::open(&model_dir, &log, config(None))
        .await
        .unwrap();
    let totals = |ledger: &Ledger| {
        let mut totals: Vec<_> = ledger.totals().into_iter().collect();
        totals.sort_by_key(|(key, _)| *key);
        totals
    };
    // The second generated batch adds its own totals; without the pledge and its reversal, the
    // totals are those of both generated batches alone.
    let mut without = replay_until(&log, 0).await;
    let mut seq = 0;
    let mut records = log.read_range(1..=last + 1).batch_max(1000);
    while let Some(batch) = records.next_batch().await.unwrap() {
        for r in batch {
            seq = r.seq;
            let e = v1::Envelope::decode(&r.bytes[..]).unwrap();
            if e.partner_id != "far-back-partner" {
                let source = Source {
                    subject_partner: Some(&r.partner),
                };
                without.apply_from(r.seq, &r.bytes, source);
            }
        }
    }
    assert_eq!(seq, last + 1);
    assert_eq!(totals(projector.ledger()), totals(&without));
    assert!(totals(&without).len() > 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_state_does_not_grow_when_one_event_is_resent_fifty_thousand_times() {
    use fundflow_gen::{envelope, flow, pledge};
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::from(EmbeddedLog::open(&dir.path().join("log")).await.unwrap());
    let model_dir = dir.path().join("model");
    let bytes = Bytes::from(
        envelope(
            "resender",
            0x5e4d,
            pledge("r-1", flow("100.00", "USD", &[("KEN", "100.00")])),
        )
        .encode_to_vec(),
    );
    // The log refuses a second record under one (partner, event id); a writer other than the
    // gateway can still store the same envelope under other ids, which the fold sees as resends.
    let resend = |from: u64, count: u64| -> Vec<AppendRequest> {
        (from..from + count)
            .map(|i| AppendRequest {
                partner_id: "resender".into(),
                event_id: format!("copy-{i}"),
                envelope: bytes.clone(),
            })
            .collect()
    };
    let size_after = |resends: u64| {
        let log = log.clone();
        let model_dir = model_dir.clone();
        async move {
            let last = log.last_seq().await.unwrap();
            let projector = Projector::open(&model_dir, &log, config(HOURLY))
                .await
                .unwrap();
            let projector = projector
                .run(log.clone(), RunUntil::Seq(last))
                .await
                .unwrap();
            assert_eq!(projector.ledger().counts(), (1, resends));
            assert!(projector.ledger().rejected().is_empty());
            let memory = projector.ledger().memory();
            drop(projector);
            (
                std::fs::metadata(snapshot_of(&model_dir)).unwrap().len(),
                memory,
            )
        }
    };
    log.append_batch(&resend(0, 11)).await.unwrap();
    let (small, memory) = size_after(10).await;
    for chunk in 0..5 {
        log.append_batch(&resend(11 + chunk * 10_000, 10_000))
            .await
            .unwrap();
    }
    let (large, grown) = size_after(50_010).await;
    // The event index, the effects and the cells did not move; only the counts did (and the
    // rejection chain, fixed-size), which the encoding writes as varints: a few bytes more.
    assert!(
        large <= small + 8,
        "{small} bytes after 10 resends, {large} after 50,010"
    );
    // In memory likewise, part by part (a start from the snapshot sizes its tables exactly, so
    // they may be smaller than the first fold's), and what a batch's rejections took was given
    // back.
    let parts = |m: fundflow_domain::FoldMemory| [m.events, m.effects, m.cells, m.pledges, m.names];
    assert!(
        parts(grown).iter().zip(parts(memory)).all(|(g, m)| *g <= m),
        "{memory:?} then {grown:?}"
    );
    assert!(
        grown.other <= memory.other + 4096,
        "{memory:?} then {grown:?}"
    );
    // And a restart from that snapshot still says `duplicate` to the next resend.
    log.append_batch(&resend(100_000, 1)).await.unwrap();
    assert!(size_after(50_011).await.0 <= small + 8);
}
