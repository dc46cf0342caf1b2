//! Spreadsheet exports: `POST /v1/events` with `Content-Type: text/csv`.
//!
//! The header row names the columns, in any order; unknown columns are refused. One row per
//! allocation: rows with the same `ref` form one event, in the order the refs first appear. The
//! event's own columns (`type`, `occurred_on`, `currency`, `amount`, ...) are read from the
//! event's first row; later rows may leave them empty or repeat them exactly. For in-kind
//! donations, a row whose `country`, `region` and `value` are empty adds its item to the
//! allocation above it.

use std::collections::HashMap;

use crate::json::{AllocationObject, EventObject, ItemObject, MoneyObject};
use crate::problem::Problem;

/// Every column a CSV may have.
pub const COLUMNS: [&str; 28] = [
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
];

/// The columns that describe the event rather than one allocation.
const EVENT_COLUMNS: [&str; 20] = [
    "event_id",
    "type",
    "occurred_on",
    "currency",
    "amount",
    "usd_rate",
    "usd_rate_date",
    "usd_rate_source",
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
];

/// One event read from the CSV: its first row (1 = the first data row) and the object, or why
/// its rows could not make one.
pub type CsvEvent = (usize, Result<EventObject, Problem>);

/// Reads a CSV export into events. A malformed file as a whole (no header, unknown column,
/// broken quoting) is one problem; a bad row spoils only its event.
pub fn read_events(body: &[u8], rows_max: usize) -> Result<Vec<CsvEvent>, Problem> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(body);
    let headers = reader
        .headers()
        .map_err(|err| {
            Problem::bad_query("invalid_csv", format!("cannot read the header row: {err}"))
        })?
        .clone();
    for name in &headers {
        if !COLUMNS.contains(&name) {
            return Err(Problem::bad_query(
                "invalid_csv",
                format!(
                    "unknown column {name:?}; the columns are: {}",
                    COLUMNS.join(", ")
                ),
            ));
        }
    }
    if !headers.iter().any(|h| h == "ref") {
        return Err(Problem::bad_query(
            "invalid_csv",
            "the header has no `ref` column: rows are grouped into events by ref",
        ));
    }
    let mut events: Vec<(usize, String, Result<EventObject, Problem>)> = Vec::new();
    let mut by_ref: HashMap<String, usize> = HashMap::new();
    for (index, row) in reader.records().enumerate() {
        let line = index + 1;
        if line > rows_max {
            return Err(Problem::too_large(format!(
                "more than {rows_max} rows in one request; split the file"
            )));
        }
        let row = row.map_err(|err| {
            Problem::bad_query("invalid_csv", format!("row {line} is malformed: {err}"))
        })?;
        let cell = |name: &str| {
            headers
                .iter()
                .position(|h| h == name)
                .and_then(|i| row.get(i))
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let Some(reference) = cell("ref") else {
            events.push((
                line,
                String::new(),
                Err(Problem::bad_request(
                    "missing_field",
                    "ref",
                    format!("row {line}: every row needs the ref of its event"),
                )),
            ));
            continue;
        };
        let slot = *by_ref.entry(reference.clone()).or_insert_with(|| {
            events.push((line, reference.clone(), Ok(event_of(&reference, &cell))));
            events.len() - 1
        });
        let (first_line, _, event) = &mut events[slot];
        let first_line = *first_line;
        if let Ok(object) = event {
            if first_line != line
                && let Some(problem) = conflicting_event_cell(object, &cell, line)
            {
                *event = Err(problem);
                continue;
            }
            if let Err(problem) = add_allocation(object, &cell, line) {
                *event = Err(problem);
            }
        }
    }
    Ok(events
        .into_iter()
        .map(|(line, _, event)| (line, event))
        .collect())
}

fn event_of(reference: &str, cell: &dyn Fn(&str) -> Option<String>) -> EventObject {
    let amount = match (cell("amount"), cell("currency")) {
        (None, None) => None,
        (value, currency) => Some(MoneyObject { value, currency }),
    };
    EventObject {
        kind: cell("type"),
        event_id: cell("event_id"),
        reference: cell("event_id").is_none().then(|| reference.to_owned()),
        partner_id: None,
        occurred_on: cell("occurred_on"),
        amount,
        usd_rate: cell("usd_rate"),
        usd_rate_date: cell("usd_rate_date"),
        usd_rate_source: cell("usd_rate_source"),
        allocations: None,
        pledge_id: cell("pledge_id"),
        donor: cell("donor"),
        sector: cell("sector"),
        description: cell("description"),
        payment_id: cell("payment_id"),
        funding_id: cell("funding_id"),
        source: cell("source"),
        grant_id: cell("grant_id"),
        donation_id: cell("donation_id"),
        valuation_basis: cell("valuation_basis"),
        reverses_event_id: None,
        reverses_ref: cell("reverses_ref"),
        reason: cell("reason"),
    }
}

/// A later row of an event that gives an event column a value other than the first row's.
fn conflicting_event_cell(
    object: &EventObject,
    cell: &dyn Fn(&str) -> Option<String>,
    line: usize,
) -> Option<Problem> {
    EVENT_COLUMNS.iter().find_map(|name| {
        let later = cell(name)?;
        let earlier = event_cell(object, name);
        (earlier.as_deref() != Some(later.as_str())).then(|| {
            Problem::bad_request(
                "inconsistent_rows",
                name,
                format!(
                    "row {line} gives {later:?} where the event's first row gives {:?}; leave it empty or repeat it exactly",
                    earlier.unwrap_or_default()
                ),
            )
        })
    })
}

fn event_cell(o: &EventObject, name: &str) -> Option<String> {
    match name {
        "event_id" => o.event_id.clone(),
        "type" => o.kind.clone(),
        "occurred_on" => o.occurred_on.clone(),
        "currency" => o.amount.as_ref().and_then(|m| m.currency.clone()),
        "amount" => o.amount.as_ref().and_then(|m| m.value.clone()),
        "usd_rate" => o.usd_rate.clone(),
        "usd_rate_date" => o.usd_rate_date.clone(),
        "usd_rate_source" => o.usd_rate_source.clone(),
        "pledge_id" => o.pledge_id.clone(),
        "donor" => o.donor.clone(),
        "sector" => o.sector.clone(),
        "description" => o.description.clone(),
        "payment_id" => o.payment_id.clone(),
        "funding_id" => o.funding_id.clone(),
        "source" => o.source.clone(),
        "grant_id" => o.grant_id.clone(),
        "donation_id" => o.donation_id.clone(),
        "valuation_basis" => o.valuation_basis.clone(),
        "reverses_ref" => o.reverses_ref.clone(),
        "reason" => o.reason.clone(),
        _ => None,
    }
}

fn add_allocation(
    object: &mut EventObject,
    cell: &dyn Fn(&str) -> Option<String>,
    line: usize,
) -> Result<(), Problem> {
    let item = match (cell("item"), cell("unit"), cell("quantity")) {
        (None, None, None) => None,
        (item, unit, quantity) => Some(ItemObject {
            item,
            unit,
            quantity,
        }),
    };
    let (country, region, value) = (cell("country"), cell("region"), cell("value"));
    if country.is_none() && region.is_none() && value.is_none() {
        let Some(item) = item else {
            // A reversal has no allocations: its row gives none.
            return Ok(());
        };
        let allocation = object
            .allocations
            .as_mut()
            .and_then(|a| a.last_mut())
            .ok_or_else(|| {
                Problem::bad_request(
                    "missing_field",
                    "country",
                    format!("row {line} adds an item but there is no allocation above it"),
                )
            })?;
        allocation.items.get_or_insert_with(Vec::new).push(item);
        return Ok(());
    }
    object
        .allocations
        .get_or_insert_with(Vec::new)
        .push(AllocationObject {
            country,
            region,
            organisation: cell("organisation"),
            value,
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
        let masks = masks.as_ref().unwrap();
        let allocations = masks.allocations.as_ref().unwrap();
        assert_eq!(allocations.len(), 2);
        assert_eq!(allocations[0].items.as_ref().unwrap().len(), 2);
        assert_eq!(allocations[1].region.as_deref(), Some("014"));
        assert_eq!(events[1].0, 4);
    }

    #[test]
    fn a_later_row_that_contradicts_the_first_spoils_only_its_event() {
        let csv = "ref,type,occurred_on,currency,amount,country,value\n\
            a,parallel_funding_mobilized,2020-12-01,USD,10.00,TZA,5.00\n\
            a,,2020-12-02,,,RWA,5.00\n\
            b,parallel_funding_mobilized,2020-12-01,USD,1.00,TZA,1.00\n";
        let events = read_events(csv.as_bytes(), 100).unwrap();
        let problem = events[0].1.as_ref().unwrap_err();
        assert_eq!(problem.field.as_deref(), Some("occurred_on"));
        assert!(problem.detail.contains("row 2"), "{}", problem.detail);
        assert!(events[1].1.is_ok());
    }

    #[test]
    fn unknown_columns_and_too_many_rows_are_refused() {
        let problem = read_events(b"ref,amout\nx,1\n", 100).unwrap_err();
        assert!(problem.detail.contains("amout"));
        let problem = read_events(b"ref\na\nb\nc\n", 2).unwrap_err();
        assert_eq!(problem.status, 413);
    }
}
