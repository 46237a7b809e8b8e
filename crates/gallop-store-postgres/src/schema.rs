//! The schema, applied at start: numbered migrations recorded in `gallop_schema`, run under an
//! advisory lock so processes starting together apply each migration once.

use gallop_store::{StoreError, StoreResult};

use crate::{Db, LOCK_MIGRATE, LOCK_NAMESPACE};

/// The channel every write to a job is announced on (payload: the job id).
pub const CHANNEL: &str = "gallop_jobs";

/// Schema versions in order; `gallop_schema.version` counts how many were applied.
const MIGRATIONS: &[&str] = &[r#"
-- The database's clock in unix milliseconds: every time the store keeps comes from here, so
-- processes on machines whose clocks disagree still agree on leases and backoff.
CREATE FUNCTION gallop_now_ms() RETURNS bigint LANGUAGE sql VOLATILE AS
    $$ SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

CREATE TABLE jobs (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    status TEXT NOT NULL,
    priority BIGINT NOT NULL DEFAULT 0,
    attempt BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    lease_owner TEXT,
    lease_expires_ms BIGINT,
    not_before_ms BIGINT NOT NULL DEFAULT 0,
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    progress_step BIGINT NOT NULL DEFAULT 0,
    progress_total BIGINT NOT NULL DEFAULT 0,
    seed BIGINT,
    engine TEXT,
    result_key TEXT,
    results_swept BOOLEAN NOT NULL DEFAULT false,
    error_code TEXT,
    error_message TEXT,
    idempotency_key TEXT,
    body_hash TEXT,
    created_ms BIGINT NOT NULL,
    started_ms BIGINT,
    finished_ms BIGINT,
    updated_ms BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (account, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_by_status ON jobs (status, priority DESC, seq);
CREATE INDEX jobs_by_account ON jobs (account, seq DESC);
CREATE INDEX jobs_leases ON jobs (lease_expires_ms) WHERE status = 'running';

-- Every write to a job tells every process (LISTEN gallop_jobs) at its commit: a submit wakes
-- idle workers elsewhere, progress reaches SSE on any API process. In the trigger, no write
-- can forget it.
CREATE FUNCTION gallop_notify_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('gallop_jobs', NEW.id);
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_notify AFTER INSERT OR UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION gallop_notify_job();

CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE TABLE provider_keys (
    account TEXT NOT NULL,
    provider TEXT NOT NULL,
    sealed BYTEA NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (account, provider)
);
"#];

/// The schema version this build writes.
pub fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Applies the migrations this database lacks, in one transaction; refuses a database that a
/// newer gallop migrated further.
pub fn migrate(client: &mut postgres::Client) -> StoreResult<()> {
    let mut tx = client.transaction().db()?;
    // Another process migrating at the same time waits here, then finds the work done.
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_NAMESPACE, &LOCK_MIGRATE],
    )
    .db()?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS gallop_schema (version BIGINT NOT NULL)")
        .db()?;
    let version: i64 = tx
        .query_opt("SELECT version FROM gallop_schema", &[])
        .db()?
        .map(|r| r.get(0))
        .unwrap_or(0);
    if version > latest_version() {
        return Err(StoreError::Backend(format!(
            "database schema version {version} is newer than this gallop ({}); upgrade gallop",
            latest_version()
        )));
    }
    for sql in &MIGRATIONS[version as usize..] {
        tx.batch_execute(sql).db()?;
    }
    tx.execute("DELETE FROM gallop_schema", &[]).db()?;
    tx.execute(
        "INSERT INTO gallop_schema (version) VALUES ($1)",
        &[&latest_version()],
    )
    .db()?;
    tx.commit().db()
}
