//! `fundflow`: one binary for every command. This file parses arguments and reports errors in one
//! sentence; each command lives in its own module.

mod replay;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// The fold allocates small strings for every decoded event; mimalloc makes that several times
/// cheaper than the system allocator (see README.md, "Benchmarks").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An event-sourced ledger for donations and resource mobilization.
#[derive(Parser)]
#[command(name = "fundflow", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fold a file of length-delimited envelopes and print its totals and digests.
    ReplayFile {
        /// The file: envelopes as prost length-delimited records, seq 1, 2, 3, ... in file order.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
    /// Write a seeded, realistic synthetic log for tests and benchmarks.
    GenLog {
        /// How many records.
        #[arg(long, default_value_t = 10_000)]
        events: u64,
        /// The seed: the same seed gives the same file, byte for byte.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where to write it.
        file: PathBuf,
    },
}

/// How a report is printed.
#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// The JSON document every fundflow command that reports totals prints.
    Json,
    /// An aligned table for people.
    Table,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::ReplayFile { file, format } => replay::replay_file(&file, format),
        Command::GenLog { events, seed, file } => replay::gen_log(&file, events, seed),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fundflow: {err:#}");
            ExitCode::FAILURE
        }
    }
}
