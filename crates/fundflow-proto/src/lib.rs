//! fundflow's wire format: the prost types generated from `proto/fundflow/v1/events.proto`, and
//! the length-delimited file format that `gen-log`, `replay-file` and exports use.
//!
//! These types are what crosses process and language boundaries. They carry no rules: the domain
//! crate converts them, in one place, into validated domain events. Nothing here panics on input.

pub mod framing;

/// Version 1 of the wire format.
#[allow(missing_docs, clippy::all, unused_qualifications)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/fundflow.v1.rs"));
}

pub use framing::{FramingError, RecordReader, write_record};
pub use prost::Message;

/// The `schema_version` this build writes and reads natively.
pub const SCHEMA_VERSION: u32 = 1;
