//! The front of fundflow: what partners and finance reviewers touch. Partners submit events over
//! HTTP (`POST /v1/events`: JSON, NDJSON or a CSV export) or NATS request-reply; the [`gateway`]
//! validates each with the domain's one gate, appends it to the log exactly once, and can wait
//! for the fold's verdict. Reviewers and auditors read totals, in-kind quantities, pledges,
//! events and checkpoints from the projector's read model through [`query`], and [`exports`]
//! writes the selected flows as IATI 2.03 XML and FTS-style tables. [`access`] decides
//! who may do what from hashed bearer tokens; [`http`] serves it all with metrics and limits.
//!
//! [`app`] assembles these parts into a process (`fundflow serve`, `gateway`, `project`) on a
//! listener its caller bound; nothing here reads the environment or a config file by itself.

pub mod access;
pub mod app;
pub mod csv_import;
pub mod exports;
pub mod gateway;
pub mod http;
pub mod nats_auth;
pub mod nats_service;
pub mod pages;
pub mod problem;
pub mod query;

pub use access::{AccessControl, Principal, Role};
pub use fundflow_api::{Status, SubmitResult, Summary};
pub use gateway::{Gateway, Input, Refusal, SubmitError, Submitted, Verdict};
pub use http::{App, Limits, router};
pub use problem::Problem;
pub use query::{Queries, QueryError};
