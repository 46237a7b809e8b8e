//! The durable job store: the trait every backend implements (SQLite now, PostgreSQL later) and
//! the types that cross it. Methods are synchronous (blocking); async callers use `spawn_blocking`.
//!
//! Rules every backend keeps (see `design/architecture.md`, "Job semantics"):
//! - a claim sets a lease and bumps `attempt`; every worker write names worker id + attempt and a
//!   write from a stale worker changes nothing (the method returns `false` / `LeaseState::Lost`);
//! - an expired lease puts the job back in the queue after a backoff, or fails it after the last
//!   attempt; times come from the database clock;
//! - the queue serves the least busy account first, then priority, then age.

use serde::Serialize;

#[cfg(feature = "contract")]
pub mod contract;
mod rules;

pub use rules::{hash_token, new_token, retry_after_secs};

/// Lifecycle of a job. Terminal: completed, failed, cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// Error codes stored on failed jobs (strings so clients can match them).
pub mod error_code {
    /// The job's lease expired `max_attempts` times (worker died or hung).
    pub const INTERRUPTED: &str = "interrupted";
    /// The request cannot succeed (bad image, unreachable uri...): not retried.
    pub const BAD_INPUT: &str = "bad_input";
    /// The per-job time limit passed.
    pub const TIMEOUT: &str = "timeout";
    /// Something unexpected on our side; retried until the last attempt.
    pub const INTERNAL: &str = "internal";
    /// A model routed upstream had no key, or upstream refused the key: not retried.
    pub const UPSTREAM_KEY: &str = "upstream_key";
    /// Upstream stayed unreachable (or kept failing) past the worker's patience.
    pub const UPSTREAM_UNAVAILABLE: &str = "upstream_unavailable";
    /// Upstream failed, refused or lost the task for a reason other than the input.
    pub const UPSTREAM_FAILED: &str = "upstream_failed";
    /// The engine ran out of memory or another resource: not retried, the same run would again.
    pub const RESOURCE_EXHAUSTED: &str = "resource_exhausted";
}

/// What an inline image uri of an ended job's request becomes.
pub const DELETED_INLINE_INPUT: &str = "data:,deleted%20when%20the%20job%20ended";

/// What an ended job's stored request becomes once its inputs are forgotten (see
/// [`JobStore::forget_inputs`]): inline images replaced by [`DELETED_INLINE_INPUT`], credentials
/// redacted in the other uris. None when there is nothing to forget.
pub fn request_without_inputs(request: &serde_json::Value) -> Option<serde_json::Value> {
    let mut request = request.clone();
    let mut changed = false;
    if let Some(images) = request.get_mut("images").and_then(|v| v.as_array_mut()) {
        for image in images {
            let Some(uri) = image.as_str() else {
                continue;
            };
            let forgotten = if uri.starts_with("data:") {
                DELETED_INLINE_INPUT.to_string()
            } else {
                // Credentials were needed to fetch the image, and no longer are.
                gallop_api::redact_uri(uri)
            };
            if forgotten != uri {
                *image = serde_json::Value::from(forgotten);
                changed = true;
            }
        }
    }
    changed.then_some(request)
}

/// One job row as the store holds it. Times are unix milliseconds from the database clock.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub id: String,
    pub account: String,
    pub model: String,
    /// The validated request (`gallop_api::GenerationRequest`) as JSON.
    pub request: serde_json::Value,
    pub status: JobStatus,
    pub priority: i64,
    /// Number of claims so far (0 while never claimed).
    pub attempt: u32,
    pub max_attempts: u32,
    pub cancel_requested: bool,
    pub progress_step: u32,
    pub progress_total: u32,
    pub seed: Option<u32>,
    /// `gallop_engine::EngineInfo` as JSON, once a worker started the engine.
    pub engine: Option<serde_json::Value>,
    /// Object-store key of the MP4 once completed.
    pub result_key: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// Bumped by every write to the row: SSE event ids (`Last-Event-ID`) can use it.
    pub version: i64,
    pub updated_at_ms: i64,
}

/// What `submit` needs to create a job.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub account: String,
    pub model: String,
    pub request: serde_json::Value,
    pub priority: i64,
    /// None: the store's default.
    pub max_attempts: Option<u32>,
    pub idempotency: Option<Idempotency>,
}

/// `Idempotency-Key` plus a hash of the body it came with (the caller picks the hash, e.g. SHA-256 hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    pub body_hash: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    Created(Job),
    /// Same idempotency key, same body: the job made the first time.
    Existing(Job),
}

impl Submitted {
    pub fn job(&self) -> &Job {
        match self {
            Submitted::Created(j) | Submitted::Existing(j) => j,
        }
    }
}

/// Limits and timings of a store. All durations in milliseconds (small values make tests quick).
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Queued jobs over all accounts; past it submit answers `Full`.
    pub max_queued_total: u32,
    /// Queued jobs of one account; past it submit answers `Full`.
    pub max_queued_per_account: u32,
    /// Running jobs of one account; a claim skips accounts at the cap.
    pub max_running_per_account: u32,
    pub default_max_attempts: u32,
    /// How long a claim (or a progress write) keeps the job.
    pub lease_ms: i64,
    /// Backoff after an interrupted attempt n: `backoff_base_ms * 2^(n-1)`, capped at `backoff_max_ms`.
    pub backoff_base_ms: i64,
    pub backoff_max_ms: i64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_queued_total: 1000,
            max_queued_per_account: 100,
            max_running_per_account: 4,
            default_max_attempts: 3,
            lease_ms: 60_000,
            backoff_base_ms: 5_000,
            backoff_max_ms: 300_000,
        }
    }
}

/// The identity of one claimed attempt; every worker write carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job_id: String,
    pub worker_id: String,
    pub attempt: u32,
}

/// A job handed to a worker.
#[derive(Debug, Clone)]
pub struct Claim {
    pub lease: Lease,
    pub job: Job,
}

/// Answer to a progress write / lease renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Still ours; `cancel_requested` tells the worker to stop between steps.
    Held { cancel_requested: bool },
    /// Another attempt owns the job (or it ended): stop and write nothing.
    Lost,
}

/// How a worker ends an attempt that did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Back to the queue with backoff, or failed after the last attempt.
    Retryable { code: String, message: String },
    /// Failed now.
    Final { code: String, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Was queued: cancelled at once.
    Cancelled,
    /// Is running: the worker stops at its next step.
    Requested,
    /// Already completed, failed or cancelled: nothing changed.
    AlreadyEnded(JobStatus),
    /// No such job for this account.
    NotFound,
}

/// What `recover_expired` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    pub requeued: u32,
    pub failed: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Queue limits reached: http answers 429 (code 3040) with Retry-After.
    #[error("queue is full: {reason}")]
    Full {
        reason: String,
        retry_after_secs: u32,
    },
    /// Same `Idempotency-Key`, different body: http answers 422.
    #[error("Idempotency-Key {key} was already used with a different body")]
    IdempotencyConflict { key: String },
    /// The database cannot take a write now (locked by another process past the busy
    /// timeout, or its disk is full) or cannot be reached at all (PostgreSQL down, restarting,
    /// the network): http answers 503 with Retry-After, the worker retries.
    #[error("job store unavailable: {0}")]
    Unavailable(String),
    #[error("job store: {0}")]
    Backend(String),
}

#[cfg(feature = "rusqlite")]
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked, DiskFull};
        match e.sqlite_error_code() {
            Some(DatabaseBusy | DatabaseLocked) => StoreError::Unavailable(format!(
                "the database (gallop.db) is locked by another process ({e})"
            )),
            Some(DiskFull) => StoreError::Unavailable(format!(
                "the disk holding the database (gallop.db) is full ({e})"
            )),
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The durable job store. Every method is one transaction.
pub trait JobStore: Send + Sync {
    // ---- jobs, client side ----

    /// Creates a queued job (or returns the existing one for a repeated idempotency key).
    fn submit(&self, job: NewJob) -> StoreResult<Submitted>;
    /// A job by id, whatever its account (workers, signed file downloads).
    fn get(&self, id: &str) -> StoreResult<Option<Job>>;
    /// A job by id only if it belongs to `account` (other accounts see "not found").
    fn get_for_account(&self, account: &str, id: &str) -> StoreResult<Option<Job>>;
    /// The account's jobs, newest first; `before_id` pages (jobs created before that one).
    fn list(&self, account: &str, limit: u32, before_id: Option<&str>) -> StoreResult<Vec<Job>>;
    /// 1-based position among queued jobs (priority, then age); None unless queued.
    fn queue_position(&self, id: &str) -> StoreResult<Option<u32>>;
    fn cancel(&self, account: &str, id: &str) -> StoreResult<CancelOutcome>;
    /// Jobs per status, and how many queued: for metrics and readiness.
    fn count_by_status(&self) -> StoreResult<Vec<(JobStatus, u64)>>;

    // ---- jobs, worker side ----

    /// Recovers expired leases, then claims the next job (fair order) for `worker_id`.
    fn claim(&self, worker_id: &str) -> StoreResult<Option<Claim>>;
    /// Records the seed and engine in force once the attempt starts. False if the lease is lost.
    fn set_run_info(
        &self,
        lease: &Lease,
        seed: u32,
        engine: &serde_json::Value,
    ) -> StoreResult<bool>;
    /// Writes progress and renews the lease.
    fn progress(&self, lease: &Lease, step: u32, total: u32) -> StoreResult<LeaseState>;
    /// Marks the job completed, pointing at `result_key` (already written). False if stale.
    fn complete(&self, lease: &Lease, result_key: &str) -> StoreResult<bool>;
    fn fail(&self, lease: &Lease, failure: &Failure) -> StoreResult<bool>;
    /// Ends a running job whose cancel was requested. False if stale.
    fn finish_cancelled(&self, lease: &Lease) -> StoreResult<bool>;
    /// Gives a running job back to the queue at once without spending an attempt (graceful
    /// shutdown). False if stale.
    fn release(&self, lease: &Lease) -> StoreResult<bool>;
    /// Expired leases back to queued (with backoff) or failed after the last attempt.
    fn recover_expired(&self) -> StoreResult<Recovered>;
    /// Treats EVERY running job's lease as expired. Only for a caller that knows no live worker
    /// holds a lease (it holds the data directory's worker lock), so a restarted process need
    /// not wait out the leases of the one that died.
    fn recover_orphaned(&self) -> StoreResult<Recovered>;
    /// Ids of ended jobs (any terminal status: dead attempts may have left objects too) that
    /// finished before `now - age_ms` and whose results were not swept yet. The sweeper deletes
    /// their objects, then calls `forget_result`.
    fn expired_results(&self, age_ms: i64, limit: u32) -> StoreResult<Vec<String>>;
    /// Marks a job's results as deleted (`result_key` becomes None).
    fn forget_result(&self, job_id: &str) -> StoreResult<()>;
    /// Once a job has ended, replaces the inline (`data:`) image uris of its stored request with
    /// [`DELETED_INLINE_INPUT`] and redacts credentials in the others (`user:pass@`, `?token=`):
    /// inputs do not outlive their job. True if it changed the row (false for a job still queued
    /// or running, or with nothing left to forget).
    fn forget_inputs(&self, job_id: &str) -> StoreResult<bool>;

    // ---- tokens ----

    /// A new random token for `account`; only its SHA-256 hash is stored. Shown once.
    fn create_token(&self, account: &str) -> StoreResult<String>;
    fn account_for_token(&self, token: &str) -> StoreResult<Option<String>>;
    fn token_count(&self) -> StoreResult<u64>;

    // ---- accounts' own upstream keys (sealed by `keys::KeyVault`; never in the clear) ----

    /// Stores (or replaces) `account`'s sealed key for `provider`.
    fn put_provider_key(&self, account: &str, provider: &str, sealed: &[u8]) -> StoreResult<()>;
    fn provider_key(&self, account: &str, provider: &str) -> StoreResult<Option<Vec<u8>>>;
    /// True if there was one.
    fn delete_provider_key(&self, account: &str, provider: &str) -> StoreResult<bool>;

    // ---- change notification ----

    /// Wakes on every write to a job (the job id); SSE re-reads the row. Lagging receivers
    /// should simply re-read.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String>;

    // ---- health ----

    /// Cheaply checks the database answers (for `/readyz`); `StoreError::Unavailable` when it
    /// cannot be reached. A local file needs no check.
    fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    // ---- process coordination ----

    /// A lock file whose holder is the one worker process of this store (see
    /// `WorkerConfig::exclusive_lock`), when the backend lives on one machine. None for a shared
    /// database, where only lease expiry can tell a dead worker.
    fn worker_lock_path(&self) -> Option<std::path::PathBuf> {
        None
    }
}
