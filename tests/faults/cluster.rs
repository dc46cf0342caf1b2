//! Faults 1 and 2: a three-node cluster with the stream at three replicas, nodes killed with
//! SIGKILL and restarted. Nothing acknowledged may be lost or counted twice, and the projector
//! must reach the same digest as an independent replay.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fundflow_proto::{Message, RecordReader, v1};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::support::{
    Fundflow, Nats, Setup, audit_replay, connect_as, fundflow_run, report, seed_of, stream_state,
};

const COUNTRIES: [&str; 8] = ["NPL", "NGA", "ETH", "KEN", "BRA", "IND", "MEX", "PER"];

/// One publisher's events, in batches: each batch pledges, and pays the previous batch's
/// pledges in full, so that a payment always follows its pledge's acknowledgement.
fn batches(partner: &str, events: usize, batch_pledges: usize) -> Vec<Vec<Value>> {
    let mut batches: Vec<Vec<Value>> = Vec::new();
    let mut total = 0;
    let mut b = 0;
    while total < events {
        let mut batch = Vec::new();
        for i in 0..batch_pledges {
            let (country, value) = pledge_terms(partner, b, i);
            batch.push(
                json!({"type": "pledge_recorded", "ref": format!("pl-{b}-{i}"),
                "occurred_on": "2020-03-01", "pledge_id": format!("pl-{b}-{i}"), "donor": partner,
                "amount": {"value": value, "currency": "USD"},
                "allocations": [{"country": country, "value": value}]}),
            );
            if b > 0 {
                let (country, value) = pledge_terms(partner, b - 1, i);
                batch.push(
                    json!({"type": "contribution_paid", "ref": format!("pa-{b}-{i}"),
                    "occurred_on": "2020-04-15", "payment_id": format!("pa-{b}-{i}"),
                    "pledge_id": format!("pl-{}-{i}", b - 1),
                    "amount": {"value": value, "currency": "USD"},
                    "allocations": [{"country": country, "value": value}]}),
                );
            }
        }
        batch.truncate(events - total);
        total += batch.len();
        batches.push(batch);
        b += 1;
    }
    batches
}

fn pledge_terms(partner: &str, batch: usize, i: usize) -> (&'static str, String) {
    let salt = partner.bytes().map(usize::from).sum::<usize>();
    let n = batch * 7919 + i * 104_729 + salt;
    (
        COUNTRIES[n % COUNTRIES.len()],
        format!("{}.{:02}", 100 + n % 9_000, n % 100),
    )
}

/// What the publishers learned: each acknowledged event's id, seq and event.
#[derive(Default)]
struct Acked {
    events: BTreeMap<String, (u64, Value)>,
    resent_batches: u64,
    duplicates: u64,
}

/// Sends `batches` through `gateway` as `token`, each batch again until every event in it is
/// acknowledged (stored, or a duplicate of a stored one).
async fn publish(
    gateway: String,
    token: String,
    batches: Vec<Vec<Value>>,
    acked: Arc<Mutex<Acked>>,
    count: Arc<AtomicU64>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    for batch in batches {
        let body: String = batch.iter().map(|e| format!("{e}\n")).collect();
        loop {
            let reply = http
                .post(format!("{gateway}/v1/events"))
                .bearer_auth(&token)
                .header("content-type", "application/x-ndjson")
                .body(body.clone())
                .send()
                .await;
            let reply = match reply {
                Ok(r) if r.status() == 200 => r.json::<Value>().await.ok(),
                Ok(r) if r.status().is_client_error() => {
                    panic!(
                        "the gateway refused a batch: {}",
                        r.text().await.unwrap_or_default()
                    )
                }
                _ => None,
            };
            let Some(reply) = reply else {
                acked.lock().await.resent_batches += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let results = reply["results"].as_array().unwrap();
            assert_eq!(results.len(), batch.len(), "{reply}");
            let mut acked = acked.lock().await;
            for (result, event) in results.iter().zip(&batch) {
                let status = result["status"].as_str().unwrap();
                assert!(
                    status == "accepted" || status == "duplicate",
                    "an event was not acknowledged: {result}"
                );
                acked.duplicates += u64::from(status == "duplicate");
                let id = result["event_id"].as_str().unwrap().to_owned();
                let seq = result["seq"].as_u64().unwrap();
                if let Some((earlier, _)) = acked.events.insert(id, (seq, event.clone())) {
                    assert_eq!(earlier, seq, "an event acknowledged at two seqs");
                } else {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
            break;
        }
    }
}

/// The name of the stream's leader, asking until the cluster answers.
async fn leader(client: &async_nats::Client) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let js = async_nats::jetstream::new(client.clone());
        if let Ok(mut stream) = js.get_stream("FUNDFLOW").await
            && let Ok(info) = stream.info().await
            && let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone())
        {
            return leader;
        }
        assert!(Instant::now() < deadline, "no stream leader within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sums of the acknowledged events per (kind, country), computed here without the fold.
fn expected_totals(acked: &Acked) -> BTreeMap<(String, String), Decimal> {
    let mut totals = BTreeMap::new();
    for (_, event) in acked.events.values() {
        let kind = match event["type"].as_str().unwrap() {
            "pledge_recorded" => "pledged",
            "contribution_paid" => "paid",
            other => panic!("unexpected {other}"),
        };
        let allocation = &event["allocations"][0];
        let value = Decimal::from_str(allocation["value"].as_str().unwrap()).unwrap();
        *totals
            .entry((
                kind.to_owned(),
                allocation["country"].as_str().unwrap().to_owned(),
            ))
            .or_insert(Decimal::ZERO) += value;
    }
    totals
}

/// The projector's country totals in USD.
async fn projector_totals(
    projector: &Fundflow,
    setup: &Setup,
) -> BTreeMap<(String, String), Decimal> {
    let (status, body) = projector
        .get("/v1/totals?scope=country", &setup.reviewer_token)
        .await;
    assert_eq!(status, 200, "{body}");
    body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["currency"] == "USD")
        .map(|r| {
            (
                (
                    r["kind"].as_str().unwrap().to_owned(),
                    r["key"].as_str().unwrap().to_owned(),
                ),
                Decimal::from_str(r["amount"].as_str().unwrap()).unwrap(),
            )
        })
        .collect()
}

/// Every record of the stream as (seq, event id), read by the auditor through `log export`.
fn exported_ids(setup: &Setup, nats: &Nats) -> BTreeMap<u64, String> {
    let file = setup.path("export.log");
    let output = fundflow_run(
        nats,
        &setup.auditor_seed,
        &[
            "log",
            "export",
            "--nats-url",
            &nats.urls(),
            "--out",
            file.to_str().unwrap(),
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reader = RecordReader::new(std::io::BufReader::new(std::fs::File::open(&file).unwrap()));
    reader
        .map(|record| {
            let record = v1::LogRecord::decode(record.unwrap().as_slice()).unwrap();
            let envelope = v1::Envelope::decode(record.envelope.as_slice()).unwrap();
            (record.seq, envelope.event_id)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_nodes_under_load_loses_nothing_acknowledged() {
    const TEST: &str = "fault 1: kill -9 under load";
    const EVENTS: usize = 100_000;
    let _alone = crate::one_at_a_time().await;
    let started = Instant::now();
    let setup = Setup::new(&["p1", "p2"]);
    let mut nats = Nats::cluster(&setup).await;
    let config = setup.config.to_str().unwrap().to_owned();
    let mut projector = Fundflow::spawn(
        &setup,
        &nats,
        "projector",
        &[
            "project",
            "--config",
            &config,
            "--data-dir",
            setup.path("projector").to_str().unwrap(),
        ],
        3,
    );
    projector.wait_ready(Duration::from_secs(60)).await;
    let mut gateways = Vec::new();
    for name in ["gateway-1", "gateway-2"] {
        let mut gateway =
            Fundflow::spawn(&setup, &nats, name, &["gateway", "--config", &config], 3);
        gateway.wait_ready(Duration::from_secs(60)).await;
        gateways.push(gateway);
    }
    report(
        TEST,
        format!(
            "3 nats-server nodes (deploy/nats/node-N.conf), stream FUNDFLOW at R3 with sync_interval: always; 2 gateways, 1 projector; {EVENTS} events to send"
        ),
    );

    let acked = Arc::new(Mutex::new(Acked::default()));
    let count = Arc::new(AtomicU64::new(0));
    let mut publishers = Vec::new();
    for (partner, gateway) in ["p1", "p2"].into_iter().zip(&gateways) {
        publishers.push(tokio::spawn(publish(
            gateway.url().to_owned(),
            setup.partner_tokens[partner].clone(),
            batches(partner, EVENTS / 2, 250),
            Arc::clone(&acked),
            Arc::clone(&count),
        )));
    }

    // Kill the leader, then a follower, then the leader again, each at a point in the run.
    let service = connect_as(&nats.urls(), seed_of(&setup.service_seed), None, None).await;
    let mut kills = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    for (at, whom) in [
        (20_000, "the leader"),
        (50_000, "a follower"),
        (75_000, "the leader"),
    ] {
        while count.load(Ordering::Relaxed) < at {
            assert!(
                publishers.iter().any(|p| !p.is_finished()),
                "the publishers stopped before {at} acknowledgements"
            );
            assert!(
                Instant::now() < deadline,
                "{at} acknowledgements not reached within 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let leader = leader(&service).await;
        let victim = if whom == "the leader" {
            nats.index_of(&leader).unwrap()
        } else {
            (nats.index_of(&leader).unwrap() + 1) % 3
        };
        let name = nats.nodes[victim].name.clone();
        let acked_then = count.load(Ordering::Relaxed);
        nats.nodes[victim].kill();
        let down = Instant::now();
        tokio::time::sleep(Duration::from_secs(3)).await;
        nats.nodes[victim].start();
        // Usually 4-15 s. On the 2-core machines under this load, nats-server 2.10 sometimes
        // brings a restarted node back whose stream group never starts ("not current: group
        // node unhealthy" for minutes, no catch-up at all in its log); a second restart has
        // brought it back each time. What the test checks is that nothing acknowledged is lost,
        // so such a node is restarted again (at most twice, reported) rather than waited on.
        let mut restarts = 0;
        while !nats.healthy_within(Duration::from_secs(75)).await {
            restarts += 1;
            assert!(
                restarts <= 2,
                "{name} is not healthy after three starts; its log: {}",
                std::fs::read_to_string(&nats.nodes[victim].log).unwrap_or_default()
            );
            report(
                TEST,
                format!("{name}'s stream is not current 75 s after its start: restarting it again"),
            );
            nats.nodes[victim].kill();
            tokio::time::sleep(Duration::from_secs(1)).await;
            nats.nodes[victim].start();
        }
        let new_leader = self::leader(&service).await;
        report(
            TEST,
            format!(
                "kill -9 {name} ({whom} of the stream; the leader was {leader}) at {acked_then} acknowledged; restarted and healthy after {:.1} s; leader now {new_leader}",
                down.elapsed().as_secs_f64()
            ),
        );
        kills.push(name);
    }
    for publisher in publishers {
        tokio::time::timeout(Duration::from_secs(600), publisher)
            .await
            .expect("the publishers finish within 10 minutes")
            .unwrap();
    }
    let acked = Arc::try_unwrap(acked).ok().unwrap().into_inner();
    let mut retries = 0.0;
    for gateway in &gateways {
        retries += gateway.metric("fundflow_log_publish_retries_total").await;
    }
    report(
        TEST,
        format!(
            "sent {EVENTS} events in {:.0} s: {} acknowledged, {} batch(es) sent again after an error or timeout, {} events answered as duplicates of a stored one (a resend, or the gateway's own retry of a publish whose ack was lost); the gateways' fundflow_log_publish_retries_total: {retries}",
            started.elapsed().as_secs_f64(),
            acked.events.len(),
            acked.resent_batches,
            acked.duplicates
        ),
    );

    // The stream holds each acknowledged event once, at the seq its acknowledgement gave.
    assert_eq!(acked.events.len(), EVENTS);
    let (messages, last_seq, _) = stream_state(&service).await;
    assert_eq!((messages, last_seq), (EVENTS as u64, EVENTS as u64));
    let stored = exported_ids(&setup, &nats);
    let acknowledged: BTreeMap<u64, String> = acked
        .events
        .iter()
        .map(|(id, (seq, _))| (*seq, id.clone()))
        .collect();
    assert_eq!(stored.len(), EVENTS);
    assert!(
        stored == acknowledged,
        "the stream and the acknowledgements differ"
    );
    let distinct: BTreeSet<&String> = stored.values().collect();
    assert_eq!(distinct.len(), EVENTS);
    report(
        TEST,
        format!(
            "stream: {messages} messages, seq 1..={last_seq}; the auditor's export holds exactly the {EVENTS} acknowledged event ids, each once, each at its acknowledged seq"
        ),
    );

    // The projector counts each once, and its totals are the acknowledged events' sums.
    let checkpoint = projector
        .wait_for_seq(&setup, last_seq, Duration::from_secs(120))
        .await;
    assert_eq!(checkpoint["applied"], EVENTS as u64, "{checkpoint}");
    assert_eq!(checkpoint["rejected"], 0, "{checkpoint}");
    let expected = expected_totals(&acked);
    let projected = projector_totals(&projector, &setup).await;
    assert_eq!(projected, expected);
    let replay = audit_replay(&setup, &nats);
    assert_eq!(checkpoint["model_digest"], replay["model_digest"]);
    assert_eq!(checkpoint["log_digest"], replay["log_digest"]);
    let pledged: Decimal = expected
        .iter()
        .filter(|((kind, _), _)| kind == "pledged")
        .map(|(_, v)| *v)
        .sum();
    report(
        TEST,
        format!(
            "projector: {} applied, 0 rejected; country totals equal the sums of the acknowledged events (USD {pledged} pledged over {} countries); model digest {} = the auditor's replay; {} node kills; {:.0} s in all",
            checkpoint["applied"],
            COUNTRIES.len(),
            checkpoint["model_digest"],
            kills.len(),
            started.elapsed().as_secs_f64()
        ),
    );
    for gateway in &mut gateways {
        gateway.terminate().await;
    }
    projector.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projector_survives_the_loss_of_its_node() {
    const TEST: &str = "fault 2: the projector's node dies";
    let _alone = crate::one_at_a_time().await;
    let setup = Setup::new(&["p1"]);
    let mut nats = Nats::cluster(&setup).await;
    let publish = |nats: &Nats, events: u64, seed: u64| {
        crate::support::publish_generated(&setup, nats, events, seed, 3);
    };
    publish(&nats, 10_000, 7);
    let service = connect_as(&nats.urls(), seed_of(&setup.service_seed), None, None).await;
    let (_, first_seq, _) = stream_state(&service).await;
    let mut projector = Fundflow::spawn(
        &setup,
        &nats,
        "projector",
        &[
            "project",
            "--config",
            setup.config.to_str().unwrap(),
            "--data-dir",
            setup.path("projector").to_str().unwrap(),
        ],
        3,
    );
    projector.wait_ready(Duration::from_secs(60)).await;
    projector
        .wait_for_seq(&setup, first_seq, Duration::from_secs(60))
        .await;
    let holder = find_projector(&nats)
        .await
        .expect("the projector's connection");
    let name = nats.nodes[holder].name.clone();
    report(
        TEST,
        format!(
            "3 nodes, R3; 10,000 generated events published (seq {first_seq}); the projector folded them, connected to {name}"
        ),
    );

    nats.nodes[holder].kill();
    publish(&nats, 10_000, 8);
    let (_, second_seq, _) = stream_state(&service).await;
    let checkpoint = projector
        .wait_for_seq(&setup, second_seq, Duration::from_secs(120))
        .await;
    // Only running nodes are asked, so finding the connection at all means it moved.
    let now = find_projector(&nats)
        .await
        .expect("the projector's connection on one of the running nodes");
    let disconnects = projector.metric("fundflow_nats_disconnects_total").await;
    assert!(disconnects >= 1.0, "disconnects {disconnects}");
    assert_eq!(projector.metric("fundflow_nats_connected").await, 1.0);
    let read_errors = projector
        .metric("fundflow_projector_read_errors_total")
        .await;
    report(
        TEST,
        format!(
            "kill -9 {name}; 10,000 more published meanwhile (seq {second_seq}); the projector reconnected to {} and folded up to seq {}; its /metrics: fundflow_nats_disconnects_total {disconnects}, fundflow_nats_connected 1, fundflow_projector_read_errors_total {read_errors}",
            nats.nodes[now].name, checkpoint["seq"]
        ),
    );

    nats.nodes[holder].start();
    nats.wait_healthy(Duration::from_secs(60)).await;
    publish(&nats, 5_000, 9);
    let (_, last_seq, _) = stream_state(&service).await;
    let checkpoint = projector
        .wait_for_seq(&setup, last_seq, Duration::from_secs(120))
        .await;
    let replay = audit_replay(&setup, &nats);
    assert_eq!(replay["last_seq"].as_u64(), Some(last_seq));
    assert_eq!(checkpoint["log_digest"], replay["log_digest"]);
    assert_eq!(checkpoint["model_digest"], replay["model_digest"]);
    report(
        TEST,
        format!(
            "{name} restarted; 5,000 more (seq {last_seq}); projector at seq {}, model digest {} = the auditor's replay",
            checkpoint["seq"], checkpoint["model_digest"]
        ),
    );
    projector.terminate().await;
}

/// The node that holds the projector's connection.
async fn find_projector(nats: &Nats) -> Option<usize> {
    for (i, node) in nats.nodes.iter().enumerate() {
        if node.is_running()
            && node
                .connection_names()
                .await
                .iter()
                .any(|n| n == "fundflow project")
        {
            return Some(i);
        }
    }
    None
}
