//! The gateway and the query API under load, side by side with raw JetStream in one run on one
//! machine: a nats-server 2.10 and `fundflow serve` on it are started, then
//!
//! 1. 200,000 events are submitted over HTTP as NDJSON batches of 1,000 by 32 concurrent clients,
//! 2. 200,000 more as single-event requests by 32 concurrent clients,
//! 3. 200,000 more envelopes are published straight to the stream with async-nats (32 publishers,
//!    the same headers the gateway sets): what the gateway costs over the log itself,
//! 4. the log is filled to 1,000,000 events (`gen-log` + `publish-file`), and once the projector
//!    has folded them, `/v1/totals?scope=country` is asked 1,000 times, one request at a time.
//!
//! Run: `cargo bench -p fundflow-cli --bench http` (needs the nats-server 2.10 binary of
//! `deploy/nats/fetch-nats-server.sh`). `FUNDFLOW_BENCH_EVENTS` changes the 200,000.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use fundflow_proto::{Message, v1};
use serde_json::{Value, json};

const CLIENTS: usize = 32;
const BATCH: usize = 1_000;
const TOKEN: &str = "fft_bench_partner";
const REVIEWER: &str = "fft_bench_reviewer";

fn event(prefix: &str, i: usize) -> Value {
    let countries = ["NPL", "NGA", "ETH", "TZA", "RWA", "UZB", "DZA", "MEX"];
    let country = countries[i % countries.len()];
    let value = format!("{}.{:02}", 100 + i % 9_000, i % 100);
    json!({"type": "parallel_funding_mobilized", "ref": format!("{prefix}-{i}"),
        "occurred_on": "2020-12-31", "funding_id": format!("f-{i}"), "source": "bench",
        "grant_id": "g-1", "amount": {"value": value, "currency": "USD"},
        "allocations": [{"country": country, "value": value}]})
}

/// The `percent`-th percentile (nearest rank) of sorted latencies.
fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() - 1) * percent / 100]
}

fn report(name: &str, events: usize, elapsed: Duration, mut latencies: Vec<Duration>) -> f64 {
    latencies.sort_unstable();
    let rate = events as f64 / elapsed.as_secs_f64();
    println!(
        "{name:<34} {events:>9} events in {:>6.1} s = {rate:>9.0} events/s; per request p50 {:>8.2} ms, p99 {:>8.2} ms",
        elapsed.as_secs_f64(),
        percentile(&latencies, 50).as_secs_f64() * 1e3,
        percentile(&latencies, 99).as_secs_f64() * 1e3,
    );
    rate
}

/// Sends `bodies` with `CLIENTS` concurrent clients; returns elapsed time and per-request
/// latencies.
async fn post_all(
    url: &str,
    content_type: &'static str,
    bodies: Vec<String>,
) -> (Duration, Vec<Duration>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();
    let queue = Arc::new(std::sync::Mutex::new(bodies));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let queue = Arc::clone(&queue);
        let client = client.clone();
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let Some(body) = queue.lock().unwrap().pop() else {
                    return latencies;
                };
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .header("content-type", content_type)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let text = response.text().await.unwrap();
                assert!(status.is_success(), "{status}: {text}");
                latencies.push(sent.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    (started.elapsed(), latencies)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let events: usize = std::env::var("FUNDFLOW_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let nats = fundflow_testkit::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("access.toml");
    fundflow_testkit::AccessConfig::new()
        .partner(
            "bench",
            "Bench",
            &fundflow_server::access::token_sha256(TOKEN),
            None,
        )
        .reviewer("R", &fundflow_server::access::token_sha256(REVIEWER))
        .write(&config);
    let bin = env!("CARGO_BIN_EXE_fundflow");
    let mut serve = fundflow_testkit::FundflowCommand::new(
        env!("CARGO_BIN_EXE_fundflow"),
        "serve",
        &dir.path().join("serve.stderr"),
    )
    .args(["serve", "--config"])
    .args([&config])
    .listen_on_any_port()
    .args(["--data-dir"])
    .args([dir.path().join("data")])
    .env("FUNDFLOW_NATS_URL", nats.url())
    .spawn();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        serve.wait_ready(Duration::from_secs(60)).await;
        let base = serve.url().to_owned();
        let http = reqwest::Client::new();
        println!("fundflow serve on NATS, {CLIENTS} concurrent clients, {events} events per run\n");
        let url = format!("{base}/v1/events");

        let bodies: Vec<String> = (0..events)
            .collect::<Vec<_>>()
            .chunks(BATCH)
            .map(|chunk| chunk.iter().map(|i| event("ndjson", *i).to_string() + "\n").collect())
            .collect();
        let (elapsed, latencies) = post_all(&url, "application/x-ndjson", bodies).await;
        let ndjson = report("HTTP NDJSON, 1,000 per request", events, elapsed, latencies);

        let bodies: Vec<String> = (0..events).map(|i| event("single", i).to_string()).collect();
        let (elapsed, latencies) = post_all(&url, "application/json", bodies).await;
        let single = report("HTTP single-event requests", events, elapsed, latencies);

        // The same kind of envelopes, published straight to the stream.
        let envelopes: Vec<(String, Bytes)> = (0..events)
            .map(|i| {
                let object = fundflow_api::parse_event(event("raw", i).to_string().as_bytes()).unwrap();
                let envelope: v1::Envelope =
                    object.into_envelope("bench", "2020-12-31T00:00:00Z").unwrap();
                (envelope.event_id.clone(), Bytes::from(envelope.encode_to_vec()))
            })
            .collect();
        let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        let queue = Arc::new(std::sync::Mutex::new(envelopes));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..CLIENTS {
            let (js, queue) = (js.clone(), Arc::clone(&queue));
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let Some((id, payload)) = queue.lock().unwrap().pop() else {
                        return latencies;
                    };
                    let sent = Instant::now();
                    let message = jetstream::message::PublishMessage::build()
                        .message_id(fundflow_log::message_id("bench", &id))
                        .expected_last_subject_sequence(0)
                        .payload(payload);
                    js.send_publish(fundflow_log::subject("bench", &id), message)
                        .await
                        .unwrap()
                        .await
                        .unwrap();
                    latencies.push(sent.elapsed());
                }
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.unwrap());
        }
        let raw = report("raw JetStream publish, one by one", events, started.elapsed(), latencies);
        println!(
            "\nratios to raw JetStream: NDJSON {:.2}, single-event {:.2}",
            ndjson / raw,
            single / raw
        );

        // Fill to 1,000,000 events and time the totals query once the projector has folded them.
        let target: u64 = 1_000_000;
        let stream = js.get_stream("FUNDFLOW").await.unwrap();
        let have = stream.cached_info().state.last_sequence;
        if have < target {
            let file = dir.path().join("fill.ffl");
            let more = (target - have).to_string();
            let status = Command::new(bin)
                .args(["gen-log", "--events", &more, "--seed", "11"])
                .arg(&file)
                .status()
                .unwrap();
            assert!(status.success());
            let output = Command::new(bin)
                .arg("publish-file")
                .arg(&file)
                .env("FUNDFLOW_NATS_URL", nats.url())
                .output()
                .unwrap();
            assert!(output.status.success());
        }
        let mut stream = js.get_stream("FUNDFLOW").await.unwrap();
        let last = stream.info().await.unwrap().state.last_sequence;
        let started = Instant::now();
        loop {
            let checkpoint: Value = http
                .get(format!("{base}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .map(|text| {
                    let seq = text
                        .lines()
                        .find_map(|l| l.strip_prefix("fundflow_projector_checkpoint_seq "))
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .unwrap_or(0.0);
                    json!(seq)
                })
                .unwrap();
            if checkpoint.as_f64().unwrap_or(0.0) >= last as f64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("\nthe projector folded the log to seq {last} ({:.1} s after the fill)", started.elapsed().as_secs_f64());
        let mut latencies = Vec::new();
        let mut rows = 0;
        for _ in 0..1_000 {
            let sent = Instant::now();
            let body: Value = http
                .get(format!("{base}/v1/totals?scope=country"))
                .bearer_auth(REVIEWER)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            latencies.push(sent.elapsed());
            rows = body["rows"].as_array().map_or(0, Vec::len);
        }
        latencies.sort_unstable();
        println!(
            "GET /v1/totals?scope=country at {last} events: {rows} rows; p50 {:.2} ms, p99 {:.2} ms",
            percentile(&latencies, 50).as_secs_f64() * 1e3,
            percentile(&latencies, 99).as_secs_f64() * 1e3
        );
    });
    drop(serve);
}
