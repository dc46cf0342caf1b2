//! Fault tests of the deployment in `deploy/`: real nats-server processes started from its
//! configs and users, real `fundflow` processes, and real faults (kill -9, permission violations,
//! an unwritable or full disk). One test binary, apart from the integration tests, and one test
//! at a time: each starts several processes on a two-core machine, and its report (written past
//! the harness's capture) should read without interleaving.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;
mod disk;
mod permissions;
mod script;
mod support;

/// Held for a test's whole run.
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ONE.lock().await
}
