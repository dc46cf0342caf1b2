//! Integration tests over the real `fundflow` binary: one test binary, shared helpers, one module
//! per area.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analytics;
mod audit;
mod browser;
mod dashboard;
mod helpers;
mod interop;
mod nats;
mod replay;
mod restore;
mod server;
mod tidy;
