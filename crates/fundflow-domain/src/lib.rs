//! The ledger's rules, and nothing else: what makes an event valid, and the pure, deterministic
//! fold ([`Ledger::apply`]) that turns a log of encoded envelopes into exact totals per country
//! and UN M49 area, in each currency and in USD, with a log digest and a model digest that make
//! any replay checkable.
//!
//! This crate does no I/O, spawns nothing and never reads the clock: time arrives inside the
//! events. It never panics on input: every record gets an [`Outcome`], and a rejection is data
//! with a stable [`RejectCode`]. Money is `rust_decimal::Decimal` with checked arithmetic
//! throughout. The gateway calls [`Event::from_envelope`] for early errors, so there is one
//! definition of "valid".
//!
//! The API: the fold, its values and the model at the root; by role, [`digest`] (the digest
//! chains and outcome bytes others must compute as the fold does), [`wire`] (checks on envelope
//! fields, "same content"), [`limits`] (every named maximum), [`money`] (parsing and
//! formatting amounts) and [`snapshot`] (the fold's whole state as bytes, so that a projector
//! restarts without refolding the log). The report shapes and everything else that speaks JSON live in
//! `fundflow-api`. Inside, the graph is one-way: `values` ← `ledger` → `model`.

mod event;
mod fingerprint;
mod interner;
mod ledger;
mod model;
mod node;
mod reject;
mod values;

pub mod digest;
pub mod limits;
pub mod money;
pub mod snapshot;

/// Checks on the wire envelope's fields that the gateway, the CLI and the tools share with the
/// fold, so that each is defined once.
pub mod wire {
    pub use crate::event::{is_valid_partner_id, parse_date, parse_event_id};
    pub use crate::fingerprint::{content_fingerprint, same_content};
}

pub use event::{Allocation, Event, EventBody, Flow, Item};
pub use ledger::{FoldMemory, Ledger, PledgeView, Source, Touched};
pub use model::{
    DirectQuantity, ModelState, PledgeRow, StateCell, StateQuantityCell, minor_unit, sorted_totals,
};
pub use node::{Node, Scope};
pub use reject::{RejectCode, Rejection};
pub use values::{
    CellBlock, CellKey, CellLevel, CellRef, Checkpoint, DayOutcomes, Digest32, FlowDims, Month,
    Outcome, PledgeLine, QuantityCellKey, QuantityCellRef, QuantityKey, RejectedEvent, SummaryPart,
    Total, TotalKey, TotalKind, coarsen, currency_code,
};
