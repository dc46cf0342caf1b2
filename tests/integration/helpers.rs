//! Running the `fundflow` binary and writing envelope files for it.

use std::path::Path;
use std::process::{Command, Output};

use fundflow_proto::{Message, v1};

/// `fundflow` with a clean environment: no log level and no NATS URL from the caller's, so
/// that no test reaches the machine's shared NATS server by accident.
pub fn command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fundflow"));
    command
        .env_remove("RUST_LOG")
        .env_remove("FUNDFLOW_NATS_URL");
    command
}

/// Runs `fundflow` with `args` and returns what it did.
pub fn fundflow(args: &[&str]) -> Output {
    command()
        .args(args)
        .output()
        .expect("the fundflow binary runs")
}

/// Runs `fundflow` and returns its standard output, failing the test on a non-zero exit.
pub fn fundflow_ok(args: &[&str]) -> String {
    succeeded(args, fundflow(args))
}

/// Runs `fundflow` against the NATS server at `url` and returns its standard output, failing
/// the test on a non-zero exit.
pub fn fundflow_on(url: &str, args: &[&str]) -> String {
    let output = command()
        .args(args)
        .env("FUNDFLOW_NATS_URL", url)
        .output()
        .expect("the fundflow binary runs");
    succeeded(args, output)
}

fn succeeded(args: &[&str], output: Output) -> String {
    assert!(
        output.status.success(),
        "fundflow {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// A path as the `&str` an argument list takes.
pub fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Writes records (encoded envelopes or raw bytes) as a length-delimited file.
pub fn write_log(path: &Path, records: &[Vec<u8>]) {
    let mut bytes = Vec::new();
    for record in records {
        fundflow_proto::write_record(&mut bytes, record).expect("write to a Vec");
    }
    std::fs::write(path, bytes).expect("write the log file");
}

/// An encoded envelope.
pub fn encoded(envelope: v1::Envelope) -> Vec<u8> {
    envelope.encode_to_vec()
}
