//! One conformance suite for both logs: what `fundflow-log` promises ("two implementations
//! behave the same") is checked by running the same contract against the embedded log and
//! against JetStream on a real nats-server 2.10.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use fundflow_log::embedded::EmbeddedLog;
use fundflow_log::jetstream::{JetStreamConfig, JetStreamLog};
use fundflow_log::{AppendRequest, Appended, EventLog, LogErrorKind, Record};
use fundflow_testkit::NatsServer;

fn request(partner: &str, event: &str, bytes: &'static [u8]) -> AppendRequest {
    AppendRequest {
        partner_id: partner.into(),
        event_id: event.into(),
        envelope: Bytes::from_static(bytes),
    }
}

fn record(seq: u64, partner: &str, bytes: &'static [u8]) -> Record {
    Record {
        seq,
        partner: partner.into(),
        bytes: Bytes::from_static(bytes),
    }
}

/// Every record of `range`, through `read_range` with its defaults.
async fn read_all(log: &EventLog, range: std::ops::RangeInclusive<u64>) -> Vec<Record> {
    let mut reader = log.read_range(range).batch_max(2);
    let mut records = Vec::new();
    while let Some(batch) = reader.next_batch().await.unwrap() {
        assert!(batch.len() <= 2, "batch_max is a maximum");
        records.extend(batch);
    }
    records
}

/// What every log does, from empty.
async fn log_contract(log: EventLog) {
    assert_eq!(log.last_seq().await.unwrap(), 0);
    assert_eq!(log.get(1).await.unwrap(), None);
    assert_eq!(log.find("a", "e1").await.unwrap(), None);

    // Appends are numbered 1, 2, ...; an id is stored once per partner, whatever the content.
    let results = log
        .append_batch(&[
            request("a", "e1", b"one"),
            request("b", "e1", b"two"),
            request("a", "e1", b"one again"),
        ])
        .await
        .unwrap();
    assert_eq!(
        results,
        [
            Appended::Stored { seq: 1 },
            Appended::Stored { seq: 2 },
            Appended::Duplicate { seq: 1 }
        ]
    );
    assert_eq!(log.last_seq().await.unwrap(), 2);
    // Spellings of one UUID are one id.
    let id = "6F9619FF-8B86-D011-B42D-00C04FC964FF";
    assert_eq!(
        log.append(request("a", id, b"three")).await.unwrap(),
        Appended::Stored { seq: 3 }
    );
    assert_eq!(
        log.append(request("a", &id.to_lowercase(), b"three"))
            .await
            .unwrap(),
        Appended::Duplicate { seq: 3 }
    );

    // Lookups by seq and by id.
    assert_eq!(log.get(2).await.unwrap(), Some(record(2, "b", b"two")));
    assert_eq!(log.get(4).await.unwrap(), None);
    assert_eq!(
        log.find("a", "e1").await.unwrap(),
        Some(record(1, "a", b"one"))
    );
    assert_eq!(log.find("b", "e2").await.unwrap(), None);

    // A reader from any seq, in order; then it waits for the next append.
    let mut reader = log.reader(2).await.unwrap();
    let mut records = Vec::new();
    while records.len() < 2 {
        records.extend(reader.next_batch(10, Duration::from_secs(5)).await.unwrap());
    }
    assert_eq!(records, [record(2, "b", b"two"), record(3, "a", b"three")]);
    let writer = log.clone();
    let append = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer.append(request("c", "e1", b"four")).await.unwrap();
    });
    let mut later = Vec::new();
    while later.is_empty() {
        later = reader.next_batch(10, Duration::from_secs(5)).await.unwrap();
    }
    assert_eq!(later, [record(4, "c", b"four")]);
    append.await.unwrap();

    // A range read hands over exactly its range.
    let all = read_all(&log, 1..=4).await;
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(all[0], record(1, "a", b"one"));
    assert_eq!(
        read_all(&log, 2..=3).await,
        [record(2, "b", b"two"), record(3, "a", b"three")]
    );
    let last = log.last_seq().await.unwrap();
    assert!(
        read_all(&log, last + 1..=last).await.is_empty(),
        "an empty range"
    );
    assert_eq!(read_all(&log, 0..=1).await, [record(1, "a", b"one")]);

    range_contract(&log).await;
}

/// How a range read deals with a log that is slow, quiet or stuck. `log` holds 4 records.
async fn range_contract(log: &EventLog) {
    // A stall (nothing for several reads while seq 5 is due) followed by more records: the read
    // reopens its reader and goes on.
    let mut reader = log
        .read_range(1..=6)
        .read_wait(Duration::from_millis(100))
        .patience(Duration::from_secs(20));
    let mut seqs = Vec::new();
    while seqs.len() < 4 {
        seqs.extend(
            reader
                .next_batch()
                .await
                .unwrap()
                .unwrap()
                .iter()
                .map(|r| r.seq),
        );
    }
    let writer = log.clone();
    let append = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        writer.append(request("d", "e1", b"five")).await.unwrap();
        writer.append(request("d", "e2", b"six")).await.unwrap();
    });
    while let Some(batch) = reader.next_batch().await.unwrap() {
        seqs.extend(batch.iter().map(|r| r.seq));
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    append.await.unwrap();

    // A stream that keeps delivering, if slowly, is never given up on, however long it takes
    // in all: the patience counts from the last record.
    let patience = Duration::from_millis(800);
    let mut reader = log
        .read_range(7..=12)
        .read_wait(Duration::from_millis(100))
        .patience(patience);
    let writer = log.clone();
    let trickle = tokio::spawn(async move {
        for event in ["t1", "t2", "t3", "t4", "t5", "t6"] {
            tokio::time::sleep(Duration::from_millis(300)).await;
            writer.append(request("d", event, b"slow")).await.unwrap();
        }
    });
    let started = Instant::now();
    let mut count = 0;
    while let Some(batch) = reader.next_batch().await.unwrap() {
        count += batch.len();
    }
    assert_eq!(count, 6);
    assert!(
        started.elapsed() > patience,
        "the trickle outlasts the patience"
    );
    trickle.await.unwrap();

    // Records that never come: past the patience, an error that names the seq waited for.
    let mut reader = log
        .read_range(12..=14)
        .read_wait(Duration::from_millis(100))
        .patience(Duration::from_millis(500));
    assert_eq!(reader.next_batch().await.unwrap().unwrap().len(), 1);
    let started = Instant::now();
    let err = reader.next_batch().await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.kind(), LogErrorKind::Read);
    assert!(err.is_transient());
    let message = err.to_string();
    assert!(message.contains("at seq 13 of 14"), "{message}");
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
        "gave up after {waited:?}"
    );
}

#[tokio::test]
async fn the_embedded_log_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    log_contract(EventLog::from(EmbeddedLog::open(dir.path()).await.unwrap())).await;
}

#[tokio::test]
async fn the_jetstream_log_keeps_the_contract() {
    let server = NatsServer::start();
    let log = JetStreamLog::connect(JetStreamConfig::new(server.url()))
        .await
        .unwrap();
    log_contract(EventLog::from(log)).await;
}

#[tokio::test]
async fn a_range_read_survives_a_restart_of_the_server() {
    let mut server = NatsServer::start();
    let mut config = JetStreamConfig::new(server.url());
    config.ack_timeout = Duration::from_secs(1);
    let log = EventLog::from(JetStreamLog::connect(config).await.unwrap());
    let requests: Vec<_> = (0..3_000)
        .map(|i| AppendRequest {
            partner_id: "a".into(),
            event_id: format!("e{i}"),
            envelope: Bytes::from_static(b"x"),
        })
        .collect();
    log.append_batch(&requests).await.unwrap();
    let mut reader = log
        .read_range(1..=3_000)
        .batch_max(50)
        .read_wait(Duration::from_millis(500))
        .patience(Duration::from_secs(30));
    // A batch is what arrived within the wait, at most 50: the read is mid-range either way.
    let first = reader.next_batch().await.unwrap().unwrap();
    let last = first.last().map(|r| r.seq).unwrap();
    assert!((1..=50).contains(&last), "first batch ended at seq {last}");
    // The reader's consumer goes with the server; the read reopens one once it is back.
    server.kill();
    let restart = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_secs(1));
        server.restart();
        server
    });
    let mut seqs: Vec<u64> = first.iter().map(|r| r.seq).collect();
    while let Some(batch) = reader.next_batch().await.unwrap() {
        seqs.extend(batch.iter().map(|r| r.seq));
    }
    assert_eq!(seqs, (1..=3_000).collect::<Vec<_>>());
    drop(restart.await.unwrap());
}
