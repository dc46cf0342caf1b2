//! The field's formats over the real binary and HTTP: the FTS-style export (CSV and JSON) and
//! its round trip into a fresh ledger through `fundflow import fts`, the import's edge cases
//! from FTS API files written by hand, and the IATI file of a server validated against the
//! official 2.03 schema by xmllint and reproduced offline from a log export, byte for byte.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::helpers::{fundflow, fundflow_ok, path};
use crate::server::Server;

const IATI: [&str; 6] = [
    "--iati-ref",
    "XI-IATI-FFTEST",
    "--iati-org-type",
    "80",
    "--iati-org-name",
    "South-South Cooperation Programme",
];

/// Two partners' year: a pledge to a country and an area, a payment against it, an in-kind
/// donation in euros, parallel funding for the pledge's grant, a payment in yen, and a pledge
/// reversed (which no export may show).
fn events() -> Vec<(&'static str, Value)> {
    vec![
        (
            "icshp",
            json!({"type": "pledge_recorded", "ref": "p1", "occurred_on": "2020-03-01",
            "pledge_id": "sg-2020-01", "donor": "Foundation X", "sector": "health",
            "amount": {"value": "10000.00", "currency": "USD"},
            "allocations": [{"country": "KEN", "value": "6000.00"}, {"region": "014", "value": "4000.00"}],
            "description": "Small grant for clinics"}),
        ),
        (
            "icshp",
            json!({"type": "contribution_paid", "ref": "pay1", "occurred_on": "2020-06-01",
            "payment_id": "pay-1", "pledge_id": "sg-2020-01",
            "amount": {"value": "2500.00", "currency": "USD"},
            "allocations": [{"country": "KEN", "organisation": "Kenya Red Cross", "value": "2500.00"}]}),
        ),
        (
            "icshp",
            json!({"type": "in_kind_donation_recorded", "ref": "ik1", "occurred_on": "2020-05-31",
            "donation_id": "masks-npl", "donor": "ICSHP", "valuation_basis": "declared",
            "amount": {"value": "1000.00", "currency": "EUR"}, "usd_rate": "1.10",
            "usd_rate_date": "2020-05-31", "usd_rate_source": "ECB",
            "allocations": [{"country": "NPL", "value": "1000.00",
                "items": [{"item": "disposable surgical mask", "unit": "piece", "quantity": "5000"}]}]}),
        ),
        (
            "cabc",
            json!({"type": "parallel_funding_mobilized", "ref": "pf1", "occurred_on": "2020-09-15",
            "funding_id": "pf-1", "source": "Bank Y", "grant_id": "sg-2020-01",
            "amount": {"value": "3000.00", "currency": "EUR"}, "usd_rate": "1.2",
            "usd_rate_date": "2020-09-15", "usd_rate_source": "ECB",
            "allocations": [{"country": "UGA", "value": "3000.00"}]}),
        ),
        (
            "cabc",
            json!({"type": "contribution_paid", "ref": "pay2", "occurred_on": "2020-10-01",
            "payment_id": "pay-2", "donor": "JICA",
            "amount": {"value": "500000", "currency": "JPY"}, "usd_rate": "0.0095",
            "usd_rate_date": "2020-10-01", "usd_rate_source": "BoJ",
            "allocations": [{"country": "NGA", "value": "500000"}]}),
        ),
        (
            "cabc",
            json!({"type": "pledge_recorded", "ref": "p2", "occurred_on": "2020-04-01",
            "pledge_id": "p-2", "donor": "Nobody", "amount": {"value": "99.00", "currency": "USD"},
            "allocations": [{"country": "IND", "value": "99.00"}]}),
        ),
        (
            "cabc",
            json!({"type": "event_reversed", "ref": "p2-undo", "occurred_on": "2020-04-02",
            "reverses_ref": "p2", "reason": "entered by mistake"}),
        ),
    ]
}

async fn seeded(dir: &Path, extra: &[&str]) -> Server {
    let server = Server::start("serve", dir, extra, None).await;
    for (partner, event) in events() {
        let token = match partner {
            "icshp" => &server.tokens.icshp,
            _ => &server.tokens.cabc,
        };
        let (status, body) = server.submit(token, &event, true).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["status"], "applied", "{body}");
    }
    server
}

async fn text(server: &Server, route: &str, token: &str) -> (u16, String) {
    let response = server
        .http
        .get(format!("{}{route}", server.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Totals per (scope, key, currency, pledged or funding): what an FTS round trip keeps (FTS
/// has no "parallel funding": it comes back as paid).
async fn funding_totals(server: &Server) -> BTreeMap<(String, String, String, String), Decimal> {
    let (status, reply) = server
        .get("/v1/totals?scope=country", Some(&server.tokens.reviewer))
        .await;
    assert_eq!(status, 200, "{reply}");
    let (status, areas) = server
        .get("/v1/totals?scope=subregion", Some(&server.tokens.reviewer))
        .await;
    assert_eq!(status, 200, "{areas}");
    let mut sums = BTreeMap::new();
    for row in reply["rows"]
        .as_array()
        .unwrap()
        .iter()
        .chain(areas["rows"].as_array().unwrap())
    {
        let class = match row["kind"].as_str().unwrap() {
            "pledged" => "pledged",
            "in_kind" => "in_kind",
            _ => "funding",
        };
        let key = (
            row["scope"].as_str().unwrap().to_owned(),
            row["key"].as_str().unwrap().to_owned(),
            row["currency"].as_str().unwrap().to_owned(),
            class.to_owned(),
        );
        *sums.entry(key).or_insert(Decimal::ZERO) +=
            Decimal::from_str(row["amount"].as_str().unwrap()).unwrap();
    }
    sums
}

fn import(file: &Path, server: &Server, partner: &str, token: &str) -> std::process::Output {
    fundflow(&[
        "import",
        "fts",
        path(file),
        "--partner",
        partner,
        "--url",
        &server.url,
        "--token",
        token,
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fts_export_has_one_row_per_allocation_and_round_trips_into_a_fresh_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let source = seeded(&dir.path().join("a"), &[]).await;
    let reviewer = source.tokens.reviewer.clone();

    let (status, export) = source.get("/v1/exports/fts.json", Some(&reviewer)).await;
    assert_eq!(status, 200, "{export}");
    let rows = export["flows"].as_array().unwrap();
    // 2 + 1 + 1 + 1 + 1 allocations; the reversed pledge is left out.
    assert_eq!(rows.len(), 6, "{export:#}");
    assert!(rows.iter().all(|r| r["destLocations"] != "IND"));
    let by_ref = |code: &str| rows.iter().find(|r| r["refCode"] == code).unwrap();
    let in_kind = by_ref("masks-npl");
    assert_eq!(in_kind["contributionType"], "in kind");
    assert_eq!(in_kind["status"], "paid");
    assert_eq!(in_kind["amountUSD"], "1100.00");
    assert_eq!(in_kind["originalAmount"], "1000.00");
    assert_eq!(in_kind["originalCurrency"], "EUR");
    assert_eq!(in_kind["exchangeRate"], "0.9090909090909090909090909091");
    assert_eq!(in_kind["usdRate"], "1.10");
    let yen = by_ref("pay-2");
    assert_eq!(yen["amountUSD"], "4750.00");
    assert_eq!(yen["srcOrganization"], "JICA");
    let pledge_rows: Vec<&Value> = rows
        .iter()
        .filter(|r| r["refCode"] == "sg-2020-01")
        .collect();
    assert_eq!(pledge_rows.len(), 2);
    assert!(pledge_rows.iter().all(|r| r["status"] == "pledge"
        && r["decisionDate"] == "2020-03-01"
        && r["originalAmount"] == ""
        && r["exchangeRate"] == ""));
    let area = pledge_rows
        .iter()
        .find(|r| r["destRegion"] == "014")
        .unwrap();
    assert_eq!(area["destLocations"], "");
    assert_eq!(area["amountUSD"], "4000.00");
    assert!(
        rows.iter()
            .all(|r| r["boundary"] == "incoming" && r["onBoundary"] == "single")
    );

    let (status, csv) = text(&source, "/v1/exports/fts.csv", &reviewer).await;
    assert_eq!(status, 200);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 7, "{csv}");
    assert!(lines[0].starts_with("date,budgetYear,description,amountUSD,srcOrganization,"));
    assert!(lines[0].ends_with(",refCode,destRegion,partner,seq,usdRate"));
    // A partner reads no export; an unknown filter is a 400 naming it.
    assert_eq!(
        text(&source, "/v1/exports/fts.csv", &source.tokens.icshp)
            .await
            .0,
        403
    );
    let (status, body) = source
        .get("/v1/exports/fts.json?status=all", Some(&reviewer))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("status"),
        "{body}"
    );

    // The round trip: the JSON export imported as one partner's events into a fresh ledger.
    let file = dir.path().join("fts.json");
    std::fs::write(&file, export.to_string()).unwrap();
    let target = Server::start("serve", &dir.path().join("b"), &[], None).await;
    let out = import(&file, &target, "icshp", &target.tokens.icshp);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("imported 6 flows, 0 duplicates"),
        "{stdout}"
    );
    assert_eq!(funding_totals(&target).await, funding_totals(&source).await);
    // Again: nothing counts twice.
    let out = import(&file, &target, "icshp", &target.tokens.icshp);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("imported 0 flows, 6 duplicates"),
        "{stdout}"
    );
    assert_eq!(funding_totals(&target).await, funding_totals(&source).await);

    // The CLI writes the same table from the server.
    let out_csv = dir.path().join("fts.csv");
    fundflow_ok(&[
        "export",
        "fts",
        "--out",
        path(&out_csv),
        "--url",
        &source.url,
        "--token",
        &reviewer,
    ]);
    assert_eq!(std::fs::read_to_string(&out_csv).unwrap(), csv);
    source.terminate().await;
    target.terminate().await;

    // `fundflow flows` takes the same selecting flags, offline.
    let data = dir.path().join("a").join("data");
    let listed = |flags: &[&str]| -> Vec<String> {
        let mut args = vec!["flows", "--data-dir", path(&data), "--format", "json"];
        args.extend_from_slice(flags);
        let reply: Value = serde_json::from_str(&fundflow_ok(&args)).unwrap();
        reply["flows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["own_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(listed(&["--country", "KEN"]), ["pay-1", "sg-2020-01"]);
    assert_eq!(listed(&["--kind", "paid"]), ["pay-2", "pay-1"]);
    assert_eq!(listed(&["--status", "reversed"]), ["p-2"]);
}

fn api_flow(id: u64, version: u64, amount: &str, location: &str, extra: &str) -> String {
    format!(
        r#"{{"id": {id}, "versionId": {version}, "amountUSD": {amount}, "status": "paid",
        "contributionType": "financial", "date": "2020-07-01T00:00:00Z", "boundary": "incoming",
        "onBoundary": "single", "description": "FTS flow {id}",
        "sourceObjects": [{{"type": "Organization", "name": "Government of Norway"}}],
        "destinationObjects": [{{"type": "Organization", "name": "UNICEF"}},
                               {{"type": "Location", "name": "{location}"}}]{extra}}}"#
    )
}

fn api_file(dir: &Path, name: &str, flows: &[String]) -> std::path::PathBuf {
    let file = dir.join(name);
    std::fs::write(
        &file,
        format!(r#"{{"data": {{"flows": [{}]}}}}"#, flows.join(",")),
    )
    .unwrap();
    file
}

#[tokio::test(flavor = "multi_thread")]
async fn importing_fts_files_skips_what_fts_does_not_count_and_a_new_version_replaces_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start("serve", &dir.path().join("s"), &[], None).await;
    let token = server.tokens.cabc.clone();
    let first = api_file(
        dir.path(),
        "kenya.json",
        &[
            api_flow(1, 1, "1000", "Kenya", ""),
            api_flow(2, 1, "500", "Kenya", r#", "onBoundary": "shared""#).replacen(
                r#""onBoundary": "single","#,
                "",
                1,
            ),
            api_flow(3, 1, "0", "Kenya", ""),
            api_flow(4, 1, "250.50", "KEN", "").replace("\"financial\"", "\"in kind\""),
            api_flow(5, 1, "70", "Atlantis", ""),
        ],
    );
    // FTS lists a flow under each location it touches: the same flow 1 in a second file.
    let second = api_file(
        dir.path(),
        "again.json",
        &[api_flow(1, 1, "1000", "Kenya", "")],
    );
    let out = fundflow(&[
        "import",
        "fts",
        path(&first),
        path(&second),
        "--partner",
        "cabc",
        "--url",
        &server.url,
        "--token",
        &token,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.starts_with("imported 2 flows, 0 duplicates (imported before), 0 earlier versions reversed, 1 repeated in the files, 2 skipped, 1 refused"),
        "{stdout}"
    );
    assert!(
        stdout.contains("flow 2 version 1: skipped: onBoundary \"shared\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("flow 3 version 1: skipped: a zero amount"),
        "{stdout}"
    );
    assert!(
        stdout.contains("flow 5 version 1: refused: unknown location \"Atlantis\""),
        "{stdout}"
    );
    let kenya = |reply: &Value, kind: &str| {
        reply["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == "KEN" && r["kind"] == kind)
            .map(|r| r["amount"].as_str().unwrap().to_owned())
    };
    let (_, totals) = server
        .get("/v1/totals?scope=country", Some(&server.tokens.reviewer))
        .await;
    assert_eq!(kenya(&totals, "paid").as_deref(), Some("1000.00"));
    assert_eq!(kenya(&totals, "in_kind").as_deref(), Some("250.50"));

    // Version 2 of flow 1 restates it: the first version is reversed, the second counts.
    let update = api_file(
        dir.path(),
        "v2.json",
        &[api_flow(1, 2, "1200", "Kenya", "")],
    );
    let out = fundflow(&[
        "import",
        "fts",
        path(&update),
        "--partner",
        "cabc",
        "--url",
        &server.url,
        "--token",
        &token,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.starts_with(
            "imported 1 flows, 0 duplicates (imported before), 1 earlier versions reversed"
        ),
        "{stdout}"
    );
    let (_, totals) = server
        .get("/v1/totals?scope=country", Some(&server.tokens.reviewer))
        .await;
    assert_eq!(kenya(&totals, "paid").as_deref(), Some("1200.00"));
    server.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_iati_file_validates_against_the_schema_and_an_auditor_reproduces_it_offline() {
    let dir = tempfile::tempdir().unwrap();
    let server = seeded(&dir.path().join("s"), &IATI).await;
    let reviewer = server.tokens.reviewer.clone();
    let (status, xml) = text(&server, "/v1/exports/iati.xml", &reviewer).await;
    assert_eq!(status, 200, "{xml}");
    let file = dir.path().join("activities.xml");
    std::fs::write(&file, &xml).unwrap();
    let schema = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fundflow-interop/iati-2.03/iati-activities-schema.xsd");
    let lint = Command::new("xmllint")
        .args(["--nonet", "--noout", "--schema", path(&schema), path(&file)])
        .output()
        .expect("xmllint runs (Debian package libxml2-utils: .ci/run installs it)");
    assert!(
        lint.status.success(),
        "{}",
        String::from_utf8_lossy(&lint.stderr)
    );
    assert!(
        xml.contains("<iati-identifier>XI-IATI-FFTEST-icshp.sg-2020-01</iati-identifier>"),
        "{xml}"
    );
    assert!(xml.contains(r#"<recipient-country code="KE""#), "{xml}");
    assert!(
        xml.contains(r#"<recipient-region code="014" vocabulary="2""#),
        "{xml}"
    );
    assert!(
        !xml.contains("p-2") && !xml.contains("IN\""),
        "a reversed pledge was published"
    );
    // Filters apply; an export with nothing in it is a 404 that says why.
    let (status, only_2019) = text(&server, "/v1/exports/iati.xml?to=2019-12-31", &reviewer).await;
    assert_eq!(status, 404, "{only_2019}");
    assert!(only_2019.contains("at least one activity"), "{only_2019}");
    server.terminate().await;

    // Offline, from the stopped data dir and from a log export: the same bytes.
    let data = dir.path().join("s").join("data");
    let export = dir.path().join("log.ffx");
    fundflow_ok(&[
        "log",
        "export",
        "--data-dir",
        path(&data),
        "--out",
        path(&export),
    ]);
    for source in [["--data-dir", path(&data)], ["--file", path(&export)]] {
        let out = dir.path().join("offline.xml");
        let mut args = vec!["export", "iati", "--out", path(&out)];
        args.extend(source);
        args.extend(IATI);
        fundflow_ok(&args);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), xml, "{source:?}");
    }
}
