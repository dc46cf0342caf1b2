//! The NATS path, end to end, against a real nats-server 2.10 started for each test: publishing,
//! deduplication, a projector killed with SIGKILL, the server restarted under load, and garbage
//! on the stream.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use fundflow_proto::{Message, v1};
use fundflow_testkit::NatsServer;
use futures::StreamExt;
use serde_json::Value;

use crate::helpers::{command, encoded, fundflow_ok, fundflow_on, path, write_log};

/// Runs `fundflow` against `server` and returns its standard output.
fn ff(server: &NatsServer, args: &[&str]) -> String {
    fundflow_on(&server.url(), args)
}

/// Starts `fundflow` in the background against `server`.
fn spawn_ff(server: &NatsServer, args: &[&str]) -> Child {
    command()
        .args(args)
        .env("FUNDFLOW_NATS_URL", server.url())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fundflow starts")
}

fn totals(data_dir: &Path) -> Value {
    let out = fundflow_ok(&[
        "totals",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--format",
        "json",
    ]);
    serde_json::from_str(&out).unwrap()
}

/// The records of a generated log that the log accepts (publish-file skips the others).
fn publishable(records: &[Vec<u8>]) -> Vec<(v1::Envelope, Vec<u8>)> {
    records
        .iter()
        .filter_map(|r| {
            let e = v1::Envelope::decode(r.as_slice()).ok()?;
            fundflow_domain::wire::is_valid_partner_id(&e.partner_id).then(|| (e, r.clone()))
        })
        .collect()
}

fn read_file(file: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(file).unwrap();
    fundflow_proto::RecordReader::new(bytes.as_slice())
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Publishes raw bytes with the trusted message id, as another trusted service would.
async fn raw_publish(js: &jetstream::Context, subject_partner: &str, msg_id: &str, bytes: Vec<u8>) {
    let message = jetstream::message::PublishMessage::build()
        .message_id(msg_id)
        .payload(bytes.into());
    js.send_publish(format!("fundflow.v1.events.{subject_partner}"), message)
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Every (subject, msg id) on the stream, read back with a consumer of the test's own.
async fn stream_ids(url: &str) -> Vec<(u64, String)> {
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    let stream = js.get_stream("FUNDFLOW").await.unwrap();
    let last = stream.cached_info().state.last_sequence;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut ids = Vec::new();
    while (ids.len() as u64) < last {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string())
            .unwrap_or_default();
        ids.push((m.info().unwrap().stream_sequence, id));
    }
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn published_events_give_the_same_totals_as_the_embedded_log_and_a_file_replay() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("log.ffl");
    fundflow_ok(&["gen-log", "--events", "10000", "--seed", "11", path(&file)]);
    let records = read_file(&file);
    let accepted = publishable(&records);

    // The first 3,000 by a raw NATS publish, not through fundflow's code; the rest by publish-file.
    ff(
        &server,
        &[
            "project",
            "--once",
            "--data-dir",
            path(&dir.path().join("warmup")),
        ],
    ); // creates the stream
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    for (envelope, bytes) in &accepted[..3000] {
        let id = format!("{}:{}", envelope.partner_id, envelope.event_id);
        raw_publish(&js, &envelope.partner_id, &id, bytes.clone()).await;
    }
    let rest = dir.path().join("rest.ffl");
    write_log(
        &rest,
        &accepted[3000..]
            .iter()
            .map(|(_, b)| b.clone())
            .collect::<Vec<_>>(),
    );
    let published = ff(&server, &["publish-file", path(&rest)]);
    assert!(published.starts_with("stored "), "{published}");

    let nats_dir = dir.path().join("nats");
    ff(
        &server,
        &["project", "--once", "--data-dir", path(&nats_dir)],
    );
    let embedded_dir = dir.path().join("embedded");
    fundflow_ok(&[
        "publish-file",
        path(&file),
        "--embedded",
        "--data-dir",
        path(&embedded_dir),
    ]);
    fundflow_ok(&[
        "project",
        "--once",
        "--embedded",
        "--data-dir",
        path(&embedded_dir),
    ]);
    let replay: Value = serde_json::from_str(&fundflow_ok(&["replay-file", path(&file)])).unwrap();

    let (nats, embedded) = (totals(&nats_dir), totals(&embedded_dir));
    assert_eq!(nats["totals"], embedded["totals"]);
    assert_eq!(nats["totals"], replay["totals"]);
    assert_eq!(nats["in_kind_items"], replay["in_kind_items"]);
    // Same records in the same order: the two logs are the same log.
    assert_eq!(nats["log_digest"], embedded["log_digest"]);
    assert_eq!(nats["model_digest"], embedded["model_digest"]);
    assert!(nats["totals"].as_array().unwrap().len() > 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_published_twice_is_stored_once_inside_and_outside_the_duplicate_window() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A one-second window, so the test can step outside it.
    ff(
        &server,
        &[
            "project",
            "--once",
            "--duplicate-window-secs",
            "1",
            "--data-dir",
            path(&data),
        ],
    );
    let event = fundflow_gen::envelope(
        "icshp",
        7,
        fundflow_gen::parallel_funding(
            "pf-1",
            fundflow_gen::flow("258800.00", "USD", &[("TZA", "258800.00")]),
        ),
    );
    let file = dir.path().join("one.ffl");
    write_log(&file, &[encoded(event)]);
    assert!(ff(&server, &["publish-file", path(&file)]).starts_with("stored 1, duplicates 0"));
    assert!(ff(&server, &["publish-file", path(&file)]).starts_with("stored 0, duplicates 1"));
    std::thread::sleep(Duration::from_millis(2500));
    // Outside the window the subject's expected-sequence check still refuses a second record.
    assert!(ff(&server, &["publish-file", path(&file)]).starts_with("stored 0, duplicates 1"));

    ff(&server, &["project", "--once", "--data-dir", path(&data)]);
    let report = totals(&data);
    assert_eq!(report["last_seq"], 1);
    let global: Vec<_> = report["totals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["scope"] == "global")
        .collect();
    assert_eq!(global.len(), 1);
    assert_eq!(global[0]["amount"], "258800.00");
    assert_eq!(report["rejected"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_and_a_mismatched_partner_on_the_stream_are_rejected_and_the_projector_goes_on() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ff(&server, &["project", "--once", "--data-dir", path(&data)]);
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let masks = |id| {
        fundflow_gen::envelope(
            "icshp",
            id,
            fundflow_gen::in_kind(
                "masks",
                fundflow_gen::flow("31500.00", "USD", &[("NPL", "31500.00")]),
                &[("disposable surgical mask", "piece", "210000")],
            ),
        )
    };
    raw_publish(&js, "icshp", "x:1", vec![0xde, 0xad, 0xbe, 0xef, 0x01]).await;
    let mut theirs = masks(2);
    theirs.partner_id = "cabc".into();
    raw_publish(&js, "icshp", "x:2", encoded(theirs)).await;
    raw_publish(&js, "icshp", "icshp:3", encoded(masks(3))).await;

    ff(&server, &["project", "--once", "--data-dir", path(&data)]);
    let report = totals(&data);
    assert_eq!(report["last_seq"], 3);
    let codes: Vec<_> = report["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["seq"].clone(), r["code"].clone()))
        .collect();
    assert_eq!(
        codes,
        [
            (1.into(), "undecodable".into()),
            (2.into(), "partner_mismatch".into())
        ]
    );
    let npl: Vec<_> = report["totals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["key"] == "NPL")
        .collect();
    assert_eq!(npl.len(), 1);
    assert_eq!(npl[0]["amount"], "31500.00");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_projector_killed_mid_run_resumes_to_the_digest_of_a_from_scratch_replay() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("log.ffl");
    fundflow_ok(&["gen-log", "--events", "120000", "--seed", "21", path(&file)]);
    let published = ff(&server, &["publish-file", path(&file)]);
    println!("published: {published}");

    let data = dir.path().join("data");
    let snapshot = data.join("model.fold");
    let temporary = data.join("model.fold.tmp");
    let project = [
        "project",
        "--once",
        "--data-dir",
        path(&data),
        "--snapshot-every-secs",
        "1",
    ];
    let kill = |mut child: Child, when: &str| {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the projector finished before it could be killed {when}"
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        println!("killed the projector {when}");
    };
    let deadline = |what: &'static str| {
        let started = Instant::now();
        move || {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{what} not seen in 120 s"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    // 1. While it writes its first snapshot (the temporary file is there, not yet renamed).
    let child = spawn_ff(&server, &project);
    let wait = deadline("a snapshot being written");
    while !temporary.exists() {
        wait();
    }
    kill(child, "while it wrote a snapshot");
    // 2. Mid-batch, a while after a snapshot is in place (the restart refolds what the model
    //    holds, checks it and writes one before it folds on).
    let child = spawn_ff(&server, &project);
    let wait = deadline("a snapshot in place");
    while !snapshot.exists() {
        wait();
    }
    std::thread::sleep(Duration::from_millis(1_500));
    kill(child, "mid-run, with a snapshot behind the model");
    // 3. Once more, from that snapshot and the tail.
    let child = spawn_ff(&server, &project);
    std::thread::sleep(Duration::from_millis(2_500));
    kill(child, "mid-run again");

    let resumed = ff(&server, &["project", "--once", "--data-dir", path(&data)]);
    println!("restarted: {resumed}");
    assert!(
        resumed.starts_with("started from the fold's snapshot at seq "),
        "the restart must start from the fold's snapshot: {resumed}"
    );
    let from: u64 = resumed
        .lines()
        .find_map(|line| line.strip_prefix("folded seq "))
        .and_then(|rest| rest.split("..").next())
        .unwrap_or_else(|| panic!("{resumed}"))
        .parse()
        .unwrap();
    assert!(
        from > 1,
        "the restart must resume from a checkpoint, not from scratch: {resumed}"
    );

    let scratch = dir.path().join("scratch");
    ff(&server, &["rebuild", "--data-dir", path(&scratch)]);
    let (resumed, scratch) = (totals(&data), totals(&scratch));
    assert_eq!(resumed["model_digest"], scratch["model_digest"]);
    assert_eq!(resumed["log_digest"], scratch["log_digest"]);
    let replay: Value = serde_json::from_str(&fundflow_ok(&["replay-file", path(&file)])).unwrap();
    assert_eq!(resumed["totals"], replay["totals"]);
    // And a refold from seq 1 agrees with the model that the snapshots' restarts wrote.
    let verified = ff(
        &server,
        &["project", "--once", "--verify", "--data-dir", path(&data)],
    );
    assert!(
        verified.starts_with("refolded the log to the read model's checkpoint"),
        "{verified}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restarting_nats_under_a_running_projector_and_publisher_loses_and_doubles_nothing() {
    let mut server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("log.ffl");
    fundflow_ok(&["gen-log", "--events", "100000", "--seed", "31", path(&file)]);
    let data = dir.path().join("data");
    ff(&server, &["project", "--once", "--data-dir", path(&data)]);

    let mut projector = spawn_ff(&server, &["project", "--data-dir", path(&data)]);
    let mut publisher = spawn_ff(&server, &["publish-file", path(&file)]);
    // The fault must land mid-publish: wait for the first records on the stream, then check the
    // publisher is still running when NATS dies (a fixed sleep could land after the last one).
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    let started = Instant::now();
    loop {
        let stored = match js.get_stream("FUNDFLOW").await {
            Ok(mut stream) => stream.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        };
        if stored >= 2_000 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the publisher stored nothing in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        publisher.try_wait().unwrap().is_none(),
        "the publisher finished before NATS was killed: the fault would test nothing"
    );
    server.kill();
    println!("nats-server killed");
    std::thread::sleep(Duration::from_millis(1500));
    server.restart();
    println!("nats-server restarted");
    let output = publisher.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "publisher: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!("publisher: {}", String::from_utf8_lossy(&output.stdout));

    // Let the running projector catch up, then stop it as an operator would (SIGTERM).
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        projector.try_wait().unwrap().is_none(),
        "the projector must survive the restart"
    );
    Command::new("kill")
        .args(["-TERM", &projector.id().to_string()])
        .status()
        .unwrap();
    let status = projector.wait().unwrap();
    assert!(status.success(), "the projector stops cleanly on SIGTERM");
    ff(&server, &["project", "--once", "--data-dir", path(&data)]);

    // Nothing lost: every publishable event id is on the stream. Nothing doubled: once each.
    let ids = stream_ids(&server.url()).await;
    let on_stream: BTreeSet<_> = ids.iter().map(|(_, id)| id.clone()).collect();
    let expected: BTreeSet<_> = publishable(&read_file(&file))
        .iter()
        .map(|(e, _)| format!("{}:{}", e.partner_id, e.event_id))
        .collect();
    println!(
        "events sent {}, on the stream {}",
        expected.len(),
        ids.len()
    );
    assert_eq!(on_stream, expected);
    assert_eq!(
        on_stream.len(),
        ids.len(),
        "an event id is on the stream twice"
    );

    // And the projector's model is exactly a fold of the stream.
    let report = totals(&data);
    assert_eq!(report["last_seq"], ids.len() as u64);
    let scratch = dir.path().join("scratch");
    ff(&server, &["rebuild", "--data-dir", path(&scratch)]);
    assert_eq!(report["model_digest"], totals(&scratch)["model_digest"]);
}
