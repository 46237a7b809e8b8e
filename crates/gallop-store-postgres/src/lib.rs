//! The job store on PostgreSQL: one queue for any number of API and worker processes on any
//! number of machines. Same rules as the SQLite store (the `gallop_store::contract` suite runs
//! against both):
//! - every method is one transaction; times come from the database (`gallop_now_ms()`), never
//!   from a process's clock;
//! - worker writes are fenced by worker id + attempt (`UPDATE ... WHERE lease_owner = $ AND
//!   attempt = $`): a stale worker changes nothing;
//! - a claim recovers expired leases, then takes the next job of the least busy account (then
//!   priority, then age) with `FOR UPDATE SKIP LOCKED`;
//! - every write to a job NOTIFYs its id in the same transaction (a trigger), and a listening
//!   thread feeds [`JobStore::subscribe`], so events cross processes.
//!
//! Methods block (a pooled synchronous client): async callers use `spawn_blocking`. Dropping a
//! store is safe anywhere (its connections close on a thread of their own).

mod listen;
mod off_thread;
mod schema;

use std::time::Duration;

use gallop_store::*;
use postgres::error::SqlState;
use postgres::{NoTls, Row, Transaction};
use r2d2_postgres::PostgresConnectionManager;
use tokio::sync::broadcast;

pub use schema::latest_version as schema_version;

/// Connections per store handle: a few concurrent polls and worker writes.
const POOL_SIZE: u32 = 8;
/// How long to wait for a connection (a new one, or a free one of the pool) before the database
/// counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Advisory locks: gallop's namespace, then one key per kind of decision.
const LOCK_NAMESPACE: i32 = 0x6761_6c6c; // "gall"
const LOCK_MIGRATE: i32 = 1;
/// Submits check queue caps and idempotency keys before inserting: one at a time.
const LOCK_SUBMIT: i32 = 2;
/// Claims decide over the whole queue (least busy account first, running caps): one at a time,
/// a few milliseconds each. Rows are still taken with `SKIP LOCKED` so a claim never waits on a
/// job another transaction (a cancel, a progress write) holds.
const LOCK_CLAIM: i32 = 3;

/// Columns in the order `job_from_row` reads them.
const JOB_COLUMNS: &str = "id, account, model, request, status, priority, attempt, max_attempts, \
     cancel_requested, progress_step, progress_total, seed, engine, result_key, error_code, \
     error_message, created_ms, started_ms, finished_ms, version, updated_ms";

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

pub struct PostgresStore {
    /// Dropped off the async threads, so the store may be dropped anywhere.
    connections: off_thread::DropOffThread<Connections>,
    config: StoreConfig,
    events: broadcast::Sender<String>,
}

/// What holds connections to the database.
struct Connections {
    pool: Pool,
    /// Fills the store's `events` from LISTEN; stops when the store is dropped.
    _listener: listen::Listener,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`, or the key=value form),
    /// applies the migrations the database lacks and starts listening for job events.
    /// Blocks: from async code, call it in `spawn_blocking`.
    pub fn connect(url: &str, config: StoreConfig) -> StoreResult<PostgresStore> {
        let mut pg: postgres::Config = url.parse().map_err(|e| {
            StoreError::Backend(format!("database URL {}: {e}", redact_password(url)))
        })?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("gallop");
        }
        // A server that vanished without closing the socket is noticed within a minute.
        pg.keepalives_idle(Duration::from_secs(30));
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(CONNECT_TIMEOUT)
            // A broken connection is dropped when returned (`has_broken`); no query per checkout.
            .test_on_check_out(false)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build(PostgresConnectionManager::new(pg.clone(), NoTls))
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", redact_password(url))))?;
        schema::migrate(&mut *pool.get().map_err(pool_error)?)?;
        let (events, _) = broadcast::channel(1024);
        let listener = listen::Listener::start(pg, events.clone(), CONNECT_TIMEOUT)?;
        Ok(PostgresStore {
            connections: off_thread::DropOffThread::new(Connections {
                pool,
                _listener: listener,
            }),
            config,
            events,
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    fn client(&self) -> StoreResult<r2d2::PooledConnection<PostgresConnectionManager<NoTls>>> {
        self.connections.pool.get().map_err(pool_error)
    }

    /// Runs `f` in one transaction (READ COMMITTED; decisions over many rows take an advisory
    /// lock first).
    fn with_tx<T>(&self, f: impl FnOnce(&mut Transaction<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let mut client = self.client()?;
        let mut tx = client.transaction().db()?;
        let out = f(&mut tx)?;
        tx.commit().db()?;
        Ok(out)
    }

    /// One statement outside any explicit transaction (reads, single-row writes).
    fn query(
        &self,
        sql: &str,
        args: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> StoreResult<Vec<Row>> {
        self.client()?.query(sql, args).db()
    }

    /// One guarded worker write: applies only while `lease` still owns the running job. Returns
    /// the job's `cancel_requested` when it applied.
    fn lease_write(
        &self,
        lease: &Lease,
        set: &str,
        extra: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> StoreResult<Option<bool>> {
        let sql = format!(
            "UPDATE jobs SET {set}, version = version + 1, updated_ms = gallop_now_ms() \
             WHERE id = $1 AND status = 'running' AND lease_owner = $2 AND attempt = $3 \
             RETURNING cancel_requested"
        );
        let attempt = i64::from(lease.attempt);
        let mut args: Vec<&(dyn postgres::types::ToSql + Sync)> =
            vec![&lease.job_id, &lease.worker_id, &attempt];
        args.extend_from_slice(extra);
        let rows = self.query(&sql, &args)?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn recover(&self, all: bool) -> StoreResult<Recovered> {
        self.with_tx(|tx| recover_in(tx, &self.config, all))
    }
}

/// `?` for the client's errors: an unreachable database is `Unavailable`, the rest `Backend`.
trait Db<T> {
    fn db(self) -> StoreResult<T>;
}

impl<T> Db<T> for Result<T, postgres::Error> {
    fn db(self) -> StoreResult<T> {
        self.map_err(db_error)
    }
}

fn db_error(e: postgres::Error) -> StoreError {
    if is_unavailable(&e) {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

/// Errors that say "the database is not there right now" rather than "this is wrong": a closed
/// or failed connection, the server shutting down or starting, no connection slots.
fn is_unavailable(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                ]
                .contains(code)
        }
        // No server error at all: the connection itself failed (refused, reset, timed out).
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

fn pool_error(e: r2d2::Error) -> StoreError {
    StoreError::Unavailable(format!("no database connection: {e}"))
}

/// The URL for messages: without its password.
fn redact_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:REDACTED{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn u32_of(row: &Row, i: usize) -> StoreResult<u32> {
    let v: i64 = row.get(i);
    u32::try_from(v).map_err(|_| StoreError::Backend(format!("column {i}: {v} is not a u32")))
}

fn opt_u32_of(row: &Row, i: usize) -> StoreResult<Option<u32>> {
    let v: Option<i64> = row.get(i);
    v.map(|v| {
        u32::try_from(v).map_err(|_| StoreError::Backend(format!("column {i}: {v} is not a u32")))
    })
    .transpose()
}

fn json_of(text: &str) -> StoreResult<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| StoreError::Backend(format!("stored JSON: {e}")))
}

fn job_from_row(r: &Row) -> StoreResult<Job> {
    let status: String = r.get(4);
    let engine: Option<String> = r.get(12);
    Ok(Job {
        id: r.get(0),
        account: r.get(1),
        model: r.get(2),
        request: json_of(r.get(3))?,
        status: JobStatus::parse(&status)
            .ok_or_else(|| StoreError::Backend(format!("unknown job status {status:?}")))?,
        priority: r.get(5),
        attempt: u32_of(r, 6)?,
        max_attempts: u32_of(r, 7)?,
        cancel_requested: r.get(8),
        progress_step: u32_of(r, 9)?,
        progress_total: u32_of(r, 10)?,
        seed: opt_u32_of(r, 11)?,
        engine: engine.as_deref().map(json_of).transpose()?,
        result_key: r.get(13),
        error_code: r.get(14),
        error_message: r.get(15),
        created_at_ms: r.get(16),
        started_at_ms: r.get(17),
        finished_at_ms: r.get(18),
        version: r.get(19),
        updated_at_ms: r.get(20),
    })
}

fn get_job(tx: &mut Transaction<'_>, id: &str) -> StoreResult<Option<Job>> {
    tx.query_opt(
        &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"),
        &[&id],
    )
    .db()?
    .as_ref()
    .map(job_from_row)
    .transpose()
}

fn count(
    tx: &mut Transaction<'_>,
    sql: &str,
    args: &[&(dyn postgres::types::ToSql + Sync)],
) -> StoreResult<u64> {
    let n: i64 = tx.query_one(sql, args).db()?.get(0);
    Ok(n as u64)
}

fn lock(tx: &mut Transaction<'_>, key: i32) -> StoreResult<()> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_NAMESPACE, &key],
    )
    .db()?;
    Ok(())
}

/// `gallop_store::retry_after_secs` from this database's queue.
fn retry_after(tx: &mut Transaction<'_>, account: Option<&str>) -> StoreResult<u32> {
    let mean: Option<f64> = tx
        .query_one(
            "SELECT (AVG(finished_ms - started_ms) / 1000.0)::float8 FROM (SELECT finished_ms, \
             started_ms FROM jobs WHERE status = 'completed' AND started_ms IS NOT NULL \
             ORDER BY finished_ms DESC LIMIT 20) recent",
            &[],
        )
        .db()?
        .get(0);
    let running: Vec<f64> = tx
        .query(
            "SELECT ((gallop_now_ms() - started_ms) / 1000.0)::float8 FROM jobs \
             WHERE status = 'running'",
            &[],
        )
        .db()?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let ahead = match account {
        None => 0,
        Some(account) => count(
            tx,
            "SELECT COUNT(*) FROM jobs q, (SELECT priority AS p, seq AS s FROM jobs \
               WHERE account = $1 AND status = 'queued' ORDER BY priority DESC, seq LIMIT 1) me \
             WHERE q.status = 'queued' AND (q.priority > me.p OR (q.priority = me.p AND q.seq < me.s))",
            &[&account],
        )?,
    };
    Ok(retry_after_secs(mean, &running, ahead))
}

impl JobStore for PostgresStore {
    fn submit(&self, job: NewJob) -> StoreResult<Submitted> {
        let cfg = &self.config;
        let request = serde_json::to_string(&job.request)
            .map_err(|e| StoreError::Backend(format!("request JSON: {e}")))?;
        self.with_tx(|tx| {
            lock(tx, LOCK_SUBMIT)?;
            if let Some(idem) = &job.idempotency {
                let seen = tx
                    .query_opt(
                        "SELECT body_hash, id FROM jobs WHERE account = $1 AND idempotency_key = $2",
                        &[&job.account, &idem.key],
                    )
                    .db()?;
                if let Some(row) = seen {
                    let hash: Option<String> = row.get(0);
                    if hash.as_deref() != Some(idem.body_hash.as_str()) {
                        return Err(StoreError::IdempotencyConflict {
                            key: idem.key.clone(),
                        });
                    }
                    let id: String = row.get(1);
                    let existing = get_job(tx, &id)?
                        .ok_or_else(|| StoreError::Backend(format!("job {id} vanished")))?;
                    return Ok(Submitted::Existing(existing));
                }
            }
            // The account's own cap first: an account at it is told so even when the whole
            // queue is full too, and waits for its own jobs, not everyone's.
            let queued_account = count(
                tx,
                "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND account = $1",
                &[&job.account],
            )?;
            if queued_account >= cfg.max_queued_per_account as u64 {
                return Err(StoreError::Full {
                    reason: format!(
                        "account {} has {queued_account} queued jobs (limit {} per account)",
                        job.account, cfg.max_queued_per_account
                    ),
                    retry_after_secs: retry_after(tx, Some(&job.account))?,
                });
            }
            let queued_total = count(tx, "SELECT COUNT(*) FROM jobs WHERE status = 'queued'", &[])?;
            if queued_total >= cfg.max_queued_total as u64 {
                return Err(StoreError::Full {
                    reason: format!(
                        "{queued_total} jobs are queued (limit {})",
                        cfg.max_queued_total
                    ),
                    retry_after_secs: retry_after(tx, None)?,
                });
            }
            let id = uuid::Uuid::new_v4().to_string();
            let max_attempts = i64::from(job.max_attempts.unwrap_or(cfg.default_max_attempts).max(1));
            let (key, hash) = match &job.idempotency {
                Some(i) => (Some(i.key.as_str()), Some(i.body_hash.as_str())),
                None => (None, None),
            };
            let row = tx
                .query_one(
                    &format!(
                        "INSERT INTO jobs (id, account, model, request, status, priority, \
                         max_attempts, idempotency_key, body_hash, created_ms, updated_ms) \
                         VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, gallop_now_ms(), \
                         gallop_now_ms()) RETURNING {JOB_COLUMNS}"
                    ),
                    &[
                        &id,
                        &job.account,
                        &job.model,
                        &request,
                        &job.priority,
                        &max_attempts,
                        &key,
                        &hash,
                    ],
                )
                .db()?;
            Ok(Submitted::Created(job_from_row(&row)?))
        })
    }

    fn get(&self, id: &str) -> StoreResult<Option<Job>> {
        self.query(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"),
            &[&id],
        )?
        .first()
        .map(job_from_row)
        .transpose()
    }

    fn get_for_account(&self, account: &str, id: &str) -> StoreResult<Option<Job>> {
        Ok(self.get(id)?.filter(|j| j.account == account))
    }

    fn list(&self, account: &str, limit: u32, before_id: Option<&str>) -> StoreResult<Vec<Job>> {
        self.query(
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE account = $1 AND \
                 ($2::text IS NULL OR seq < (SELECT seq FROM jobs WHERE id = $2 AND account = $1)) \
                 ORDER BY seq DESC LIMIT $3"
            ),
            &[&account, &before_id, &i64::from(limit)],
        )?
        .iter()
        .map(job_from_row)
        .collect()
    }

    fn queue_position(&self, id: &str) -> StoreResult<Option<u32>> {
        let rows = self.query(
            "SELECT COUNT(*) FROM jobs q, \
               (SELECT priority AS p, seq AS s FROM jobs WHERE id = $1 AND status = 'queued') me \
             WHERE q.status = 'queued' AND (q.priority > me.p OR (q.priority = me.p AND q.seq <= me.s))",
            &[&id],
        )?;
        let n: i64 = rows.first().map(|r| r.get(0)).unwrap_or(0);
        Ok((n > 0).then_some(n as u32))
    }

    fn cancel(&self, account: &str, id: &str) -> StoreResult<CancelOutcome> {
        self.with_tx(|tx| {
            let row = tx
                .query_opt(
                    "SELECT status FROM jobs WHERE id = $1 AND account = $2 FOR UPDATE",
                    &[&id, &account],
                )
                .db()?;
            let Some(row) = row else {
                return Ok(CancelOutcome::NotFound);
            };
            let status: String = row.get(0);
            match JobStatus::parse(&status) {
                Some(JobStatus::Queued) => {
                    tx.execute(
                        "UPDATE jobs SET status = 'cancelled', finished_ms = gallop_now_ms(), \
                         version = version + 1, updated_ms = gallop_now_ms() WHERE id = $1",
                        &[&id],
                    )
                    .db()?;
                    Ok(CancelOutcome::Cancelled)
                }
                Some(JobStatus::Running) => {
                    tx.execute(
                        "UPDATE jobs SET cancel_requested = true, version = version + 1, \
                         updated_ms = gallop_now_ms() WHERE id = $1",
                        &[&id],
                    )
                    .db()?;
                    Ok(CancelOutcome::Requested)
                }
                Some(ended) => Ok(CancelOutcome::AlreadyEnded(ended)),
                None => Err(StoreError::Backend(format!(
                    "unknown job status {status:?}"
                ))),
            }
        })
    }

    fn count_by_status(&self) -> StoreResult<Vec<(JobStatus, u64)>> {
        let rows = self.query(
            "SELECT status, COUNT(*) FROM jobs GROUP BY status ORDER BY status",
            &[],
        )?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let n: i64 = r.get(1);
                JobStatus::parse(r.get(0)).map(|s| (s, n as u64))
            })
            .collect())
    }

    fn claim(&self, worker_id: &str) -> StoreResult<Option<Claim>> {
        let job = self.with_tx(|tx| {
            lock(tx, LOCK_CLAIM)?;
            recover_in(tx, &self.config, false)?;
            // Least busy account first (fewest running), then priority, then age; accounts at
            // their running cap wait.
            let next = tx
                .query_opt(
                    "SELECT j.id FROM jobs j \
                     LEFT JOIN (SELECT account, COUNT(*) AS n FROM jobs WHERE status = 'running' \
                                GROUP BY account) r ON r.account = j.account \
                     WHERE j.status = 'queued' AND j.not_before_ms <= gallop_now_ms() \
                       AND COALESCE(r.n, 0) < $1 \
                     ORDER BY COALESCE(r.n, 0) ASC, j.priority DESC, j.seq ASC \
                     LIMIT 1 FOR UPDATE OF j SKIP LOCKED",
                    &[&i64::from(self.config.max_running_per_account)],
                )
                .db()?;
            let Some(next) = next else {
                return Ok(None);
            };
            let id: String = next.get(0);
            let row = tx
                .query_one(
                    &format!(
                        "UPDATE jobs SET status = 'running', attempt = attempt + 1, \
                         lease_owner = $2, lease_expires_ms = gallop_now_ms() + $3, \
                         started_ms = gallop_now_ms(), cancel_requested = false, progress_step = 0, \
                         progress_total = 0, version = version + 1, updated_ms = gallop_now_ms() \
                         WHERE id = $1 RETURNING {JOB_COLUMNS}"
                    ),
                    &[&id, &worker_id, &self.config.lease_ms],
                )
                .db()?;
            job_from_row(&row).map(Some)
        })?;
        Ok(job.map(|job| Claim::new(job, worker_id)))
    }

    fn set_run_info(
        &self,
        lease: &Lease,
        seed: u32,
        engine: &serde_json::Value,
    ) -> StoreResult<bool> {
        let engine = engine.to_string();
        let applied = self.lease_write(
            lease,
            "seed = $4, engine = $5",
            &[&i64::from(seed), &engine],
        )?;
        Ok(applied.is_some())
    }

    fn progress(&self, lease: &Lease, step: u32, total: u32) -> StoreResult<LeaseState> {
        let applied = self.lease_write(
            lease,
            "progress_step = $4, progress_total = $5, lease_expires_ms = gallop_now_ms() + $6",
            &[&i64::from(step), &i64::from(total), &self.config.lease_ms],
        )?;
        Ok(match applied {
            Some(cancel_requested) => LeaseState::Held { cancel_requested },
            None => LeaseState::Lost,
        })
    }

    fn complete(&self, lease: &Lease, result_key: &str) -> StoreResult<bool> {
        let applied = self.lease_write(
            lease,
            "status = 'completed', result_key = $4, finished_ms = gallop_now_ms(), \
             lease_owner = NULL, lease_expires_ms = NULL, progress_step = progress_total, \
             error_code = NULL, error_message = NULL",
            &[&result_key],
        )?;
        Ok(applied.is_some())
    }

    fn fail(&self, lease: &Lease, failure: &Failure) -> StoreResult<bool> {
        let applied = match failure {
            Failure::Final { code, message } => self.lease_write(
                lease,
                "status = 'failed', error_code = $4, error_message = $5, \
                 finished_ms = gallop_now_ms(), lease_owner = NULL, lease_expires_ms = NULL",
                &[code, message],
            )?,
            Failure::Retryable { code, message } => {
                let backoff = self.config.backoff_ms(lease.attempt);
                let last = format!("{message} (attempt {})", lease.attempt);
                self.lease_write(
                    lease,
                    "status = CASE WHEN attempt >= max_attempts THEN 'failed' ELSE 'queued' END, \
                     finished_ms = CASE WHEN attempt >= max_attempts THEN gallop_now_ms() END, \
                     not_before_ms = gallop_now_ms() + $6, error_code = $4, error_message = $5, \
                     lease_owner = NULL, lease_expires_ms = NULL",
                    &[code, &last, &backoff],
                )?
            }
        };
        Ok(applied.is_some())
    }

    fn finish_cancelled(&self, lease: &Lease) -> StoreResult<bool> {
        let applied = self.lease_write(
            lease,
            "status = 'cancelled', finished_ms = gallop_now_ms(), lease_owner = NULL, \
             lease_expires_ms = NULL",
            &[],
        )?;
        Ok(applied.is_some())
    }

    fn release(&self, lease: &Lease) -> StoreResult<bool> {
        let applied = self.lease_write(
            lease,
            "status = 'queued', attempt = attempt - 1, not_before_ms = gallop_now_ms(), \
             lease_owner = NULL, lease_expires_ms = NULL, progress_step = 0, progress_total = 0",
            &[],
        )?;
        Ok(applied.is_some())
    }

    fn recover_expired(&self) -> StoreResult<Recovered> {
        self.recover(false)
    }

    fn recover_orphaned(&self) -> StoreResult<Recovered> {
        self.recover(true)
    }

    fn expired_results(&self, age_ms: i64, limit: u32) -> StoreResult<Vec<String>> {
        Ok(self
            .query(
                "SELECT id FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') \
                 AND NOT results_swept AND finished_ms < gallop_now_ms() - $1 \
                 ORDER BY finished_ms LIMIT $2",
                &[&age_ms, &i64::from(limit)],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn forget_result(&self, job_id: &str) -> StoreResult<()> {
        self.query(
            "UPDATE jobs SET result_key = NULL, results_swept = true, version = version + 1, \
             updated_ms = gallop_now_ms() WHERE id = $1",
            &[&job_id],
        )?;
        Ok(())
    }

    fn forget_inputs(&self, job_id: &str) -> StoreResult<bool> {
        self.with_tx(|tx| {
            let row = tx
                .query_opt(
                    "SELECT status, request FROM jobs WHERE id = $1 FOR UPDATE",
                    &[&job_id],
                )
                .db()?;
            let Some(row) = row else {
                return Ok(false);
            };
            if !JobStatus::parse(row.get(0)).is_some_and(JobStatus::is_terminal) {
                return Ok(false);
            }
            let Some(request) = request_without_inputs(&json_of(row.get(1))?) else {
                return Ok(false);
            };
            tx.execute(
                "UPDATE jobs SET request = $2, version = version + 1, \
                 updated_ms = gallop_now_ms() WHERE id = $1",
                &[&job_id, &request.to_string()],
            )
            .db()?;
            Ok(true)
        })
    }

    fn create_token(&self, account: &str) -> StoreResult<String> {
        let token = new_token();
        self.query(
            "INSERT INTO tokens (hash, account, created_ms) VALUES ($1, $2, gallop_now_ms())",
            &[&hash_token(&token), &account],
        )?;
        Ok(token)
    }

    fn account_for_token(&self, token: &str) -> StoreResult<Option<String>> {
        Ok(self
            .query(
                "SELECT account FROM tokens WHERE hash = $1",
                &[&hash_token(token)],
            )?
            .first()
            .map(|r| r.get(0)))
    }

    fn token_count(&self) -> StoreResult<u64> {
        let rows = self.query("SELECT COUNT(*) FROM tokens", &[])?;
        Ok(rows.first().map(|r| r.get::<_, i64>(0)).unwrap_or(0) as u64)
    }

    fn put_provider_key(&self, account: &str, provider: &str, sealed: &[u8]) -> StoreResult<()> {
        self.query(
            "INSERT INTO provider_keys (account, provider, sealed, updated_ms) \
             VALUES ($1, $2, $3, gallop_now_ms()) ON CONFLICT (account, provider) \
             DO UPDATE SET sealed = excluded.sealed, updated_ms = excluded.updated_ms",
            &[&account, &provider, &sealed],
        )?;
        Ok(())
    }

    fn provider_key(&self, account: &str, provider: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .query(
                "SELECT sealed FROM provider_keys WHERE account = $1 AND provider = $2",
                &[&account, &provider],
            )?
            .first()
            .map(|r| r.get(0)))
    }

    fn delete_provider_key(&self, account: &str, provider: &str) -> StoreResult<bool> {
        let n = self
            .client()?
            .execute(
                "DELETE FROM provider_keys WHERE account = $1 AND provider = $2",
                &[&account, &provider],
            )
            .db()?;
        Ok(n > 0)
    }

    fn subscribe(&self) -> broadcast::Receiver<String> {
        self.events.subscribe()
    }

    fn ping(&self) -> StoreResult<()> {
        self.client()?.simple_query("SELECT 1").db()?;
        Ok(())
    }
}

/// Expired leases (all running jobs' with `all`): a job whose cancel was requested ends
/// cancelled; otherwise back to the queue after a backoff, or failed once it used its last
/// attempt. Rows another transaction holds are left for the next recovery.
fn recover_in(tx: &mut Transaction<'_>, config: &StoreConfig, all: bool) -> StoreResult<Recovered> {
    let expired = tx
        .query(
            "SELECT id, attempt, max_attempts, cancel_requested FROM jobs \
             WHERE status = 'running' AND ($1 OR lease_expires_ms < gallop_now_ms()) \
             FOR UPDATE SKIP LOCKED",
            &[&all],
        )
        .db()?;
    let mut out = Recovered::default();
    for row in &expired {
        let id: &str = row.get(0);
        let attempt = u32_of(row, 1)?;
        let max_attempts = u32_of(row, 2)?;
        let cancel_requested: bool = row.get(3);
        let clear = "lease_owner = NULL, lease_expires_ms = NULL, version = version + 1, \
                     updated_ms = gallop_now_ms()";
        if cancel_requested {
            tx.execute(
                &format!(
                    "UPDATE jobs SET status = 'cancelled', finished_ms = gallop_now_ms(), {clear} \
                     WHERE id = $1"
                ),
                &[&id],
            )
            .db()?;
            out.failed += 1;
        } else if attempt >= max_attempts {
            let message = format!(
                "interrupted {attempt} times (the worker stopped or stalled before finishing); giving up"
            );
            tx.execute(
                &format!(
                    "UPDATE jobs SET status = 'failed', error_code = $2, error_message = $3, \
                     finished_ms = gallop_now_ms(), {clear} WHERE id = $1"
                ),
                &[&id, &error_code::INTERRUPTED, &message],
            )
            .db()?;
            out.failed += 1;
        } else {
            let message = format!("attempt {attempt} was interrupted; retrying");
            tx.execute(
                &format!(
                    "UPDATE jobs SET status = 'queued', not_before_ms = gallop_now_ms() + $2, \
                     error_code = $3, error_message = $4, {clear} WHERE id = $1"
                ),
                &[
                    &id,
                    &config.backoff_ms(attempt),
                    &error_code::INTERRUPTED,
                    &message,
                ],
            )
            .db()?;
            out.requeued += 1;
        }
    }
    Ok(out)
}
