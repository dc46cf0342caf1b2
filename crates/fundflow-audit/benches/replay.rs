//! Auditors' replays of 1,000,000 events, in one run on one machine: the events are generated,
//! appended to a JetStream stream (nats-server 2.10, started here) and exported; then the export
//! is verified, replayed from the file, and the same events are replayed from JetStream. Prints
//! events/s and the peak RSS each step added.
//!
//! Run: `cargo bench -p fundflow-audit --bench replay` (needs the nats-server 2.10 binary of
//! `deploy/nats/fetch-nats-server.sh`). `FUNDFLOW_BENCH_EVENTS` changes the size.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use bytes::Bytes;
use fundflow_audit::{Cutoff, Details};
use fundflow_gen::{GenConfig, LogGenerator};
use fundflow_log::jetstream::{JetStreamConfig, JetStreamLog};
use fundflow_log::{AppendRequest, EventLog};
use fundflow_proto::{Message, v1};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn current_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// Runs `step`, and prints its rate and the peak RSS it added over the RSS before it.
fn measure<T>(name: &str, events: u64, step: impl FnOnce() -> T) -> T {
    // Linux: writing 5 to clear_refs resets the peak (VmHWM) to the current RSS.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = current_rss_mib();
    let started = Instant::now();
    let result = step();
    let seconds = started.elapsed().as_secs_f64();
    let added = peak_rss_mib() - before;
    println!(
        "{name:<44} {events} events in {seconds:>5.2} s = {:>9.0} events/s; peak RSS +{added:.0} MB ({:.0} MB per million events)",
        events as f64 / seconds,
        added / (events as f64 / 1e6)
    );
    result
}

/// Replays in a child process of this bench, so that each replay's peak RSS is its own: prints
/// seconds, peak RSS in MB and the model digest.
fn child(args: &[String]) {
    let started = Instant::now();
    let replay = match args {
        [kind, path] if kind == "file" => {
            fundflow_audit::replay_file(std::path::Path::new(path), Cutoff::All, Details::None)
                .unwrap()
        }
        [kind, url] if kind == "nats" => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let log = EventLog::from(
                    JetStreamLog::connect(JetStreamConfig::new(url.clone()))
                        .await
                        .unwrap(),
                );
                fundflow_audit::replay_log(&log, Cutoff::All, Details::None)
                    .await
                    .unwrap()
            })
        }
        _ => panic!("unknown child arguments {args:?}"),
    };
    println!(
        "{} {} {}",
        started.elapsed().as_secs_f64(),
        peak_rss_mib(),
        hex::encode(replay.ledger.model_digest())
    );
}

/// Runs a replay in a child process and prints its figures.
fn replay_in_child(name: &str, events: u64, args: &[&str]) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--child")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut fields = text.split_whitespace();
    let seconds: f64 = fields.next().unwrap().parse().unwrap();
    let rss: f64 = fields.next().unwrap().parse().unwrap();
    let digest = fields.next().unwrap().to_owned();
    println!(
        "{name:<44} {events} events in {seconds:>5.2} s = {:>9.0} events/s; process peak RSS {rss:.0} MB ({:.0} MB per million events)",
        events as f64 / seconds,
        rss / (events as f64 / 1e6)
    );
    digest
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if args.first().map(String::as_str) == Some("--child") {
        return child(&args[1..]);
    }
    let events: u64 = std::env::var("FUNDFLOW_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = fundflow_testkit::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("log.ffx");
    let log = runtime.block_on(async {
        let log = EventLog::from(
            JetStreamLog::connect(JetStreamConfig::new(server.url()))
                .await
                .unwrap(),
        );
        let mut generator = LogGenerator::new(
            7,
            GenConfig {
                events,
                ..GenConfig::default()
            },
        )
        .peekable();
        while generator.peek().is_some() {
            let chunk: Vec<AppendRequest> = generator
                .by_ref()
                .take(10_000)
                .filter_map(|record| {
                    let envelope = v1::Envelope::decode(record.as_slice()).ok()?;
                    fundflow_domain::wire::is_valid_partner_id(&envelope.partner_id).then(|| {
                        AppendRequest {
                            partner_id: envelope.partner_id,
                            event_id: envelope.event_id,
                            envelope: Bytes::from(record),
                        }
                    })
                })
                .collect();
            log.append_batch(&chunk).await.unwrap();
        }
        log
    });
    let last = runtime.block_on(log.last_seq()).unwrap();
    println!("{last} records on the stream\n");

    let manifest = measure("log export (JetStream to a file)", last, || {
        runtime
            .block_on(fundflow_audit::export(
                &log,
                "bench",
                &export,
                time::OffsetDateTime::now_utc(),
                |_| {},
            ))
            .unwrap()
    });
    println!(
        "export file: {:.0} MB",
        std::fs::metadata(&export).unwrap().len() as f64 / 1e6
    );
    measure("log verify (digest chain, streaming)", last, || {
        fundflow_audit::verify(&export).unwrap()
    });
    let file_digest = replay_in_child(
        "audit replay --file (the export)",
        last,
        &["file", export.to_str().unwrap()],
    );
    let log_digest = replay_in_child(
        "audit replay --nats-url (the same events)",
        last,
        &["nats", &server.url()],
    );
    assert_eq!(log_digest, file_digest);
    println!(
        "\nboth replays: log digest {}, model digest {file_digest}",
        manifest.log_digest
    );
}
