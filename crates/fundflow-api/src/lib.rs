//! The schema of fundflow's HTTP and NATS APIs, and nothing of their transport: the JSON event
//! object (one serde type for both directions) with its translation to and from the protobuf
//! envelope the log stores, the field tables that the JSON intake and the CSV import share, the
//! report rows every command prints, the replies that the server writes and the CLI reads, and
//! the analytics (grouped totals, the period summary, the flows list and the pledge book) that
//! the server and the auditor's replay compute by the same code.
//! Errors are typed ([`InvalidEvent`], [`EventError`]); choosing an HTTP status is the front's
//! job. **Architecture invariant:** this crate knows no axum, no sled and no NATS: a client
//! links it to read replies without linking a server.

mod analytics;
mod error;
mod event;
mod intake;
mod reply;
pub mod report;
pub mod schema;

pub use analytics::{
    AnalyticsError, CurrencyAmount, Dimension, FlowAllocation, FlowItem, FlowStatus, FlowsCursor,
    FlowsReply, FundingPart, ItemQuantity, KindSummary, PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX, Period,
    Periods, PledgeItem, PledgesCursor, PledgesReply, QueryParamError, RegionRef, SummaryQuery,
    SummaryReply, SummarySums, TotalsParams, TotalsQuery, flows_csv, grouped_total_rows,
    parse_group_by, parse_limit, pledge_item, pledges_csv, summary, summary_of_parts, totals_csv,
};
pub use error::{EventError, InvalidEvent};
pub use event::{
    AllocationObject, EventBody, EventObject, ItemObject, MoneyObject, REF_LEN_MAX,
    derived_event_id,
};
pub use intake::{Json, ReceivedEvent, parse_event};
pub use reply::{
    CheckpointReply, EventOutcome, EventReply, InKindReply, PledgeLineReply, PledgeReply,
    ProblemBody, RejectionItem, RejectionsReply, Status, SubmitReply, SubmitResult, Summary,
    TotalsReply, rejections_csv,
};
pub use report::{ItemRow, RejectedRow, Report, TotalRow, item_rows, total_rows};
