//! `fundflow log import`: an export restored into a fresh stream (or embedded log) gives the
//! export's seqs and digests, replays and projects to the same figures, resumes after a kill -9
//! with no record twice, and refuses a target that is not a prefix of the export.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fundflow_testkit::NatsServer;
use serde_json::Value;

use crate::helpers::{command, fundflow, fundflow_ok, fundflow_on, path};
use crate::server::Server;

fn manifest(export: &Path) -> Value {
    let text = std::fs::read_to_string(format!("{}.manifest.json", export.display())).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn replay(args: &[&str]) -> Value {
    let mut all = vec!["audit", "replay", "--format", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&fundflow_ok(&all)).unwrap()
}

async fn last_seq(nats: &NatsServer) -> u64 {
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    match js.get_stream("FUNDFLOW").await {
        Ok(stream) => stream.cached_info().state.last_sequence,
        Err(_) => 0,
    }
}

/// A log with what no gateway appends: bytes that are no envelope, and an event id sent twice
/// under two subjects; then exported.
async fn source_export(dir: &Path, events: &str) -> std::path::PathBuf {
    let source = NatsServer::start();
    let file = dir.join("gen.ffl");
    fundflow_ok(&["gen-log", "--events", events, "--seed", "11", path(&file)]);
    fundflow_on(&source.url(), &["publish-file", path(&file)]);
    let client = async_nats::connect(source.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.publish(
        "fundflow.v1.events.icshp.garbage",
        vec![0xff, 0x00, 0x13].into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let first = js
        .get_stream("FUNDFLOW")
        .await
        .unwrap()
        .get_raw_message(1)
        .await
        .unwrap();
    let partner = first.subject.split('.').nth(3).unwrap().to_owned();
    js.publish(
        format!("fundflow.v1.events.{partner}.another-subject"),
        first.payload.clone(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let export = dir.join("source.ffx");
    fundflow_ok(&[
        "log",
        "export",
        "--nats-url",
        &source.url(),
        "--out",
        path(&export),
    ]);
    export
}

#[tokio::test(flavor = "multi_thread")]
async fn an_export_imported_into_a_fresh_stream_has_its_seqs_and_digests_and_projects_to_its_figures()
 {
    let dir = tempfile::tempdir().unwrap();
    let export = source_export(dir.path(), "3000").await;
    let manifest = manifest(&export);
    let expected = replay(&["--file", path(&export)]);

    let target = NatsServer::start();
    let out = fundflow_ok(&["log", "import", path(&export), "--nats-url", &target.url()]);
    let count = manifest["count"].as_u64().unwrap();
    assert!(
        out.starts_with(&format!("imported {count} records")),
        "{out}"
    );
    assert!(
        out.contains(manifest["log_digest"].as_str().unwrap()),
        "{out}"
    );
    assert!(
        out.contains("1 records whose event id the source held twice"),
        "{out}"
    );
    assert_eq!(
        last_seq(&target).await,
        manifest["last_seq"].as_u64().unwrap()
    );

    // The restored stream, exported again, is the same log: same seqs, bytes, subject partners.
    let again = dir.path().join("again.ffx");
    fundflow_ok(&[
        "log",
        "export",
        "--nats-url",
        &target.url(),
        "--out",
        path(&again),
    ]);
    let restored = self::manifest(&again);
    for field in ["count", "last_seq", "log_digest", "export_digest"] {
        assert_eq!(restored[field], manifest[field], "{field}");
    }
    let replayed = replay(&["--nats-url", &target.url()]);
    for field in ["last_seq", "log_digest", "model_digest", "applied"] {
        assert_eq!(replayed[field], expected[field], "{field}");
    }

    // A projector on the restored stream reaches the same checkpoint.
    let server = Server::start("serve", &dir.path().join("s"), &[], Some(&target)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let checkpoint = loop {
        let (status, body) = server
            .get("/v1/checkpoint", Some(&server.tokens.auditor))
            .await;
        assert_eq!(status, 200, "{body}");
        if body["seq"] == expected["last_seq"] && body["model_digest"].is_string() {
            break body;
        }
        assert!(Instant::now() < deadline, "not folded: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(checkpoint["log_digest"], expected["log_digest"]);
    assert_eq!(checkpoint["model_digest"], expected["model_digest"]);
    server.terminate().await;

    // Importing again keeps what is there and adds nothing.
    let out = fundflow_ok(&["log", "import", path(&export), "--nats-url", &target.url()]);
    assert!(
        out.starts_with(&format!(
            "imported 0 records after the {count} records the target held already"
        )),
        "{out}"
    );
    // Another log's export is refused: the stream is not a prefix of it.
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other_file = other_dir.join("other.ffl");
    fundflow_ok(&[
        "gen-log",
        "--events",
        "50",
        "--seed",
        "12",
        path(&other_file),
    ]);
    fundflow_ok(&[
        "publish-file",
        path(&other_file),
        "--embedded",
        "--data-dir",
        path(&other_dir),
    ]);
    let other = other_dir.join("other.ffx");
    fundflow_ok(&[
        "log",
        "export",
        "--data-dir",
        path(&other_dir),
        "--out",
        path(&other),
    ]);
    let refused = fundflow(&["log", "import", path(&other), "--nats-url", &target.url()]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("not a prefix of the export"), "{stderr}");
    assert_eq!(last_seq(&target).await, count);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_killed_midway_finishes_on_a_rerun_with_no_record_twice() {
    let dir = tempfile::tempdir().unwrap();
    let export = source_export(dir.path(), "40000").await;
    let manifest = manifest(&export);
    let count = manifest["count"].as_u64().unwrap();
    let target = NatsServer::start();
    let mut child = command()
        .args(["log", "import", path(&export), "--nats-url", &target.url()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while last_seq(&target).await < 1_000 {
        assert!(Instant::now() < deadline, "the import did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = last_seq(&target).await;
    assert!(
        at_kill < count,
        "the import finished ({at_kill} of {count}) before it was killed: the test needs a longer log"
    );
    let out = fundflow_ok(&["log", "import", path(&export), "--nats-url", &target.url()]);
    assert!(
        out.starts_with(&format!(
            "imported {} records after the {at_kill} records",
            count - at_kill
        )),
        "{out}"
    );
    let again = dir.path().join("again.ffx");
    fundflow_ok(&[
        "log",
        "export",
        "--nats-url",
        &target.url(),
        "--out",
        path(&again),
    ]);
    let restored = self::manifest(&again);
    for field in ["count", "last_seq", "log_digest", "export_digest"] {
        assert_eq!(restored[field], manifest[field], "{field}");
    }
}

#[test]
fn an_export_imported_into_an_embedded_log_replays_to_the_same_digests() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let file = dir.path().join("gen.ffl");
    fundflow_ok(&["gen-log", "--events", "500", "--seed", "3", path(&file)]);
    fundflow_ok(&[
        "publish-file",
        path(&file),
        "--embedded",
        "--data-dir",
        path(&source),
    ]);
    let export = dir.path().join("e.ffx");
    fundflow_ok(&[
        "log",
        "export",
        "--data-dir",
        path(&source),
        "--out",
        path(&export),
    ]);
    let target = dir.path().join("target");
    let out = fundflow_ok(&["log", "import", path(&export), "--data-dir", path(&target)]);
    assert!(out.starts_with("imported "), "{out}");
    let expected = replay(&["--file", path(&export)]);
    let restored = replay(&["--data-dir", path(&target)]);
    for field in ["last_seq", "log_digest", "model_digest"] {
        assert_eq!(restored[field], expected[field], "{field}");
    }
}
