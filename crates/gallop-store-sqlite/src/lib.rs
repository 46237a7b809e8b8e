//! The SQLite job store: one file (`gallop.db`) in the data directory, WAL, `busy_timeout`,
//! migrations by `user_version`. Every method is one transaction on one connection; writes
//! that decide something (submit, claim, cancel) take the write lock first (`BEGIN IMMEDIATE`),
//! so several processes sharing the file stay correct.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use tokio::sync::broadcast;

use gallop_store::*;

/// Reader connections: enough for a few concurrent polls on a small machine.
const READERS: usize = 4;

/// The database clock in unix milliseconds.
const NOW: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

/// Columns in the order `job_from_row` reads them.
const JOB_COLUMNS: &str = "id, account, model, request, status, priority, attempt, max_attempts, \
     cancel_requested, progress_step, progress_total, seed, engine, result_key, error_code, \
     error_message, created_ms, started_ms, finished_ms, version, updated_ms";

/// Schema versions in order; `user_version` counts how many were applied.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    lease_owner TEXT,
    lease_expires_ms INTEGER,
    not_before_ms INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress_step INTEGER NOT NULL DEFAULT 0,
    progress_total INTEGER NOT NULL DEFAULT 0,
    seed INTEGER,
    engine TEXT,
    result_key TEXT,
    results_swept INTEGER NOT NULL DEFAULT 0,
    error_code TEXT,
    error_message TEXT,
    idempotency_key TEXT,
    body_hash TEXT,
    created_ms INTEGER NOT NULL,
    started_ms INTEGER,
    finished_ms INTEGER,
    updated_ms INTEGER NOT NULL,
    version INTEGER NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs(account, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_by_status ON jobs(status, priority DESC, seq);
CREATE INDEX jobs_by_account ON jobs(account, seq DESC);
CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
"#,
    r#"
CREATE TABLE provider_keys (
    account TEXT NOT NULL,
    provider TEXT NOT NULL,
    sealed BLOB NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (account, provider)
);
"#,
];

pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Reads (status polls, SSE) run here in parallel with writes: WAL lets readers proceed
    /// while the writer commits.
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    config: StoreConfig,
    path: PathBuf,
    events: broadcast::Sender<String>,
}

impl SqliteStore {
    /// Opens (creating and migrating) `data_dir/gallop.db`.
    pub fn open(data_dir: &Path, config: StoreConfig) -> StoreResult<SqliteStore> {
        SqliteStore::open_file(&data_dir.join("gallop.db"), config)
    }

    /// Opens (creating and migrating) the database file at `path`, creating its directory.
    pub fn open_file(path: &Path, config: StoreConfig) -> StoreResult<SqliteStore> {
        let path = path.to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Backend(format!("{}: {e}", dir.display())))?;
        }
        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: an accepted job survives power loss too, not only a killed process.
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrate(&mut conn)?;
        let readers = (0..READERS)
            .map(|_| open_reader(&path).map(Mutex::new))
            .collect::<StoreResult<Vec<_>>>()?;
        let (events, _) = broadcast::channel(1024);
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            readers,
            next_reader: AtomicUsize::new(0),
            config,
            path,
            events,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    fn with_tx<T>(
        &self,
        behavior: TransactionBehavior,
        f: impl FnOnce(&Transaction<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(behavior)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs a read on a free reader connection (or waits for the next in turn).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        for reader in &self.readers {
            if let Ok(conn) = reader.try_lock() {
                return f(&conn);
            }
        }
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        let conn = self.readers[i].lock().unwrap_or_else(|p| p.into_inner());
        f(&conn)
    }

    fn notify(&self, job_id: &str) {
        // No receiver is fine.
        let _ = self.events.send(job_id.to_string());
    }

    /// One guarded worker write: applies only while `lease` still owns the running job.
    fn lease_write(
        &self,
        lease: &Lease,
        set: &str,
        extra: &[&dyn rusqlite::ToSql],
    ) -> StoreResult<bool> {
        let sql = format!(
            "UPDATE jobs SET {set}, version = version + 1, updated_ms = {NOW} \
             WHERE id = ?1 AND status = 'running' AND lease_owner = ?2 AND attempt = ?3"
        );
        let mut args: Vec<&dyn rusqlite::ToSql> =
            vec![&lease.job_id, &lease.worker_id, &lease.attempt];
        args.extend_from_slice(extra);
        let changed = self.with_tx(TransactionBehavior::Immediate, |tx| {
            Ok(tx.execute(&sql, args.as_slice())?)
        })?;
        if changed > 0 {
            self.notify(&lease.job_id);
        }
        Ok(changed > 0)
    }

    fn recover(&self, all: bool) -> StoreResult<Recovered> {
        let ids = self.with_tx(TransactionBehavior::Immediate, |tx| {
            recover_in(tx, self, all)
        })?;
        let mut out = Recovered::default();
        for id in &ids {
            self.notify(id);
            match self.get(id)?.map(|j| j.status) {
                Some(JobStatus::Queued) => out.requeued += 1,
                Some(_) => out.failed += 1,
                None => {}
            }
        }
        Ok(out)
    }
}

fn open_reader(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version = tx.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Backend(format!(
            "database schema version {version} is newer than this gallop ({}); upgrade gallop",
            MIGRATIONS.len()
        )));
    }
    for sql in &MIGRATIONS[version..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    tx.commit()?;
    Ok(())
}

fn job_from_row(r: &Row<'_>) -> rusqlite::Result<Job> {
    let json = |i: usize, s: Option<String>| -> rusqlite::Result<Option<serde_json::Value>> {
        s.map(|s| {
            serde_json::from_str(&s).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    i,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })
        })
        .transpose()
    };
    let status: String = r.get(4)?;
    Ok(Job {
        id: r.get(0)?,
        account: r.get(1)?,
        model: r.get(2)?,
        request: json(3, Some(r.get(3)?))?.unwrap_or_default(),
        status: JobStatus::parse(&status).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                4,
                rusqlite::types::Type::Text,
                format!("unknown job status {status:?}").into(),
            )
        })?,
        priority: r.get(5)?,
        attempt: r.get(6)?,
        max_attempts: r.get(7)?,
        cancel_requested: r.get(8)?,
        progress_step: r.get(9)?,
        progress_total: r.get(10)?,
        seed: r.get(11)?,
        engine: json(12, r.get(12)?)?,
        result_key: r.get(13)?,
        error_code: r.get(14)?,
        error_message: r.get(15)?,
        created_at_ms: r.get(16)?,
        started_at_ms: r.get(17)?,
        finished_at_ms: r.get(18)?,
        version: r.get(19)?,
        updated_at_ms: r.get(20)?,
    })
}

fn get_job(tx: &Connection, id: &str) -> StoreResult<Option<Job>> {
    Ok(tx
        .query_row(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
            [id],
            job_from_row,
        )
        .optional()?)
}

fn count(tx: &Connection, sql: &str, args: impl rusqlite::Params) -> StoreResult<u64> {
    Ok(tx.query_row(sql, args, |r| r.get::<_, i64>(0))? as u64)
}

/// `gallop_store::retry_after_secs` from this database's queue.
fn retry_after(tx: &Connection, account: Option<&str>) -> StoreResult<u32> {
    let mean_secs: Option<f64> = tx.query_row(
        "SELECT AVG(finished_ms - started_ms) / 1000.0 FROM (SELECT finished_ms, started_ms \
         FROM jobs WHERE status = 'completed' AND started_ms IS NOT NULL \
         ORDER BY finished_ms DESC LIMIT 20)",
        [],
        |r| r.get(0),
    )?;
    let running: Vec<f64> = {
        let mut stmt = tx.prepare(&format!(
            "SELECT ({NOW} - started_ms) / 1000.0 FROM jobs WHERE status = 'running'"
        ))?;
        let rows = stmt.query_map([], |r| r.get::<_, f64>(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let ahead = match account {
        None => 0,
        Some(account) => count(
            tx,
            "SELECT COUNT(*) FROM jobs q, (SELECT priority AS p, seq AS s FROM jobs \
               WHERE account = ?1 AND status = 'queued' ORDER BY priority DESC, seq LIMIT 1) me \
             WHERE q.status = 'queued' AND (q.priority > me.p OR (q.priority = me.p AND q.seq < me.s))",
            [account],
        )?,
    };
    Ok(retry_after_secs(mean_secs, &running, ahead))
}

impl JobStore for SqliteStore {
    fn submit(&self, job: NewJob) -> StoreResult<Submitted> {
        let cfg = &self.config;
        let request = serde_json::to_string(&job.request)
            .map_err(|e| StoreError::Backend(format!("request JSON: {e}")))?;
        let out = self.with_tx(TransactionBehavior::Immediate, |tx| {
            if let Some(idem) = &job.idempotency {
                let seen: Option<(String, Option<String>)> = tx
                    .query_row(
                        "SELECT id, body_hash FROM jobs WHERE account = ?1 AND idempotency_key = ?2",
                        params![job.account, idem.key],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if let Some((id, hash)) = seen {
                    if hash.as_deref() != Some(idem.body_hash.as_str()) {
                        return Err(StoreError::IdempotencyConflict {
                            key: idem.key.clone(),
                        });
                    }
                    let existing = get_job(tx, &id)?
                        .ok_or_else(|| StoreError::Backend(format!("job {id} vanished")))?;
                    return Ok(Submitted::Existing(existing));
                }
            }
            // The account's own cap first: an account at it is told so even when the whole
            // queue is full too, and waits for its own jobs, not everyone's.
            let queued_account = count(
                tx,
                "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND account = ?1",
                [&job.account],
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
            let queued_total = count(tx, "SELECT COUNT(*) FROM jobs WHERE status = 'queued'", [])?;
            if queued_total >= cfg.max_queued_total as u64 {
                return Err(StoreError::Full {
                    reason: format!("{queued_total} jobs are queued (limit {})", cfg.max_queued_total),
                    retry_after_secs: retry_after(tx, None)?,
                });
            }
            let id = uuid::Uuid::new_v4().to_string();
            let (key, hash) = match &job.idempotency {
                Some(i) => (Some(i.key.as_str()), Some(i.body_hash.as_str())),
                None => (None, None),
            };
            tx.execute(
                &format!(
                    "INSERT INTO jobs (id, account, model, request, status, priority, max_attempts, \
                     idempotency_key, body_hash, created_ms, updated_ms) \
                     VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7, ?8, {NOW}, {NOW})"
                ),
                params![
                    id,
                    job.account,
                    job.model,
                    request,
                    job.priority,
                    job.max_attempts.unwrap_or(cfg.default_max_attempts).max(1),
                    key,
                    hash
                ],
            )?;
            let created = get_job(tx, &id)?.ok_or_else(|| StoreError::Backend("insert lost".into()))?;
            Ok(Submitted::Created(created))
        })?;
        if let Submitted::Created(j) = &out {
            self.notify(&j.id);
        }
        Ok(out)
    }

    fn get(&self, id: &str) -> StoreResult<Option<Job>> {
        self.read(|tx| get_job(tx, id))
    }

    fn get_for_account(&self, account: &str, id: &str) -> StoreResult<Option<Job>> {
        Ok(self.get(id)?.filter(|j| j.account == account))
    }

    fn list(&self, account: &str, limit: u32, before_id: Option<&str>) -> StoreResult<Vec<Job>> {
        self.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE account = ?1 AND \
                 (?2 IS NULL OR seq < (SELECT seq FROM jobs WHERE id = ?2 AND account = ?1)) \
                 ORDER BY seq DESC LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![account, before_id, limit], job_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn queue_position(&self, id: &str) -> StoreResult<Option<u32>> {
        let n = self.read(|tx| {
            count(
                tx,
                "SELECT COUNT(*) FROM jobs q, \
                   (SELECT priority AS p, seq AS s FROM jobs WHERE id = ?1 AND status = 'queued') me \
                 WHERE q.status = 'queued' AND (q.priority > me.p OR (q.priority = me.p AND q.seq <= me.s))",
                [id],
            )
        })?;
        Ok((n > 0).then_some(n as u32))
    }

    fn cancel(&self, account: &str, id: &str) -> StoreResult<CancelOutcome> {
        let outcome = self.with_tx(TransactionBehavior::Immediate, |tx| {
            let Some(job) = get_job(tx, id)?.filter(|j| j.account == account) else {
                return Ok(CancelOutcome::NotFound);
            };
            match job.status {
                JobStatus::Queued => {
                    tx.execute(
                        &format!(
                            "UPDATE jobs SET status = 'cancelled', finished_ms = {NOW}, \
                             version = version + 1, updated_ms = {NOW} WHERE id = ?1"
                        ),
                        [id],
                    )?;
                    Ok(CancelOutcome::Cancelled)
                }
                JobStatus::Running => {
                    tx.execute(
                        &format!(
                            "UPDATE jobs SET cancel_requested = 1, version = version + 1, \
                             updated_ms = {NOW} WHERE id = ?1"
                        ),
                        [id],
                    )?;
                    Ok(CancelOutcome::Requested)
                }
                ended => Ok(CancelOutcome::AlreadyEnded(ended)),
            }
        })?;
        if matches!(outcome, CancelOutcome::Cancelled | CancelOutcome::Requested) {
            self.notify(id);
        }
        Ok(outcome)
    }

    fn count_by_status(&self) -> StoreResult<Vec<(JobStatus, u64)>> {
        self.read(|tx| {
            let mut stmt = tx.prepare("SELECT status, COUNT(*) FROM jobs GROUP BY status")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (status, n) = row?;
                if let Some(s) = JobStatus::parse(&status) {
                    out.push((s, n as u64));
                }
            }
            Ok(out)
        })
    }

    fn claim(&self, worker_id: &str) -> StoreResult<Option<Claim>> {
        let (recovered, claimed) = self.with_tx(TransactionBehavior::Immediate, |tx| {
            let recovered = recover_in(tx, self, false)?;
            // Least busy account first (fewest running), then priority, then age; accounts at
            // their running cap wait.
            let next: Option<String> = tx
                .query_row(
                    &format!(
                        "SELECT j.id FROM jobs j \
                         LEFT JOIN (SELECT account, COUNT(*) AS n FROM jobs WHERE status = 'running' \
                                    GROUP BY account) r ON r.account = j.account \
                         WHERE j.status = 'queued' AND j.not_before_ms <= {NOW} \
                           AND COALESCE(r.n, 0) < ?1 \
                         ORDER BY COALESCE(r.n, 0) ASC, j.priority DESC, j.seq ASC LIMIT 1"
                    ),
                    [self.config.max_running_per_account],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(id) = next else {
                return Ok((recovered, None));
            };
            tx.execute(
                &format!(
                    "UPDATE jobs SET status = 'running', attempt = attempt + 1, lease_owner = ?2, \
                     lease_expires_ms = {NOW} + ?3, started_ms = {NOW}, cancel_requested = 0, \
                     progress_step = 0, progress_total = 0, version = version + 1, updated_ms = {NOW} \
                     WHERE id = ?1"
                ),
                params![id, worker_id, self.config.lease_ms],
            )?;
            let job = get_job(tx, &id)?.ok_or_else(|| StoreError::Backend("claimed job vanished".into()))?;
            Ok((recovered, Some(job)))
        })?;
        for id in recovered {
            self.notify(&id);
        }
        Ok(claimed.map(|job| {
            self.notify(&job.id);
            Claim::new(job, worker_id)
        }))
    }

    fn set_run_info(
        &self,
        lease: &Lease,
        seed: u32,
        engine: &serde_json::Value,
    ) -> StoreResult<bool> {
        let engine = engine.to_string();
        self.lease_write(lease, "seed = ?4, engine = ?5", &[&seed, &engine])
    }

    fn progress(&self, lease: &Lease, step: u32, total: u32) -> StoreResult<LeaseState> {
        let applied = self.lease_write(
            lease,
            &format!("progress_step = ?4, progress_total = ?5, lease_expires_ms = {NOW} + ?6"),
            &[&step, &total, &self.config.lease_ms],
        )?;
        if !applied {
            return Ok(LeaseState::Lost);
        }
        let cancel_requested = self.read(|tx| {
            Ok(tx.query_row(
                "SELECT cancel_requested FROM jobs WHERE id = ?1",
                [&lease.job_id],
                |r| r.get::<_, bool>(0),
            )?)
        })?;
        Ok(LeaseState::Held { cancel_requested })
    }

    fn complete(&self, lease: &Lease, result_key: &str) -> StoreResult<bool> {
        self.lease_write(
            lease,
            &format!(
                "status = 'completed', result_key = ?4, finished_ms = {NOW}, lease_owner = NULL, \
                 lease_expires_ms = NULL, progress_step = progress_total, error_code = NULL, \
                 error_message = NULL"
            ),
            &[&result_key],
        )
    }

    fn fail(&self, lease: &Lease, failure: &Failure) -> StoreResult<bool> {
        match failure {
            Failure::Final { code, message } => self.lease_write(
                lease,
                &format!(
                    "status = 'failed', error_code = ?4, error_message = ?5, finished_ms = {NOW}, \
                     lease_owner = NULL, lease_expires_ms = NULL"
                ),
                &[code, message],
            ),
            Failure::Retryable { code, message } => {
                let backoff = self.config.backoff_ms(lease.attempt);
                let last = format!("{message} (attempt {})", lease.attempt);
                self.lease_write(
                    lease,
                    &format!(
                        "status = CASE WHEN attempt >= max_attempts THEN 'failed' ELSE 'queued' END, \
                         finished_ms = CASE WHEN attempt >= max_attempts THEN {NOW} ELSE NULL END, \
                         not_before_ms = {NOW} + ?6, error_code = ?4, error_message = ?5, \
                         lease_owner = NULL, lease_expires_ms = NULL"
                    ),
                    &[code, &last, &backoff],
                )
            }
        }
    }

    fn finish_cancelled(&self, lease: &Lease) -> StoreResult<bool> {
        self.lease_write(
            lease,
            &format!(
                "status = 'cancelled', finished_ms = {NOW}, lease_owner = NULL, lease_expires_ms = NULL"
            ),
            &[],
        )
    }

    fn release(&self, lease: &Lease) -> StoreResult<bool> {
        self.lease_write(
            lease,
            &format!(
                "status = 'queued', attempt = attempt - 1, not_before_ms = {NOW}, \
                 lease_owner = NULL, lease_expires_ms = NULL, progress_step = 0, progress_total = 0"
            ),
            &[],
        )
    }

    fn recover_expired(&self) -> StoreResult<Recovered> {
        self.recover(false)
    }

    fn recover_orphaned(&self) -> StoreResult<Recovered> {
        self.recover(true)
    }

    fn expired_results(&self, age_ms: i64, limit: u32) -> StoreResult<Vec<String>> {
        self.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT id FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') \
                 AND results_swept = 0 AND finished_ms < {NOW} - ?1 ORDER BY finished_ms LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![age_ms, limit], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
    }

    fn forget_result(&self, job_id: &str) -> StoreResult<()> {
        self.with_tx(TransactionBehavior::Immediate, |tx| {
            tx.execute(
                &format!(
                    "UPDATE jobs SET result_key = NULL, results_swept = 1, version = version + 1, \
                     updated_ms = {NOW} WHERE id = ?1"
                ),
                [job_id],
            )?;
            Ok(())
        })?;
        self.notify(job_id);
        Ok(())
    }

    fn forget_inputs(&self, job_id: &str) -> StoreResult<bool> {
        let changed = self.with_tx(TransactionBehavior::Immediate, |tx| {
            let Some(job) = get_job(tx, job_id)? else {
                return Ok(false);
            };
            if !job.status.is_terminal() {
                return Ok(false);
            }
            let Some(request) = request_without_inputs(&job.request) else {
                return Ok(false);
            };
            tx.execute(
                &format!(
                    "UPDATE jobs SET request = ?2, version = version + 1, updated_ms = {NOW} \
                     WHERE id = ?1"
                ),
                params![job_id, request.to_string()],
            )?;
            Ok(true)
        })?;
        if changed {
            self.notify(job_id);
        }
        Ok(changed)
    }

    fn create_token(&self, account: &str) -> StoreResult<String> {
        let token = new_token();
        self.with_tx(TransactionBehavior::Immediate, |tx| {
            tx.execute(
                &format!("INSERT INTO tokens (hash, account, created_ms) VALUES (?1, ?2, {NOW})"),
                params![hash_token(&token), account],
            )?;
            Ok(())
        })?;
        Ok(token)
    }

    fn account_for_token(&self, token: &str) -> StoreResult<Option<String>> {
        self.read(|tx| {
            Ok(tx
                .query_row(
                    "SELECT account FROM tokens WHERE hash = ?1",
                    [hash_token(token)],
                    |r| r.get(0),
                )
                .optional()?)
        })
    }

    fn token_count(&self) -> StoreResult<u64> {
        self.read(|tx| count(tx, "SELECT COUNT(*) FROM tokens", []))
    }

    fn put_provider_key(&self, account: &str, provider: &str, sealed: &[u8]) -> StoreResult<()> {
        self.with_tx(TransactionBehavior::Immediate, |tx| {
            tx.execute(
                &format!(
                    "INSERT INTO provider_keys (account, provider, sealed, updated_ms) \
                     VALUES (?1, ?2, ?3, {NOW}) ON CONFLICT (account, provider) \
                     DO UPDATE SET sealed = excluded.sealed, updated_ms = excluded.updated_ms"
                ),
                params![account, provider, sealed],
            )?;
            Ok(())
        })
    }

    fn provider_key(&self, account: &str, provider: &str) -> StoreResult<Option<Vec<u8>>> {
        self.read(|tx| {
            Ok(tx
                .query_row(
                    "SELECT sealed FROM provider_keys WHERE account = ?1 AND provider = ?2",
                    params![account, provider],
                    |r| r.get(0),
                )
                .optional()?)
        })
    }

    fn delete_provider_key(&self, account: &str, provider: &str) -> StoreResult<bool> {
        self.with_tx(TransactionBehavior::Immediate, |tx| {
            Ok(tx.execute(
                "DELETE FROM provider_keys WHERE account = ?1 AND provider = ?2",
                params![account, provider],
            )? > 0)
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<String> {
        self.events.subscribe()
    }

    fn worker_lock_path(&self) -> Option<PathBuf> {
        self.path.parent().map(|dir| dir.join("worker.lock"))
    }
}

/// Expired leases: a job whose cancel was requested ends cancelled; otherwise back to the queue
/// after a backoff, or failed once it used its last attempt. Returns the ids touched.
fn recover_in(tx: &Transaction<'_>, store: &SqliteStore, all: bool) -> StoreResult<Vec<String>> {
    let mut stmt = tx.prepare(&format!(
        "SELECT id, attempt, max_attempts, cancel_requested FROM jobs \
         WHERE status = 'running' AND (?1 OR lease_expires_ms < {NOW})"
    ))?;
    let expired = stmt
        .query_map([all], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, bool>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (id, attempt, max_attempts, cancel_requested) in &expired {
        let clear = "lease_owner = NULL, lease_expires_ms = NULL, version = version + 1";
        if *cancel_requested {
            tx.execute(
                &format!(
                    "UPDATE jobs SET status = 'cancelled', finished_ms = {NOW}, {clear}, \
                     updated_ms = {NOW} WHERE id = ?1"
                ),
                [id],
            )?;
        } else if attempt >= max_attempts {
            let message = format!(
                "interrupted {attempt} times (the worker stopped or stalled before finishing); giving up"
            );
            tx.execute(
                &format!(
                    "UPDATE jobs SET status = 'failed', error_code = ?2, error_message = ?3, \
                     finished_ms = {NOW}, {clear}, updated_ms = {NOW} WHERE id = ?1"
                ),
                params![id, error_code::INTERRUPTED, message],
            )?;
        } else {
            let message = format!("attempt {attempt} was interrupted; retrying");
            tx.execute(
                &format!(
                    "UPDATE jobs SET status = 'queued', not_before_ms = {NOW} + ?2, error_code = ?3, \
                     error_message = ?4, {clear}, updated_ms = {NOW} WHERE id = ?1"
                ),
                params![id, store.config.backoff_ms(*attempt), error_code::INTERRUPTED, message],
            )?;
        }
    }
    Ok(expired.into_iter().map(|(id, ..)| id).collect())
}
