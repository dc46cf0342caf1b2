//! `fundflow serve` over real HTTP, on the embedded log and on JetStream (a nats-server 2.10
//! started by the test): every route and role, JSON, NDJSON and CSV, idempotency and conflicts,
//! one 400 per validation rule, the limits, a client that hangs up mid-request, waiting for the
//! fold, NATS submissions, and the OpenAPI document against the routes.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fundflow_proto::{Message, v1};
use fundflow_testkit::{AccessConfig, FundflowCommand, FundflowProcess, NatsServer};
use serde_json::{Value, json};

/// Demo principals of every test server: two partners, a reviewer, an auditor.
pub struct Tokens {
    pub icshp: String,
    pub cabc: String,
    pub reviewer: String,
    pub auditor: String,
}

const TOKENS: [(&str, &str, &str); 4] = [
    ("partner", "icshp", "fft_test_icshp"),
    ("partner", "cabc", "fft_test_cabc"),
    ("reviewer", "", "fft_test_reviewer"),
    ("auditor", "", "fft_test_auditor"),
];

fn tokens() -> Tokens {
    Tokens {
        icshp: TOKENS[0].2.into(),
        cabc: TOKENS[1].2.into(),
        reviewer: TOKENS[2].2.into(),
        auditor: TOKENS[3].2.into(),
    }
}

fn write_config(path: &Path) {
    let mut config = AccessConfig::new();
    for (role, id, token) in TOKENS {
        let hash = fundflow_server::access::token_sha256(token);
        config = match role {
            "partner" => config.partner(id, id, &hash, None),
            "reviewer" => config.reviewer(role, &hash),
            _ => config.auditor(role, &hash, None),
        };
    }
    config.write(path);
}

/// A `fundflow` server process on a port of its own choosing, killed on drop.
pub struct Server {
    process: FundflowProcess,
    pub url: String,
    pub tokens: Tokens,
    pub http: reqwest::Client,
}

impl Server {
    /// Starts `fundflow <command> ...` with a config and a data dir in `dir`, on port 0, and
    /// waits until it is ready.
    pub async fn start(
        command: &str,
        dir: &Path,
        extra: &[&str],
        nats: Option<&NatsServer>,
    ) -> Server {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("access.toml");
        write_config(&config);
        let mut cmd = FundflowCommand::new(
            env!("CARGO_BIN_EXE_fundflow"),
            command,
            &dir.join(format!("{command}.stderr")),
        )
        .args([command, "--config", config.to_str().unwrap()])
        .listen_on_any_port()
        .args(["--data-dir", dir.join("data").to_str().unwrap()])
        .args(extra);
        cmd = match nats {
            Some(nats) => cmd.env("FUNDFLOW_NATS_URL", nats.url()),
            None => cmd.args(["--embedded"]),
        };
        let mut process = cmd.spawn();
        // Patience, not a timing: on a loaded 2-core runner, with every test binary starting its
        // own servers at once, one start once took over 30 s to be ready.
        process.wait_ready(Duration::from_secs(90)).await;
        Server {
            url: process.url().to_owned(),
            process,
            tokens: tokens(),
            http: reqwest::Client::new(),
        }
    }

    /// POSTs `body` as `content_type` with `token`; returns status and JSON body.
    pub async fn post(
        &self,
        path: &str,
        token: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// One JSON event.
    pub async fn submit(&self, token: &str, event: &Value, wait: bool) -> (u16, Value) {
        let path = if wait {
            "/v1/events?wait=true"
        } else {
            "/v1/events"
        };
        self.post(path, token, "application/json", event.to_string())
            .await
    }

    /// GETs `path` with `token` (or none).
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The checkpoint seq, as the auditor sees it.
    pub async fn checkpoint_seq(&self) -> u64 {
        let (status, body) = self.get("/v1/checkpoint", Some(&self.tokens.auditor)).await;
        assert_eq!(status, 200, "{body}");
        body["seq"].as_u64().unwrap()
    }

    /// Stops it with SIGTERM and waits, failing on a non-zero exit.
    pub async fn terminate(mut self) {
        self.process.terminate().await;
    }
}

/// The example event, as a partner writes it.
pub fn masks(reference: &str, value: &str) -> Value {
    json!({"type": "in_kind_donation_recorded", "ref": reference, "occurred_on": "2020-12-15",
        "donation_id": "icshp-masks-nepal", "donor": "International Center on Small Hydro Power",
        "valuation_basis": "declared",
        "amount": {"value": value, "currency": "USD"},
        "allocations": [{"country": "NPL", "value": value,
                         "items": [{"item": "disposable surgical mask", "unit": "piece", "quantity": "210000"}]}],
        "description": "Masks for the municipalities of Khajura and Bardaghat"})
}

fn pledge(reference: &str, pledge_id: &str, value: &str) -> Value {
    json!({"type": "pledge_recorded", "ref": reference, "occurred_on": "2020-03-01",
        "pledge_id": pledge_id, "donor": "CABC",
        "amount": {"value": value, "currency": "USD"},
        "allocations": [{"country": "ETH", "value": value}]})
}

fn payment(reference: &str, pledge_id: &str, value: &str) -> Value {
    json!({"type": "contribution_paid", "ref": reference, "occurred_on": "2020-04-15",
        "payment_id": reference, "pledge_id": pledge_id,
        "amount": {"value": value, "currency": "USD"},
        "allocations": [{"country": "ETH", "value": value}]})
}

fn row<'a>(totals: &'a Value, scope: &str, key: &str, kind: &str) -> Option<&'a Value> {
    totals["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["scope"] == scope && r["key"] == key && r["kind"] == kind)
}

async fn wait_for_seq(server: &Server, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.checkpoint_seq().await < seq {
        assert!(
            Instant::now() < deadline,
            "the projector did not reach seq {seq}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partner_submits_and_reviewers_read_exact_totals_on_the_embedded_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start("serve", dir.path(), &[], None).await;
    let t = &server.tokens;

    let (status, body) = server
        .submit(&t.icshp, &masks("nepal", "31500.00"), true)
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "applied");
    assert_eq!(body["seq"], 1);
    let event_id = body["event_id"].as_str().unwrap().to_owned();

    // The same ref again: the same event, counted once.
    let (status, body) = server
        .submit(&t.icshp, &masks("nepal", "31500.00"), false)
        .await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("duplicate")),
        "{body}"
    );
    assert_eq!(body["event_id"], event_id.as_str());
    assert_eq!(body["seq"], 1);
    // The same ref with other content: a conflict naming the original.
    let (status, body) = server
        .submit(&t.icshp, &masks("nepal", "32000.00"), false)
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "event_id_conflict");
    assert_eq!(body["event_id"], event_id.as_str());
    assert_eq!(body["seq"], 1);
    // Another partner's same ref is another event.
    let (status, body) = server
        .submit(&t.cabc, &pledge("nepal", "p1", "1000.00"), true)
        .await;
    assert_eq!(
        (status, &body["status"]),
        (201, &json!("applied")),
        "{body}"
    );
    // A payment over the pledge is rejected by the fold (it needs ledger state): 422 with the code.
    let (status, body) = server
        .submit(&t.cabc, &payment("pay-1", "p1", "1200.00"), true)
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["status"], "rejected");
    assert_eq!(body["code"], "overpaid");
    let (status, body) = server
        .submit(&t.cabc, &payment("pay-2", "p1", "400.00"), true)
        .await;
    assert_eq!(status, 201, "{body}");

    let (status, totals) = server
        .get("/v1/totals?scope=country", Some(&t.reviewer))
        .await;
    assert_eq!(status, 200, "{totals}");
    assert_eq!(totals["as_of_seq"], 4);
    assert_eq!(totals["model_digest"].as_str().unwrap().len(), 64);
    let npl = row(&totals, "country", "NPL", "in_kind").unwrap();
    assert_eq!(npl["amount"], "31500.00");
    assert_eq!(npl["usd_equivalent"], "31500.00");
    assert_eq!(npl["name"], "Nepal");
    assert_eq!(
        row(&totals, "country", "ETH", "pledged").unwrap()["amount"],
        "1000.00"
    );
    assert_eq!(
        row(&totals, "country", "ETH", "paid").unwrap()["amount"],
        "400.00"
    );
    let (_, regions) = server
        .get("/v1/totals?scope=region&kind=in_kind", Some(&t.reviewer))
        .await;
    assert_eq!(regions["rows"].as_array().unwrap().len(), 1);
    assert_eq!(
        row(&regions, "region", "142", "in_kind").unwrap()["amount"],
        "31500.00"
    );
    let (status, csv) = server
        .get("/v1/totals?scope=global&format=csv", Some(&t.reviewer))
        .await;
    assert_eq!(status, 200);
    let csv = csv.as_str().unwrap();
    assert!(
        csv.starts_with("scope,key,name,kind,currency,amount,usd_equivalent,unconverted\n"),
        "{csv}"
    );
    assert!(
        csv.contains("global,001,World,in_kind,USD,31500.00,31500.00,0.00"),
        "{csv}"
    );

    let (_, in_kind) = server
        .get("/v1/in-kind?scope=country", Some(&t.reviewer))
        .await;
    assert_eq!(in_kind["rows"][0]["quantity"], "210000");
    assert_eq!(in_kind["rows"][0]["key"], "NPL");

    let (status, p) = server.get("/v1/pledges/p1", Some(&t.cabc)).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        (
            p["pledged"].as_str(),
            p["paid"].as_str(),
            p["outstanding"].as_str()
        ),
        (Some("1000.00"), Some("400.00"), Some("600.00"))
    );
    assert_eq!(p["lines"][0]["key"], "ETH");
    let (status, _) = server
        .get("/v1/pledges/p1?partner=cabc", Some(&t.reviewer))
        .await;
    assert_eq!(status, 200);
    let (status, _) = server.get("/v1/pledges/nope", Some(&t.cabc)).await;
    assert_eq!(status, 404);

    let (status, e) = server
        .get(&format!("/v1/events/{event_id}"), Some(&t.icshp))
        .await;
    assert_eq!(status, 200, "{e}");
    assert_eq!(
        (e["seq"].as_u64(), e["outcome"].as_str()),
        (Some(1), Some("applied"))
    );
    assert_eq!(e["event"]["amount"]["value"], "31500.00");
    assert_eq!(e["event"]["allocations"][0]["country"], "NPL");
    let rejected_id = {
        let (_, body) = server
            .submit(&t.cabc, &payment("pay-1", "p1", "1200.00"), false)
            .await;
        body["event_id"].as_str().unwrap().to_owned()
    };
    let (_, e) = server
        .get(
            &format!("/v1/events/{rejected_id}?partner=cabc"),
            Some(&t.auditor),
        )
        .await;
    assert_eq!(
        (e["outcome"].as_str(), e["code"].as_str()),
        (Some("rejected"), Some("overpaid"))
    );

    let (status, c) = server.get("/v1/checkpoint", Some(&t.auditor)).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            c["seq"].as_u64(),
            c["applied"].as_u64(),
            c["rejected"].as_u64()
        ),
        (Some(4), Some(3), Some(1))
    );
    assert_eq!(c["model_digest"], totals["model_digest"]);

    let (status, metrics) = server.get("/metrics", None).await;
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("fundflow_events_applied_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fundflow_events_rejected_total{code=\"overpaid\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "fundflow_http_requests_total{route=\"/v1/totals\",method=\"GET\",status=\"200\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("fundflow_projector_lag_events 0"),
        "{metrics}"
    );
    // The fold's memory is reported, and is not nothing once events are folded.
    let fold_bytes = metrics
        .lines()
        .find_map(|l| l.strip_prefix("fundflow_projector_fold_bytes "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(fold_bytes.is_some_and(|b| b > 1_000.0), "{metrics}");

    // A restart refolds and serves the same figures.
    server.terminate().await;
    let server = Server::start("serve", dir.path(), &[], None).await;
    let (_, again) = server
        .get("/v1/totals?scope=country", Some(&server.tokens.reviewer))
        .await;
    assert_eq!(again["model_digest"], totals["model_digest"]);
    assert_eq!(again["rows"], totals["rows"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_answers_401_without_a_token_and_403_to_the_wrong_role() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start("serve", dir.path(), &[], None).await;
    let t = &server.tokens;
    let event_path = "/v1/events/6f9619ff-8b86-d011-b42d-00c04fc964ff";
    for path in [
        "/v1/totals",
        "/v1/in-kind",
        "/v1/pledges/p1",
        event_path,
        "/v1/checkpoint",
    ] {
        let (status, body) = server.get(path, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["code"], "unauthorized");
        let (status, _) = server.get(path, Some("fft_nobody")).await;
        assert_eq!(status, 401, "{path}");
    }
    let (status, _) = server
        .submit("fft_nobody", &masks("a", "1.00"), false)
        .await;
    assert_eq!(status, 401);
    // Partners read no totals or checkpoints; reviewers no checkpoints; only partners submit.
    for path in ["/v1/totals", "/v1/in-kind", "/v1/checkpoint"] {
        let (status, body) = server.get(path, Some(&t.icshp)).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    assert_eq!(server.get("/v1/checkpoint", Some(&t.reviewer)).await.0, 403);
    for token in [&t.reviewer, &t.auditor] {
        assert_eq!(
            server.submit(token, &masks("a", "1.00"), false).await.0,
            403
        );
    }
    // A partner reads only its own events and pledges; a reviewer must name the partner.
    assert_eq!(
        server
            .get(&format!("{event_path}?partner=cabc"), Some(&t.icshp))
            .await
            .0,
        403
    );
    assert_eq!(
        server
            .get("/v1/pledges/p1?partner=cabc", Some(&t.icshp))
            .await
            .0,
        403
    );
    let (status, body) = server.get(event_path, Some(&t.reviewer)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("missing_partner"))
    );
    // A body naming another partner is refused.
    let mut theirs = masks("a", "1.00");
    theirs["partner_id"] = json!("cabc");
    let (status, body) = server.submit(&t.icshp, &theirs, false).await;
    assert_eq!((status, body["field"].as_str()), (403, Some("partner_id")));
    // Public routes.
    for path in ["/healthz", "/readyz", "/metrics", "/v1/openapi.json"] {
        assert_eq!(server.get(path, None).await.0, 200, "{path}");
    }
    assert_eq!(server.get("/v1/nothing", Some(&t.reviewer)).await.0, 404);
    assert_eq!(server.checkpoint_seq().await, 0, "nothing was appended");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_validation_rule_is_a_400_naming_the_field_and_nothing_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start("serve", dir.path(), &[], None).await;
    let token = server.tokens.icshp.clone();
    type Mutation = fn(&mut Value);
    let cases: Vec<(&str, &str, &str, Mutation)> = vec![
        ("number amount", "invalid_type", "amount.value", |e| {
            e["amount"]["value"] = json!(31500.00)
        }),
        (
            "number quantity",
            "invalid_type",
            "allocations[0].items[0].quantity",
            |e| e["allocations"][0]["items"][0]["quantity"] = json!(5),
        ),
        ("unknown field", "unknown_field", "donour", |e| {
            e["donour"] = json!("x");
        }),
        (
            "field of another type",
            "unexpected_field",
            "payment_id",
            |e| e["payment_id"] = json!("p"),
        ),
        ("no type", "missing_field", "type", |e| {
            e.as_object_mut().unwrap().remove("type");
        }),
        ("unknown type", "unknown_kind", "type", |e| {
            e["type"] = json!("gift")
        }),
        ("no ref or id", "missing_field", "ref", |e| {
            e.as_object_mut().unwrap().remove("ref");
        }),
        ("ref and id", "ambiguous_identity", "ref", |e| {
            e["event_id"] = json!("6f9619ff-8b86-d011-b42d-00c04fc964ff")
        }),
        ("bad event id", "invalid_event_id", "event_id", |e| {
            e.as_object_mut().unwrap().remove("ref");
            e["event_id"] = json!("42");
        }),
        ("bad date", "invalid_date", "occurred_on", |e| {
            e["occurred_on"] = json!("15/12/2020")
        }),
        (
            "future date",
            "occurred_after_recorded",
            "occurred_on",
            |e| e["occurred_on"] = json!("2999-01-01"),
        ),
        (
            "unknown currency",
            "unknown_currency",
            "amount.currency",
            |e| e["amount"]["currency"] = json!("XYZ"),
        ),
        (
            "unknown country",
            "unknown_country",
            "allocations[0].country",
            |e| e["allocations"][0]["country"] = json!("XXX"),
        ),
        (
            "unknown region",
            "unknown_region",
            "allocations[0].region",
            |e| {
                e["allocations"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("country");
                e["allocations"][0]["region"] = json!("999");
            },
        ),
        (
            "country and region",
            "ambiguous_recipient",
            "allocations[0]",
            |e| e["allocations"][0]["region"] = json!("142"),
        ),
        (
            "too many decimals",
            "too_many_decimals",
            "amount.value",
            |e| e["amount"]["value"] = json!("31500.001"),
        ),
        ("not a decimal", "invalid_decimal", "amount.value", |e| {
            e["amount"]["value"] = json!("31,500")
        }),
        ("zero", "non_positive_amount", "amount.value", |e| {
            e["amount"]["value"] = json!("0")
        }),
        ("sum", "allocations_mismatch", "allocations", |e| {
            e["allocations"][0]["value"] = json!("31000.00")
        }),
        ("no allocations", "no_allocations", "allocations", |e| {
            e["allocations"] = json!([])
        }),
        ("no items", "missing_items", "allocations[0].items", |e| {
            e["allocations"][0].as_object_mut().unwrap().remove("items");
        }),
        (
            "bad quantity",
            "invalid_quantity",
            "allocations[0].items[0].quantity",
            |e| e["allocations"][0]["items"][0]["quantity"] = json!("-1"),
        ),
        ("usd rate on USD", "invalid_usd_rate", "usd_rate", |e| {
            e["usd_rate"] = json!("2");
            e["usd_rate_date"] = json!("2020-12-15");
            e["usd_rate_source"] = json!("x");
        }),
        ("no donor", "missing_field", "donor", |e| {
            e["donor"] = json!(" ")
        }),
        ("long donor", "field_too_long", "donor", |e| {
            e["donor"] = json!("d".repeat(300))
        }),
        (
            "bad basis",
            "invalid_valuation_basis",
            "valuation_basis",
            |e| e["valuation_basis"] = json!("guess"),
        ),
    ];
    for (name, code, field, mutate) in cases {
        let mut event = masks(&format!("case-{name}"), "31500.00");
        mutate(&mut event);
        let (status, body) = server.submit(&token, &event, false).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert_eq!(body["code"], code, "{name}: {body}");
        assert_eq!(body["field"], field, "{name}: {body}");
        assert_eq!(
            body["type"],
            format!("urn:fundflow:problem:{code}"),
            "{name}"
        );
        assert!(
            body["detail"].as_str().unwrap().contains(field),
            "{name}: {body}"
        );
    }
    let (status, body) = server
        .post("/v1/events", &token, "application/json", "{not json")
        .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_json")));
    let (status, _) = server.post("/v1/events", &token, "text/plain", "x").await;
    assert_eq!(status, 415);
    assert_eq!(server.checkpoint_seq().await, 0, "nothing reached the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn ndjson_and_csv_lines_get_their_own_results_and_resending_counts_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start("serve", dir.path(), &[], None).await;
    let token = server.tokens.icshp.clone();
    let mut bad = masks("m3", "10.00");
    bad["amount"]["value"] = json!("10.001");
    let lines = [
        masks("m1", "10.00"),
        masks("m2", "20.00"),
        bad,
        masks("m4", "40.00"),
    ]
    .iter()
    .map(Value::to_string)
    .collect::<Vec<_>>()
    .join("\n");
    let (status, body) = server
        .post(
            "/v1/events?wait=true",
            &token,
            "application/x-ndjson",
            lines.clone(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["summary"],
        json!({"accepted": 0, "duplicate": 0, "applied": 3, "rejected": 0, "refused": 1, "conflict": 0})
    );
    assert_eq!(body["results"][2]["line"], 3);
    assert_eq!(body["results"][2]["problem"]["field"], "amount.value");
    let (_, again) = server
        .post("/v1/events", &token, "application/x-ndjson", lines)
        .await;
    assert_eq!(again["summary"]["duplicate"], 3);
    assert_eq!(again["results"][3]["seq"], body["results"][3]["seq"]);

    // A spreadsheet export: one row per allocation, rows with one ref form one event.
    let csv = "ref,type,occurred_on,currency,amount,country,region,organisation,value,item,unit,quantity,donation_id,donor,valuation_basis\n\
        r1,in_kind_donation_recorded,2020-10-31,USD,3750.00,NG,,UN System in Nigeria,3000.00,mask,piece,20000,d-ng,ICSHP,declared\n\
        r1,,,,,,014,COMESA Secretariat,750.00,mask,piece,5000,,,\n\
        r2,parallel_funding_mobilized,2020-12-31,USD,258800.00,,001,,258800.00,,,,,,\n";
    let (status, body) = server
        .post("/v1/events?wait=true", &token, "text/csv", csv)
        .await;
    assert_eq!(status, 200, "{body}");
    // r2 lacks funding_id, source and grant_id: refused; r1 goes through.
    assert_eq!(body["results"][0]["status"], "applied", "{body}");
    assert_eq!(body["results"][1]["status"], "refused");
    assert_eq!(body["results"][1]["line"], 3);
    assert_eq!(body["results"][1]["problem"]["field"], "funding_id");
    let (_, totals) = server
        .get("/v1/totals?kind=in_kind", Some(&server.tokens.reviewer))
        .await;
    assert_eq!(
        row(&totals, "country", "NGA", "in_kind").unwrap()["amount"],
        "3000.00"
    );
    assert_eq!(
        row(&totals, "region", "002", "in_kind").unwrap()["amount"],
        "3750.00"
    );
    assert_eq!(
        row(&totals, "global", "001", "in_kind").unwrap()["amount"],
        "3820.00"
    );
    let (_, again) = server.post("/v1/events", &token, "text/csv", csv).await;
    assert_eq!(again["results"][0]["status"], "duplicate");

    // The submit command: a file, a summary, and a non-zero exit when something was refused.
    let file = dir.path().join("events.ndjson");
    std::fs::write(
        &file,
        format!("{}\n{}\n", masks("f1", "1.00"), masks("f2", "2.00")),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fundflow"))
        .args([
            "submit",
            file.to_str().unwrap(),
            "--url",
            &server.url,
            "--token",
            &token,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(": accepted 2"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_fundflow"))
        .args([
            "submit",
            file.to_str().unwrap(),
            "--url",
            &server.url,
            "--token",
            &token,
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(": duplicate 2"));
    // A refusal is told by its line in the file, blank lines counted.
    let mut bad = masks("f4", "4.00");
    bad["amount"]["value"] = json!(4);
    std::fs::write(
        &file,
        format!(
            "{}\n\n{}\n{bad}\n",
            masks("f1", "1.00"),
            masks("f3", "3.00")
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fundflow"))
        .args([
            "submit",
            file.to_str().unwrap(),
            "--url",
            &server.url,
            "--token",
            &token,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("line 4: refused: amount.value"), "{stdout}");
    let out = Command::new(env!("CARGO_BIN_EXE_fundflow"))
        .args([
            "submit",
            file.to_str().unwrap(),
            "--url",
            &server.url,
            "--token",
            "fft_wrong",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("fundflow: ") && stderr.contains("401") && stderr.lines().count() == 1,
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_refuse_whole_requests_and_a_client_that_hangs_up_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        "serve",
        dir.path(),
        &["--body-bytes-max", "4096", "--lines-max", "3"],
        None,
    )
    .await;
    let token = server.tokens.icshp.clone();
    let four: String = (1..=4)
        .map(|i| masks(&format!("l{i}"), "1.00").to_string() + "\n")
        .collect();
    let (status, body) = server
        .post("/v1/events", &token, "application/x-ndjson", four)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("too_large")),
        "{body}"
    );
    let big = format!("{}\n", masks("big", "1.00")).repeat(10);
    let (status, body) = server
        .post("/v1/events", &token, "application/x-ndjson", big)
        .await;
    assert_eq!(status, 413, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("4096"));

    // Half a body, then the connection closes: nothing of it is appended.
    let addr = server.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let body = format!("{}\n{}\n", masks("h1", "1.00"), masks("h2", "1.00"));
    write!(
        stream,
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream
        .write_all(&body.as_bytes()[..body.len() / 2 + 10])
        .unwrap();
    drop(stream);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = server.submit(&token, &masks("after", "1.00"), true).await;
    assert_eq!(status, 201);
    assert_eq!(
        server.checkpoint_seq().await,
        1,
        "only the complete request was appended"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_lists_exactly_the_routes_the_server_serves() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start("serve", dir.path(), &[], None).await;
    let (status, doc) = server.get("/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = BTreeSet::new();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    // The router is built from `Route::ALL`: every route it serves is in this list.
    let served: BTreeSet<(String, String)> = fundflow_server::http::Route::ALL
        .iter()
        .map(|route| (route.method().to_owned(), route.path().to_owned()))
        .collect();
    assert_eq!(documented, served);
    // Each documented route is really served: with the auditor's token, nothing is a 404 of the
    // router (only a 404 of a missing pledge or event, which says so).
    for (method, path) in &documented {
        let concrete = path
            .replace("{pledge_id}", "p1")
            .replace("{event_id}", "6f9619ff-8b86-d011-b42d-00c04fc964ff");
        let request = match method.as_str() {
            "GET" => server
                .http
                .get(format!("{}{concrete}?partner=icshp", server.url)),
            _ => server.http.post(format!("{}{concrete}", server.url)),
        };
        let r = request
            .bearer_auth(&server.tokens.auditor)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert!(
            status != 404 || body.contains("has no"),
            "{method} {path}: {status} {body}"
        );
        assert_ne!(status, 405, "{method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn on_jetstream_partners_submit_over_http_and_nats_and_a_separate_gateway_waits_for_the_projector()
 {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start("serve", &dir.path().join("serve"), &[], Some(&nats)).await;
    let t = &server.tokens;
    let (status, body) = server
        .submit(&t.icshp, &masks("nepal", "31500.00"), true)
        .await;
    assert_eq!(
        (status, &body["status"]),
        (201, &json!("applied")),
        "{body}"
    );

    // Over NATS: JSON with a header, and a protobuf envelope, request-reply.
    let client = async_nats::ConnectOptions::new()
        .custom_inbox_prefix("_INBOX_icshp")
        .connect(nats.url())
        .await
        .unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/json");
    headers.insert("Fundflow-Wait", "true");
    let reply = client
        .request_with_headers(
            "fundflow.v1.submit.icshp",
            headers.clone(),
            masks("nats-1", "5.00").to_string().into(),
        )
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["status"], "applied", "{reply}");
    assert_eq!(reply["seq"], 2);
    let reply = client
        .request_with_headers(
            "fundflow.v1.submit.icshp",
            headers.clone(),
            masks("nepal", "31500.00").to_string().into(),
        )
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(
        (reply["status"].as_str(), reply["seq"].as_u64()),
        (Some("duplicate"), Some(1))
    );
    let envelope = fundflow_gen::envelope(
        "icshp",
        77,
        fundflow_gen::parallel_funding(
            "pf-1",
            fundflow_gen::flow("258800.00", "USD", &[("TZA", "258800.00")]),
        ),
    );
    let reply = client
        .request("fundflow.v1.submit.icshp", envelope.encode_to_vec().into())
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["status"], "accepted", "{reply}");
    // An envelope naming another partner than its subject is refused.
    let theirs = v1::Envelope {
        partner_id: "cabc".into(),
        ..envelope.clone()
    };
    let reply = client
        .request("fundflow.v1.submit.icshp", theirs.encode_to_vec().into())
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["status"], "refused", "{reply}");
    assert_eq!(reply["problem"]["status"], 403);
    let reply = client
        .request("fundflow.v1.submit.icshp", vec![0xff, 0x01].into())
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["problem"]["code"], "undecodable", "{reply}");

    // A stateless gateway in another process: it appends to the same stream and learns the
    // fold's verdict from the serving process's notices.
    let gateway = Server::start("gateway", &dir.path().join("gateway"), &[], Some(&nats)).await;
    let (status, body) = gateway
        .submit(&t.icshp, &masks("via-gateway", "7.00"), true)
        .await;
    assert_eq!(
        (status, &body["status"]),
        (201, &json!("applied")),
        "{body}"
    );
    let (status, body) = gateway
        .submit(&t.icshp, &masks("via-gateway", "8.00"), false)
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        gateway.get("/v1/totals", Some(&t.reviewer)).await.0,
        404,
        "a gateway serves no queries"
    );

    wait_for_seq(&server, 4).await;
    let (_, totals) = server
        .get("/v1/totals?scope=global", Some(&t.reviewer))
        .await;
    assert_eq!(
        row(&totals, "global", "001", "in_kind").unwrap()["amount"],
        "31512.00"
    );
    assert_eq!(
        row(&totals, "global", "001", "parallel_funding").unwrap()["amount"],
        "258800.00"
    );
    gateway.terminate().await;
    server.terminate().await;
}

#[test]
fn quickstart_loads_the_report_once_and_prints_its_totals() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_fundflow"))
            .args(["quickstart", "--exit", "--listen", "127.0.0.1:0"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = run();
    assert!(first.contains("gssdc    1 applied"), "{first}");
    assert!(first.contains("icshp    3 applied"), "{first}");
    for line in [
        "001  World                              in_kind           USD              35250.00             35250.00",
        "001  World                              parallel_funding  USD             258800.00            258800.00",
        "002  Africa                             in_kind           USD               3750.00              3750.00",
        "NPL  Nepal                              in_kind           USD              31500.00             31500.00",
        "NPL  Nepal                              210000 piece of disposable surgical mask",
    ] {
        assert!(first.contains(line), "missing {line:?} in\n{first}");
    }
    let second = run();
    assert!(
        second.contains("gssdc    1 duplicate") && second.contains("icshp    3 duplicate"),
        "{second}"
    );
    assert!(second.contains("(as of seq 4)"), "{second}");
    // The same tokens both times.
    let token_line = |out: &str| {
        out.lines()
            .find(|l| l.contains("reviewer "))
            .map(str::to_owned)
    };
    assert_eq!(token_line(&first), token_line(&second));
    assert!(
        dir.path()
            .join("fundflow-data/quickstart-access.toml")
            .exists()
    );
    let access =
        std::fs::read_to_string(dir.path().join("fundflow-data/quickstart-access.toml")).unwrap();
    assert!(
        !access.contains("fft_"),
        "the access file holds hashes, never tokens"
    );
}

/// The reading half, `project --config`, serves queries and no submissions.
#[tokio::test(flavor = "multi_thread")]
async fn project_with_a_config_serves_the_query_api() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let gateway = Server::start("gateway", &dir.path().join("g"), &[], Some(&nats)).await;
    let (status, _) = gateway
        .submit(&gateway.tokens.icshp, &masks("m", "9.00"), false)
        .await;
    assert_eq!(status, 202);
    let project = Server::start("project", &dir.path().join("p"), &[], Some(&nats)).await;
    wait_for_seq(&project, 1).await;
    let (_, totals) = project
        .get("/v1/totals?scope=country", Some(&project.tokens.reviewer))
        .await;
    assert_eq!(
        row(&totals, "country", "NPL", "in_kind").unwrap()["amount"],
        "9.00"
    );
    assert_eq!(
        project
            .submit(&project.tokens.icshp, &masks("x", "1.00"), false)
            .await
            .0,
        404
    );
    project.terminate().await;
    gateway.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_answers_while_the_start_up_refold_runs_and_ready_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("log.ffl");
    let data = dir.path().join("data");
    let data_dir = data.to_str().unwrap();
    crate::helpers::fundflow_ok(&[
        "gen-log",
        "--events",
        "20000",
        "--seed",
        "5",
        file.to_str().unwrap(),
    ]);
    crate::helpers::fundflow_ok(&[
        "publish-file",
        file.to_str().unwrap(),
        "--embedded",
        "--data-dir",
        data_dir,
    ]);
    // A model at the log's end; with --verify the next start refolds the whole log (and checks
    // it) before it serves queries, whatever snapshot of the fold there is.
    crate::helpers::fundflow_ok(&["project", "--once", "--embedded", "--data-dir", data_dir]);
    let config = dir.path().join("access.toml");
    write_config(&config);
    let mut process = FundflowCommand::new(
        env!("CARGO_BIN_EXE_fundflow"),
        "serve",
        &dir.path().join("serve.stderr"),
    )
    .args([
        "serve",
        "--verify",
        "--embedded",
        "--data-dir",
        data_dir,
        "--config",
    ])
    .args([&config])
    .listen_on_any_port()
    .spawn();
    let url = process.wait_listening(Duration::from_secs(30)).await;
    let http = reqwest::Client::new();
    let (mut starting, mut healthy_while_starting) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = http.get(format!("{url}/readyz")).send().await.unwrap();
        if ready.status() == 200 {
            break;
        }
        assert_eq!(ready.status(), 503);
        let body: Value = ready.json().await.unwrap();
        if body["status"] == "starting" {
            starting += 1;
            let health = http.get(format!("{url}/healthz")).send().await.unwrap();
            healthy_while_starting += u32::from(health.status() == 200);
            let totals = http
                .get(format!("{url}/v1/totals"))
                .bearer_auth(tokens().reviewer)
                .send()
                .await
                .unwrap();
            if totals.status() == 200 {
                // The refold ended between the two requests: a query may be answered only
                // once the server says it is ready, which it must say now.
                let ready = http.get(format!("{url}/readyz")).send().await.unwrap();
                assert_eq!(
                    ready.status(),
                    200,
                    "a query answered before the refold ended"
                );
                break;
            }
            assert_eq!(totals.status(), 503, "queries wait for the refold");
            let problem: Value = totals.json().await.unwrap();
            assert_eq!(problem["code"], "unavailable", "{problem}");
        }
        assert!(
            Instant::now() < deadline,
            "not ready in 120 s: {}",
            process.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        starting > 0,
        "the refold of 20,000 events was never seen: {}",
        process.stderr()
    );
    assert_eq!(
        healthy_while_starting, starting,
        "/healthz must answer 200 during the refold"
    );
    let totals = http
        .get(format!("{url}/v1/checkpoint"))
        .bearer_auth(tokens().auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(totals.status(), 200);
    process.terminate().await;
}
