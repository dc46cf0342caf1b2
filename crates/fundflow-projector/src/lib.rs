//! The projector: reads the event log in sequence order, folds each batch of records with the
//! domain's [`Ledger`], and writes what the batch changed, its outcomes and the new checkpoint to
//! the sled [`ReadModel`] in one atomic, flushed batch before it reads on. A crash at any
//! instant, `kill -9` included, therefore loses nothing and counts nothing twice: the model is
//! always exactly a fold of the log up to its checkpoint.
//!
//! What is in memory: the [`Ledger`] itself (event-id index with content fingerprints, the
//! effects kept for reversals, pledge balances, direct totals and cells). At start it comes
//! from the fold's snapshot beside the read model (`<model dir>.fold`, see [`snapshot`]) plus
//! a fold of the log's records after it, accepted only if the result's checkpoint (log digest,
//! counts, rejection chain) is the read model's; without a usable snapshot, or with
//! [`ProjectorConfig::verify`], it is rebuilt by refolding the log from sequence 1 and checked
//! further: the refold's model digest must equal the read model's, or the projector refuses to
//! run (the log or the model was changed behind its back; `fundflow rebuild` makes a new
//! model). A snapshot is written after a batch when [`ProjectorConfig::snapshot_every`] has
//! passed (and at least twenty times what the last one took, so that snapshots cost the fold
//! at most about 5%), and when a run ends.
//!
//! Reading, folding and writing overlap: a reader task fetches the next batch while the fold
//! thread applies one and a writer thread writes and flushes the one before it (at most one
//! more waits between them). What the world sees moves with the writer: the checkpoint in the
//! metrics, the fold notices, and snapshots, which wait until every batch folded is written. A read error (NATS gone, leader election) is logged and
//! counted, and the reader is reopened from the last folded sequence + 1 with backoff: the read
//! model's checkpoint, not consumer state on the server, says where to resume.

mod read_model;
mod snapshot;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fundflow_domain::digest::outcome_byte;
use fundflow_domain::{Digest32, Ledger, Outcome, RejectCode, Source};
use fundflow_log::{EventLog, LogError, READ_REOPEN_BACKOFF, Record};
use fundflow_proto::v1::FoldRejection;
use tokio::sync::{broadcast, mpsc, watch};
use tracing::Instrument;

use read_model::Changed;
pub use read_model::{
    CellsSnapshot, FlowCursor, FlowQuery, FlowRecord, FlowStatus, PledgeCursor, PledgeFilter,
    PledgeStatus, QuantitySnapshot, ReadModel, Snapshot,
};
pub use snapshot::SnapshotFileError;

/// Why the projector stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// The read model's store failed (I/O error, disk full, not writable). Fix the disk and
    /// restart: the model is intact at its last checkpoint.
    #[error("{message}")]
    Storage {
        /// What was being done.
        message: String,
        /// The store's error.
        #[source]
        source: sled::Error,
    },
    /// The read model holds something this build cannot read. Rebuild it from the log.
    #[error("{0}")]
    Corrupt(String),
    /// The read model does not match a refold of the log: the log or the model changed behind
    /// the projector's back. Rebuild the model from the log.
    #[error("{0}")]
    Mismatch(String),
    /// The log could not be read when it had to be (at start): unreachable, or it stopped
    /// delivering records for longer than the read's patience. Retry when it is reachable.
    #[error("cannot read the event log")]
    Log(#[from] LogError),
    /// The fold's snapshot could not be removed where that had to succeed (`rebuild`).
    #[error(transparent)]
    Snapshot(#[from] SnapshotFileError),
    /// A projector task panicked (a bug: the fold does not fail on input) or was cancelled. The
    /// model is intact at its last checkpoint: report it and restart.
    #[error("a projector task failed: {task}")]
    TaskFailed {
        /// Which task.
        task: &'static str,
        /// The panic or cancellation.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl ProjectorError {
    fn storage(message: impl Into<String>, source: sled::Error) -> ProjectorError {
        ProjectorError::Storage {
            message: message.into(),
            source,
        }
    }

    fn corrupt(message: impl Into<String>) -> ProjectorError {
        ProjectorError::Corrupt(message.into())
    }
}

/// Tuning, with limits.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Most records folded and written as one batch. A batch writes one run per cell block it
    /// touched, so catching up with larger batches writes less: folding 1M generated events
    /// took 24.5–29 s with 4,096, 23–27 s with 8,192 and 16.5–18.5 s with 16,384 (+200 MB peak
    /// RSS). A live projector's batches are what the log had at hand, far smaller.
    pub batch_max: usize,
    /// How long the reader waits for records before it reports an empty batch.
    pub read_wait: Duration,
    /// Where to announce each durable batch (gateways waiting for outcomes listen).
    pub notices: Option<broadcast::Sender<Arc<FoldNotice>>>,
    /// How often, at most, the fold's state is written to its snapshot while running; `None`
    /// writes none (a start still uses whatever snapshot there is, and folds more of the log).
    pub snapshot_every: Option<Duration>,
    /// Refold from seq 1 at start and compare with the read model before serving, whatever
    /// snapshot there is (`--verify`).
    pub verify: bool,
}

/// What one durable batch folded (`fundflow.v1.FoldNotice`, the message that also crosses
/// processes on `fundflow.v1.folded`): the records from `first_seq` to `last_seq` are in the
/// read model, each applied except those in `rejected`. Sent after the batch is flushed, so
/// whoever acts on it can read the model and find the batch there.
pub use fundflow_proto::v1::FoldNotice;

impl Default for ProjectorConfig {
    fn default() -> Self {
        ProjectorConfig {
            batch_max: 16_384,
            read_wait: Duration::from_millis(200),
            notices: None,
            snapshot_every: Some(Duration::from_secs(30)),
            verify: false,
        }
    }
}

/// What an operator watches. Shared with whoever serves metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Records applied since start.
    pub applied: AtomicU64,
    /// Records rejected since start, per code (indexed like `RejectCode::ALL`).
    pub rejected_by_code: Vec<AtomicU64>,
    /// The last sequence folded and checkpointed.
    pub checkpoint_seq: AtomicU64,
    /// The highest sequence the reader has seen in the log (lag = this − checkpoint).
    pub log_seq_seen: AtomicU64,
    /// Batches written.
    pub batches: AtomicU64,
    /// Read errors (each followed by a reopen from the checkpoint).
    pub read_errors: AtomicU64,
    /// False while the reader cannot read the log.
    pub reading: AtomicBool,
    /// The seq of the fold's last snapshot written or read (0: none).
    pub snapshot_seq: AtomicU64,
    /// Snapshots that could not be written (the model is unaffected; the next start folds
    /// more of the log).
    pub snapshot_failures: AtomicU64,
    /// The seq the last start resumed from: the snapshot's, or 0 for a refold from seq 1.
    pub resumed_from_seq: AtomicU64,
    /// What the fold's state holds in memory, in bytes, after the last batch
    /// (`Ledger::memory`): it grows with the log, so it is what to watch before a machine runs
    /// out.
    pub fold_bytes: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            applied: AtomicU64::new(0),
            rejected_by_code: RejectCode::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            checkpoint_seq: AtomicU64::new(0),
            log_seq_seen: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            read_errors: AtomicU64::new(0),
            reading: AtomicBool::new(false),
            snapshot_seq: AtomicU64::new(0),
            snapshot_failures: AtomicU64::new(0),
            resumed_from_seq: AtomicU64::new(0),
            fold_bytes: AtomicU64::new(0),
        }
    }
}

/// When [`Projector::run`] returns.
#[derive(Debug, Clone)]
pub enum RunUntil {
    /// Once the checkpoint reaches this sequence (`--once`: the log's last sequence at start).
    Seq(u64),
    /// When the value in the channel becomes `true` (shutdown), after the batch in hand.
    Stopped(watch::Receiver<bool>),
}

/// A projector over one read model. See the crate docs.
pub struct Projector {
    ledger: Ledger,
    model: ReadModel,
    config: ProjectorConfig,
    metrics: Arc<Metrics>,
    snapshots: Snapshots,
}

/// Where the fold's snapshot is, and when the last one was written.
struct Snapshots {
    path: PathBuf,
    /// The seq of the last snapshot on disk.
    seq: u64,
    at: Instant,
    /// What writing the last one took.
    cost: Duration,
    /// SHA-256 of the record at the ledger's last seq, for the next snapshot's header.
    last_record: Digest32,
}

/// Snapshots are written at most this often relative to what one costs: the fold spends at
/// most about 1/`SNAPSHOT_COST_RATIO` of its time writing them.
const SNAPSHOT_COST_RATIO: u32 = 20;

impl Projector {
    /// Opens the read model in `dir` and brings the fold's state to its checkpoint: from the
    /// snapshot beside it and the log's records after that when they give exactly the model's
    /// checkpoint, else (or with `config.verify`) by refolding `log` from seq 1 and checking
    /// that the refold and the model agree.
    pub async fn open(
        dir: &Path,
        log: &EventLog,
        config: ProjectorConfig,
    ) -> Result<Projector, ProjectorError> {
        // sled blocks, and may wait for its directory lock: not on the runtime.
        let model_dir = dir.to_owned();
        let (model, checkpoint) = tokio::task::spawn_blocking(move || {
            let model = ReadModel::open(&model_dir)?;
            let checkpoint = model.checkpoint()?;
            Ok::<_, ProjectorError>((model, checkpoint))
        })
        .await
        .map_err(|source| ProjectorError::TaskFailed {
            task: "opening the read model",
            source,
        })??;
        let metrics = Arc::new(Metrics::default());
        let snapshot_path = snapshot::path_for(dir);
        let log_last_seq = log.last_seq().await?;
        let Some(checkpoint) = checkpoint else {
            // A new model: whatever snapshot is left is of another one.
            blocking("removing a stale snapshot", {
                let path = snapshot_path.clone();
                move || snapshot::remove(&path)
            })
            .await?
            .unwrap_or_else(|err| tracing::warn!(error = %err, "cannot remove a stale snapshot"));
            let hint = usize::try_from(log_last_seq).unwrap_or(usize::MAX);
            return Ok(Projector {
                ledger: Ledger::with_capacity(hint),
                model,
                config,
                metrics,
                snapshots: Snapshots::none(snapshot_path),
            });
        };
        // The log itself says it is shorter than the model: not a stall (a stall is waited
        // out by the refold's reader, and past its patience is a `Log` error).
        if log_last_seq < checkpoint.last_seq {
            return Err(ProjectorError::Mismatch(format!(
                "the read model is at seq {} but the log ends at seq {log_last_seq}: it was built from another log; rebuild it",
                checkpoint.last_seq,
            )));
        }
        let resumed = if config.verify {
            tracing::info!("--verify: refolding the log from seq 1 whatever snapshot there is");
            None
        } else {
            resume(&snapshot_path, log, &checkpoint, config.batch_max).await?
        };
        let mut projector = match resumed {
            Some((ledger, loaded_seq, last_record)) => {
                metrics.snapshot_seq.store(loaded_seq, Ordering::Relaxed);
                metrics
                    .resumed_from_seq
                    .store(loaded_seq, Ordering::Relaxed);
                let mut snapshots = Snapshots::none(snapshot_path);
                snapshots.seq = loaded_seq;
                snapshots.last_record = last_record;
                Projector {
                    ledger,
                    model,
                    config,
                    metrics,
                    snapshots,
                }
            }
            None => {
                let (model, ledger) =
                    refold_and_verify(model, log, &checkpoint, &config, log_last_seq).await?;
                let last_record = match log.get(checkpoint.last_seq).await? {
                    Some(record) => snapshot::record_digest(&record.bytes),
                    None => {
                        return Err(ProjectorError::Mismatch(format!(
                            "the log holds no record at seq {}, where the read model's checkpoint is; rebuild the read model",
                            checkpoint.last_seq
                        )));
                    }
                };
                let mut snapshots = Snapshots::none(snapshot_path);
                snapshots.last_record = last_record;
                let mut projector = Projector {
                    ledger,
                    model,
                    config,
                    metrics,
                    snapshots,
                };
                // The next start should not pay this refold again.
                if projector.config.snapshot_every.is_some() {
                    projector = blocking("writing the fold's snapshot", move || {
                        write_snapshot(
                            &mut projector.snapshots,
                            &projector.ledger,
                            &projector.metrics,
                        );
                        projector
                    })
                    .await?;
                }
                projector
            }
        };
        projector
            .metrics
            .checkpoint_seq
            .store(projector.ledger.last_seq(), Ordering::Relaxed);
        let fold_bytes = u64::try_from(projector.ledger.memory().total()).unwrap_or(u64::MAX);
        projector
            .metrics
            .fold_bytes
            .store(fold_bytes, Ordering::Relaxed);
        projector.snapshots.at = Instant::now();
        Ok(projector)
    }

    /// Drops the read model in `dir` so that the next [`Projector::open`] folds from seq 1.
    pub fn clear(dir: &Path) -> Result<(), ProjectorError> {
        // The snapshot first: a crash between the two leaves a model without one, which
        // refolds, never a snapshot of a model that is gone.
        snapshot::remove(&snapshot::path_for(dir))?;
        ReadModel::open(dir)?.clear()
    }

    /// The metrics, to share with a metrics endpoint.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The fold's state.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The read model.
    pub fn model(&self) -> &ReadModel {
        &self.model
    }

    /// Folds the log into the read model until `until`; returns the projector for inspection.
    pub async fn run(self, log: EventLog, until: RunUntil) -> Result<Projector, ProjectorError> {
        if let RunUntil::Seq(seq) = until
            && self.ledger.last_seq() >= seq
        {
            return Ok(self);
        }
        // Room for the reader to run ahead while a batch is written: what queues up is folded
        // and written together next time.
        let (batches_tx, batches_rx) = mpsc::channel::<Vec<Record>>(RUN_BATCHES_AHEAD);
        let stop = match &until {
            RunUntil::Stopped(stop) => Some(stop.clone()),
            RunUntil::Seq(_) => None,
        };
        let reader = tokio::spawn(read_batches(
            log,
            self.ledger.last_seq() + 1,
            self.config.clone(),
            Arc::clone(&self.metrics),
            batches_tx,
            stop,
        ));
        let folded =
            tokio::task::spawn_blocking(move || self.fold_batches(batches_rx, &until)).await;
        reader.abort();
        match folded {
            Ok(result) => result,
            Err(source) => Err(ProjectorError::TaskFailed {
                task: "the fold thread",
                source,
            }),
        }
    }

    /// Folds batches from `batches` on this thread and writes them on a writer thread of its
    /// own, one batch behind: batch N+1 is folded while batch N is written. The durability
    /// contract is the writer's: the checkpoint the metrics and `/readyz` report and the fold
    /// notices move only once a batch is flushed, and a snapshot is written only once every
    /// batch folded before it is (so that it never runs ahead of the read model's checkpoint).
    fn fold_batches(
        mut self,
        batches: mpsc::Receiver<Vec<Record>>,
        until: &RunUntil,
    ) -> Result<Projector, ProjectorError> {
        let Projector {
            ledger,
            model,
            config,
            metrics,
            snapshots,
        } = &mut self;
        let (model, metrics): (&ReadModel, &Metrics) = (model, metrics);
        std::thread::scope(|scope| {
            // One batch written and one waiting, at most: the fold is never more than two
            // batches ahead of the model.
            let (jobs, jobs_rx) = std::sync::mpsc::sync_channel(1);
            let notices = config.notices.clone();
            let writer = std::thread::Builder::new()
                .name("fundflow-model-writer".into())
                .spawn_scoped(scope, move || {
                    write_batches(model, metrics, notices, jobs_rx)
                })
                .map_err(|err| {
                    ProjectorError::corrupt(format!("cannot start the writer: {err}"))
                })?;
            let mut fold = Fold {
                ledger,
                config,
                metrics,
                snapshots,
                jobs,
            };
            let folded = fold.run(batches, until);
            drop(fold);
            let written = writer.join().unwrap_or_else(|_| {
                Err(ProjectorError::corrupt(
                    "the read model's writer thread panicked; the model is at its last checkpoint",
                ))
            });
            // The writer's error comes first: the fold stops because the writer did.
            written.and(folded)
        })?;
        Ok(self)
    }
}

/// What the fold thread hands the writer thread.
enum WriteJob {
    /// A batch, with the notice to send once it is flushed.
    Batch(Box<read_model::BatchWrite>, Option<Arc<FoldNotice>>),
    /// Answered once every batch sent before it is written.
    Barrier(std::sync::mpsc::SyncSender<()>),
}

/// Writes batches in the order they come, then reports each as durable: the checkpoint in
/// the metrics, the fold notice. Stops at the first error, which ends the fold too (its next
/// send fails).
fn write_batches(
    model: &ReadModel,
    metrics: &Metrics,
    notices: Option<broadcast::Sender<Arc<FoldNotice>>>,
    jobs: std::sync::mpsc::Receiver<WriteJob>,
) -> Result<(), ProjectorError> {
    for job in jobs {
        match job {
            WriteJob::Batch(batch, notice) => {
                let seq = batch.checkpoint().last_seq;
                let span = tracing::debug_span!("write", seq);
                let _guard = span.enter();
                model.write_taken(*batch)?;
                metrics.checkpoint_seq.store(seq, Ordering::Relaxed);
                metrics.batches.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(seq, "checkpointed");
                if let (Some(notices), Some(notice)) = (&notices, notice) {
                    // Nobody listening is not an error.
                    let _ = notices.send(notice);
                }
            }
            WriteJob::Barrier(done) => {
                // The fold waits on it; a fold gone is no error of the writer's.
                let _ = done.send(());
            }
        }
    }
    Ok(())
}

/// The fold thread's side of [`Projector::fold_batches`].
struct Fold<'a> {
    ledger: &'a mut Ledger,
    config: &'a ProjectorConfig,
    metrics: &'a Metrics,
    snapshots: &'a mut Snapshots,
    jobs: std::sync::mpsc::SyncSender<WriteJob>,
}

impl Fold<'_> {
    fn run(
        &mut self,
        mut batches: mpsc::Receiver<Vec<Record>>,
        until: &RunUntil,
    ) -> Result<(), ProjectorError> {
        let mut outcomes = Vec::with_capacity(self.config.batch_max);
        // The reader closes the channel when asked to stop, after what it has sent: the batches
        // in hand are folded and written first.
        while let Some(mut batch) = batches.blocking_recv() {
            // The reader hands over what the log had at hand, often a few hundred records; what
            // has queued up meanwhile joins them, so that one sled write and flush covers up to
            // `batch_max` records.
            while batch.len() < self.config.batch_max {
                match batches.try_recv() {
                    Ok(more) => batch.extend(more),
                    Err(_) => break,
                }
            }
            let span = tracing::debug_span!(
                "batch",
                first_seq = batch.first().map(|r| r.seq),
                records = batch.len()
            );
            let guard = span.enter();
            outcomes.clear();
            let mut changed = Changed::default();
            for record in &batch {
                if record.seq <= self.ledger.last_seq() {
                    continue; // A re-read after a reconnect: folded already.
                }
                let source = Source {
                    subject_partner: Some(&record.partner),
                };
                let (outcome, touched) =
                    self.ledger.apply_tracked(record.seq, &record.bytes, source);
                if let Some(touched) = &touched {
                    changed.add(record.seq, &record.bytes, touched);
                }
                match &outcome {
                    Outcome::Applied => {
                        self.metrics.applied.fetch_add(1, Ordering::Relaxed);
                    }
                    Outcome::Rejected(rejection) => {
                        let index = RejectCode::ALL
                            .iter()
                            .position(|c| *c == rejection.code)
                            .unwrap_or(0);
                        if let Some(counter) = self.metrics.rejected_by_code.get(index) {
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                        tracing::info!(seq = record.seq, code = %rejection.code, message = %rejection.message, "event rejected");
                    }
                }
                outcomes.push((record.seq, outcome_byte(&outcome)));
            }
            if outcomes.is_empty() {
                continue;
            }
            // The ledger holds this batch's rejections only: the previous batch's were taken
            // and forgotten.
            let rejected = self.ledger.rejected();
            let checkpoint = self.ledger.checkpoint();
            let notice = match (&self.config.notices, outcomes.first()) {
                (Some(_), Some(&(first_seq, _))) => Some(Arc::new(FoldNotice {
                    first_seq,
                    last_seq: checkpoint.last_seq,
                    rejected: rejected
                        .iter()
                        .map(|r| FoldRejection {
                            seq: r.seq,
                            code: r.rejection.code.as_str().to_owned(),
                            field: r.rejection.field.clone(),
                            message: r.rejection.message.clone(),
                        })
                        .collect(),
                })),
                _ => None,
            };
            let taken = read_model::BatchWrite::take(self.ledger, changed, rejected, &outcomes)?;
            self.ledger.forget_rejected();
            let fold_bytes = u64::try_from(self.ledger.memory().total()).unwrap_or(u64::MAX);
            self.metrics.fold_bytes.store(fold_bytes, Ordering::Relaxed);
            if self
                .jobs
                .send(WriteJob::Batch(Box::new(taken), notice))
                .is_err()
            {
                return Ok(()); // The writer stopped: its error is the one to report.
            }
            if let Some(last) = batch.last() {
                debug_assert_eq!(last.seq, checkpoint.last_seq);
                self.snapshots.last_record = snapshot::record_digest(&last.bytes);
            }
            drop(guard);
            if let RunUntil::Seq(seq) = *until
                && checkpoint.last_seq >= seq
            {
                self.snapshot_if_due(true);
                return Ok(());
            }
            self.snapshot_if_due(false);
        }
        self.snapshot_if_due(true);
        Ok(())
    }

    /// Waits until the writer has written every batch sent so far; false if it stopped.
    fn written(&self) -> bool {
        let (done, done_rx) = std::sync::mpsc::sync_channel(1);
        self.jobs.send(WriteJob::Barrier(done)).is_ok() && done_rx.recv().is_ok()
    }

    /// Writes the fold's snapshot if the state moved since the last one and `force` or the
    /// interval (and the cost ratio) says it is time, once the model holds every batch folded.
    fn snapshot_if_due(&mut self, force: bool) {
        let Some(every) = self.config.snapshot_every else {
            return;
        };
        if self.ledger.last_seq() <= self.snapshots.seq {
            return;
        }
        let wait = every.max(self.snapshots.cost * SNAPSHOT_COST_RATIO);
        if (force || self.snapshots.at.elapsed() >= wait) && self.written() {
            self.write_snapshot();
        }
    }

    fn write_snapshot(&mut self) {
        write_snapshot(self.snapshots, self.ledger, self.metrics);
    }
}

/// Writes the fold's snapshot now. A failure is logged and counted, not fatal: the read model
/// is intact, and the next start folds more of the log.
fn write_snapshot(snapshots: &mut Snapshots, ledger: &Ledger, metrics: &Metrics) {
    let seq = ledger.last_seq();
    let span = tracing::info_span!("snapshot", seq);
    let _guard = span.enter();
    match snapshot::write(&snapshots.path, ledger, snapshots.last_record) {
        Ok(written) => {
            snapshots.seq = seq;
            snapshots.cost = written.took;
            metrics.snapshot_seq.store(seq, Ordering::Relaxed);
            tracing::info!(seq, bytes = written.bytes, took = ?written.took, "wrote the fold's snapshot");
        }
        Err(err) => {
            metrics.snapshot_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %err, "cannot write the fold's snapshot; the read model is unaffected");
        }
    }
    snapshots.at = Instant::now();
}

impl Snapshots {
    fn none(path: PathBuf) -> Snapshots {
        Snapshots {
            path,
            seq: 0,
            at: Instant::now(),
            cost: Duration::ZERO,
            last_record: [0; 32],
        }
    }
}

/// Runs `f` on the blocking pool (sled and file I/O do not belong on the runtime).
async fn blocking<T: Send + 'static>(
    task: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ProjectorError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| ProjectorError::TaskFailed { task, source })
}

/// The fold's state from the snapshot at `path` and the log's records after it, if that gives
/// exactly `checkpoint`; `None` (with the reason logged) when there is no usable snapshot, so
/// that the caller refolds from seq 1. Returns the ledger, the snapshot's seq and the SHA-256
/// of the record at the checkpoint.
async fn resume(
    path: &Path,
    log: &EventLog,
    checkpoint: &fundflow_domain::Checkpoint,
    batch_max: usize,
) -> Result<Option<(Ledger, u64, Digest32)>, ProjectorError> {
    let started = Instant::now();
    let loaded = blocking("reading the fold's snapshot", {
        let path = path.to_owned();
        move || snapshot::load(&path)
    })
    .await?;
    let loaded = match loaded {
        Ok(Some(loaded)) => loaded,
        Ok(None) => {
            tracing::info!(path = %path.display(), "no snapshot of the fold; refolding the log from seq 1");
            return Ok(None);
        }
        Err(err) => {
            tracing::warn!(error = %err, "the fold's snapshot is refused; refolding the log from seq 1 (a new snapshot replaces it)");
            return Ok(None);
        }
    };
    let seq = loaded.ledger.last_seq();
    let read_took = started.elapsed();
    if seq > checkpoint.last_seq {
        tracing::warn!(
            snapshot_seq = seq,
            model_seq = checkpoint.last_seq,
            "the fold's snapshot is after the read model's checkpoint, so not of this model; refolding the log from seq 1"
        );
        return Ok(None);
    }
    // The log must still hold the record the snapshot ends on: a log replaced behind the
    // model's back is caught here, before a tail is folded onto a state it never gave.
    if seq > 0 {
        let matches = log
            .get(seq)
            .await?
            .is_some_and(|record| snapshot::record_digest(&record.bytes) == loaded.last_record);
        if !matches {
            tracing::warn!(
                snapshot_seq = seq,
                "the log's record at the fold snapshot's seq is not the one it was taken after; refolding the log from seq 1"
            );
            return Ok(None);
        }
    }
    let tail = checkpoint.last_seq - seq;
    let span = tracing::info_span!(
        "refold",
        from_seq = seq + 1,
        until_seq = checkpoint.last_seq
    );
    let ledger = refold(log, loaded.ledger, checkpoint.last_seq, batch_max)
        .instrument(span)
        .await?;
    if ledger.checkpoint() != *checkpoint {
        tracing::warn!(
            snapshot_seq = seq,
            model_seq = checkpoint.last_seq,
            log_digest = %hex::encode(ledger.log_digest()),
            model_log_digest = %hex::encode(checkpoint.log_digest),
            "the fold's snapshot and the log's tail do not give the read model's checkpoint; refolding the log from seq 1"
        );
        return Ok(None);
    }
    let last_record = if tail == 0 {
        loaded.last_record
    } else {
        match log.get(checkpoint.last_seq).await? {
            Some(record) => snapshot::record_digest(&record.bytes),
            None => return Ok(None),
        }
    };
    tracing::info!(
        snapshot_seq = seq,
        snapshot_bytes = loaded.bytes,
        tail,
        read = ?read_took,
        took = ?started.elapsed(),
        "resumed the fold from its snapshot and the log's tail; the read model's checkpoint agrees"
    );
    Ok(Some((ledger, seq, last_record)))
}

/// Refolds the log from seq 1 to `checkpoint` and checks the result against the model: the
/// same checkpoint, the same model digest, the same coarser cell levels.
async fn refold_and_verify(
    model: ReadModel,
    log: &EventLog,
    checkpoint: &fundflow_domain::Checkpoint,
    config: &ProjectorConfig,
    log_last_seq: u64,
) -> Result<(ReadModel, Ledger), ProjectorError> {
    // The log's length at start sizes the event index, so it does not rehash while it fills.
    let hint = usize::try_from(log_last_seq).unwrap_or(usize::MAX);
    let span = tracing::info_span!("refold", until_seq = checkpoint.last_seq);
    let ledger = refold(
        log,
        Ledger::with_capacity(hint),
        checkpoint.last_seq,
        config.batch_max,
    )
    .instrument(span)
    .await?;
    if ledger.checkpoint() != *checkpoint {
        return Err(ProjectorError::Mismatch(format!(
            "the log up to seq {} does not give the read model's checkpoint (log digest {} on file, {} from the log); rebuild the read model",
            checkpoint.last_seq,
            hex::encode(checkpoint.log_digest),
            hex::encode(ledger.log_digest()),
        )));
    }
    // A scan of the whole model and a digest of the whole state: not on the runtime.
    let (model, ledger, stored, refolded) = blocking("checking the read model", move || {
        let stored = model.state()?.model_digest();
        let refolded = ledger.model_digest();
        // The digest covers the Day cells; the coarser levels are checked apart.
        if stored == refolded {
            model.check_levels(&ledger)?;
        }
        Ok::<_, ProjectorError>((model, ledger, stored, refolded))
    })
    .await??;
    if stored != refolded {
        return Err(ProjectorError::Mismatch(format!(
            "the read model's state (model digest {}) differs from a refold of the log ({}); rebuild it",
            hex::encode(stored),
            hex::encode(refolded)
        )));
    }
    tracing::info!(seq = checkpoint.last_seq, model_digest = %hex::encode(refolded), "read model verified against the log");
    Ok((model, ledger))
}

/// Resolves when the stop channel says stop (never, without one).
async fn stop_requested(stop: &mut Option<watch::Receiver<bool>>) {
    match stop {
        Some(stop) => {
            let _ = stop.wait_for(|stopped| *stopped).await;
        }
        None => std::future::pending().await,
    }
}

/// How many batches the refold's reader may run ahead of its fold.
const REFOLD_BATCHES_AHEAD: usize = 64;

/// Batches the running projector's reader may read ahead of the fold thread.
const RUN_BATCHES_AHEAD: usize = 64;

/// Folds the log's records after `ledger`'s last seq, up to `until`, into `ledger`, reading with [`EventLog::read_range`]
/// (which waits out a stalled reader and fails on a gap) on the runtime while the fold runs on
/// the blocking pool.
async fn refold(
    log: &EventLog,
    ledger: Ledger,
    until: u64,
    batch_max: usize,
) -> Result<Ledger, ProjectorError> {
    let from = ledger.last_seq() + 1;
    if from > until {
        return Ok(ledger);
    }
    let (batches_tx, mut batches_rx) = mpsc::channel::<Vec<Record>>(REFOLD_BATCHES_AHEAD);
    let folding = tokio::task::spawn_blocking(move || {
        let mut ledger = ledger;
        while let Some(batch) = batches_rx.blocking_recv() {
            for record in &batch {
                apply(&mut ledger, record);
            }
            // The read model holds these records' rejections already.
            ledger.forget_rejected();
        }
        ledger
    });
    let mut records = log.read_range(from..=until).batch_max(batch_max);
    let read = async {
        while let Some(batch) = records.next_batch().await? {
            if batches_tx.send(batch).await.is_err() {
                break; // The fold stopped: its join says why.
            }
        }
        Ok::<(), LogError>(())
    }
    .await;
    // Closing the channel ends the fold, after the batches in hand.
    drop(batches_tx);
    let ledger = folding.await.map_err(|source| ProjectorError::TaskFailed {
        task: "the refold at start",
        source,
    })?;
    read?;
    Ok(ledger)
}

fn apply(ledger: &mut Ledger, record: &Record) -> Outcome {
    let source = Source {
        subject_partner: Some(&record.partner),
    };
    ledger.apply_from(record.seq, &record.bytes, source)
}

/// How long a reader may deliver nothing before the projector asks the log whether it should
/// have.
const STALL_CHECK_AFTER: Duration = Duration::from_secs(10);

/// Reads batches from `from_seq` on and sends them to the fold; reopens the reader from the
/// next unread sequence after any error, with backoff, for as long as the fold listens.
async fn read_batches(
    log: EventLog,
    from_seq: u64,
    config: ProjectorConfig,
    metrics: Arc<Metrics>,
    batches: mpsc::Sender<Vec<Record>>,
    mut stop: Option<watch::Receiver<bool>>,
) {
    let stopped = |stop: &Option<watch::Receiver<bool>>| stop.as_ref().is_some_and(|s| *s.borrow());
    let mut next_seq = from_seq;
    let mut backoff = READ_REOPEN_BACKOFF;
    while !stopped(&stop) {
        let mut reader = match log.reader(next_seq).await {
            Ok(reader) => reader,
            Err(err) => {
                metrics.read_errors.fetch_add(1, Ordering::Relaxed);
                metrics.reading.store(false, Ordering::Relaxed);
                tracing::warn!(error = %err, next_seq, backoff = ?backoff.delay(), "cannot open the log; retrying");
                backoff.wait().await;
                continue;
            }
        };
        metrics.reading.store(true, Ordering::Relaxed);
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            let next = tokio::select! {
                next = reader.next_batch(config.batch_max, config.read_wait) => next,
                () = stop_requested(&mut stop) => return,
            };
            match next {
                Ok(batch) if batch.is_empty() => {
                    // A reader can go quiet for good after its server died (a consumer whose
                    // state was on the lost node): when the log has records the reader does not
                    // deliver, a fresh reader from the next sequence repairs it.
                    if quiet_since.elapsed() < STALL_CHECK_AFTER {
                        continue;
                    }
                    quiet_since = tokio::time::Instant::now();
                    let last = tokio::time::timeout(STALL_CHECK_AFTER, log.last_seq()).await;
                    if let Ok(Ok(last)) = last
                        && last >= next_seq
                    {
                        metrics.read_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            next_seq,
                            log_last_seq = last,
                            "the reader delivers nothing while the log holds more; reopening"
                        );
                        break;
                    }
                }
                Ok(batch) => {
                    quiet_since = tokio::time::Instant::now();
                    backoff.reset();
                    // Records must come in order without going back; anything else is a reader
                    // fault, and a fresh reader from the next sequence repairs it (the batch
                    // goes with the faulty reader: the fresh one delivers its new records again).
                    if let Some(first) = batch.first()
                        && first.seq < next_seq
                    {
                        metrics.read_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(next_seq, got = first.seq, "the log went back; reopening");
                        break;
                    }
                    let last = batch.last().map_or(next_seq, |r| r.seq);
                    metrics.log_seq_seen.fetch_max(last, Ordering::Relaxed);
                    next_seq = last + 1;
                    if batches.send(batch).await.is_err() {
                        return; // The fold has stopped.
                    }
                }
                Err(err) => {
                    metrics.read_errors.fetch_add(1, Ordering::Relaxed);
                    metrics.reading.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %err, next_seq, backoff = ?backoff.delay(), "reading the log failed; reopening from the checkpoint");
                    backoff.wait().await;
                    break;
                }
            }
        }
    }
}
