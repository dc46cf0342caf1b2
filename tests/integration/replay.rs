//! `fundflow replay-file` and `fundflow gen-log`.

use fundflow_gen::{envelope, flow, in_kind, parallel_funding, payment, pledge, with_rate};
use serde_json::{Value, json};

use crate::helpers::{encoded, fundflow, fundflow_ok, write_log};

#[test]
fn version_names_the_binary_and_its_version() {
    let out = fundflow_ok(&["--version"]);
    assert_eq!(
        out.trim(),
        format!("fundflow {}", env!("CARGO_PKG_VERSION"))
    );
}

/// The report's rows for one scope and key, without the digests.
fn rows(report: &Value, scope: &str, key: &str) -> Vec<Value> {
    report["totals"]
        .as_array()
        .expect("totals")
        .iter()
        .filter(|r| r["scope"] == scope && r["key"] == key)
        .cloned()
        .collect()
}

#[test]
fn replay_file_prints_exact_totals_rejections_and_digests() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.ffl");
    let masks = in_kind(
        "icshp-masks-nepal",
        flow("31500.00", "USD", &[("NPL", "31500.00")]),
        &[("disposable surgical mask", "piece", "210000")],
    );
    let comesa = in_kind(
        "icshp-masks-comesa",
        with_rate(flow("5000.00", "CNY", &[("014", "5000.00")]), "0.1538"),
        &[("protective mask", "piece", "5000")],
    );
    let pledged = pledge("pl-1", flow("1000.00", "USD", &[("TZA", "1000.00")]));
    let overpaid = payment(
        "pay-1",
        "pl-1",
        flow("1000.01", "USD", &[("TZA", "1000.01")]),
    );
    let parallel = parallel_funding("pf-1", flow("258800.00", "USD", &[("TZA", "258800.00")]));
    write_log(
        &log,
        &[
            encoded(envelope("icshp", 1, masks)),
            encoded(envelope("icshp", 2, comesa)),
            b"not an envelope".to_vec(),
            encoded(envelope("ffrc", 3, pledged)),
            encoded(envelope("ffrc", 4, overpaid)),
            encoded(envelope("ffrc", 5, parallel)),
        ],
    );
    let report: Value = serde_json::from_str(&fundflow_ok(&[
        "replay-file",
        log.to_str().unwrap(),
        "--format",
        "json",
    ]))
    .unwrap();

    assert_eq!(report["last_seq"], 6);
    assert_eq!(report["rejected"].as_array().unwrap().len(), 2);
    assert_eq!(report["rejected"][0]["seq"], 3);
    assert_eq!(report["rejected"][0]["code"], "undecodable");
    assert_eq!(report["rejected"][1]["seq"], 5);
    assert_eq!(report["rejected"][1]["code"], "overpaid");
    assert_eq!(
        report["rejected"][1]["message"],
        "allocations[0].value: paying 1000.01 to TZA exceeds the 1000.00 outstanding on pledge \"pl-1\""
    );
    assert_eq!(
        rows(&report, "country", "NPL"),
        [
            json!({"scope": "country", "key": "NPL", "name": "Nepal", "kind": "in_kind", "currency": "USD",
                "amount": "31500.00", "usd_equivalent": "31500.00", "unconverted": "0.00"})
        ]
    );
    assert_eq!(
        rows(&report, "intermediate", "014"),
        [
            json!({"scope": "intermediate", "key": "014", "name": "Eastern Africa", "kind": "pledged", "currency": "USD",
                   "amount": "1000.00", "usd_equivalent": "1000.00", "unconverted": "0.00"}),
            json!({"scope": "intermediate", "key": "014", "name": "Eastern Africa", "kind": "parallel_funding", "currency": "USD",
                   "amount": "258800.00", "usd_equivalent": "258800.00", "unconverted": "0.00"}),
            json!({"scope": "intermediate", "key": "014", "name": "Eastern Africa", "kind": "in_kind", "currency": "CNY",
                   "amount": "5000.00", "usd_equivalent": "769.00", "unconverted": "0.00"}),
        ]
    );
    let world_in_kind: Vec<_> = rows(&report, "global", "001")
        .into_iter()
        .filter(|r| r["kind"] == "in_kind")
        .map(|r| (r["currency"].clone(), r["amount"].clone()))
        .collect();
    assert_eq!(
        world_in_kind,
        [
            (json!("CNY"), json!("5000.00")),
            (json!("USD"), json!("31500.00"))
        ]
    );
    let items = report["in_kind_items"].as_array().unwrap();
    assert!(items.contains(
        &json!({"scope": "subregion", "key": "034", "name": "Southern Asia",
        "item": "disposable surgical mask", "unit": "piece", "quantity": "210000"})
    ));
    assert_eq!(report["log_digest"].as_str().unwrap().len(), 64);
    assert_eq!(report["model_digest"].as_str().unwrap().len(), 64);
}

#[test]
fn the_same_seed_gives_the_same_log_and_two_replays_the_same_digests() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    for (path, seed) in [(&a, "5"), (&b, "5"), (&c, "6")] {
        fundflow_ok(&[
            "gen-log",
            "--events",
            "20000",
            "--seed",
            seed,
            path.to_str().unwrap(),
        ]);
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());

    let first = fundflow_ok(&["replay-file", a.to_str().unwrap()]);
    let second = fundflow_ok(&["replay-file", b.to_str().unwrap()]);
    assert_eq!(first, second);
    let report: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(report["last_seq"], 20000);
    let codes: std::collections::BTreeSet<_> = report["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        codes.contains("duplicate") && codes.contains("undecodable"),
        "{codes:?}"
    );
    let countries: std::collections::BTreeSet<_> = report["totals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["scope"] == "country")
        .map(|r| r["key"].as_str().unwrap().to_owned())
        .collect();
    assert!(countries.len() > 100, "{} countries", countries.len());
}

#[test]
fn a_truncated_file_is_an_error_naming_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.ffl");
    write_log(&log, &[b"first".to_vec(), b"second".to_vec()]);
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.pop();
    std::fs::write(&log, bytes).unwrap();
    let output = fundflow(&["replay-file", log.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("record 2 is truncated"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn a_missing_file_is_one_sentence_not_a_panic() {
    let output = fundflow(&["replay-file", "/nonexistent/log.ffl"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("fundflow: cannot open /nonexistent/log.ffl"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
}

#[test]
fn bad_totals_filters_and_a_config_with_once_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    for (flag, value, rule) in [
        ("--scope", "continent", "not one of country, region"),
        ("--kind", "donated", "not one of pledged, paid"),
        ("--currency", "XYZ", "not an ISO 4217 currency code"),
    ] {
        let out = fundflow(&["totals", "--data-dir", data_dir, flag, value]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(value) && stderr.contains(rule), "{stderr}");
    }
    let out = fundflow(&[
        "project",
        "--once",
        "--embedded",
        "--data-dir",
        data_dir,
        "--config",
        "access.toml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--once") && stderr.contains("--config"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("model").exists(),
        "nothing may run before the arguments are checked"
    );
}
