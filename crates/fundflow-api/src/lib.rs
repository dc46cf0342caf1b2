//! The schema of fundflow's HTTP and NATS APIs, and nothing of their transport: the JSON event
//! object (one serde type for both directions) with its translation to and from the protobuf
//! envelope the log stores, the field tables that the JSON intake and the CSV import share, the
//! report rows every command prints, and the replies that the server writes and the CLI reads.
//! Errors are typed ([`InvalidEvent`], [`EventError`]); choosing an HTTP status is the front's
//! job. **Architecture invariant:** this crate knows no axum, no sled and no NATS: a client
//! links it to read replies without linking a server.

mod error;
mod event;
mod intake;
mod reply;
pub mod report;
pub mod schema;

pub use error::{EventError, InvalidEvent};
pub use event::{
    AllocationObject, EventBody, EventObject, ItemObject, MoneyObject, REF_LEN_MAX,
    derived_event_id,
};
pub use intake::{Json, ReceivedEvent, parse_event};
pub use reply::{
    CheckpointReply, EventOutcome, EventReply, InKindReply, PledgeLineReply, PledgeReply,
    ProblemBody, Status, SubmitReply, SubmitResult, Summary, TotalsReply,
};
pub use report::{ItemRow, RejectedRow, Report, TotalRow, item_rows, total_rows};
