//! `serve`, `gateway` and `project --config`: the arguments of the HTTP front, and the glue that
//! binds the listener and hands everything to the library's [`fundflow_server::app`], which
//! assembles the process and stops it in order on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use fundflow_projector::ProjectorConfig;
use fundflow_server::app::{self, AppConfig, FoldOptions, Mode, Running};
use fundflow_server::{AccessControl, Limits};

use crate::LogArgs;
use crate::log_commands::shutdown_signal;

/// Options of the HTTP front.
#[derive(Args, Clone, Debug)]
pub struct HttpArgs {
    /// Where to listen for HTTP (port 0: any free port, printed once bound).
    #[arg(long, env = "FUNDFLOW_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The access config (TOML): partners, reviewers and auditors with their token hashes.
    #[arg(long, env = "FUNDFLOW_CONFIG")]
    pub config: Option<PathBuf>,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = Limits::default().body_bytes_max)]
    pub body_bytes_max: usize,
    /// Most events in one request (NDJSON lines or CSV rows).
    #[arg(long, default_value_t = Limits::default().lines_max)]
    pub lines_max: usize,
    /// Longest a request may take, in seconds.
    #[arg(long, default_value_t = Limits::default().request_timeout.as_secs())]
    pub request_timeout_secs: u64,
    /// Longest `?wait=true` waits for the fold, in seconds.
    #[arg(long, default_value_t = 5)]
    pub wait_secs: u64,
    /// The reporting organisation of `GET /v1/exports/iati.xml` (none: no IATI export).
    #[command(flatten)]
    pub publisher: crate::args::PublisherArgs,
}

/// How the projector starts and snapshots its fold (`serve`, `project`).
#[derive(Debug, Clone, clap::Args)]
pub struct FoldArgs {
    /// Refold the log from sequence 1 at start and check the result against the read model
    /// before serving, whatever snapshot of the fold there is.
    #[arg(long)]
    pub verify: bool,
    /// Write the fold's snapshot (beside the read model, DATA_DIR/model.fold) at most this
    /// often while folding, in seconds, and when stopping, so that a start folds only what
    /// follows it; 0: never (a start then folds on from whatever snapshot there is, or from
    /// sequence 1).
    #[arg(long, env = "FUNDFLOW_SNAPSHOT_EVERY_SECS", default_value_t = 30)]
    pub snapshot_every_secs: u64,
}

impl Default for FoldArgs {
    fn default() -> Self {
        FoldArgs {
            verify: false,
            snapshot_every_secs: 30,
        }
    }
}

impl FoldArgs {
    /// The server's options.
    pub fn options(&self) -> FoldOptions {
        FoldOptions {
            verify: self.verify,
            snapshot_every: (self.snapshot_every_secs > 0)
                .then(|| Duration::from_secs(self.snapshot_every_secs)),
        }
    }

    /// The projector's tuning.
    pub fn projector(&self) -> ProjectorConfig {
        let options = self.options();
        ProjectorConfig {
            verify: options.verify,
            snapshot_every: options.snapshot_every,
            ..ProjectorConfig::default()
        }
    }
}

impl HttpArgs {
    fn limits(&self) -> Limits {
        Limits {
            body_bytes_max: self.body_bytes_max,
            lines_max: self.lines_max,
            request_timeout: Duration::from_secs(self.request_timeout_secs),
        }
    }
}

/// Loads the access config, or explains how to write one.
pub fn load_access(config: Option<&PathBuf>) -> anyhow::Result<AccessControl> {
    let Some(path) = config else {
        anyhow::bail!(
            "no access config: pass --config FILE listing partners, reviewers and auditors (fundflow token new prints the lines to paste)"
        );
    };
    let access = AccessControl::load(path)?;
    if access.is_empty() {
        tracing::warn!(config = %path.display(), "the access config lists nobody: every request will be refused");
    }
    Ok(access)
}

/// Binds `http.listen` and starts what `mode` runs on it. Prints where it listens: tests and
/// scripts that pass port 0 read the address from that line.
pub async fn start(
    mode: Mode,
    log_args: &LogArgs,
    http: &HttpArgs,
    fold: &FoldArgs,
    access: AccessControl,
) -> anyhow::Result<Running> {
    let listener = tokio::net::TcpListener::bind(http.listen)
        .await
        .with_context(|| format!("cannot listen on {} (in use? pass --listen)", http.listen))?;
    let config = AppConfig {
        mode,
        log: log_args.config(),
        access,
        limits: http.limits(),
        wait: Duration::from_secs(http.wait_secs),
        iati: http.publisher.publisher()?,
        fold: fold.options(),
    };
    let running = app::start(config, listener).await?;
    eprintln!("fundflow: listening on http://{}", running.addr);
    Ok(running)
}

/// `fundflow serve`, `gateway`, `project --config`: runs until SIGTERM or Ctrl-C.
pub async fn run(
    mode: Mode,
    log_args: &LogArgs,
    http: &HttpArgs,
    fold: &FoldArgs,
) -> anyhow::Result<()> {
    let access = load_access(http.config.as_ref())?;
    let running = start(mode, log_args, http, fold, access).await?;
    Ok(running.run_until(shutdown_signal()).await?)
}
