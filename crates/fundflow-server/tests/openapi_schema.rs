//! The OpenAPI document against the API's one field table (`fundflow_api::schema`): the event
//! object's properties, its `type` values and the nested objects' properties are exactly the
//! fields the intake takes, so the document cannot drift from what the server accepts. The
//! analytics replies (issue 12) against their types: each schema's properties, required and
//! nullable fields are what the type writes, each example reads back as the type and its CSV
//! example is what the CSV writer makes of it, and each route documents exactly the query
//! parameters its handler takes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use fundflow_api::schema::{
    ALLOCATION_FIELDS, EventType, ITEM_FIELDS, MONEY_FIELDS, input_field_names,
};
use fundflow_api::{
    CurrencyAmount, Dimension, FlowAllocation, FlowItem, FlowStatus, FlowsCursor, FlowsReply,
    FundingPart, ItemQuantity, KindSummary, PledgeItem, PledgeLineReply, PledgesCursor,
    PledgesReply, RegionRef, SummaryReply, TotalRow, TotalsReply, flows_csv, parse_group_by,
    pledges_csv, totals_csv,
};
use fundflow_domain::Scope;
use fundflow_server::http::OPENAPI;
use fundflow_server::query::{FlowsParams, PledgesParams, SummaryParams, TotalsFilter};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn properties(document: &Value, schema: &str) -> BTreeSet<String> {
    document["components"]["schemas"][schema]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("the OpenAPI document has no {schema} properties"))
        .keys()
        .cloned()
        .collect()
}

fn names<'a>(fields: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    fields.into_iter().map(str::to_owned).collect()
}

#[test]
fn the_documented_event_object_is_the_one_the_intake_takes() {
    let document: Value = serde_json::from_str(OPENAPI).unwrap();
    assert_eq!(
        properties(&document, "EventObject"),
        names(input_field_names()),
        "EventObject's properties in openapi.json"
    );
    let types: BTreeSet<String> =
        document["components"]["schemas"]["EventObject"]["properties"]["type"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
    assert_eq!(types, names(EventType::ALL.map(EventType::as_str)));
    assert_eq!(
        properties(&document, "Money"),
        names(MONEY_FIELDS.map(|(name, _)| name))
    );
    assert_eq!(
        properties(&document, "Allocation"),
        names(ALLOCATION_FIELDS.map(|(name, _)| name))
    );
    assert_eq!(
        properties(&document, "Item"),
        names(ITEM_FIELDS.map(|(name, _)| name))
    );
}

fn document() -> Value {
    serde_json::from_str(OPENAPI).unwrap()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

/// Checks schema `name` against a value of its type: its properties are the fields `full`
/// writes (every optional field given), its required ones the fields `bare` writes (every
/// optional field absent), and its nullable ones exactly those `bare` writes as `null`.
#[track_caller]
fn assert_documents(document: &Value, name: &str, full: &impl Serialize, bare: &impl Serialize) {
    let schema = &document["components"]["schemas"][name];
    let (full, bare) = (
        serde_json::to_value(full).unwrap(),
        serde_json::to_value(bare).unwrap(),
    );
    assert_eq!(
        properties(document, name),
        keys(&full),
        "{name}'s properties"
    );
    let required: BTreeSet<String> = schema["required"]
        .as_array()
        .unwrap_or_else(|| panic!("{name} lists no required fields"))
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(required, keys(&bare), "{name}'s required fields");
    let nullable: BTreeSet<String> = schema["properties"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, p)| p["nullable"] == true)
        .map(|(k, _)| k.clone())
        .collect();
    let nulls: BTreeSet<String> = bare
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v.is_null())
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(nullable, nulls, "{name}'s nullable fields");
    assert!(
        full.as_object().unwrap().values().all(|v| !v.is_null()),
        "{name}: give every optional field in `full`"
    );
}

fn s(text: &str) -> String {
    text.to_owned()
}

fn total_row() -> TotalRow {
    TotalRow {
        scope: Scope::Global,
        key: s("001"),
        name: s("World"),
        partner: Some(s("ffrc-cafs")),
        year: Some(s("2020")),
        quarter: Some(s("2020-Q3")),
        month: Some(s("2020-09")),
        grant: Some(s("sg-2020-01")),
        sector: Some(s("health")),
        donor: Some(s("acme")),
        kind: s("parallel_funding"),
        currency: s("USD"),
        amount: s("64700.00"),
        usd_equivalent: s("64700.00"),
        unconverted: s("0.00"),
    }
}

fn items() -> ItemQuantity {
    ItemQuantity {
        item: s("mask"),
        unit: s("piece"),
        quantity: s("5000"),
    }
}

fn allocation(usd: Option<&str>) -> FlowAllocation {
    FlowAllocation {
        scope: Scope::Country,
        key: s("NPL"),
        name: s("Nepal"),
        organisation: String::new(),
        value: s("10.00"),
        usd_equivalent: usd.map(s),
        items: vec![items()],
    }
}

fn flow(full: bool) -> FlowItem {
    let given = |text: &str| full.then(|| s(text));
    FlowItem {
        seq: 3,
        event_id: s("6f9619ff-8b86-d011-b42d-00c04fc964ff"),
        partner: s("icshp"),
        event_type: s("in_kind_donation_recorded"),
        own_id: s("don-1"),
        kind: s("in_kind"),
        occurred_on: s("2020-12-15"),
        recorded_at: s("2020-12-16T08:00:00Z"),
        donor: s("ICSHP"),
        grant: String::new(),
        sector: String::new(),
        description: String::new(),
        currency: s("EUR"),
        amount: s("10.00"),
        usd_rate: given("1.2215"),
        usd_rate_date: given("2020-12-15"),
        usd_rate_source: given("ECB"),
        usd_equivalent: given("12.22"),
        status: if full {
            FlowStatus::Reversed
        } else {
            FlowStatus::Applied
        },
        reversed_by: given("6f9619ff-8b86-d011-b42d-00c04fc964fe"),
        reversed_seq: full.then_some(4),
        reason: given("entered twice"),
        allocations: vec![allocation(full.then_some("12.22"))],
    }
}

fn line() -> PledgeLineReply {
    PledgeLineReply {
        scope: Scope::Country,
        key: s("KEN"),
        name: s("Kenya"),
        pledged: s("10.00"),
        paid: s("4.00"),
        outstanding: s("6.00"),
    }
}

fn pledge(full: bool) -> PledgeItem {
    let given = |text: &str| full.then(|| s(text));
    PledgeItem {
        partner: s("cabc"),
        pledge_id: s("sg-2020-01"),
        donor: s("CABC"),
        sector: s("agriculture"),
        occurred_on: s("2020-03-01"),
        currency: s("USD"),
        pledged: s("10.00"),
        paid: s("4.00"),
        outstanding: s("6.00"),
        pledged_usd: given("10.00"),
        paid_usd: given("4.00"),
        outstanding_usd: given("6.00"),
        lines: vec![line()],
        parallel_funding: vec![FundingPart {
            currency: s("USD"),
            amount: s("5.00"),
            usd_equivalent: s("5.00"),
            unconverted: s("0.00"),
        }],
        parallel_funding_usd: s("5.00"),
        leverage: given("0.5000"),
    }
}

fn summary(full: bool) -> SummaryReply {
    SummaryReply {
        as_of_seq: 9,
        from: full.then(|| s("2020-01-01")),
        to: full.then(|| s("2020-12-31")),
        by_kind: vec![KindSummary {
            kind: s("paid"),
            usd_equivalent: s("12.22"),
            unconverted: vec![CurrencyAmount {
                currency: s("KES"),
                amount: s("500.00"),
            }],
            countries: 1,
        }],
        countries_benefiting: 1,
        regions: vec![RegionRef {
            key: s("142"),
            name: s("Asia"),
        }],
        partners: 1,
        grants: 0,
        events_applied: 2,
        events_rejected: 0,
        in_kind_items: vec![items()],
    }
}

#[test]
fn the_documented_analytics_replies_are_the_reply_types() {
    let document = document();
    let bare_row = TotalRow {
        partner: None,
        year: None,
        quarter: None,
        month: None,
        grant: None,
        sector: None,
        donor: None,
        ..total_row()
    };
    assert_documents(&document, "TotalRow", &total_row(), &bare_row);
    // Every dimension `group_by` takes is a row field of the same name.
    let row = serde_json::to_value(total_row()).unwrap();
    for dimension in Dimension::ALL {
        assert_eq!(
            dimension.value_of(&total_row()),
            row[dimension.as_str()].as_str(),
            "{}",
            dimension.as_str()
        );
    }
    let totals = |digest: Option<&str>| TotalsReply {
        as_of_seq: 1,
        log_digest: "0".repeat(64),
        model_digest: digest.map(s),
        rows: vec![total_row()],
    };
    assert_documents(
        &document,
        "TotalsReply",
        &totals(Some(&"1".repeat(64))),
        &totals(None),
    );

    let flows = |cursor: Option<&str>| FlowsReply {
        as_of_seq: 1,
        flows: vec![flow(true)],
        next_cursor: cursor.map(s),
    };
    assert_documents(&document, "FlowsReply", &flows(Some("01")), &flows(None));
    assert_documents(&document, "FlowItem", &flow(true), &flow(false));
    assert_documents(
        &document,
        "FlowAllocation",
        &allocation(Some("1.00")),
        &allocation(None),
    );
    assert_documents(&document, "ItemQuantity", &items(), &items());
    let statuses: Vec<Value> = [FlowStatus::Applied, FlowStatus::Reversed]
        .iter()
        .map(|status| serde_json::to_value(status).unwrap())
        .collect();
    assert_eq!(
        document["components"]["schemas"]["FlowStatus"]["enum"],
        Value::Array(statuses)
    );

    let pledges = |cursor: Option<&str>| PledgesReply {
        as_of_seq: 1,
        pledges: vec![pledge(true)],
        next_cursor: cursor.map(s),
    };
    assert_documents(
        &document,
        "PledgesReply",
        &pledges(Some("01")),
        &pledges(None),
    );
    assert_documents(&document, "PledgeItem", &pledge(true), &pledge(false));
    let part = &pledge(true).parallel_funding[0];
    assert_documents(&document, "FundingPart", part, part);
    assert_documents(&document, "PledgeLine", &line(), &line());

    assert_documents(&document, "SummaryReply", &summary(true), &summary(false));
    let kind = &summary(true).by_kind[0];
    assert_documents(&document, "KindSummary", kind, kind);
    assert_documents(
        &document,
        "CurrencyAmount",
        &kind.unconverted[0],
        &kind.unconverted[0],
    );
    let region = &summary(true).regions[0];
    assert_documents(&document, "RegionRef", region, region);
}

/// `value`, read as a `T` and written back: the same JSON, so no field is missing, extra or of
/// another shape.
#[track_caller]
fn reads_back<T: DeserializeOwned + Serialize>(value: &Value) -> T {
    let read: T = serde_json::from_value(value.clone()).unwrap();
    assert_eq!(&serde_json::to_value(&read).unwrap(), value);
    read
}

fn reply_example<'a>(document: &'a Value, path: &str, media: &str) -> &'a Value {
    &document["paths"][path]["get"]["responses"]["200"]["content"][media]
}

#[test]
fn the_analytics_examples_are_replies_the_server_writes() {
    let document = document();

    let json = reply_example(&document, "/v1/totals", "application/json");
    let csv = reply_example(&document, "/v1/totals", "text/csv");
    for (name, group_by) in [("plain", None), ("grouped", Some("partner,year"))] {
        let reply: TotalsReply = reads_back(&json["examples"][name]["value"]);
        let dimensions = group_by.map_or_else(Vec::new, |g| parse_group_by(g).unwrap());
        let table = String::from_utf8(totals_csv(&reply.rows, &dimensions).unwrap()).unwrap();
        assert_eq!(
            table,
            csv["examples"][name]["value"].as_str().unwrap(),
            "{name}"
        );
        for row in &reply.rows {
            for dimension in Dimension::ALL {
                assert_eq!(
                    dimension.value_of(row).is_some(),
                    dimensions.contains(&dimension),
                    "{name}: {}",
                    dimension.as_str()
                );
            }
        }
    }
    reads_back::<TotalRow>(&document["components"]["schemas"]["TotalRow"]["example"]);

    let flows: FlowsReply =
        reads_back(&reply_example(&document, "/v1/flows", "application/json")["example"]);
    let table = String::from_utf8(flows_csv(&flows.flows).unwrap()).unwrap();
    assert_eq!(
        table,
        reply_example(&document, "/v1/flows", "text/csv")["example"]
            .as_str()
            .unwrap()
    );
    let cursor = FlowsCursor::decode(flows.next_cursor.as_deref().unwrap()).unwrap();
    let last = flows.flows.last().unwrap();
    assert_eq!(
        (cursor.as_of_seq, cursor.occurred_on.to_string(), cursor.seq),
        (flows.as_of_seq, last.occurred_on.clone(), last.seq)
    );

    let pledges: PledgesReply =
        reads_back(&reply_example(&document, "/v1/pledges", "application/json")["example"]);
    let table = String::from_utf8(pledges_csv(&pledges.pledges).unwrap()).unwrap();
    assert_eq!(
        table,
        reply_example(&document, "/v1/pledges", "text/csv")["example"]
            .as_str()
            .unwrap()
    );
    let cursor = PledgesCursor::decode(pledges.next_cursor.as_deref().unwrap()).unwrap();
    let last = pledges.pledges.last().unwrap();
    assert_eq!(
        (cursor.as_of_seq, cursor.partner, cursor.pledge_id),
        (
            pledges.as_of_seq,
            last.partner.clone(),
            last.pledge_id.clone()
        )
    );

    reads_back::<SummaryReply>(
        &reply_example(&document, "/v1/summary", "application/json")["example"],
    );
}

/// The names of the query parameters `T` takes: every documented one must be accepted, and
/// serde's refusal of an unknown one lists them all.
fn accepted<T: DeserializeOwned>() -> BTreeSet<String> {
    let err = serde_json::from_value::<T>(serde_json::json!({"not a parameter": ""}))
        .err()
        .expect("an unknown parameter is refused");
    let message = err.to_string();
    let (_, expected) = message
        .split_once("expected ")
        .unwrap_or_else(|| panic!("{message}"));
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn documented_parameters(document: &Value, path: &str) -> BTreeSet<String> {
    document["paths"][path]["get"]["parameters"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| match p["$ref"].as_str() {
            Some(at) => {
                let name = at.rsplit('/').next().unwrap();
                &document["components"]["parameters"][name]
            }
            None => p,
        })
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_analytics_routes_document_exactly_the_parameters_they_take() {
    let document = document();
    for (path, taken) in [
        ("/v1/totals", accepted::<TotalsFilter>()),
        ("/v1/flows", accepted::<FlowsParams>()),
        ("/v1/pledges", accepted::<PledgesParams>()),
        ("/v1/summary", accepted::<SummaryParams>()),
    ] {
        assert!(!taken.is_empty(), "{path}");
        assert_eq!(documented_parameters(&document, path), taken, "{path}");
    }
}

#[test]
fn the_documented_fts_rows_are_the_rows_the_exports_write() {
    let document = document();
    let flows = [FlowItem {
        status: FlowStatus::Applied,
        ..flow(true)
    }];
    let rows = fundflow_interop::fts::rows(&flows).unwrap();
    assert_eq!(rows.len(), 1);
    assert_documents(&document, "FtsRow", &rows[0], &rows[0]);
    let reply = fundflow_interop::fts::FtsReply {
        as_of_seq: 1,
        flows: rows,
    };
    assert_documents(&document, "FtsReply", &reply, &reply);
    // The CSV's header is the order the schema lists the (all required) fields in.
    let csv = String::from_utf8(fundflow_interop::fts::csv(&reply.flows).unwrap()).unwrap();
    let documented: Vec<&str> = document["components"]["schemas"]["FtsRow"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(csv.lines().next().unwrap(), documented.join(","));
    assert_eq!(documented, fundflow_interop::fts::COLUMNS);
}
