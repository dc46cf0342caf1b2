//! The OpenAPI document against the API's one field table (`fundflow_api::schema`): the event
//! object's properties, its `type` values and the nested objects' properties are exactly the
//! fields the intake takes, so the document cannot drift from what the server accepts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use fundflow_api::schema::{
    ALLOCATION_FIELDS, EventType, ITEM_FIELDS, MONEY_FIELDS, input_field_names,
};
use fundflow_server::http::OPENAPI;
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
