//! `fundflow`: one binary for every command. This file parses the arguments, sets up logging,
//! runs the command on one runtime and reports an error in one sentence; the arguments are in
//! `args.rs`, the dispatch in `commands.rs`, and each command in its own module.

mod analytics;
mod args;
mod audit;
mod client;
mod commands;
mod interop;
mod log_commands;
mod nats_commands;
mod quickstart;
mod replay;
mod serve;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command, LogFormat};
pub(crate) use args::{Format, LogArgs};

/// The fold allocates small strings for every decoded event; mimalloc makes that cheaper than
/// the system allocator by about a fifth (see README.md, "Benchmarks").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Servers say what they do at info; one-shot commands only warn.
    let default_level = match cli.command {
        Command::Serve { .. } | Command::Gateway { .. } | Command::Project { .. } => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => subscriber.init(),
        LogFormat::Json => subscriber.json().init(),
    }
    let result = runtime().map(|rt| (rt.block_on(commands::run(cli.command)), rt));
    match result {
        Ok((Ok(()), _runtime)) => ExitCode::SUCCESS,
        Ok((Err(err), runtime)) => {
            eprintln!("fundflow: {err:#}");
            // Exit now, without running destructors: a read model whose disk failed can block in
            // its own drop (sled flushes there), and so can the runtime's, waiting for it; what
            // is on disk is already a fold up to the last flushed checkpoint.
            std::mem::forget(runtime);
            std::process::exit(1)
        }
        Err(err) => {
            eprintln!("fundflow: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| anyhow::anyhow!("cannot start the async runtime: {err}"))
}
