//! The auditor's commands over the real binary: export → verify → replay gives the live server's
//! digests on both logs, tampering is named by seq, replays as of a seq or a date agree with the
//! server's totals at that point, and `audit verify` tells a match from a mismatch.

use std::path::Path;
use std::time::{Duration, Instant};

use fundflow_proto::{Message, v1};
use fundflow_testkit::NatsServer;
use serde_json::{Value, json};

use crate::helpers::{fundflow, fundflow_ok, fundflow_on, path};
use crate::server::{Server, masks};

fn replay_json(args: &[&str]) -> Value {
    let mut all = vec!["audit", "replay", "--format", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&fundflow_ok(&all)).unwrap()
}

async fn checkpoint(server: &Server) -> Value {
    let (status, body) = server
        .get("/v1/checkpoint", Some(&server.tokens.auditor))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn wait_folded(server: &Server, seq: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = checkpoint(server).await;
        if c["seq"].as_u64() >= Some(seq) && c["model_digest"].is_string() {
            return c;
        }
        assert!(Instant::now() < deadline, "not folded to {seq}: {c}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Server totals rows in the shape `audit replay` prints them (no names).
fn comparable(rows: &Value) -> Vec<Value> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            json!([
                r["scope"],
                r["key"],
                r["kind"],
                r["currency"],
                r["amount"],
                r["usd_equivalent"],
                r["unconverted"]
            ])
        })
        .collect()
}

fn dated(reference: &str, date: &str, value: &str) -> Value {
    let mut event = masks(reference, value);
    event["occurred_on"] = json!(date);
    event
}

#[tokio::test(flavor = "multi_thread")]
async fn on_the_embedded_log_an_export_replays_to_the_servers_digests_and_dates_cut_like_checkpoints()
 {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start("serve", dir.path(), &[], None).await;
    let t = &server.tokens;
    // Spring: two donations, one of them reversed in autumn.
    for (reference, value) in [("spring-1", "100.00"), ("spring-2", "250.00")] {
        let (status, body) = server
            .submit(&t.icshp, &dated(reference, "2020-04-10", value), true)
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let spring = wait_folded(&server, 2).await;
    let (_, spring_totals) = server.get("/v1/totals", Some(&t.reviewer)).await;
    let reversal = json!({"type": "event_reversed", "ref": "autumn-rev", "occurred_on": "2020-10-01",
        "reverses_ref": "spring-2", "reason": "entered twice"});
    assert_eq!(server.submit(&t.icshp, &reversal, true).await.0, 201);
    assert_eq!(
        server
            .submit(&t.icshp, &dated("autumn-1", "2020-10-02", "40.00"), true)
            .await
            .0,
        201
    );
    let overpaid = json!({"type": "contribution_paid", "ref": "bad-pay", "occurred_on": "2020-10-03",
        "payment_id": "x", "pledge_id": "none", "amount": {"value": "1.00", "currency": "USD"},
        "allocations": [{"country": "NPL", "value": "1.00"}]});
    assert_eq!(server.submit(&t.icshp, &overpaid, true).await.0, 422);
    let end = wait_folded(&server, 5).await;
    server.terminate().await;

    // The embedded log is free once the server stopped: export, verify, replay.
    let data = dir.path().join("data");
    let export = dir.path().join("log.ffx");
    let out = fundflow_ok(&[
        "log",
        "export",
        "--data-dir",
        path(&data),
        "--out",
        path(&export),
    ]);
    assert!(out.starts_with("exported 5 records"), "{out}");
    let verified = fundflow_ok(&["log", "verify", path(&export)]);
    assert!(verified.contains("5 records"), "{verified}");
    let replay = replay_json(&["--file", path(&export)]);
    assert_eq!(replay["last_seq"], 5);
    assert_eq!(replay["log_digest"], end["log_digest"]);
    assert_eq!(replay["model_digest"], end["model_digest"]);
    assert_eq!(replay["rejected"][0]["code"], "unknown_pledge");
    // replay-file reads the export too, and a replay of the log itself agrees.
    let file_replay: Value =
        serde_json::from_str(&fundflow_ok(&["replay-file", path(&export)])).unwrap();
    assert_eq!(file_replay["model_digest"], end["model_digest"]);
    assert_eq!(
        replay_json(&["--data-dir", path(&data)])["model_digest"],
        end["model_digest"]
    );

    // As of seq 2 and as of a date in summer: exactly the server's figures after the spring.
    let until = replay_json(&["--file", path(&export), "--until-seq", "2"]);
    assert_eq!(until["model_digest"], spring["model_digest"]);
    let as_of = replay_json(&["--file", path(&export), "--as-of", "2020-06-30"]);
    let rows: Vec<Value> = as_of["totals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            json!([
                r["scope"],
                r["key"],
                r["kind"],
                r["currency"],
                r["amount"],
                r["usd_equivalent"],
                r["unconverted"]
            ])
        })
        .collect();
    assert_eq!(rows, comparable(&spring_totals["rows"]));
    let global = |report: &Value| {
        report["totals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["scope"] == "global")
            .unwrap()["amount"]
            .clone()
    };
    assert_eq!(global(&as_of), "350.00");
    assert_eq!(
        global(&replay),
        "140.00",
        "the reversal counts from when it occurred"
    );

    // The report: every figure from the replay.
    let report = dir.path().join("report.md");
    fundflow_ok(&[
        "audit",
        "report",
        "--file",
        path(&export),
        "--out",
        path(&report),
    ]);
    let text = std::fs::read_to_string(&report).unwrap();
    for needle in [
        end["model_digest"].as_str().unwrap(),
        "Nepal | NPL | country | 140.00 | 140.00 | 0.00 |",
        "entered twice",
        "unknown\\_pledge",
        "| country | NPL | Nepal | disposable surgical mask | piece | 420000 |",
    ] {
        assert!(
            text.contains(needle),
            "the report lacks {needle:?}:\n{text}"
        );
    }
    let html = dir.path().join("report.html");
    fundflow_ok(&[
        "audit",
        "report",
        "--file",
        path(&export),
        "--out",
        path(&html),
    ]);
    assert!(
        std::fs::read_to_string(&html)
            .unwrap()
            .starts_with("<!doctype html>")
    );

    // audit verify against the restarted server: a match; against another log: a mismatch.
    let server = Server::start("serve", dir.path(), &[], None).await;
    let url = server.url.clone();
    let out = fundflow(&[
        "audit",
        "verify",
        "--url",
        &url,
        "--token",
        &server.tokens.auditor,
        "--file",
        path(&export),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("match at seq 5"));
    let other = dir.path().join("other.ffl");
    fundflow_ok(&["gen-log", "--events", "5", "--seed", "3", path(&other)]);
    let out = fundflow(&[
        "audit",
        "verify",
        "--url",
        &url,
        "--token",
        &server.tokens.auditor,
        "--file",
        path(&other),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("MISMATCH at seq 5") && stdout.contains("first totals that differ"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("fundflow: the server's read model does not match"),
        "{stderr}"
    );
    // A reviewer cannot read the checkpoint.
    let out = fundflow(&[
        "audit",
        "verify",
        "--url",
        &url,
        "--token",
        &server.tokens.reviewer,
        "--file",
        path(&export),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));
}

#[tokio::test(flavor = "multi_thread")]
async fn on_jetstream_export_and_replay_match_the_live_server_at_the_same_seq() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start("serve", &dir.path().join("s"), &[], Some(&nats)).await;
    let file = dir.path().join("gen.ffl");
    fundflow_ok(&["gen-log", "--events", "3000", "--seed", "5", path(&file)]);
    fundflow_on(&nats.url(), &["publish-file", path(&file)]);
    let last = {
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        js.get_stream("FUNDFLOW")
            .await
            .unwrap()
            .cached_info()
            .state
            .last_sequence
    };
    let live = wait_folded(&server, last).await;
    let export = dir.path().join("js.ffx");
    fundflow_ok(&[
        "log",
        "export",
        "--nats-url",
        &nats.url(),
        "--out",
        path(&export),
    ]);
    fundflow_ok(&["log", "verify", path(&export)]);
    let replay = replay_json(&["--file", path(&export)]);
    assert_eq!(replay["last_seq"], live["seq"]);
    assert_eq!(replay["log_digest"], live["log_digest"]);
    assert_eq!(replay["model_digest"], live["model_digest"]);
    assert_eq!(
        replay_json(&["--nats-url", &nats.url()])["model_digest"],
        live["model_digest"]
    );
    let out = fundflow(&[
        "audit",
        "verify",
        "--url",
        &server.url,
        "--token",
        &server.tokens.auditor,
        "--nats-url",
        &nats.url(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.terminate().await;
}

#[test]
fn log_verify_names_the_first_record_that_was_flipped_dropped_or_swapped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("gen.ffl");
    fundflow_ok(&["gen-log", "--events", "50", "--seed", "9", path(&file)]);
    fundflow_ok(&[
        "publish-file",
        path(&file),
        "--embedded",
        "--data-dir",
        path(&data),
    ]);
    let export = dir.path().join("log.ffx");
    fundflow_ok(&[
        "log",
        "export",
        "--data-dir",
        path(&data),
        "--out",
        path(&export),
    ]);
    fundflow_ok(&["log", "verify", path(&export)]);
    let bytes = std::fs::read(&export).unwrap();
    let records: Vec<Vec<u8>> = fundflow_proto::RecordReader::new(bytes.as_slice())
        .collect::<Result<_, _>>()
        .unwrap();
    let manifest = std::fs::read(fundflow_audit::export::manifest_path(&export)).unwrap();
    let write = |name: &str, records: &[Vec<u8>]| {
        let path = dir.path().join(name);
        let mut out = Vec::new();
        for r in records {
            fundflow_proto::write_record(&mut out, r).unwrap();
        }
        std::fs::write(&path, out).unwrap();
        std::fs::write(fundflow_audit::export::manifest_path(&path), &manifest).unwrap();
        path
    };
    let fails_at = |file: &Path, seq: u64| {
        let out = fundflow(&["log", "verify", path(file)]);
        assert_eq!(out.status.code(), Some(1), "{}", file.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("seq {seq}")),
            "{}: {stderr}",
            file.display()
        );
        assert_eq!(stderr.lines().count(), 1, "one sentence: {stderr}");
    };
    // One byte of record 20's envelope changed (the record re-encoded, so it still parses).
    let mut flipped = records.clone();
    let mut record = v1::LogRecord::decode(flipped[19].as_slice()).unwrap();
    let last = record.envelope.len() - 1;
    record.envelope[last] ^= 0x01;
    flipped[19] = record.encode_to_vec();
    fails_at(&write("flipped.ffx", &flipped), 20);
    // Record 5 claimed for another partner's subject: outside the log digest, inside the export's.
    let mut moved = records.clone();
    let mut record = v1::LogRecord::decode(moved[4].as_slice()).unwrap();
    record.subject_partner = "someone-else".into();
    moved[4] = record.encode_to_vec();
    fails_at(&write("moved.ffx", &moved), 5);
    // Record 31 dropped.
    let mut dropped = records.clone();
    dropped.remove(30);
    fails_at(&write("dropped.ffx", &dropped), 32);
    // Records 10 and 11 swapped.
    let mut swapped = records.clone();
    swapped.swap(9, 10);
    fails_at(&write("swapped.ffx", &swapped), 11);
    // The last record dropped: only the manifest can tell.
    let mut short = records.clone();
    short.pop();
    fails_at(&write("short.ffx", &short), records.len() as u64);
    // A raw byte flipped in the file: the record no longer parses, or its digest breaks.
    let mut raw = bytes.clone();
    let middle = raw.len() / 2;
    raw[middle] ^= 0x40;
    let raw_path = dir.path().join("raw.ffx");
    std::fs::write(&raw_path, raw).unwrap();
    std::fs::write(fundflow_audit::export::manifest_path(&raw_path), &manifest).unwrap();
    assert_eq!(
        fundflow(&["log", "verify", path(&raw_path)]).status.code(),
        Some(1)
    );
}
