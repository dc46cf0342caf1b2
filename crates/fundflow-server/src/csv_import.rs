//! Spreadsheet exports: `POST /v1/events` with `Content-Type: text/csv`.
//!
//! The header row names the columns, in any order; unknown columns are refused. One row per
//! allocation: rows with the same `ref` form one event, in the order the refs first appear. The
//! event's own columns (`type`, `occurred_on`, `currency`, `amount`, ...) are read from the
//! event's first row; later rows may leave them empty or repeat them exactly. For in-kind
//! donations, a row whose `country`, `region` and `value` are empty adds its item to the
//! allocation above it.

use std::collections::HashMap;
use std::sync::LazyLock;

use fundflow_api::schema::{
    ALLOCATION_FIELDS, FLOW_FIELDS, ITEM_FIELDS, Shape, TYPE_FIELD, body_fields,
};
use fundflow_api::{InvalidEvent, Json, ReceivedEvent};

/// The columns of an amount, which JSON nests as `amount.currency` and `amount.value`.
const CURRENCY_COLUMN: &str = "currency";
/// See [`CURRENCY_COLUMN`].
const AMOUNT_COLUMN: &str = "amount";
/// The column that groups rows into events.
const REF_COLUMN: &str = "ref";
/// A reversal names the event it undoes by `reverses_ref`; a spreadsheet has no event ids of
/// its own rows to give.
const NOT_A_COLUMN: &str = "reverses_event_id";

/// The columns that describe the event rather than one allocation, in the order of the API's
/// field tables.
static EVENT_COLUMNS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let mut columns = vec![
        "event_id",
        TYPE_FIELD,
        "occurred_on",
        CURRENCY_COLUMN,
        AMOUNT_COLUMN,
    ];
    // The flow's text fields, then the types' own fields.
    columns.extend(
        body_fields()
            .into_iter()
            .filter(|(name, shape)| *shape == Shape::Text && *name != NOT_A_COLUMN)
            .map(|(name, _)| name),
    );
    columns
});

/// The columns of one allocation and its item.
fn row_columns() -> impl Iterator<Item = &'static str> {
    ALLOCATION_FIELDS
        .iter()
        .chain(ITEM_FIELDS.iter())
        .filter(|(_, shape)| *shape == Shape::Text)
        .map(|(name, _)| *name)
}

/// Every column a CSV may have: the ref, the event's columns (its flow first), then the
/// allocation's and the item's, then the types' own fields.
pub static COLUMNS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let flow_end = EVENT_COLUMNS
        .iter()
        .position(|name| !is_flow_column(name))
        .unwrap_or(EVENT_COLUMNS.len());
    let mut columns = vec![REF_COLUMN];
    columns.extend(&EVENT_COLUMNS[..flow_end]);
    columns.extend(row_columns());
    columns.extend(&EVENT_COLUMNS[flow_end..]);
    columns
});

/// Whether an event column comes before the allocation columns: the head and the flow.
fn is_flow_column(name: &str) -> bool {
    [
        "event_id",
        TYPE_FIELD,
        "occurred_on",
        CURRENCY_COLUMN,
        AMOUNT_COLUMN,
    ]
    .contains(&name)
        || FLOW_FIELDS.iter().any(|(flow, _)| *flow == name)
}

/// Why a CSV export as a whole was not read; nothing of it was taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    /// No header, an unknown column, no `ref` column, broken quoting.
    #[error("{0}")]
    Invalid(String),
    /// More rows than one request may hold; the client splits the file.
    #[error("more than {rows_max} rows in one request; split the file")]
    TooManyRows {
        /// The limit.
        rows_max: usize,
    },
}

/// One event read from the CSV: its first row (1 = the first data row) and the object, or why
/// its rows could not make one.
pub type CsvEvent = (usize, Result<ReceivedEvent, InvalidEvent>);

/// The rows of one event so far.
struct EventRows {
    /// The event columns of its first row that are not empty.
    cells: HashMap<&'static str, String>,
    /// Its allocations: their cells, and their items' cells.
    allocations: Option<Vec<AllocationRows>>,
}

struct AllocationRows {
    cells: Vec<(&'static str, String)>,
    items: Option<Vec<Vec<(&'static str, String)>>>,
}

/// Reads a CSV export into events. A malformed file as a whole (no header, unknown column,
/// broken quoting) is one error; a bad row spoils only its event.
pub fn read_events(body: &[u8], rows_max: usize) -> Result<Vec<CsvEvent>, CsvError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(body);
    let headers = reader
        .headers()
        .map_err(|err| CsvError::Invalid(format!("cannot read the header row: {err}")))?
        .clone();
    for name in &headers {
        if !COLUMNS.contains(&name) {
            return Err(CsvError::Invalid(format!(
                "unknown column {name:?}; the columns are: {}",
                COLUMNS.join(", ")
            )));
        }
    }
    if !headers.iter().any(|h| h == REF_COLUMN) {
        return Err(CsvError::Invalid(
            "the header has no `ref` column: rows are grouped into events by ref".to_owned(),
        ));
    }
    let mut events: Vec<(usize, String, Result<EventRows, InvalidEvent>)> = Vec::new();
    let mut by_ref: HashMap<String, usize> = HashMap::new();
    for (index, row) in reader.records().enumerate() {
        let line = index + 1;
        if line > rows_max {
            return Err(CsvError::TooManyRows { rows_max });
        }
        let row =
            row.map_err(|err| CsvError::Invalid(format!("row {line} is malformed: {err}")))?;
        let cell = |name: &str| {
            headers
                .iter()
                .position(|h| h == name)
                .and_then(|i| row.get(i))
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let Some(reference) = cell(REF_COLUMN) else {
            events.push((
                line,
                String::new(),
                Err(InvalidEvent::new(
                    "missing_field",
                    REF_COLUMN,
                    format!("row {line}: every row needs the ref of its event"),
                )),
            ));
            continue;
        };
        let slot = *by_ref.entry(reference.clone()).or_insert_with(|| {
            events.push((line, reference.clone(), Ok(event_of(&cell))));
            events.len() - 1
        });
        let (first_line, _, event) = &mut events[slot];
        let first_line = *first_line;
        if let Ok(rows) = event {
            if first_line != line
                && let Some(invalid) = conflicting_event_cell(rows, &cell, line)
            {
                *event = Err(invalid);
                continue;
            }
            if let Err(invalid) = add_allocation(rows, &cell, line) {
                *event = Err(invalid);
            }
        }
    }
    Ok(events
        .into_iter()
        .map(|(line, reference, event)| {
            (
                line,
                event.and_then(|rows| ReceivedEvent::from_tree(rows.into_tree(reference))),
            )
        })
        .collect())
}

fn event_of(cell: &dyn Fn(&str) -> Option<String>) -> EventRows {
    EventRows {
        cells: EVENT_COLUMNS
            .iter()
            .filter_map(|name| Some((*name, cell(name)?)))
            .collect(),
        allocations: None,
    }
}

impl EventRows {
    /// The event object of these rows, as a partner would have written it in JSON.
    fn into_tree(self, reference: String) -> Json {
        let text = |value: &String| Json::String(value.clone());
        let mut members = Vec::new();
        if !self.cells.contains_key("event_id") {
            members.push((REF_COLUMN.to_owned(), Json::String(reference)));
        }
        let mut amount = Vec::new();
        for name in EVENT_COLUMNS.iter() {
            let Some(value) = self.cells.get(name) else {
                continue;
            };
            match *name {
                AMOUNT_COLUMN => amount.push(("value".to_owned(), text(value))),
                CURRENCY_COLUMN => amount.push(("currency".to_owned(), text(value))),
                _ => members.push(((*name).to_owned(), text(value))),
            }
        }
        if !amount.is_empty() {
            members.push((AMOUNT_COLUMN.to_owned(), Json::Object(amount)));
        }
        let owned = |cells: Vec<(&'static str, String)>| {
            cells
                .into_iter()
                .map(|(name, value)| (name.to_owned(), Json::String(value)))
                .collect::<Vec<_>>()
        };
        if let Some(allocations) = self.allocations {
            let allocations = allocations
                .into_iter()
                .map(|allocation| {
                    let mut members = owned(allocation.cells);
                    if let Some(items) = allocation.items {
                        let items = items.into_iter().map(|i| Json::Object(owned(i))).collect();
                        members.push(("items".to_owned(), Json::Array(items)));
                    }
                    Json::Object(members)
                })
                .collect();
            members.push(("allocations".to_owned(), Json::Array(allocations)));
        }
        Json::Object(members)
    }
}

/// A later row of an event that gives an event column a value other than the first row's.
fn conflicting_event_cell(
    rows: &EventRows,
    cell: &dyn Fn(&str) -> Option<String>,
    line: usize,
) -> Option<InvalidEvent> {
    EVENT_COLUMNS.iter().find_map(|name| {
        let later = cell(name)?;
        let earlier = rows.cells.get(name);
        (earlier != Some(&later)).then(|| {
            InvalidEvent::new(
                "inconsistent_rows",
                name,
                format!(
                    "row {line} gives {later:?} where the event's first row gives {:?}; leave it empty or repeat it exactly",
                    earlier.map_or("", String::as_str)
                ),
            )
        })
    })
}

fn cells_of(
    fields: &'static [(&'static str, Shape)],
    cell: &dyn Fn(&str) -> Option<String>,
) -> Vec<(&'static str, String)> {
    fields
        .iter()
        .filter(|(_, shape)| *shape == Shape::Text)
        .filter_map(|(name, _)| Some((*name, cell(name)?)))
        .collect()
}

fn add_allocation(
    rows: &mut EventRows,
    cell: &dyn Fn(&str) -> Option<String>,
    line: usize,
) -> Result<(), InvalidEvent> {
    let item = cells_of(&ITEM_FIELDS, cell);
    let item = (!item.is_empty()).then_some(item);
    let (country, region, value) = (cell("country"), cell("region"), cell("value"));
    if country.is_none() && region.is_none() && value.is_none() {
        let Some(item) = item else {
            // A reversal has no allocations: its row gives none.
            return Ok(());
        };
        let allocation = rows
            .allocations
            .as_mut()
            .and_then(|a| a.last_mut())
            .ok_or_else(|| {
                InvalidEvent::new(
                    "missing_field",
                    "country",
                    format!("row {line} adds an item but there is no allocation above it"),
                )
            })?;
        allocation.items.get_or_insert_with(Vec::new).push(item);
        return Ok(());
    }
    rows.allocations
        .get_or_insert_with(Vec::new)
        .push(AllocationRows {
            cells: cells_of(&ALLOCATION_FIELDS, cell),
            items: item.map(|i| vec![i]),
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_with_one_ref_make_one_event_with_its_allocations_and_items() {
        let csv = "ref,type,occurred_on,currency,amount,country,region,value,item,unit,quantity,donation_id,donor,valuation_basis\n\
            m1,in_kind_donation_recorded,2020-12-15,USD,100.00,NPL,,60.00,mask,piece,400,d1,ICSHP,declared\n\
            m1,,,,,,,,glove,pair,10,,,\n\
            m1,,,,,,014,40.00,mask,piece,200,,,\n\
            p1,pledge_recorded,2020-05-01,USD,10.00,TZA,,10.00,,,,,,\n";
        let events = read_events(csv.as_bytes(), 100).unwrap();
        assert_eq!(events.len(), 2);
        let (line, masks) = &events[0];
        assert_eq!(*line, 1);
        let masks = masks
            .clone()
            .unwrap()
            .into_envelope("icshp", "2020-12-16T08:00:00Z")
            .unwrap();
        let Some(fundflow_proto::v1::envelope::Body::InKindDonationRecorded(body)) = masks.body
        else {
            panic!("not an in-kind donation: {masks:?}");
        };
        let allocations = body.flow.unwrap().allocations;
        assert_eq!(allocations.len(), 2);
        assert_eq!(allocations[0].items.len(), 2);
        assert_eq!(
            allocations[1].recipient,
            Some(fundflow_proto::v1::allocation::Recipient::Region(
                "014".into()
            ))
        );
        assert_eq!(events[1].0, 4);
    }

    #[test]
    fn a_payments_donor_column_is_its_donor_and_may_be_left_empty() {
        let csv = "ref,type,occurred_on,currency,amount,country,value,payment_id,pledge_id,donor\n\
            c1,contribution_paid,2020-06-01,USD,10.00,TZA,10.00,pay-1,pl-1,Government of Japan\n\
            c2,contribution_paid,2020-06-02,USD,5.00,TZA,5.00,pay-2,pl-1,\n";
        let donors: Vec<String> = read_events(csv.as_bytes(), 100)
            .unwrap()
            .into_iter()
            .map(|(line, event)| {
                let envelope = event
                    .unwrap()
                    .into_envelope("icshp", "2020-06-03T08:00:00Z")
                    .unwrap();
                let Some(fundflow_proto::v1::envelope::Body::ContributionPaid(body)) =
                    envelope.body
                else {
                    panic!("row {line} is not a payment: {envelope:?}");
                };
                body.donor
            })
            .collect();
        assert_eq!(donors, ["Government of Japan", ""]);
    }

    #[test]
    fn a_later_row_that_contradicts_the_first_spoils_only_its_event() {
        let csv = "ref,type,occurred_on,currency,amount,country,value\n\
            a,parallel_funding_mobilized,2020-12-01,USD,10.00,TZA,5.00\n\
            a,,2020-12-02,,,RWA,5.00\n\
            b,parallel_funding_mobilized,2020-12-01,USD,1.00,TZA,1.00\n";
        let events = read_events(csv.as_bytes(), 100).unwrap();
        let problem = events[0].1.as_ref().unwrap_err();
        assert_eq!(problem.field, "occurred_on");
        assert!(problem.message.contains("row 2"), "{}", problem.message);
        assert!(events[1].1.is_ok());
    }

    #[test]
    fn unknown_columns_and_too_many_rows_are_refused() {
        let problem = read_events(b"ref,amout\nx,1\n", 100).unwrap_err();
        assert!(problem.to_string().contains("amout"));
        let problem = read_events(b"ref\na\nb\nc\n", 2).unwrap_err();
        assert_eq!(problem, CsvError::TooManyRows { rows_max: 2 });
    }

    #[test]
    fn the_columns_are_the_ones_the_api_has_always_taken() {
        assert_eq!(
            *COLUMNS,
            [
                "ref",
                "event_id",
                "type",
                "occurred_on",
                "currency",
                "amount",
                "usd_rate",
                "usd_rate_date",
                "usd_rate_source",
                "country",
                "region",
                "organisation",
                "value",
                "item",
                "unit",
                "quantity",
                "pledge_id",
                "donor",
                "sector",
                "description",
                "payment_id",
                "funding_id",
                "source",
                "grant_id",
                "donation_id",
                "valuation_basis",
                "reverses_ref",
                "reason",
            ]
        );
    }
}
