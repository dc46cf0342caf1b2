//! Process assembly as a library, in the shape of mini-redis's `run(listener, shutdown)`: the
//! caller binds the listener and says when to stop; [`run`] opens the log, starts what the
//! [`Mode`] runs (projector, gateway, queries, NATS fronts) and serves HTTP on the listener until
//! `shutdown` resolves or a part fails.
//!
//! Why the caller binds: a test or a second binary can pass `127.0.0.1:0` and read the address,
//! and the port is taken before the start-up refold, so `/healthz` answers (and `/readyz` says
//! "starting") while the projector catches up, instead of connections being refused for as long
//! as the log is long. Every task the process runs is in one [`JoinSet`]: a part that dies stops
//! the process with its error, and a stop waits for each of them, bounded by [`STOP_GRACE`].

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use fundflow_domain::Rejection;
use fundflow_log::jetstream::{JetStreamConfig, JetStreamLog};
use fundflow_log::{EventLog, LogError, embedded::EmbeddedLog};
use fundflow_projector::{
    FoldNotice, Projector, ProjectorConfig, ProjectorError, ReadModel, RunUntil,
};
use futures::future::BoxFuture;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use crate::gateway::Verdicts;
use crate::{AccessControl, App, Gateway, Limits, Queries, nats_service};

/// How long a stop waits for requests and the batch in hand (the systemd units allow 60 s).
pub const STOP_GRACE: Duration = Duration::from_secs(45);

/// How long the others get after a task failed: what failed may be the store they wait on.
const FAILED_STOP_GRACE: Duration = Duration::from_secs(5);

/// Fold notices a slow receiver may fall behind by before it misses some (and then reads the
/// verdicts from the read model instead).
const NOTICES_CAPACITY: usize = 1024;

/// HTTP requests served at once; more wait for a turn. Bounds the memory and the blocking-pool
/// work that a burst of clients can cause.
pub const HTTP_REQUESTS_IN_FLIGHT_MAX: usize = 512;

/// How often the metrics registry's histograms are compacted.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

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

impl Mode {
    /// The command that runs it, for the NATS connection's name.
    pub fn command(self) -> &'static str {
        match self {
            Mode::Serve => "serve",
            Mode::Gateway => "gateway",
            Mode::Project => "project",
        }
    }

    fn runs_projector(self) -> bool {
        matches!(self, Mode::Serve | Mode::Project)
    }

    fn runs_gateway(self) -> bool {
        matches!(self, Mode::Serve | Mode::Gateway)
    }
}

/// Which log to open, and how.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The NATS servers of the JetStream log, comma-separated.
    pub nats_url: String,
    /// A NATS credentials file (JWT and seed).
    pub nats_creds: Option<PathBuf>,
    /// A file holding the NATS user's NKey seed.
    pub nats_nkey: Option<PathBuf>,
    /// The connection's name on the NATS servers' monitoring pages.
    pub nats_name: Option<String>,
    /// A missing stream is an error rather than created (the auditor's tools).
    pub read_only: bool,
    /// The embedded log in `data_dir/log` instead of NATS.
    pub embedded: bool,
    /// The JetStream stream's name.
    pub stream: String,
    /// Replicas of the stream when creating it.
    pub replicas: Option<usize>,
    /// JetStream's duplicate window when creating the stream.
    pub duplicate_window: Option<Duration>,
    /// Where the read model (`model/`) and the embedded log (`log/`) live.
    pub data_dir: PathBuf,
}

/// Why a process could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A gateway was asked to run on the embedded log, which only its own process can fold.
    #[error(
        "a gateway has no projector of its own and needs the shared JetStream log: use --nats-url, or fundflow serve --embedded"
    )]
    GatewayNeedsJetStream,
    /// `?wait=true` would outlast the request.
    #[error(
        "--wait-secs ({wait:?}) must be shorter than --request-timeout-secs ({timeout:?}), or a waiting request times out"
    )]
    WaitOutlastsRequest {
        /// The wait.
        wait: Duration,
        /// The request timeout.
        timeout: Duration,
    },
    /// A directory could not be created.
    #[error("cannot create {path}")]
    CreateDir {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The log could not be opened or read.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The projector could not open its read model.
    #[error(transparent)]
    OpenProjector(ProjectorError),
    /// The projector stopped (it cannot write its model, or read the log).
    #[error("the projector stopped")]
    ProjectorStopped(#[source] ProjectorError),
    /// The metrics recorder could not be installed.
    #[error("cannot install the metrics recorder: {0}")]
    Metrics(String),
    /// The listener's address is unknown.
    #[error("cannot read the listener's address")]
    Listener(#[source] std::io::Error),
    /// The HTTP server failed.
    #[error("the HTTP server failed")]
    Http(#[source] std::io::Error),
    /// The NATS submit subscription failed.
    #[error("cannot serve NATS submissions")]
    NatsSubmissions(#[source] async_nats::SubscribeError),
    /// A task panicked: a bug.
    #[error("a server task panicked")]
    Panicked(#[source] tokio::task::JoinError),
    /// A task that runs until stopped ended by itself: a bug.
    #[error("a server task ({0}) ended on its own")]
    EndedEarly(&'static str),
}

/// Opens the log `config` names.
pub async fn open_log(config: &LogConfig) -> Result<EventLog, AppError> {
    if config.embedded {
        let dir = config.data_dir.join("log");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|source| AppError::CreateDir {
                path: dir.display().to_string(),
                source,
            })?;
        return Ok(EventLog::Embedded(EmbeddedLog::open(&dir).await?));
    }
    let mut jetstream = JetStreamConfig::new(&config.nats_url);
    jetstream.credentials.clone_from(&config.nats_creds);
    jetstream.nkey_seed_file.clone_from(&config.nats_nkey);
    jetstream.create_stream = !config.read_only;
    if let Some(name) = &config.nats_name {
        jetstream.client_name.clone_from(name);
    }
    jetstream.stream.clone_from(&config.stream);
    jetstream.replicas = config.replicas;
    jetstream.duplicate_window = config.duplicate_window;
    let log = JetStreamLog::connect(jetstream).await?;
    tracing::info!(server_version = %log.server_version(), "connected");
    Ok(EventLog::JetStream(Box::new(log)))
}

/// Everything a serving process needs besides its listener.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// What it runs.
    pub mode: Mode,
    /// Its log.
    pub log: LogConfig,
    /// Who may do what.
    pub access: AccessControl,
    /// HTTP request limits.
    pub limits: Limits,
    /// How long `?wait=true` waits for the fold.
    pub wait: Duration,
    /// The reporting organisation of `GET /v1/exports/iati.xml`; `None`: no IATI export.
    pub iati: Option<fundflow_interop::iati::Publisher>,
    /// How the projector starts and snapshots its fold.
    pub fold: FoldOptions,
}

/// How the projector starts (from the fold's snapshot, or refolding and checking with
/// `verify`) and how often it writes the snapshot; see `fundflow_projector::ProjectorConfig`.
#[derive(Debug, Clone, Copy)]
pub struct FoldOptions {
    /// Refold from seq 1 and compare with the read model before serving.
    pub verify: bool,
    /// At most how often the fold's snapshot is written; `None`: never.
    pub snapshot_every: Option<Duration>,
}

impl Default for FoldOptions {
    fn default() -> Self {
        let projector = ProjectorConfig::default();
        FoldOptions {
            verify: projector.verify,
            snapshot_every: projector.snapshot_every,
        }
    }
}

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn metrics_handle() -> Result<PrometheusHandle, AppError> {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(&[
            0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
        .map_err(|err| AppError::Metrics(err.to_string()))?
        .install_recorder()
        .map_err(|err| AppError::Metrics(err.to_string()))?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// A running process: its address, and how to stop it.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<watch::Sender<bool>>,
    tasks: JoinSet<Result<(), AppError>>,
    /// Resolves once the start-up refold is done and every part is serving.
    started: watch::Receiver<bool>,
}

impl Running {
    /// Waits until every part is serving (the projector has refolded to its checkpoint), or
    /// returns the error of a part that failed first.
    pub async fn started(&mut self) -> Result<(), AppError> {
        let mut started = self.started.clone();
        tokio::select! {
            result = started.wait_for(|s| *s) => match result {
                Ok(_) => Ok(()),
                // The start-up task failed and dropped its sender: its error is in the join set.
                Err(_) => Err(self.first_failure().await),
            },
            ended = self.tasks.join_next() => Err(match ended {
                Some(ended) => flatten(ended).err().unwrap_or(AppError::EndedEarly("start-up")),
                None => AppError::EndedEarly("start-up"),
            }),
        }
    }

    async fn first_failure(&mut self) -> AppError {
        while let Some(ended) = self.tasks.join_next().await {
            if let Err(err) = flatten(ended) {
                return err;
            }
        }
        AppError::EndedEarly("start-up")
    }

    /// Stops taking requests, lets the projector finish its batch, and waits for everything,
    /// at most [`STOP_GRACE`]: then what is still running is aborted (a client that never
    /// finishes its request must not keep the process alive).
    pub async fn stop(mut self) -> Result<(), AppError> {
        let _ = self.stop.send(true);
        let mut first_error = None;
        let drained = tokio::time::timeout(STOP_GRACE, async {
            while let Some(ended) = self.tasks.join_next().await {
                if let Err(err) = flatten(ended) {
                    if first_error.is_some() {
                        tracing::warn!(error = %Chain(&err), "another task failed while stopping");
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
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<(), AppError> {
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
            // A part that failed asks everything to stop before its own task ends with the
            // error (it first gives the other parts a moment), so the HTTP server and the
            // metrics loop may end cleanly ahead of it: wait for the error itself.
            Ok(()) if *self.stop.borrow() => {
                tokio::time::timeout(FAILED_STOP_GRACE * 2, self.first_failure())
                    .await
                    .unwrap_or(AppError::EndedEarly("a server task"))
            }
            Ok(()) => AppError::EndedEarly("a server task"),
        };
        tracing::error!(error = %Chain(&cause), "stopping: a server task failed");
        match tokio::time::timeout(FAILED_STOP_GRACE, self.stop()).await {
            Ok(Err(also)) => {
                tracing::warn!(error = %Chain(&also), "another task failed while stopping")
            }
            Ok(Ok(())) => {}
            Err(_) => {
                tracing::warn!(grace = ?FAILED_STOP_GRACE, "stopping: the others did not stop in time")
            }
        }
        Err(cause)
    }
}

/// Resolves once `stop` says stop (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// An error with its sources, for a log line.
struct Chain<'a>(&'a AppError);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = std::error::Error::source(self.0);
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

fn flatten(ended: Result<Result<(), AppError>, tokio::task::JoinError>) -> Result<(), AppError> {
    ended.map_err(AppError::Panicked)?
}

/// Starts what `config.mode` runs, serving HTTP on `listener` at once (`/healthz` answers,
/// `/readyz` says "starting" while the projector refolds), and returns the running process.
/// [`Running::started`] waits for the start-up to finish.
pub async fn start(config: AppConfig, listener: TcpListener) -> Result<Running, AppError> {
    if config.mode == Mode::Gateway && config.log.embedded {
        return Err(AppError::GatewayNeedsJetStream);
    }
    if config.wait >= config.limits.request_timeout {
        return Err(AppError::WaitOutlastsRequest {
            wait: config.wait,
            timeout: config.limits.request_timeout,
        });
    }
    let metrics = metrics_handle()?;
    let addr = listener.local_addr().map_err(AppError::Listener)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let (started_tx, started_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();

    // HTTP first: a front that answers "starting" until the parts are there.
    let front = Arc::new(RwLock::new(crate::http::starting_router(metrics.clone())));
    let serving = Arc::clone(&front);
    let dispatch = Router::new()
        .fallback(move |request: Request| {
            // A poisoned lock means a panic while swapping two Arcs: keep serving what is there.
            let router = match serving.read() {
                Ok(router) => router.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            async move { router.oneshot(request).await }
        })
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            HTTP_REQUESTS_IN_FLIGHT_MAX,
        ));
    let stop = stop_rx.clone();
    tasks.spawn(async move {
        axum::serve(listener, dispatch)
            .with_graceful_shutdown(stopped(stop))
            .await
            .map_err(AppError::Http)
    });
    let upkeep = metrics.clone();
    let stop = stop_rx.clone();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(METRICS_UPKEEP_INTERVAL) => upkeep.run_upkeep(),
                () = stopped(stop.clone()) => return Ok(()),
            }
        }
    });
    tracing::info!(%addr, mode = ?config.mode, "listening");

    // Then the parts, in a task of their own, so that a stop during a long refold is heard.
    let startup_stop = stop_rx.clone();
    let stop_all = Arc::clone(&stop_tx);
    let startup = async move {
        let mut parts_tasks = JoinSet::new();
        let parts = assemble(config, metrics, startup_stop, &mut parts_tasks).await?;
        match front.write() {
            Ok(mut router) => *router = crate::router(parts),
            Err(poisoned) => *poisoned.into_inner() = crate::router(parts),
        }
        // Only the HTTP server holds the router now: once it stops, the gateway's last clones
        // go with it, and its appender (a task here) finishes what it holds and ends.
        drop(front);
        let _ = started_tx.send(true);
        // The parts' tasks are joined here: the first to fail stops the others (briefly: what
        // failed may be the store they wait on) and ends this task with its error.
        while let Some(ended) = parts_tasks.join_next().await {
            if let Err(err) = flatten(ended) {
                let _ = stop_all.send(true);
                let _ = tokio::time::timeout(FAILED_STOP_GRACE, async {
                    while parts_tasks.join_next().await.is_some() {}
                })
                .await;
                return Err(err);
            }
        }
        Ok(())
    };
    tasks.spawn(startup);
    Ok(Running {
        addr,
        stop: stop_tx,
        tasks,
        started: started_rx,
    })
}

/// Opens the log and starts the parts `config.mode` runs, their tasks in `tasks`; returns the
/// HTTP state that serves them.
async fn assemble(
    config: AppConfig,
    metrics: PrometheusHandle,
    stop_rx: watch::Receiver<bool>,
    tasks: &mut JoinSet<Result<(), AppError>>,
) -> Result<App, AppError> {
    let mode = config.mode;
    let mut log_config = config.log.clone();
    if log_config.nats_name.is_none() {
        log_config.nats_name = Some(format!("fundflow {}", mode.command()));
    }
    let log = open_log(&log_config).await?;
    let (notices_tx, _) = broadcast::channel::<Arc<FoldNotice>>(NOTICES_CAPACITY);
    let nats = match &log {
        EventLog::JetStream(js) => Some(js.client().clone()),
        EventLog::Embedded(_) => None,
    };
    let partners: Arc<BTreeSet<String>> =
        Arc::new(config.access.partner_ids().map(str::to_owned).collect());
    let mut app = App {
        access: Arc::new(config.access),
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
        limits: config.limits,
        sessions: Arc::default(),
        reads: Arc::default(),
        iati: config.iati.map(Arc::new),
    };
    let mut model = None;
    if mode.runs_projector() {
        let model_dir = log_config.data_dir.join("model");
        let projector_config = ProjectorConfig {
            notices: Some(notices_tx.clone()),
            verify: config.fold.verify,
            snapshot_every: config.fold.snapshot_every,
            ..ProjectorConfig::default()
        };
        let projector = Projector::open(&model_dir, &log, projector_config)
            .await
            .map_err(AppError::OpenProjector)?;
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
                .map_err(AppError::ProjectorStopped)?;
            Ok(())
        });
        if let Some(client) = &nats {
            let client = client.clone();
            let notices = notices_tx.subscribe();
            let stop = stop_rx.clone();
            tasks.spawn(async move {
                tokio::select! {
                    () = nats_service::publish_notices(client, notices) => {}
                    () = stopped(stop) => {}
                }
                Ok(())
            });
        }
    }
    if mode.runs_gateway() {
        let verdicts: Arc<dyn Verdicts> = match model {
            Some(model) => Arc::new(ProjectorVerdicts {
                notices: notices_tx.clone(),
                model,
            }),
            None => Arc::new(RelayedVerdicts {
                notices: notices_tx.clone(),
            }),
        };
        let (gateway, appending) = Gateway::new(log.clone(), verdicts, config.wait);
        tasks.spawn(async move {
            appending.await;
            Ok(())
        });
        if let Some(client) = &nats {
            if mode == Mode::Gateway {
                let client = client.clone();
                let notices = notices_tx.clone();
                let stop = stop_rx.clone();
                tasks.spawn(async move {
                    tokio::select! {
                        relayed = nats_service::relay_notices(client, notices) => {
                            if let Err(err) = relayed {
                                tracing::warn!(error = %err, "cannot follow fold notices; ?wait=true will time out");
                            }
                            // A relay that ends (the connection closed for good) leaves waiters
                            // to time out as `accepted`; the process keeps serving submissions.
                            stopped(stop.clone()).await;
                        }
                        () = stopped(stop.clone()) => {}
                    }
                    Ok(())
                });
            }
            let client = client.clone();
            let submit_gateway = gateway.clone();
            let stop = stop_rx.clone();
            tasks.spawn(async move {
                nats_service::serve_submissions(client, submit_gateway, partners, stop)
                    .await
                    .map_err(AppError::NatsSubmissions)
            });
        }
        app.gateway = Some(gateway);
    }
    if app.queries.is_some() {
        // The dashboard's default overview, read ahead at new checkpoints while someone is
        // signed in: its first reader at a checkpoint then gets it from the cache.
        let warm = crate::pages::read_ahead(app.clone(), notices_tx.subscribe());
        let stop = stop_rx.clone();
        tasks.spawn(async move {
            tokio::select! {
                () = warm => {}
                () = stopped(stop) => {}
            }
            Ok(())
        });
    }
    tracing::info!(mode = ?mode, log = log.kind(), "serving");
    Ok(app)
}

/// Verdicts in a process with a projector: its notices, and its read model for a receiver that
/// fell behind them.
struct ProjectorVerdicts {
    notices: broadcast::Sender<Arc<FoldNotice>>,
    model: ReadModel,
}

impl Verdicts for ProjectorVerdicts {
    fn subscribe(&self) -> broadcast::Receiver<Arc<FoldNotice>> {
        self.notices.subscribe()
    }

    fn known(&self, seqs: Vec<u64>) -> BoxFuture<'_, BTreeMap<u64, Result<(), Rejection>>> {
        let model = self.model.clone();
        Box::pin(async move {
            // Point reads of sled: not on the runtime.
            let read = tokio::task::spawn_blocking(move || {
                seqs.into_iter()
                    .filter_map(|seq| match model.outcome(seq) {
                        Ok(Some(outcome)) => Some((seq, outcome)),
                        Ok(None) => None,
                        Err(err) => {
                            tracing::warn!(seq, error = %err, "cannot read an outcome from the read model");
                            None
                        }
                    })
                    .collect()
            });
            read.await.unwrap_or_else(|err| {
                tracing::warn!(error = %err, "reading outcomes failed");
                BTreeMap::new()
            })
        })
    }
}

/// Verdicts in a gateway process: the notices relayed from `fundflow.v1.folded`, and nothing
/// else (a waiter that missed its notice times out as `accepted`).
struct RelayedVerdicts {
    notices: broadcast::Sender<Arc<FoldNotice>>,
}

impl Verdicts for RelayedVerdicts {
    fn subscribe(&self) -> broadcast::Receiver<Arc<FoldNotice>> {
        self.notices.subscribe()
    }

    fn known(&self, _seqs: Vec<u64>) -> BoxFuture<'_, BTreeMap<u64, Result<(), Rejection>>> {
        Box::pin(std::future::ready(BTreeMap::new()))
    }
}

/// Runs what `config.mode` runs on `listener` until `shutdown` resolves (then stops in order)
/// or a part fails (then returns its error).
pub async fn run(
    config: AppConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    start(config, listener).await?.run_until(shutdown).await
}
