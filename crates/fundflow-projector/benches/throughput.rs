//! The projector against the raw speed of the log, in one run on one machine: a JetStream stream
//! is filled with generated events, then (a) a null consumer only reads them and (b) the projector
//! folds them into sled with checkpoints. Prints both rates, the ratio b/a, the read model's size
//! on disk and the projector's peak RSS.
//!
//! Run: `cargo bench -p fundflow-projector --bench throughput` (needs the nats-server 2.10 binary
//! of `deploy/nats/fetch-nats-server.sh`). `FUNDFLOW_BENCH_EVENTS` changes the size (default
//! 1,000,000).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use fundflow_gen::{GenConfig, LogGenerator};
use fundflow_log::jetstream::{JetStreamConfig, JetStreamLog};
use fundflow_log::{AppendRequest, EventLog};
use fundflow_projector::{Projector, ProjectorConfig, RunUntil};
use fundflow_proto::{Message, v1};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn reset_peak_rss() {
    // Linux: writing 5 to clear_refs resets VmHWM to the current RSS.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benchmarks; there is nothing to list.
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
    runtime.block_on(async {
        let log = EventLog::from(JetStreamLog::connect(JetStreamConfig::new(server.url())).await.unwrap());

        let started = Instant::now();
        let mut chunk = Vec::new();
        let mut generator = LogGenerator::new(7, GenConfig { events, ..GenConfig::default() }).peekable();
        while generator.peek().is_some() {
            chunk.clear();
            for record in generator.by_ref().take(10_000) {
                if let Ok(envelope) = v1::Envelope::decode(record.as_slice())
                    && fundflow_domain::wire::is_valid_partner_id(&envelope.partner_id)
                {
                    chunk.push(AppendRequest {
                        partner_id: envelope.partner_id,
                        event_id: envelope.event_id,
                        envelope: Bytes::from(record),
                    });
                }
            }
            log.append_batch(&chunk).await.unwrap();
        }
        let last = log.last_seq().await.unwrap();
        let fill = started.elapsed();
        println!("filled the stream: {last} records in {:.1} s ({:.0} records/s published)", fill.as_secs_f64(), last as f64 / fill.as_secs_f64());

        // (a) the null consumer.
        let started = Instant::now();
        let mut reader = log.reader(1).await.unwrap();
        let mut read = 0u64;
        let mut bytes = 0usize;
        while read < last {
            let batch = reader.next_batch(4096, Duration::from_secs(5)).await.unwrap();
            read += batch.len() as u64;
            bytes += batch.iter().map(|r| r.bytes.len()).sum::<usize>();
        }
        let null = started.elapsed();
        let null_rate = last as f64 / null.as_secs_f64();
        println!("(a) null consumer: {read} records ({bytes} bytes) in {:.2} s = {null_rate:.0} events/s", null.as_secs_f64());
        drop(reader);

        // (b) the projector.
        let dir = tempfile::tempdir().unwrap();
        reset_peak_rss();
        let rss_before = peak_rss_kib();
        let started = Instant::now();
        let projector = Projector::open(dir.path(), &log, ProjectorConfig::default()).await.unwrap();
        let projector = projector.run(log.clone(), RunUntil::Seq(last)).await.unwrap();
        let folded = started.elapsed();
        let rate = last as f64 / folded.as_secs_f64();
        let rss_after = peak_rss_kib();
        println!("(b) projector: {last} records folded and checkpointed in {:.2} s = {rate:.0} events/s", folded.as_secs_f64());
        println!("ratio b/a = {:.2}", rate / null_rate);
        println!(
            "batches written {}, read model on disk {:.1} MB, projector peak RSS {:.0} MB (+{:.0} MB over the process before it) = {:.0} MB per million events",
            projector.metrics().batches.load(std::sync::atomic::Ordering::Relaxed),
            projector.model().size_on_disk() as f64 / 1e6,
            rss_after as f64 / 1024.0,
            rss_after.saturating_sub(rss_before) as f64 / 1024.0,
            rss_after.saturating_sub(rss_before) as f64 / 1024.0 / (last as f64 / 1e6),
        );
    });
}
