//! The SQLite job store against real database files: claims, leases, stale writes, expiry with
//! backoff, final failure, idempotency, fairness, limits, cancel, tokens, migrations.

use std::time::Duration;

use gallop_store::{
    CancelOutcome, Failure, Idempotency, JobStatus, JobStore, LeaseState, NewJob, StoreConfig,
    StoreError, Submitted, error_code,
};
use gallop_store_sqlite::SqliteStore;
use serde_json::json;

fn config() -> StoreConfig {
    StoreConfig {
        lease_ms: 60_000,
        backoff_base_ms: 0,
        backoff_max_ms: 0,
        ..StoreConfig::default()
    }
}

fn open(dir: &tempfile::TempDir, config: StoreConfig) -> SqliteStore {
    SqliteStore::open(dir.path(), config).expect("open store")
}

fn new_job(account: &str) -> NewJob {
    NewJob {
        account: account.to_string(),
        model: "alibaba/hh1-i2v".to_string(),
        request: json!({"prompt": "a horse", "account": account}),
        priority: 0,
        max_attempts: None,
        idempotency: None,
    }
}

fn submit(store: &SqliteStore, job: NewJob) -> String {
    match store.submit(job).expect("submit") {
        Submitted::Created(j) => j.id,
        other => panic!("expected a new job, got {other:?}"),
    }
}

#[test]
fn submit_creates_a_queued_job_that_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = open(&dir, config());
        submit(&store, new_job("acme"))
    };
    assert!(dir.path().join("gallop.db").exists());
    let store = open(&dir, config());
    let job = store.get(&id).unwrap().expect("job persisted");
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.account, "acme");
    assert_eq!(job.request["prompt"], "a horse");
    assert_eq!(job.attempt, 0);
    assert_eq!(job.max_attempts, 3);
    assert!(job.created_at_ms > 1_700_000_000_000, "DB clock in unix ms");
    assert_eq!(store.queue_position(&id).unwrap(), Some(1));
    // Another account does not see it.
    assert!(store.get_for_account("other", &id).unwrap().is_none());
    assert!(store.get_for_account("acme", &id).unwrap().is_some());
}

#[test]
fn wal_mode_and_schema_version_are_set() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir, config()));
    let conn = rusqlite::Connection::open(dir.path().join("gallop.db")).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode.to_lowercase(), "wal");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    // Two migrations: the jobs (1) and the sealed provider keys (2).
    assert_eq!(version, 2);
    let keys: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'provider_keys'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(keys, 1);
    // A database from a newer gallop is refused with a clear message.
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = match SqliteStore::open(dir.path(), config()) {
        Ok(_) => panic!("newer schema must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("newer than this gallop"), "{err}");
}

#[test]
fn claim_sets_lease_and_progress_renews_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, config());
    let id = submit(&store, new_job("acme"));
    let claim = store.claim("w1").unwrap().expect("a job to claim");
    assert_eq!(claim.lease.job_id, id);
    assert_eq!(claim.lease.attempt, 1);
    assert_eq!(claim.job.status, JobStatus::Running);
    assert!(claim.job.started_at_ms.is_some());
    assert_eq!(store.queue_position(&id).unwrap(), None);
    // Nothing else to claim.
    assert!(store.claim("w2").unwrap().is_none());

    let before = lease_expiry(&dir, &id);
    std::thread::sleep(Duration::from_millis(20));
    let state = store.progress(&claim.lease, 3, 10).unwrap();
    assert_eq!(
        state,
        LeaseState::Held {
            cancel_requested: false
        }
    );
    assert!(
        lease_expiry(&dir, &id) > before,
        "progress renews the lease"
    );
    let job = store.get(&id).unwrap().unwrap();
    assert_eq!((job.progress_step, job.progress_total), (3, 10));

    assert!(
        store
            .set_run_info(&claim.lease, 42, &json!({"engine": "preview"}))
            .unwrap()
    );
    assert!(
        store
            .complete(&claim.lease, "results/x/attempt-1.mp4")
            .unwrap()
    );
    let job = store.get(&id).unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.seed, Some(42));
    assert_eq!(job.engine, Some(json!({"engine": "preview"})));
    assert_eq!(job.result_key.as_deref(), Some("results/x/attempt-1.mp4"));
    assert!(job.finished_at_ms.unwrap() >= job.started_at_ms.unwrap());
}

fn lease_expiry(dir: &tempfile::TempDir, id: &str) -> i64 {
    let conn = rusqlite::Connection::open(dir.path().join("gallop.db")).unwrap();
    conn.query_row(
        "SELECT lease_expires_ms FROM jobs WHERE id = ?1",
        [id],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn expired_lease_requeues_and_a_stale_worker_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        &dir,
        StoreConfig {
            lease_ms: 50,
            ..config()
        },
    );
    let id = submit(&store, new_job("acme"));
    let first = store.claim("old-worker").unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(120));
    // The next claim recovers the expired lease and takes the job as attempt 2.
    let second = store.claim("new-worker").unwrap().expect("requeued job");
    assert_eq!(second.lease.job_id, id);
    assert_eq!(second.lease.attempt, 2);

    // Every write of the stale worker is refused and changes nothing.
    assert_eq!(
        store.progress(&first.lease, 9, 10).unwrap(),
        LeaseState::Lost
    );
    assert!(!store.set_run_info(&first.lease, 7, &json!({})).unwrap());
    assert!(!store.complete(&first.lease, "results/stale.mp4").unwrap());
    assert!(
        !store
            .fail(
                &first.lease,
                &Failure::Final {
                    code: "x".into(),
                    message: "y".into()
                }
            )
            .unwrap()
    );
    assert!(!store.finish_cancelled(&first.lease).unwrap());
    assert!(!store.release(&first.lease).unwrap());
    let job = store.get(&id).unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(job.attempt, 2);
    assert_eq!(job.progress_step, 0);
    assert_eq!(job.seed, None);
    assert_eq!(job.result_key, None);

    // The current worker's writes apply.
    assert!(store.complete(&second.lease, "results/good.mp4").unwrap());
    assert_eq!(
        store.get(&id).unwrap().unwrap().result_key.as_deref(),
        Some("results/good.mp4")
    );
}

#[test]
fn backoff_delays_the_retry_of_an_interrupted_job() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        &dir,
        StoreConfig {
            lease_ms: 30,
            backoff_base_ms: 400,
            backoff_max_ms: 400,
            ..config()
        },
    );
    let id = submit(&store, new_job("acme"));
    store.claim("w1").unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(80));
    let recovered = store.recover_expired().unwrap();
    assert_eq!(recovered.requeued, 1);
    let job = store.get(&id).unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.error_code.as_deref(), Some(error_code::INTERRUPTED));
    // Within the backoff nobody may claim it; after it, they may.
    assert!(store.claim("w2").unwrap().is_none(), "backoff not honoured");
    std::thread::sleep(Duration::from_millis(450));
    assert_eq!(store.claim("w2").unwrap().unwrap().lease.attempt, 2);
}

#[test]
fn interrupted_max_attempts_times_fails_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        &dir,
        StoreConfig {
            lease_ms: 20,
            default_max_attempts: 2,
            ..config()
        },
    );
    let id = submit(&store, new_job("acme"));
    for attempt in 1..=2 {
        let c = store.claim("w").unwrap().expect("claimable");
        assert_eq!(c.lease.attempt, attempt);
        std::thread::sleep(Duration::from_millis(50));
    }
    let recovered = store.recover_expired().unwrap();
    assert_eq!(recovered.failed, 1);
    let job = store.get(&id).unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error_code.as_deref(), Some(error_code::INTERRUPTED));
    let msg = job.error_message.unwrap();
    assert!(msg.contains("interrupted 2 times"), "{msg}");
    assert!(job.finished_at_ms.is_some());
    assert!(store.claim("w").unwrap().is_none());
}

#[test]
fn retryable_failure_requeues_until_the_last_attempt_and_final_failure_ends_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        &dir,
        StoreConfig {
            default_max_attempts: 2,
            ..config()
        },
    );
    let id = submit(&store, new_job("acme"));
    let retry = Failure::Retryable {
        code: error_code::INTERNAL.into(),
        message: "encoder crashed".into(),
    };
    let c1 = store.claim("w").unwrap().unwrap();
    assert!(store.fail(&c1.lease, &retry).unwrap());
    assert_eq!(store.get(&id).unwrap().unwrap().status, JobStatus::Queued);
    let c2 = store.claim("w").unwrap().unwrap();
    assert_eq!(c2.lease.attempt, 2);
    assert!(store.fail(&c2.lease, &retry).unwrap());
    let job = store.get(&id).unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert!(job.error_message.unwrap().contains("encoder crashed"));

    let id2 = submit(&store, new_job("acme"));
    let c = store.claim("w").unwrap().unwrap();
    assert_eq!(c.lease.job_id, id2);
    let bad = Failure::Final {
        code: error_code::BAD_INPUT.into(),
        message: "/input/image: image is 200x200 px; each side must be at least 300 px".into(),
    };
    assert!(store.fail(&c.lease, &bad).unwrap());
    let job = store.get(&id2).unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.attempt, 1);
    assert_eq!(job.error_code.as_deref(), Some(error_code::BAD_INPUT));
    assert!(job.error_message.unwrap().starts_with("/input/image: "));
}

#[test]
fn release_returns_the_job_without_spending_an_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, config());
    let id = submit(&store, new_job("acme"));
    let c = store.claim("w").unwrap().unwrap();
    assert!(store.release(&c.lease).unwrap());
    let job = store.get(&id).unwrap().unwrap();
    assert_eq!((job.status, job.attempt), (JobStatus::Queued, 0));
    assert_eq!(store.claim("w").unwrap().unwrap().lease.attempt, 1);
}

#[test]
fn idempotency_key_same_body_same_job_other_body_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, config());
    let with_key = |hash: &str, account: &str| NewJob {
        idempotency: Some(Idempotency {
            key: "key-1".into(),
            body_hash: hash.into(),
        }),
        ..new_job(account)
    };
    let first = submit(&store, with_key("h1", "acme"));
    match store.submit(with_key("h1", "acme")).unwrap() {
        Submitted::Existing(j) => assert_eq!(j.id, first),
        other => panic!("expected the existing job, got {other:?}"),
    }
    match store.submit(with_key("h2", "acme")) {
        Err(StoreError::IdempotencyConflict { key }) => assert_eq!(key, "key-1"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Keys are per account.
    let other = submit(&store, with_key("h2", "zeta"));
    assert_ne!(other, first);
    assert_eq!(store.list("acme", 10, None).unwrap().len(), 1);
}

#[test]
fn least_busy_account_first_then_priority_then_age() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, config());
    let a1 = submit(&store, new_job("a"));
    let a2 = submit(&store, new_job("a"));
    let a3 = submit(&store, new_job("a"));
    let b1 = submit(&store, new_job("b"));
    let b_urgent = submit(
        &store,
        NewJob {
            priority: 5,
            ..new_job("b")
        },
    );
    // Positions follow priority then age.
    assert_eq!(store.queue_position(&b_urgent).unwrap(), Some(1));
    assert_eq!(store.queue_position(&a1).unwrap(), Some(2));
    assert_eq!(store.queue_position(&b1).unwrap(), Some(5));

    let order: Vec<String> = (0..5)
        .map(|i| store.claim(&format!("w{i}")).unwrap().unwrap().lease.job_id)
        .collect();
    // Both idle: priority wins (b_urgent). Then a has 0 running, b has 1: a1. Then 1 each:
    // oldest is a2. Then a has 2, b 1: b1. Then a3.
    assert_eq!(order, vec![b_urgent, a1, a2, b1, a3]);
}

#[test]
fn running_cap_per_account_makes_its_jobs_wait() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        &dir,
        StoreConfig {
            max_running_per_account: 1,
            ..config()
        },
    );
    let a1 = submit(&store, new_job("a"));
    let a2 = submit(&store, new_job("a"));
    let c1 = store.claim("w1").unwrap().unwrap();
    assert_eq!(c1.lease.job_id, a1);
    assert!(store.claim("w2").unwrap().is_none(), "a is at its cap");
    store.complete(&c1.lease, "k").unwrap();
    assert_eq!(store.claim("w2").unwrap().unwrap().lease.job_id, a2);
}

#[test]
fn queue_full_total_and_per_account() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        &dir,
        StoreConfig {
            max_queued_total: 3,
            max_queued_per_account: 2,
            ..config()
        },
    );
    submit(&store, new_job("a"));
    submit(&store, new_job("a"));
    match store.submit(new_job("a")) {
        Err(StoreError::Full {
            reason,
            retry_after_secs,
        }) => {
            assert!(reason.contains("account a"), "{reason}");
            assert!(retry_after_secs > 0);
        }
        other => panic!("expected Full, got {other:?}"),
    }
    submit(&store, new_job("b"));
    match store.submit(new_job("c")) {
        Err(StoreError::Full { reason, .. }) => {
            assert!(reason.contains("3 jobs are queued"), "{reason}")
        }
        other => panic!("expected Full, got {other:?}"),
    }
    // Running jobs free queue room.
    store.claim("w").unwrap().unwrap();
    submit(&store, new_job("c"));
}

#[test]
fn retry_after_is_estimated_from_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        &dir,
        StoreConfig {
            max_queued_total: 100,
            max_queued_per_account: 2,
            ..config()
        },
    );
    let retry_of = |account: &str| match store.submit(new_job(account)) {
        Err(StoreError::Full {
            retry_after_secs, ..
        }) => retry_after_secs,
        other => panic!("expected Full, got {other:?}"),
    };
    for account in ["a", "a", "b", "b"] {
        submit(&store, new_job(account));
    }
    // Nothing ran yet: a job is taken to last 60 s. a's oldest job is next (60 s); b's waits
    // behind a's two, one at a time (60 + 2 x 60 s).
    assert_eq!(retry_of("a"), 60);
    assert_eq!(retry_of("b"), 180);
    // Two running (a's and b's oldest, least busy account first): b's next job waits behind
    // one of a's, and two run at a time, so it starts when the first running one ends.
    store.claim("w1").unwrap().unwrap();
    store.claim("w2").unwrap().unwrap();
    submit(&store, new_job("b"));
    let b = retry_of("b");
    assert!((59..=60).contains(&b), "{b}");
}

#[test]
fn cancel_queued_at_once_and_running_via_flag() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, config());
    let running = submit(&store, new_job("acme"));
    let queued = submit(&store, new_job("acme"));
    let c = store.claim("w").unwrap().unwrap();
    assert_eq!(c.lease.job_id, running);

    assert_eq!(
        store.cancel("other", &queued).unwrap(),
        CancelOutcome::NotFound
    );
    assert_eq!(
        store.cancel("acme", &queued).unwrap(),
        CancelOutcome::Cancelled
    );
    let job = store.get(&queued).unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Cancelled);
    assert!(job.finished_at_ms.is_some());
    assert_eq!(
        store.cancel("acme", &queued).unwrap(),
        CancelOutcome::AlreadyEnded(JobStatus::Cancelled)
    );

    assert_eq!(
        store.cancel("acme", &running).unwrap(),
        CancelOutcome::Requested
    );
    assert_eq!(
        store.get(&running).unwrap().unwrap().status,
        JobStatus::Running
    );
    assert_eq!(
        store.progress(&c.lease, 1, 10).unwrap(),
        LeaseState::Held {
            cancel_requested: true
        }
    );
    assert!(store.finish_cancelled(&c.lease).unwrap());
    assert_eq!(
        store.get(&running).unwrap().unwrap().status,
        JobStatus::Cancelled
    );
}

#[test]
fn tokens_are_stored_hashed_and_map_to_their_account() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, config());
    assert_eq!(store.token_count().unwrap(), 0);
    let t1 = store.create_token("acme").unwrap();
    let t2 = store.create_token("zeta").unwrap();
    assert_ne!(t1, t2);
    assert!(t1.len() >= 40, "token too short: {t1}");
    assert_eq!(store.token_count().unwrap(), 2);
    assert_eq!(
        store.account_for_token(&t1).unwrap().as_deref(),
        Some("acme")
    );
    assert_eq!(
        store.account_for_token(&t2).unwrap().as_deref(),
        Some("zeta")
    );
    assert_eq!(store.account_for_token("gal_nope").unwrap(), None);
    assert_eq!(store.account_for_token("").unwrap(), None);
    drop(store);
    // Neither the token nor any large piece of it is anywhere in the database files.
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        all.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let haystack = String::from_utf8_lossy(&all);
    for t in [&t1, &t2] {
        assert!(!haystack.contains(t.as_str()), "plaintext token in the DB");
        assert!(!haystack.contains(&t[8..40]), "token fragment in the DB");
    }
}

#[test]
fn list_is_newest_first_per_account_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, config());
    let ids: Vec<String> = (0..5).map(|_| submit(&store, new_job("acme"))).collect();
    submit(&store, new_job("other"));
    let page1 = store.list("acme", 2, None).unwrap();
    assert_eq!(
        page1.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        vec![ids[4].clone(), ids[3].clone()]
    );
    let page2 = store.list("acme", 10, Some(&ids[3])).unwrap();
    assert_eq!(
        page2.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        vec![ids[2].clone(), ids[1].clone(), ids[0].clone()]
    );
    let counts = store.count_by_status().unwrap();
    assert_eq!(counts, vec![(JobStatus::Queued, 6)]);
}

#[test]
fn every_write_notifies_subscribers_and_bumps_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, config());
    let mut events = store.subscribe();
    let id = submit(&store, new_job("acme"));
    assert_eq!(events.try_recv().unwrap(), id);
    let v0 = store.get(&id).unwrap().unwrap().version;
    let c = store.claim("w").unwrap().unwrap();
    assert_eq!(events.try_recv().unwrap(), id);
    store.progress(&c.lease, 1, 2).unwrap();
    assert_eq!(events.try_recv().unwrap(), id);
    assert!(store.get(&id).unwrap().unwrap().version >= v0 + 2);
    // A refused stale write notifies nobody.
    let stale = gallop_store::Lease {
        attempt: 99,
        ..c.lease.clone()
    };
    store.progress(&stale, 2, 2).unwrap();
    assert!(events.try_recv().is_err());
}

#[test]
fn expired_results_lists_old_ended_jobs_until_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, config());
    let id = submit(&store, new_job("acme"));
    let c = store.claim("w").unwrap().unwrap();
    store.complete(&c.lease, "results/k.mp4").unwrap();
    assert!(
        store.expired_results(60_000, 10).unwrap().is_empty(),
        "not old yet"
    );
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(store.expired_results(10, 10).unwrap(), vec![id.clone()]);
    store.forget_result(&id).unwrap();
    assert!(store.expired_results(10, 10).unwrap().is_empty());
    let job = store.get(&id).unwrap().unwrap();
    assert_eq!(job.result_key, None);
    assert_eq!(job.status, JobStatus::Completed);
}

#[test]
fn two_store_handles_on_one_file_never_claim_the_same_job() {
    let dir = tempfile::tempdir().unwrap();
    let a = std::sync::Arc::new(open(&dir, config()));
    let b = std::sync::Arc::new(open(&dir, config()));
    let n = 40;
    for _ in 0..n {
        submit(&a, new_job("acme"));
    }
    let handles: Vec<_> = [a, b]
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(c) = s.claim(&format!("w{i}")).unwrap() {
                    got.push(c.lease.job_id.clone());
                    s.complete(&c.lease, "k").unwrap();
                }
                got
            })
        })
        .collect();
    let mut all: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(all.len(), n);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "a job was claimed twice");
}

#[test]
fn recover_orphaned_requeues_running_jobs_whose_leases_have_not_expired() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, config());
    let running = submit(&store, new_job("acme"));
    let queued = submit(&store, new_job("acme"));
    let c = store.claim("dead-process-0").unwrap().unwrap();
    assert_eq!(c.lease.job_id, running);
    // The lease has a minute left: plain recovery leaves it alone.
    assert_eq!(store.recover_expired().unwrap().requeued, 0);
    let r = store.recover_orphaned().unwrap();
    assert_eq!((r.requeued, r.failed), (1, 0));
    let job = store.get(&running).unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.error_code.as_deref(), Some(error_code::INTERRUPTED));
    assert_eq!(
        store.get(&queued).unwrap().unwrap().status,
        JobStatus::Queued
    );
    // The dead process's lease is void.
    assert_eq!(store.progress(&c.lease, 1, 2).unwrap(), LeaseState::Lost);
    assert_eq!(store.claim("new").unwrap().unwrap().lease.attempt, 2);
}

#[test]
fn inline_inputs_are_forgotten_only_once_the_job_ended() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, config());
    let job = NewJob {
        request: json!({"images": [
            "data:image/png;base64,AAAA",
            "https://example.com/a.png",
            "https://bob:hunter2@example.com/b.png?token=t0k"
        ]}),
        ..new_job("acme")
    };
    let id = submit(&store, job);
    assert!(
        !store.forget_inputs(&id).unwrap(),
        "queued jobs keep their inputs"
    );
    let c = store.claim("w").unwrap().unwrap();
    assert!(
        !store.forget_inputs(&id).unwrap(),
        "running jobs keep their inputs"
    );
    assert_eq!(
        store.get(&id).unwrap().unwrap().request["images"][0],
        "data:image/png;base64,AAAA"
    );
    assert_eq!(
        store.get(&id).unwrap().unwrap().request["images"][2],
        "https://bob:hunter2@example.com/b.png?token=t0k",
        "the worker still needs the credentials"
    );
    store.complete(&c.lease, "k").unwrap();
    assert!(store.forget_inputs(&id).unwrap());
    let request = store.get(&id).unwrap().unwrap().request;
    assert_eq!(
        request["images"],
        json!([
            gallop_store::DELETED_INLINE_INPUT,
            "https://example.com/a.png",
            "https://REDACTED@example.com/b.png?token=REDACTED"
        ])
    );
    assert!(
        !store.forget_inputs(&id).unwrap(),
        "second call changes nothing"
    );
    assert!(!store.forget_inputs("no-such-job").unwrap());
}
