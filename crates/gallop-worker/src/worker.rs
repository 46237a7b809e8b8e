//! The in-process worker: N slots that claim jobs from the store, fetch and decode their images,
//! run the engine on a blocking thread, store the MP4 and complete the row. Plus a sweeper that
//! deletes expired results and stale uploads.
//!
//! While the engine runs, the slot writes progress about once a second; each write renews the
//! lease and tells whether cancel was requested or the lease was lost, and the slot then raises
//! the engine's cancel flag, which the engine checks between steps.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gallop_api::{GenerationRequest, redact_secrets};
use gallop_engine::render::{RenderOptions, decode_request_images, image_field, render_video};
use gallop_engine::{EngineError, Progress, RunContext, discard_frames};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use gallop_fetch::{FetchPolicy, fetch_image};

mod upstream;

use crate::engines::EngineMap;
use crate::keys::KeyVault;
use crate::upstreams::UpstreamRoutes;
use gallop_storage::{Storage, StorageError, upload_id_of_uri};
use gallop_store::{Claim, Failure, JobStore, Lease, LeaseState, error_code};

#[derive(Clone)]
pub struct WorkerConfig {
    /// Jobs run at the same time in this process.
    pub concurrency: usize,
    /// A run longer than this is stopped and fails with code `timeout`.
    pub job_timeout: Duration,
    /// How often an idle slot looks for work when nothing woke it.
    pub poll_interval: Duration,
    /// Least time between two progress writes (each renews the lease; keep well under it).
    pub progress_interval: Duration,
    pub fetch: FetchPolicy,
    pub render: RenderOptions,
    /// Results are deleted this long after their job finished (the signed URL's lifetime).
    pub result_ttl: Duration,
    /// Uploads are deleted this long after they were uploaded; until then they serve any
    /// number of their account's jobs.
    pub upload_ttl: Duration,
    pub sweep_interval: Duration,
    /// Names this process in lease rows; slots append `-N`.
    pub worker_id: String,
    /// A lock file that marks the one worker process of a data directory; None uses the
    /// store's (`data-dir/worker.lock` for SQLite). The process that gets it knows every
    /// running lease is orphaned (the kernel drops the lock of a killed process) and requeues
    /// those jobs at once instead of waiting for their leases to expire. A process that cannot
    /// get it only recovers expired leases.
    pub exclusive_lock: Option<PathBuf>,
    /// Model ids served by an upstream Model Studio endpoint instead of a local engine.
    pub upstreams: UpstreamRoutes,
    /// Opens accounts' own upstream keys (BYOK); the server's vault.
    pub vault: Arc<KeyVault>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 1,
            job_timeout: Duration::from_secs(3600),
            poll_interval: Duration::from_millis(500),
            progress_interval: Duration::from_secs(1),
            fetch: FetchPolicy::default(),
            render: RenderOptions::default(),
            result_ttl: Duration::from_secs(gallop_storage::signing::DEFAULT_URL_TTL_SECS),
            upload_ttl: Duration::from_secs(gallop_storage::DEFAULT_UPLOAD_TTL_SECS),
            sweep_interval: Duration::from_secs(60),
            worker_id: format!("worker-{}", uuid::Uuid::new_v4().simple()),
            exclusive_lock: None,
            upstreams: UpstreamRoutes::default(),
            vault: Arc::new(KeyVault::ephemeral()),
        }
    }
}

/// Handle to the running worker slots and sweeper.
pub struct Worker {
    stop: watch::Sender<bool>,
    /// Held while the worker runs; see `WorkerConfig::exclusive_lock`.
    lock: Option<std::fs::File>,
    wake: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
}

/// What the slots share.
struct Shared {
    store: Arc<dyn JobStore>,
    storage: Storage,
    engines: EngineMap,
    config: WorkerConfig,
    wake: Arc<Notify>,
}

impl Worker {
    /// Starts `config.concurrency` slots and the sweeper on the current tokio runtime. Leases
    /// left expired by a previous process are recovered first (every claim does it too).
    pub fn spawn(
        store: Arc<dyn JobStore>,
        storage: Storage,
        engines: EngineMap,
        config: WorkerConfig,
    ) -> Worker {
        let (stop, _) = watch::channel(false);
        let wake = Arc::new(Notify::new());
        let lock_path = config
            .exclusive_lock
            .clone()
            .or_else(|| store.worker_lock_path());
        let lock = lock_path.as_deref().and_then(take_lock);
        // On a thread of its own: a store's calls block, and PostgreSQL's client refuses to
        // run on an async task (this is called from one).
        let orphaned = lock.is_some();
        let recovered = std::thread::scope(|scope| {
            scope
                .spawn(|| match orphaned {
                    true => store.recover_orphaned(),
                    false => store.recover_expired(),
                })
                .join()
                .expect("lease recovery does not panic")
        });
        match recovered {
            Ok(r) if r.requeued + r.failed > 0 => tracing::info!(
                requeued = r.requeued,
                failed = r.failed,
                "recovered jobs of a previous worker process"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("recovering leases: {e}"),
        }
        let shared = Arc::new(Shared {
            store,
            storage,
            engines,
            config,
            wake: wake.clone(),
        });
        let mut tasks = Vec::new();
        for slot in 0..shared.config.concurrency.max(1) {
            let worker_id = format!("{}-{slot}", shared.config.worker_id);
            tasks.push(tokio::spawn(slot_loop(
                shared.clone(),
                worker_id,
                stop.subscribe(),
            )));
        }
        tasks.push(tokio::spawn(wake_on_events(
            shared.clone(),
            stop.subscribe(),
        )));
        tasks.push(tokio::spawn(sweep_loop(shared, stop.subscribe())));
        Worker {
            stop,
            lock,
            wake,
            tasks,
        }
    }

    /// Makes idle slots look for work now (e.g. right after a submit).
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// Stops claiming, interrupts running jobs and gives them back to the queue (no attempt
    /// spent), then waits for every task to end.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        drop(self.lock);
    }
}

/// Takes `path`'s exclusive lock without waiting; None if another live process holds it.
fn take_lock(path: &Path) -> Option<std::fs::File> {
    let file = match std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("worker lock {}: {e}", path.display());
            return None;
        }
    };
    match file.try_lock() {
        Ok(()) => Some(file),
        Err(e) => {
            tracing::info!(
                "worker lock {} is held ({e}); another worker process runs on this data directory",
                path.display()
            );
            None
        }
    }
}

async fn slot_loop(shared: Arc<Shared>, worker_id: String, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let store = shared.store.clone();
        let id = worker_id.clone();
        let claimed = tokio::task::spawn_blocking(move || store.claim(&id)).await;
        match claimed {
            Ok(Ok(Some(claim))) => {
                run_job(&shared, claim, &mut stop).await;
                continue;
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(worker = %worker_id, "claim failed: {e}"),
            Err(e) => tracing::error!(worker = %worker_id, "claim panicked: {e}"),
        }
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(shared.config.poll_interval) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Any job write (a submit among them) wakes idle slots; a write that ended a job (here or
/// through a cancel of a queued job) forgets the inline (`data:`) inputs in its row. Uploaded
/// inputs stay: an upload serves any number of jobs until the sweeper deletes it at its expiry.
async fn wake_on_events(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    use tokio::sync::broadcast::error::RecvError;
    let mut events = shared.store.subscribe();
    loop {
        let id = tokio::select! {
            got = events.recv() => match got {
                Ok(id) => id,
                Err(RecvError::Lagged(_)) => {
                    shared.wake.notify_waiters();
                    continue;
                }
                Err(RecvError::Closed) => return,
            },
            _ = stop.changed() => return,
        };
        shared.wake.notify_waiters();
        let store = shared.store.clone();
        if let Ok(Ok(Some(job))) = tokio::task::spawn_blocking(move || store.get(&id)).await
            && job.status.is_terminal()
        {
            // Changes the row only once (the next event finds nothing inline), so no loop.
            let store = shared.store.clone();
            match tokio::task::spawn_blocking(move || store.forget_inputs(&job.id)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!("forgetting inline inputs: {e}"),
                Err(e) => tracing::warn!("forgetting inline inputs panicked: {e}"),
            }
        }
    }
}

async fn sweep_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(e) = sweep_once(&shared.store, &shared.storage, &shared.config).await {
            tracing::warn!("sweeper: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(shared.config.sweep_interval) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Why a sweep stopped early (the next sweep starts over).
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] gallop_store::StoreError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Deletes results older than `result_ttl` (object first, then the row's pointer) and uploads
/// older than `upload_ttl`; recovers expired leases. Returns how many results were deleted.
pub async fn sweep_once(
    store: &Arc<dyn JobStore>,
    storage: &Storage,
    config: &WorkerConfig,
) -> Result<u32, SweepError> {
    let s = store.clone();
    let ttl_ms = config.result_ttl.as_millis() as i64;
    let expired = tokio::task::spawn_blocking(move || {
        s.recover_expired()?;
        s.expired_results(ttl_ms, 500)
    })
    .await??;
    let mut deleted = 0;
    for job_id in expired {
        storage.delete_job_results(&job_id).await?;
        let s = store.clone();
        tokio::task::spawn_blocking(move || {
            s.forget_inputs(&job_id)?;
            s.forget_result(&job_id)
        })
        .await??;
        deleted += 1;
    }
    storage
        .sweep_uploads(config.upload_ttl.as_millis() as i64)
        .await?;
    Ok(deleted)
}

/// Why the engine's cancel flag went up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    CancelRequested,
    LeaseLost,
    TimedOut,
    Shutdown,
}

async fn run_job(shared: &Arc<Shared>, claim: Claim, stop: &mut watch::Receiver<bool>) {
    let lease = claim.lease.clone();
    let job = claim.job;
    tracing::info!(job = %job.id, attempt = lease.attempt, "running");
    let route = gallop_api::ModelId::parse(&job.model)
        .and_then(|m| shared.config.upstreams.route_for(m))
        .cloned();
    let ending = match route {
        Some(route) => upstream::attempt(shared, &lease, &job, &route, stop).await,
        None => attempt(shared, &lease, &job.account, job.request.clone(), stop).await,
    };
    let store = shared.store.clone();
    let lease2 = lease.clone();
    let written = match &ending {
        Ending::Completed | Ending::Lost => Ok(Ok(true)),
        Ending::Failed(f) => {
            let f = f.clone();
            tokio::task::spawn_blocking(move || store.fail(&lease2, &f)).await
        }
        Ending::Cancelled => {
            tokio::task::spawn_blocking(move || store.finish_cancelled(&lease2)).await
        }
        Ending::Released => tokio::task::spawn_blocking(move || store.release(&lease2)).await,
    };
    match written {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(job = %job.id, "recording the end of the attempt: {e}"),
        Err(e) => tracing::error!(job = %job.id, "recording the end of the attempt panicked: {e}"),
    }
    tracing::info!(job = %job.id, attempt = lease.attempt, ending = ?ending, "attempt ended");
}

#[derive(Debug)]
enum Ending {
    Completed,
    Failed(Failure),
    Cancelled,
    Released,
    Lost,
}

async fn attempt(
    shared: &Arc<Shared>,
    lease: &Lease,
    account: &str,
    request_json: serde_json::Value,
    stop: &mut watch::Receiver<bool>,
) -> Ending {
    let started = Instant::now();
    let mut request: GenerationRequest = match serde_json::from_value(request_json) {
        Ok(r) => r,
        Err(e) => {
            return final_failure(
                error_code::BAD_INPUT,
                format!("stored request is not valid: {e}"),
            );
        }
    };
    // Submits for a model nothing serves are refused, but a job queued under another
    // configuration may meet a server that no longer serves its model.
    let Some(engine) = shared.engines.engine_for(request.model).cloned() else {
        let why = shared.engines.refusal(request.model).unwrap_or_default();
        return final_failure(error_code::BAD_INPUT, why);
    };
    // Fetch inputs.
    let mut bytes = Vec::with_capacity(request.images.len());
    for (i, uri) in request.images.iter().enumerate() {
        let field = image_field(request.model, i);
        let got = match upload_id_of_uri(uri) {
            Some(id) => read_upload(shared, account, &field, id).await,
            None => fetch_image(uri, &shared.config.fetch)
                .await
                .map_err(|e| final_failure(error_code::BAD_INPUT, format!("{field}: {e}"))),
        };
        match got {
            Ok(b) => bytes.push(b),
            Err(ending) => return ending,
        }
        if *stop.borrow() {
            return Ending::Released;
        }
        // A fetch may take its whole timeout: keep the lease (and notice a cancel) per image.
        match renew(shared, lease).await {
            Ok(LeaseState::Held {
                cancel_requested: false,
            }) => {}
            Ok(LeaseState::Held {
                cancel_requested: true,
            }) => return Ending::Cancelled,
            Ok(LeaseState::Lost) => return Ending::Lost,
            Err(msg) => return retryable(msg),
        }
    }
    // Seed and engine are recorded before the run so a client sees them while it runs.
    let seed = request
        .seed
        .unwrap_or_else(gallop_engine::render::random_seed);
    request.seed = Some(seed);
    // The windows depend on the frame count and rate alone, which the request fixes before
    // any image is decoded (the first image only sets the aspect).
    let engine_json =
        serde_json::to_value(engine.run_info(request.geometry(None))).unwrap_or_default();
    let store = shared.store.clone();
    let l = lease.clone();
    match tokio::task::spawn_blocking(move || store.set_run_info(&l, seed, &engine_json)).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => return Ending::Lost,
        Ok(Err(e)) => return retryable(format!("job store: {e}")),
        Err(e) => return retryable(format!("job store panicked: {e}")),
    }

    let cancel = Arc::new(AtomicBool::new(false));
    let (progress_tx, mut progress_rx) = watch::channel(None::<Progress>);
    let options = shared.config.render.clone();
    let run_cancel = cancel.clone();
    let mut run = tokio::task::spawn_blocking(move || {
        let images = decode_request_images(request.model, &bytes)
            .map_err(|e| RunError::BadImage(e.to_string()))?;
        drop(bytes);
        let mut on_progress = |p: Progress| {
            progress_tx.send_replace(Some(p));
        };
        let mut discard = discard_frames;
        let ctx = RunContext::new(&mut on_progress, &run_cancel, &mut discard);
        render_video(engine.as_ref(), &request, &images, &options, ctx).map_err(RunError::Engine)
    });

    // Supervise the run: progress + lease renewal, cancel, time limit, shutdown.
    let mut stop_reason = None;
    let mut tick = tokio::time::interval(shared.config.progress_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            done = &mut run => break done,
            _ = tick.tick() => {
                if stop_reason.is_some() {
                    continue;
                }
                if started.elapsed() > shared.config.job_timeout {
                    stop_reason = Some(StopReason::TimedOut);
                    cancel.store(true, Ordering::Relaxed);
                    continue;
                }
                let p = (*progress_rx.borrow_and_update()).unwrap_or(Progress { step: 0, total: 0 });
                let store = shared.store.clone();
                let l = lease.clone();
                let state = tokio::task::spawn_blocking(move || store.progress(&l, p.step, p.total)).await;
                match state {
                    Ok(Ok(LeaseState::Held { cancel_requested: false })) => {}
                    Ok(Ok(LeaseState::Held { cancel_requested: true })) => {
                        stop_reason = Some(StopReason::CancelRequested);
                        cancel.store(true, Ordering::Relaxed);
                    }
                    Ok(Ok(LeaseState::Lost)) => {
                        stop_reason = Some(StopReason::LeaseLost);
                        cancel.store(true, Ordering::Relaxed);
                    }
                    // A store hiccup: keep running, the next tick retries (the lease is long).
                    Ok(Err(e)) => tracing::warn!(job = %lease.job_id, "progress write: {e}"),
                    Err(e) => tracing::warn!(job = %lease.job_id, "progress write panicked: {e}"),
                }
            }
            _ = stop.changed() => {
                if stop_reason.is_none() {
                    stop_reason = Some(StopReason::Shutdown);
                    cancel.store(true, Ordering::Relaxed);
                }
            }
        }
    };

    match (result, stop_reason) {
        // The video exists: keep it unless the client cancelled or another attempt took over,
        // even if a shutdown or the time limit arrived as it finished.
        (Ok(Ok(output)), None | Some(StopReason::Shutdown | StopReason::TimedOut)) => {
            store_result(shared, lease, output.mp4).await
        }
        (_, Some(StopReason::LeaseLost)) => Ending::Lost,
        (_, Some(StopReason::Shutdown)) => Ending::Released,
        (_, Some(StopReason::TimedOut)) => final_failure(
            error_code::TIMEOUT,
            format!(
                "the job ran longer than the time limit of {} s",
                shared.config.job_timeout.as_secs_f32()
            ),
        ),
        (_, Some(StopReason::CancelRequested)) => Ending::Cancelled,
        (Ok(Err(RunError::BadImage(msg))), None) => final_failure(error_code::BAD_INPUT, msg),
        (Ok(Err(RunError::Engine(e))), None) => engine_failure(e),
        (Err(e), None) => retryable(format!("engine panicked: {e}")),
    }
}

/// An uploaded input of `account`; a missing one (expired, or another account's) fails the
/// job naming `field`.
async fn read_upload(
    shared: &Shared,
    account: &str,
    field: &str,
    id: &str,
) -> Result<Vec<u8>, Ending> {
    match shared.storage.read_upload(account, id).await {
        Ok(b) => Ok(b),
        Err(StorageError::NotFound(_) | StorageError::Invalid(_)) => Err(final_failure(
            error_code::BAD_INPUT,
            format!(
                "{field}: upload {id} not found (an upload is kept for {} h after it was \
                 uploaded, and only its own account can use it)",
                shared.config.upload_ttl.as_secs() / 3600
            ),
        )),
        Err(e) => Err(retryable(format!("reading upload {id}: {e}"))),
    }
}

/// Stores the attempt's video and completes the job with it.
async fn store_result(shared: &Shared, lease: &Lease, mp4: Vec<u8>) -> Ending {
    let key = match shared
        .storage
        .put_result(&lease.job_id, lease.attempt, mp4)
        .await
    {
        Ok(k) => k,
        Err(e) => return retryable(format!("storing the result: {e}")),
    };
    match complete_while_unavailable(shared, lease, &key).await {
        Ok(Ok(true)) => Ending::Completed,
        Ok(Ok(false)) => {
            // Another attempt owns the job now: our upload must never be served.
            let _ = shared.storage.delete(&key).await;
            Ending::Lost
        }
        Ok(Err(e)) => retryable(format!("job store: {e}")),
        Err(e) => retryable(format!("job store panicked: {e}")),
    }
}

/// Longest a finished result waits for the job store to come back before the attempt is given
/// up (its lease then expires and the job runs again).
const COMPLETE_PATIENCE: Duration = Duration::from_secs(600);

/// Marks the job completed, trying again while the store is unreachable: the video is made and
/// stored, and a write fenced by the lease is safe to repeat (a stale one changes nothing).
async fn complete_while_unavailable(
    shared: &Shared,
    lease: &Lease,
    key: &str,
) -> Result<Result<bool, gallop_store::StoreError>, tokio::task::JoinError> {
    let give_up = Instant::now() + COMPLETE_PATIENCE;
    let mut pause = Duration::from_millis(250);
    loop {
        let (store, l, k) = (shared.store.clone(), lease.clone(), key.to_string());
        let written = tokio::task::spawn_blocking(move || store.complete(&l, &k)).await;
        match written {
            Ok(Err(gallop_store::StoreError::Unavailable(e))) if Instant::now() < give_up => {
                tracing::warn!(job = %lease.job_id, "job store unavailable, result kept: {e}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(10));
            }
            other => return other,
        }
    }
}

/// What the worker does about an engine's error, by its kind: an input the engine rejects and
/// an exhausted resource end the job; the rest may pass on another attempt.
fn engine_failure(e: EngineError) -> Ending {
    match e {
        EngineError::BadInput { .. } => final_failure(error_code::BAD_INPUT, e.to_string()),
        EngineError::ResourceExhausted(_) => {
            final_failure(error_code::RESOURCE_EXHAUSTED, format!("engine: {e}"))
        }
        EngineError::Cancelled => retryable("engine stopped unasked".into()),
        EngineError::Sink(_) | EngineError::Transient(_) | EngineError::Internal(_) => {
            retryable(format!("engine: {e}"))
        }
    }
}

enum RunError {
    BadImage(String),
    Engine(EngineError),
}

/// The message is what the job record, its views and the logs show: secrets a client put in
/// an image uri (`user:pass@`, `?token=`) are redacted here, once for all of them.
fn final_failure(code: &str, message: String) -> Ending {
    Ending::Failed(Failure::Final {
        code: code.to_string(),
        message: redact_secrets(&message),
    })
}

fn retryable(message: String) -> Ending {
    Ending::Failed(Failure::Retryable {
        code: error_code::INTERNAL.to_string(),
        message: redact_secrets(&message),
    })
}

/// A progress write of 0/0 that only renews the lease.
async fn renew(shared: &Arc<Shared>, lease: &Lease) -> Result<LeaseState, String> {
    let store = shared.store.clone();
    let l = lease.clone();
    match tokio::task::spawn_blocking(move || store.progress(&l, 0, 0)).await {
        Ok(Ok(state)) => Ok(state),
        Ok(Err(e)) => Err(format!("job store: {e}")),
        Err(e) => Err(format!("job store panicked: {e}")),
    }
}
