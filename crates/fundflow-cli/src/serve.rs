//! `serve`, `gateway` and `project --listen`: one process assembles the log, the projector, the
//! gateway, the queries and the HTTP and NATS fronts it runs, and shuts them down in order on
//! SIGTERM or Ctrl-C (stop taking requests, let the projector finish the batch in hand and
//! flush, then exit).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use fundflow_log::EventLog;
use fundflow_projector::{FoldNotice, Projector, ProjectorConfig, RunUntil};
use fundflow_server::{AccessControl, App, Gateway, Limits, Queries, nats_service};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

use crate::LogArgs;
use crate::log_commands::{open_log, shutdown_signal};

/// What the process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Gateway, projector and queries together.
    Serve,
    /// Submissions only (stateless, on NATS).
    Gateway,
    /// Projector and queries.
    Project,
}

/// Options of the HTTP front.
#[derive(Args, Clone, Debug)]
pub struct HttpArgs {
    /// Where to listen for HTTP.
    #[arg(long, env = "FUNDFLOW_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The access config (TOML): partners, reviewers and auditors with their token hashes.
    #[arg(long, env = "FUNDFLOW_CONFIG")]
    pub config: Option<PathBuf>,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub body_bytes_max: usize,
    /// Most events in one request (NDJSON lines or CSV rows).
    #[arg(long, default_value_t = 10_000)]
    pub lines_max: usize,
    /// Longest a request may take, in seconds.
    #[arg(long, default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Longest `?wait=true` waits for the fold, in seconds.
    #[arg(long, default_value_t = 5)]
    pub wait_secs: u64,
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

/// A running server: its address, and how to stop it.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Running {
    /// Stops taking requests, lets the projector finish its batch, and waits for everything,
    /// at most [`STOP_GRACE`]: then what is still running is aborted (a client that never
    /// finishes its request must not keep the process alive).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let mut first_error = None;
        let drained = tokio::time::timeout(STOP_GRACE, async {
            while let Some(ended) = self.tasks.join_next().await {
                if let Err(err) = flatten(ended) {
                    if first_error.is_some() {
                        tracing::warn!(
                            error = format!("{err:#}"),
                            "another task failed while stopping"
                        );
                    } else {
                        first_error = Some(err);
                    }
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(still_running = self.tasks.len(), grace = ?STOP_GRACE, "stopping: aborting what did not finish in time");
            self.tasks.abort_all();
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Runs until `shutdown` completes, then stops in order; or, if a task ends first (the
    /// projector cannot write its model, the HTTP server fails), stops the others and returns
    /// that task's error, so that the process exits non-zero rather than serve a model that no
    /// longer moves.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let ended = tokio::select! {
            () = shutdown => None,
            ended = self.tasks.join_next() => ended,
        };
        let Some(ended) = ended else {
            tracing::info!("stopping: finishing the batch in hand");
            return self.stop().await;
        };
        let cause = match flatten(ended) {
            Err(err) => err,
            Ok(()) => anyhow::anyhow!("a server task ended on its own"),
        };
        tracing::error!(
            error = format!("{cause:#}"),
            "stopping: a server task failed"
        );
        // Briefly: what failed may be the store the others are blocked on.
        match tokio::time::timeout(FAILED_STOP_GRACE, self.stop()).await {
            Ok(Err(also)) => tracing::warn!(
                error = format!("{also:#}"),
                "another task failed while stopping"
            ),
            Ok(Ok(())) => {}
            Err(_) => {
                tracing::warn!(grace = ?FAILED_STOP_GRACE, "stopping: the others did not stop in time")
            }
        }
        Err(cause)
    }
}

/// How long a stop waits for requests and the batch in hand (the systemd units allow 60 s).
const STOP_GRACE: Duration = Duration::from_secs(45);

/// How long the others get after a task failed.
const FAILED_STOP_GRACE: Duration = Duration::from_secs(5);

fn flatten(ended: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    ended.context("a server task panicked")?
}

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn metrics_handle() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(&[
            0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
        .context("bad histogram buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Ok(HANDLE.get_or_init(|| handle).clone())
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

/// Starts what `mode` runs and returns once it is listening.
pub async fn start(
    mode: Mode,
    log_args: &LogArgs,
    http: &HttpArgs,
    access: AccessControl,
) -> anyhow::Result<Running> {
    if mode == Mode::Gateway && log_args.embedded {
        anyhow::bail!(
            "a gateway has no projector of its own and needs the shared JetStream log: use --nats-url, or fundflow serve --embedded"
        );
    }
    anyhow::ensure!(
        http.wait_secs < http.request_timeout_secs,
        "--wait-secs ({}) must be shorter than --request-timeout-secs ({}), or a waiting request times out",
        http.wait_secs,
        http.request_timeout_secs
    );
    let metrics = metrics_handle()?;
    let mut log_args = log_args.clone();
    if log_args.nats_name.is_none() {
        let command = match mode {
            Mode::Serve => "serve",
            Mode::Gateway => "gateway",
            Mode::Project => "project",
        };
        log_args.nats_name = Some(format!("fundflow {command}"));
    }
    let log = open_log(&log_args).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (notices_tx, _) = broadcast::channel::<Arc<FoldNotice>>(1024);
    let mut tasks = JoinSet::new();
    let nats = match &log {
        EventLog::JetStream(js) => Some(js.client().clone()),
        EventLog::Embedded(_) => None,
    };

    let partners: Arc<std::collections::BTreeSet<String>> =
        Arc::new(access.partner_ids().map(str::to_owned).collect());
    let mut app = App {
        access: Arc::new(access),
        gateway: None,
        queries: None,
        projector: None,
        ready_at_seq: 0,
        ready: Arc::new(AtomicBool::new(false)),
        nats: match &log {
            EventLog::JetStream(js) => Some(js.stats()),
            EventLog::Embedded(_) => None,
        },
        metrics,
        limits: http.limits(),
    };
    let mut model = None;
    if matches!(mode, Mode::Serve | Mode::Project) {
        let model_dir = log_args.data_dir.join("model");
        let config = ProjectorConfig {
            notices: Some(notices_tx.clone()),
            ..ProjectorConfig::default()
        };
        let projector = Projector::open(&model_dir, &log, config).await?;
        app.ready_at_seq = log.last_seq().await?;
        app.projector = Some(projector.metrics());
        model = Some(projector.model().clone());
        app.queries = Some(Queries::new(projector.model().clone(), log.clone()));
        let run_log = log.clone();
        let stop = stop_rx.clone();
        tasks.spawn(async move {
            projector
                .run(run_log, RunUntil::Stopped(stop))
                .await
                .context("the projector stopped")?;
            Ok(())
        });
        if let Some(client) = &nats {
            tokio::spawn(nats_service::publish_notices(
                client.clone(),
                notices_tx.subscribe(),
            ));
        }
    }
    if matches!(mode, Mode::Serve | Mode::Gateway) {
        let gateway = Gateway::new(
            log.clone(),
            notices_tx.clone(),
            model,
            Duration::from_secs(http.wait_secs),
        );
        if let Some(client) = &nats {
            if mode == Mode::Gateway {
                let client = client.clone();
                let notices = notices_tx.clone();
                tokio::spawn(async move {
                    if let Err(err) = nats_service::relay_notices(client, notices).await {
                        tracing::warn!(error = %err, "cannot follow fold notices; ?wait=true will time out");
                    }
                });
            }
            let client = client.clone();
            let submit_gateway = gateway.clone();
            let stop = stop_rx.clone();
            tasks.spawn(async move {
                nats_service::serve_submissions(client, submit_gateway, partners, stop)
                    .await
                    .context("cannot serve NATS submissions")
            });
        }
        app.gateway = Some(gateway);
    }

    let listener = tokio::net::TcpListener::bind(http.listen)
        .await
        .with_context(|| format!("cannot listen on {} (in use? pass --listen)", http.listen))?;
    let addr = listener.local_addr()?;
    let router = fundflow_server::router(app);
    let mut stop = stop_rx.clone();
    tasks.spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
            .context("the HTTP server failed")
    });
    tracing::info!(%addr, ?mode, log = log.kind(), "listening");
    Ok(Running {
        addr,
        stop: stop_tx,
        tasks,
    })
}

/// `fundflow serve`, `gateway`, `project --listen`: runs until SIGTERM or Ctrl-C.
pub async fn run(mode: Mode, log_args: &LogArgs, http: &HttpArgs) -> anyhow::Result<()> {
    let access = load_access(http.config.as_ref())?;
    let running = start(mode, log_args, http, access).await?;
    eprintln!("fundflow: listening on http://{}", running.addr);
    if let Err(err) = running.run_until(shutdown_signal()).await {
        // Exit now, without running destructors: a read model whose disk failed can block in
        // its own drop (sled flushes there), and what it holds on disk is already a fold up to
        // its last flushed checkpoint.
        eprintln!("fundflow: {err:#}");
        std::process::exit(1);
    }
    Ok(())
}
