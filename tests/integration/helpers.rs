//! Running the `fundflow` binary and writing envelope files for it.

use std::path::Path;
use std::process::{Command, Output};

use fundflow_proto::{Message, v1};

/// Runs `fundflow` with `args` and returns what it did.
pub fn fundflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fundflow"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the fundflow binary runs")
}

/// Runs `fundflow` and returns its standard output, failing the test on a non-zero exit.
pub fn fundflow_ok(args: &[&str]) -> String {
    let output = fundflow(args);
    assert!(
        output.status.success(),
        "fundflow {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
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
