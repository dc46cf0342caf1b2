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

pub mod event;
pub mod ledger;
pub mod limits;
pub mod model;
pub mod money;
pub mod node;
pub mod reject;

pub use event::{Event, EventBody};
pub use ledger::{
    Changes, Checkpoint, Digest32, EventStatus, Ledger, Outcome, PledgeLine, PledgeView, Source,
    Total, TotalKey, TotalKind,
};
pub use model::{DirectQuantity, ModelState, PledgeRow};
pub use node::{Node, Scope};
pub use reject::{RejectCode, Rejection};
