//! The reviewers' analytics over real HTTP on `fundflow serve --embedded`: totals grouped by
//! partner, period, grant, sector and donor, the flows list and its pages, the pledge book, the
//! summary, every bad parameter, partners' access, and the auditor's replay printing the same
//! rows as the server.
//!
//! The scenario is the programme's 2020 report (masks to COMESA's secretariat for Eastern
//! Africa, Nigeria and Nepal; USD 258,800 of parallel funding) with a small grant's pledge and
//! payments, a second year (a 2021 pledge and payment) and 2021 reversals of two 2020 events.
//! Every expected figure is summed here, in integer cents, from the scenario's own table: not
//! by any code of fundflow's.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::helpers::{fundflow_ok, path};
use crate::server::Server;

/// One flow of the scenario, as the test knows it.
struct Flow {
    reference: &'static str,
    partner: &'static str,
    kind: &'static str,
    day: &'static str,
    grant: &'static str,
    sector: &'static str,
    donor: &'static str,
    currency: &'static str,
    /// (recipient as submitted, cents)
    allocations: &'static [(&'static str, i64)],
    /// USD per unit, when given (the scenario's only rate converts to whole cents).
    rate: Option<(&'static str, i64, i64)>,
    reversed: bool,
}

const MASK: &str = "disposable surgical mask";

const FLOWS: [Flow; 14] = [
    Flow {
        reference: "comesa",
        partner: "icshp",
        kind: "in_kind",
        day: "2020-05-31",
        grant: "",
        sector: "",
        donor: "International Center on Small Hydro Power",
        currency: "USD",
        allocations: &[("014", 75_000)],
        rate: None,
        reversed: false,
    },
    Flow {
        reference: "nigeria",
        partner: "icshp",
        kind: "in_kind",
        day: "2020-10-31",
        grant: "",
        sector: "",
        donor: "ICSHP and the Dragon Design Foundation",
        currency: "USD",
        allocations: &[("NG", 300_000)],
        rate: None,
        reversed: false,
    },
    Flow {
        reference: "nepal",
        partner: "icshp",
        kind: "in_kind",
        day: "2020-12-31",
        grant: "",
        sector: "",
        donor: "International Center on Small Hydro Power",
        currency: "USD",
        allocations: &[("NPL", 3_150_000)],
        rate: None,
        reversed: false,
    },
    Flow {
        reference: "uzbekistan",
        partner: "icshp",
        kind: "in_kind",
        day: "2020-08-01",
        grant: "",
        sector: "",
        donor: "International Center on Small Hydro Power",
        currency: "USD",
        allocations: &[("UZB", 10_000)],
        rate: None,
        reversed: true,
    },
    Flow {
        reference: "sg-pledge",
        partner: "cabc",
        kind: "pledged",
        day: "2020-03-01",
        grant: "sg-2020-01",
        sector: "agriculture",
        donor: "CABC",
        currency: "USD",
        allocations: &[("ETH", 6_000_000), ("KEN", 4_000_000)],
        rate: None,
        reversed: false,
    },
    Flow {
        reference: "sg-pay-1",
        partner: "cabc",
        kind: "paid",
        day: "2020-04-15",
        grant: "sg-2020-01",
        sector: "agriculture",
        donor: "CABC",
        currency: "USD",
        allocations: &[("ETH", 3_000_000)],
        rate: None,
        reversed: false,
    },
    Flow {
        reference: "sg-pay-2",
        partner: "cabc",
        kind: "paid",
        day: "2020-09-20",
        grant: "sg-2020-01",
        sector: "agriculture",
        donor: "Ministry of Commerce",
        currency: "USD",
        allocations: &[("KEN", 1_000_000)],
        rate: None,
        reversed: false,
    },
    Flow {
        reference: "sg-parallel",
        partner: "icshp",
        kind: "parallel_funding",
        day: "2020-07-10",
        grant: "sg-2020-01",
        sector: "",
        donor: "Implementing partner A",
        currency: "USD",
        allocations: &[("KEN", 6_470_000)],
        rate: None,
        reversed: false,
    },
    Flow {
        reference: "gssdc-parallel",
        partner: "icshp",
        kind: "parallel_funding",
        day: "2020-12-31",
        grant: "gssdc-small-grants-2020",
        sector: "",
        donor: "Small grant implementing partners",
        currency: "USD",
        allocations: &[("001", 19_410_000)],
        rate: None,
        reversed: false,
    },
    Flow {
        reference: "eur-payment",
        partner: "cabc",
        kind: "paid",
        day: "2020-11-05",
        grant: "",
        sector: "",
        donor: "",
        currency: "EUR",
        allocations: &[("NPL", 500_000)],
        // 5,000.00 EUR at 1.2215 USD is 6,107.50 USD.
        rate: Some(("1.2215", 610_750, 0)),
        reversed: false,
    },
    Flow {
        reference: "eur-pledge",
        partner: "cabc",
        kind: "pledged",
        day: "2020-06-01",
        grant: "p-2020-02",
        sector: "health",
        donor: "CABC",
        currency: "EUR",
        allocations: &[("TZA", 800_000)],
        rate: None,
        reversed: true,
    },
    Flow {
        reference: "sg21-pledge",
        partner: "cabc",
        kind: "pledged",
        day: "2021-02-10",
        grant: "sg-2021-01",
        sector: "energy",
        donor: "CABC",
        currency: "USD",
        allocations: &[("RWA", 5_000_000)],
        rate: None,
        reversed: false,
    },
    Flow {
        reference: "sg21-pay",
        partner: "cabc",
        kind: "paid",
        day: "2021-03-15",
        grant: "sg-2021-01",
        sector: "energy",
        donor: "CABC",
        currency: "USD",
        allocations: &[("RWA", 2_000_000)],
        rate: None,
        reversed: false,
    },
    Flow {
        reference: "sg21-parallel",
        partner: "cabc",
        kind: "parallel_funding",
        day: "2021-04-01",
        grant: "sg-2021-01",
        sector: "",
        donor: "Rwanda Energy Group",
        currency: "USD",
        allocations: &[("RWA", 1_250_000)],
        rate: None,
        reversed: false,
    },
];

/// The in-kind goods of each donation, by reference.
fn items(reference: &str) -> u64 {
    match reference {
        "comesa" => 5_000,
        "nigeria" => 20_000,
        "nepal" => 210_000,
        "uzbekistan" => 100,
        _ => 0,
    }
}

fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// The JSON event a partner submits for `flow`.
fn event(flow: &Flow) -> Value {
    let allocations: Vec<Value> = flow
        .allocations
        .iter()
        .map(|(to, cents)| {
            let mut a = if to.bytes().all(|b| b.is_ascii_digit()) {
                json!({"region": to, "value": money(*cents)})
            } else {
                json!({"country": to, "value": money(*cents)})
            };
            if flow.kind == "in_kind" {
                a["items"] = json!([{"item": MASK, "unit": "piece", "quantity": items(flow.reference).to_string()}]);
            }
            a
        })
        .collect();
    let amount: i64 = flow.allocations.iter().map(|(_, c)| c).sum();
    let mut e = json!({"ref": flow.reference, "occurred_on": flow.day,
        "amount": {"value": money(amount), "currency": flow.currency},
        "allocations": allocations});
    if let Some((rate, _, _)) = flow.rate {
        e["usd_rate"] = json!(rate);
        e["usd_rate_date"] = json!(flow.day);
        e["usd_rate_source"] = json!("UN operational rate of exchange");
    }
    let fields = match flow.kind {
        "pledged" => json!({"type": "pledge_recorded", "pledge_id": flow.grant,
            "donor": flow.donor, "sector": flow.sector}),
        "paid" if flow.grant.is_empty() => {
            json!({"type": "contribution_paid", "payment_id": flow.reference})
        }
        // The second payment names its own donor; the first inherits its pledge's.
        "paid" if flow.reference == "sg-pay-2" => json!({"type": "contribution_paid",
            "payment_id": flow.reference, "pledge_id": flow.grant, "donor": flow.donor}),
        "paid" => json!({"type": "contribution_paid", "payment_id": flow.reference,
            "pledge_id": flow.grant}),
        "parallel_funding" => json!({"type": "parallel_funding_mobilized",
            "funding_id": flow.reference, "grant_id": flow.grant, "source": flow.donor}),
        _ => json!({"type": "in_kind_donation_recorded", "donation_id": flow.reference,
            "donor": flow.donor, "valuation_basis": "declared"}),
    };
    for (k, v) in fields.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

/// The alpha-3 code or M49 code a recipient is reported under.
fn node(recipient: &str) -> &str {
    match recipient {
        "NG" => "NGA",
        other => other,
    }
}

/// (scope, key) of every level a recipient counts at.
fn rollup(recipient: &str) -> Vec<(&'static str, &'static str)> {
    let africa_east = vec![
        ("intermediate", "014"),
        ("subregion", "202"),
        ("region", "002"),
        ("global", "001"),
    ];
    let mut chain = match node(recipient) {
        "ETH" => vec![("country", "ETH")],
        "KEN" => vec![("country", "KEN")],
        "RWA" => vec![("country", "RWA")],
        "TZA" => vec![("country", "TZA")],
        "NGA" => {
            return vec![
                ("country", "NGA"),
                ("intermediate", "011"),
                ("subregion", "202"),
                ("region", "002"),
                ("global", "001"),
            ];
        }
        "NPL" => {
            return vec![
                ("country", "NPL"),
                ("subregion", "034"),
                ("region", "142"),
                ("global", "001"),
            ];
        }
        "UZB" => {
            return vec![
                ("country", "UZB"),
                ("subregion", "143"),
                ("region", "142"),
                ("global", "001"),
            ];
        }
        "014" => vec![],
        "001" => return vec![("global", "001")],
        other => panic!("the scenario has no recipient {other}"),
    };
    chain.extend(africa_east);
    chain
}

type Dims = BTreeMap<&'static str, String>;

/// A totals row's key: scope, key, grouped dimensions, kind, currency.
type RowKey = (String, String, Dims, String, String);

/// A query case: scope, group_by, more parameters, and which flows it counts.
type Case = (
    &'static str,
    &'static [&'static str],
    &'static str,
    Box<dyn Fn(&Flow) -> bool>,
);

/// A flows filter: the query, which flows it lists, which statuses.
type FlowFilter = (&'static str, Box<dyn Fn(&Flow) -> bool>, &'static str);

/// The expected rows of `/v1/totals` at `scope` grouped by `group_by`, for the flows `keep`
/// selects: ((scope, key, dims, kind, currency) → (amount, usd, unconverted) in cents).
fn expected(
    scope: &str,
    group_by: &[&'static str],
    keep: impl Fn(&Flow) -> bool,
) -> BTreeMap<RowKey, (i64, i64, i64)> {
    let mut rows = BTreeMap::new();
    for flow in FLOWS.iter().filter(|f| !f.reversed && keep(f)) {
        let dims: Dims = group_by
            .iter()
            .map(|d| {
                let value = match *d {
                    "partner" => flow.partner.to_owned(),
                    "year" => flow.day[..4].to_owned(),
                    "month" => flow.day[..7].to_owned(),
                    "quarter" => {
                        let month: u32 = flow.day[5..7].parse().unwrap();
                        format!("{}-Q{}", &flow.day[..4], (month - 1) / 3 + 1)
                    }
                    "grant" => flow.grant.to_owned(),
                    "sector" => flow.sector.to_owned(),
                    "donor" => flow.donor.to_owned(),
                    other => panic!("no dimension {other}"),
                };
                (*d, value)
            })
            .collect();
        for (recipient, cents) in flow.allocations {
            let (usd, unconverted) = match (flow.currency, flow.rate) {
                ("USD", _) => (*cents, 0),
                (_, Some((_, usd, _))) => (usd, 0),
                (_, None) => (0, *cents),
            };
            for (s, key) in rollup(recipient) {
                if s != scope {
                    continue;
                }
                let row = rows
                    .entry((
                        s.to_owned(),
                        key.to_owned(),
                        dims.clone(),
                        flow.kind.to_owned(),
                        flow.currency.to_owned(),
                    ))
                    .or_insert((0, 0, 0));
                row.0 += cents;
                row.1 += usd;
                row.2 += unconverted;
            }
        }
    }
    rows
}

/// The server's rows in the same shape, checking each row's fields.
fn actual(reply: &Value, group_by: &[&'static str]) -> BTreeMap<RowKey, (String, String, String)> {
    let mut rows = BTreeMap::new();
    for row in reply["rows"].as_array().unwrap() {
        let dims: Dims = group_by
            .iter()
            .map(|d| {
                (
                    *d,
                    row[*d]
                        .as_str()
                        .unwrap_or_else(|| panic!("{row} has no {d}"))
                        .to_owned(),
                )
            })
            .collect();
        for absent in [
            "partner", "year", "quarter", "month", "grant", "sector", "donor",
        ] {
            if !group_by.contains(&absent) {
                assert!(row.get(absent).is_none(), "{row} has {absent}");
            }
        }
        let key = (
            row["scope"].as_str().unwrap().to_owned(),
            row["key"].as_str().unwrap().to_owned(),
            dims,
            row["kind"].as_str().unwrap().to_owned(),
            row["currency"].as_str().unwrap().to_owned(),
        );
        let value = (
            row["amount"].as_str().unwrap().to_owned(),
            row["usd_equivalent"].as_str().unwrap().to_owned(),
            row["unconverted"].as_str().unwrap().to_owned(),
        );
        assert!(rows.insert(key, value).is_none(), "a row twice: {row}");
    }
    rows
}

fn formatted(
    rows: BTreeMap<RowKey, (i64, i64, i64)>,
) -> BTreeMap<RowKey, (String, String, String)> {
    rows.into_iter()
        .map(|(k, (a, u, n))| (k, (money(a), money(u), money(n))))
        .collect()
}

/// Submits the scenario, reversals last, and waits for the fold.
pub(crate) async fn load(server: &Server) {
    let t = &server.tokens;
    for flow in &FLOWS {
        let token = if flow.partner == "icshp" {
            &t.icshp
        } else {
            &t.cabc
        };
        let (status, body) = server.submit(token, &event(flow), true).await;
        assert_eq!(status, 201, "{} {body}", flow.reference);
    }
    let reversals = [
        (&t.icshp, "uzbekistan", "2021-02-01", "entered in error"),
        (&t.cabc, "eur-pledge", "2021-01-20", "pledge withdrawn"),
    ];
    for (token, target, day, reason) in reversals {
        let undo = json!({"type": "event_reversed", "ref": format!("undo-{target}"),
            "occurred_on": day, "reverses_ref": target, "reason": reason});
        let (status, body) = server.submit(token, &undo, true).await;
        assert_eq!(status, 201, "{body}");
    }
}

const ALL: fn(&Flow) -> bool = |_| true;

#[tokio::test(flavor = "multi_thread")]
async fn totals_by_every_dimension_equal_an_independent_sum_and_the_replay_prints_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start("serve", dir.path(), &[], None).await;
    load(&server).await;
    let reviewer = server.tokens.reviewer.clone();
    let get = |query: String| {
        let server = &server;
        let reviewer = reviewer.clone();
        async move {
            let (status, body) = server
                .get(&format!("/v1/totals?{query}"), Some(&reviewer))
                .await;
            assert_eq!(status, 200, "{query}: {body}");
            body
        }
    };

    // Without the new parameters, today's reply: no dimension fields.
    let plain = get("scope=country".into()).await;
    assert_eq!(
        actual(&plain, &[]),
        formatted(expected("country", &[], ALL))
    );
    assert_eq!(plain["as_of_seq"], 16);

    let cases: Vec<Case> = vec![
        ("global", &["partner", "year"], "", Box::new(ALL)),
        ("region", &["partner", "year"], "", Box::new(ALL)),
        (
            "country",
            &["year"],
            "&kind=paid&from=2020-01-01&to=2020-12-31",
            Box::new(|f: &Flow| f.kind == "paid" && f.day.starts_with("2020")),
        ),
        ("global", &["grant", "sector", "donor"], "", Box::new(ALL)),
        (
            "country",
            &["month"],
            "&partner=cabc",
            Box::new(|f: &Flow| f.partner == "cabc"),
        ),
        (
            "global",
            &["quarter"],
            "&from=2020-04-01&to=2020-09-30",
            Box::new(|f: &Flow| ("2020-04-01".."2020-10-01").contains(&f.day)),
        ),
        (
            "country",
            &["quarter", "partner"],
            "&from=2020-04-16&to=2021-03-15",
            Box::new(|f: &Flow| ("2020-04-16".."2021-03-16").contains(&f.day)),
        ),
        (
            "global",
            &["donor"],
            "&grant=sg-2020-01",
            Box::new(|f: &Flow| f.grant == "sg-2020-01"),
        ),
        (
            "country",
            &["partner"],
            "&sector=agriculture&donor=CABC",
            Box::new(|f: &Flow| f.sector == "agriculture" && f.donor == "CABC"),
        ),
        (
            "global",
            &["sector"],
            "&sector=",
            Box::new(|f: &Flow| f.sector.is_empty()),
        ),
    ];
    let mut replayed = Vec::new();
    for (scope, group_by, filters, keep) in &cases {
        let query = format!("scope={scope}&group_by={}{filters}", group_by.join(","));
        let reply = get(query.clone()).await;
        assert_eq!(
            actual(&reply, group_by),
            formatted(expected(scope, group_by, keep)),
            "{query}"
        );
        replayed.push((query, reply["rows"].clone()));
    }
    // CSV: one column per grouped dimension, between name and kind.
    let (status, csv) = server
        .get(
            "/v1/totals?scope=global&group_by=partner,year&kind=parallel_funding&format=csv",
            Some(&reviewer),
        )
        .await;
    assert_eq!(status, 200);
    let csv = csv.as_str().unwrap();
    assert!(
        csv.starts_with(
            "scope,key,name,partner,year,kind,currency,amount,usd_equivalent,unconverted\n"
        ),
        "{csv}"
    );
    assert!(
        csv.contains("global,001,World,icshp,2020,parallel_funding,USD,258800.00,258800.00,0.00\n"),
        "{csv}"
    );
    let seq = server.checkpoint_seq().await;
    server.terminate().await;

    // The auditor's replay of the stopped data dir prints the same rows at the same seq.
    let data = dir.path().join("data");
    for (query, rows) in replayed {
        let mut args = vec![
            "audit".to_owned(),
            "replay".to_owned(),
            "--data-dir".to_owned(),
            path(&data).to_owned(),
            "--format".to_owned(),
            "json".to_owned(),
        ];
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap();
            args.push(format!("--{}", name.replace('_', "-")));
            args.push(value.to_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let report: Value = serde_json::from_str(&fundflow_ok(&args)).unwrap();
        assert_eq!(report["last_seq"], seq);
        assert_eq!(report["totals"], rows, "{query}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn flows_pledges_and_the_summary_answer_reviewers_and_partners_see_only_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start("serve", dir.path(), &[], None).await;
    load(&server).await;
    let t = &server.tokens;

    // Every applied flow once, newest occurred_on first, across pages of three.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            None => "/v1/flows?limit=3".to_owned(),
            Some(c) => format!("/v1/flows?limit=3&cursor={c}"),
        };
        let (status, page) = server.get(&query, Some(&t.reviewer)).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["as_of_seq"], 16);
        let flows = page["flows"].as_array().unwrap();
        assert!(flows.len() <= 3);
        for flow in flows {
            seen.push((
                flow["occurred_on"].as_str().unwrap().to_owned(),
                flow["seq"].as_u64().unwrap(),
                flow["partner"].as_str().unwrap().to_owned(),
                flow["status"].as_str().unwrap().to_owned(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let applied = FLOWS.iter().filter(|f| !f.reversed).count();
    assert_eq!(seen.len(), applied, "{seen:?}");
    assert!(seen.iter().all(|s| s.3 == "applied"));
    let mut order = seen.clone();
    order.sort_by(|a, b| (&b.0, b.1).cmp(&(&a.0, a.1)));
    assert_eq!(seen, order, "newest occurred_on first");
    assert_eq!(
        seen.iter().map(|s| s.1).collect::<BTreeSet<_>>().len(),
        applied
    );

    // One flow in full: the EUR payment, converted per allocation.
    let (_, eur) = server
        .get(
            "/v1/flows?partner=cabc&from=2020-11-01&to=2020-11-30",
            Some(&t.reviewer),
        )
        .await;
    let flow = &eur["flows"][0];
    assert_eq!(eur["flows"].as_array().unwrap().len(), 1, "{eur}");
    assert_eq!(
        (
            flow["type"].as_str(),
            flow["kind"].as_str(),
            flow["currency"].as_str(),
            flow["amount"].as_str(),
            flow["usd_rate"].as_str(),
            flow["usd_equivalent"].as_str()
        ),
        (
            Some("contribution_paid"),
            Some("paid"),
            Some("EUR"),
            Some("5000.00"),
            Some("1.2215"),
            Some("6107.50")
        )
    );
    assert_eq!(flow["allocations"][0]["key"], "NPL");
    assert_eq!(flow["allocations"][0]["name"], "Nepal");
    assert_eq!(flow["allocations"][0]["usd_equivalent"], "6107.50");

    // Filters.
    let refs = |page: &Value| -> BTreeSet<String> {
        page["flows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                format!(
                    "{}:{}",
                    f["kind"].as_str().unwrap(),
                    f["occurred_on"].as_str().unwrap()
                )
            })
            .collect()
    };
    let expect = |keep: &dyn Fn(&Flow) -> bool, status: &str| -> BTreeSet<String> {
        FLOWS
            .iter()
            .filter(|f| match status {
                "reversed" => f.reversed,
                "all" => true,
                _ => !f.reversed,
            })
            .filter(|f| keep(f))
            .map(|f| format!("{}:{}", f.kind, f.day))
            .collect()
    };
    let filters: Vec<FlowFilter> = vec![
        (
            "country=KEN",
            Box::new(|f: &Flow| f.allocations.iter().any(|a| a.0 == "KEN")),
            "applied",
        ),
        (
            "country=NG",
            Box::new(|f: &Flow| f.allocations.iter().any(|a| a.0 == "NG")),
            "applied",
        ),
        (
            "region=002",
            Box::new(|f: &Flow| {
                f.allocations
                    .iter()
                    .any(|a| rollup(a.0).contains(&("region", "002")))
            }),
            "applied",
        ),
        (
            "region=014",
            Box::new(|f: &Flow| {
                f.allocations
                    .iter()
                    .any(|a| rollup(a.0).contains(&("intermediate", "014")) || a.0 == "014")
            }),
            "applied",
        ),
        (
            "grant=sg-2020-01",
            Box::new(|f: &Flow| f.grant == "sg-2020-01"),
            "applied",
        ),
        (
            "kind=in_kind",
            Box::new(|f: &Flow| f.kind == "in_kind"),
            "applied",
        ),
        (
            "donor=CABC",
            Box::new(|f: &Flow| f.donor == "CABC"),
            "applied",
        ),
        (
            "sector=agriculture",
            Box::new(|f: &Flow| f.sector == "agriculture"),
            "applied",
        ),
        (
            "from=2021-01-01",
            Box::new(|f: &Flow| f.day >= "2021-01-01"),
            "applied",
        ),
        ("status=reversed", Box::new(ALL), "reversed"),
        (
            "status=all&partner=icshp",
            Box::new(|f: &Flow| f.partner == "icshp"),
            "all",
        ),
    ];
    for (query, keep, status) in &filters {
        let (code, page) = server
            .get(&format!("/v1/flows?{query}"), Some(&t.reviewer))
            .await;
        assert_eq!(code, 200, "{query}: {page}");
        assert_eq!(refs(&page), expect(keep.as_ref(), status), "{query}");
    }
    let (_, reversed) = server
        .get("/v1/flows?status=reversed&kind=pledged", Some(&t.reviewer))
        .await;
    assert_eq!(reversed["flows"][0]["status"], "reversed");
    assert_eq!(reversed["flows"][0]["reason"], "pledge withdrawn");
    assert!(reversed["flows"][0]["reversed_by"].is_string());

    // A partner reads its own flows only.
    let (status, own) = server.get("/v1/flows?status=all", Some(&t.cabc)).await;
    assert_eq!(status, 200);
    assert!(
        own["flows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["partner"] == "cabc")
    );
    assert_eq!(
        own["flows"].as_array().unwrap().len(),
        FLOWS.iter().filter(|f| f.partner == "cabc").count()
    );
    let (status, _) = server.get("/v1/flows?partner=icshp", Some(&t.cabc)).await;
    assert_eq!(status, 403);
    // CSV: one row per allocation.
    let (status, csv) = server
        .get(
            "/v1/flows?grant=sg-2020-01&kind=pledged&format=csv",
            Some(&t.reviewer),
        )
        .await;
    assert_eq!(status, 200);
    let csv = csv.as_str().unwrap();
    assert_eq!(
        csv.lines().count(),
        3,
        "a header and two allocations: {csv}"
    );
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .starts_with("seq,event_id,partner,type,own_id,kind,")
    );

    // The pledge book.
    let (status, book) = server.get("/v1/pledges", Some(&t.reviewer)).await;
    assert_eq!(status, 200, "{book}");
    let pledges = book["pledges"].as_array().unwrap();
    let ids: Vec<&str> = pledges
        .iter()
        .map(|p| p["pledge_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["sg-2020-01", "sg-2021-01"],
        "the reversed pledge is not in the book"
    );
    let sg = &pledges[0];
    assert_eq!(
        (
            sg["partner"].as_str(),
            sg["donor"].as_str(),
            sg["sector"].as_str(),
            sg["occurred_on"].as_str(),
            sg["pledged"].as_str(),
            sg["paid"].as_str(),
            sg["outstanding"].as_str(),
        ),
        (
            Some("cabc"),
            Some("CABC"),
            Some("agriculture"),
            Some("2020-03-01"),
            Some("100000.00"),
            Some("40000.00"),
            Some("60000.00")
        )
    );
    assert_eq!(sg["pledged_usd"], "100000.00");
    assert_eq!(sg["paid_usd"], "40000.00");
    assert_eq!(sg["outstanding_usd"], "60000.00");
    assert_eq!(sg["parallel_funding_usd"], "64700.00");
    assert_eq!(sg["parallel_funding"][0]["amount"], "64700.00");
    assert_eq!(sg["leverage"], "0.6470");
    assert_eq!(pledges[1]["leverage"], "0.2500");
    let lines: Vec<(&str, &str)> = sg["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["key"].as_str().unwrap(),
                l["outstanding"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(lines, [("ETH", "30000.00"), ("KEN", "30000.00")]);
    let (_, open) = server
        .get("/v1/pledges?status=open&from=2021-01-01", Some(&t.reviewer))
        .await;
    assert_eq!(open["pledges"].as_array().unwrap().len(), 1);
    assert_eq!(open["pledges"][0]["outstanding"], "30000.00");
    let (_, paid) = server
        .get("/v1/pledges?status=paid", Some(&t.reviewer))
        .await;
    assert!(paid["pledges"].as_array().unwrap().is_empty(), "{paid}");
    let (status, own) = server.get("/v1/pledges", Some(&t.icshp)).await;
    assert_eq!(status, 200);
    assert!(
        own["pledges"].as_array().unwrap().is_empty(),
        "icshp pledged nothing"
    );

    // The figures at a glance for 2020: the report's parallel funding and masks; the UZB gift
    // reversed in 2021 takes Uzbekistan (and nothing else) out of the countries.
    let (status, summary) = server
        .get(
            "/v1/summary?from=2020-01-01&to=2020-12-31",
            Some(&t.reviewer),
        )
        .await;
    assert_eq!(status, 200, "{summary}");
    let by_kind = |kind: &str| {
        summary["by_kind"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} in {summary}"))
    };
    assert_eq!(by_kind("parallel_funding")["usd_equivalent"], "258800.00");
    assert_eq!(by_kind("in_kind")["usd_equivalent"], "35250.00");
    assert_eq!(by_kind("in_kind")["countries"], 2);
    assert_eq!(by_kind("paid")["usd_equivalent"], "46107.50");
    assert_eq!(by_kind("pledged")["usd_equivalent"], "100000.00");
    assert_eq!(
        by_kind("pledged")["countries"],
        2,
        "TZA's pledge was reversed"
    );
    assert_eq!(summary["countries_benefiting"], 4, "ETH, KEN, NGA, NPL");
    assert_eq!(summary["partners"], 2);
    assert_eq!(summary["grants"], 2);
    assert_eq!(summary["events_applied"], 11);
    assert_eq!(summary["events_rejected"], 0);
    let regions: BTreeSet<&str> = summary["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(regions, BTreeSet::from(["002", "142"]));
    assert_eq!(
        summary["in_kind_items"],
        json!([{"item": MASK, "unit": "piece", "quantity": "235000"}])
    );
    let (_, later) = server
        .get(
            "/v1/summary?from=2021-01-01&to=2021-12-31",
            Some(&t.reviewer),
        )
        .await;
    assert_eq!(later["countries_benefiting"], 1, "{later}");
    assert_eq!(
        later["events_applied"], 5,
        "3 flows and 2 reversals in 2021"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_parameter_is_a_400_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start("serve", dir.path(), &[], None).await;
    let t = &server.tokens;
    let cases = [
        ("/v1/totals?group_by=colour", "group_by"),
        ("/v1/totals?group_by=year,year", "group_by"),
        ("/v1/totals?from=2020-13-01", "from"),
        ("/v1/totals?to=yesterday", "to"),
        ("/v1/totals?from=2021-01-01&to=2020-01-01", "to"),
        ("/v1/totals?scope=planet", "scope"),
        ("/v1/totals?kind=gift", "kind"),
        ("/v1/totals?currency=XXX", "currency"),
        ("/v1/totals?format=xml", "format"),
        ("/v1/flows?limit=0", "limit"),
        ("/v1/flows?limit=1001", "limit"),
        ("/v1/flows?cursor=not-a-cursor", "cursor"),
        ("/v1/flows?status=maybe", "status"),
        ("/v1/flows?country=XX", "country"),
        ("/v1/flows?region=999", "region"),
        ("/v1/flows?kind=gift", "kind"),
        ("/v1/flows?from=2020-02-30", "from"),
        ("/v1/pledges?status=closed", "status"),
        ("/v1/pledges?limit=abc", "limit"),
        ("/v1/summary?from=2020-1-1", "from"),
        ("/v1/summary?colour=red", "colour"),
    ];
    for (query, parameter) in cases {
        let (status, body) = server.get(query, Some(&t.reviewer)).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains(parameter),
            "{query}: {body}"
        );
        if parameter != "colour" {
            // An unknown parameter is the query's fault as a whole; the others name theirs.
            assert_eq!(body["field"], parameter, "{query}: {body}");
        }
    }
    for route in ["/v1/totals?group_by=year", "/v1/summary"] {
        let (status, _) = server.get(route, Some(&t.icshp)).await;
        assert_eq!(status, 403, "{route} is for reviewers and auditors");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn flow_pages_keep_the_first_pages_snapshot_while_events_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let server = std::sync::Arc::new(Server::start("serve", dir.path(), &[], None).await);
    load(&server).await;
    let more = 120;
    let writer = {
        let server = std::sync::Arc::clone(&server);
        tokio::spawn(async move {
            for i in 0..more {
                let day = format!("2020-{:02}-{:02}", 1 + i % 12, 1 + i % 28);
                let e = json!({"type": "contribution_paid", "ref": format!("more-{i}"),
                    "occurred_on": day, "payment_id": format!("more-{i}"),
                    "amount": {"value": "1.00", "currency": "USD"},
                    "allocations": [{"country": "KEN", "value": "1.00"}]});
                let (status, body) = server.submit(&server.tokens.cabc, &e, false).await;
                assert_eq!(status, 202, "{body}");
            }
        })
    };
    let reviewer = &server.tokens.reviewer;
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    let mut as_of = None;
    loop {
        let query = match &cursor {
            None => "/v1/flows?limit=4".to_owned(),
            Some(c) => format!("/v1/flows?limit=4&cursor={c}"),
        };
        let (status, page) = server.get(&query, Some(reviewer)).await;
        assert_eq!(status, 200, "{page}");
        let seq = page["as_of_seq"].as_u64().unwrap();
        assert_eq!(
            *as_of.get_or_insert(seq),
            seq,
            "every page answers as of the first"
        );
        for flow in page["flows"].as_array().unwrap() {
            paged.push((
                flow["occurred_on"].as_str().unwrap().to_owned(),
                flow["seq"].as_u64().unwrap(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        // Give the writer time to land batches between pages.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    writer.await.unwrap();
    let as_of = as_of.unwrap();
    let total = 16 + more as u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while server.checkpoint_seq().await < total {
        assert!(
            std::time::Instant::now() < deadline,
            "the fold did not catch up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The same list asked afterwards, cut at the first page's seq, is what the pages held:
    // every flow once, none missing, in order.
    let (_, all) = server.get("/v1/flows?limit=1000", Some(reviewer)).await;
    let expected: Vec<(String, u64)> = all["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["occurred_on"].as_str().unwrap().to_owned(),
                f["seq"].as_u64().unwrap(),
            )
        })
        .filter(|(_, seq)| *seq <= as_of)
        .collect();
    // Every record but the two reversals is a flow, and two flows are reversed.
    assert_eq!(all["flows"].as_array().unwrap().len() as u64, total - 4);
    assert_eq!(paged, expected);
}
