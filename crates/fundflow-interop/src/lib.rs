//! The formats development cooperation exchanges its data in, mapped to and from fundflow's
//! flows: IATI 2.03 activity files (`iati`), the flat flow tables of OCHA's Financial Tracking
//! Service out (`fts`), and FTS API flows in, as fundflow events (`fts_import`). It works on the
//! API's reply types (`fundflow_api::FlowItem`) and event objects only: no HTTP, no store, no
//! clock (the caller says what "today" is), so the server, the CLI and the tests all produce
//! the same bytes from the same flows.

pub mod fts;
pub mod fts_import;
pub mod iati;
