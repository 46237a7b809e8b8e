//! The contract every [`JobStore`] backend passes: each rule of the job semantics as one test
//! function, generic over the backend.
//!
//! A backend's test crate (with this crate's `contract` feature as a dev-dependency) writes a
//! function that makes a fresh, empty database and returns an opener of store handles on it, then
//! expands one `#[test]` per rule:
//!
//! ```text
//! fn fresh() -> impl Fn(StoreConfig) -> SqliteStore {
//!     let dir = tempfile::tempdir().unwrap();
//!     move |config| SqliteStore::open(dir.path(), config).unwrap()
//! }
//! mod contract {
//!     gallop_store::contract_tests!(super::fresh);
//! }
//! ```
//!
//! The opener may be called more than once: every handle it returns works on the same database
//! (a reopened store, or a second process). Times move with small `StoreConfig` durations and
//! short sleeps, never seconds.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::broadcast;

use crate::*;

/// Expands to one `#[test]` per rule of the contract, each calling
/// `gallop_store::contract::RULE(fresh())`, so a failure names the rule.
#[macro_export]
macro_rules! contract_tests {
    ($fresh:path) => {
        $crate::contract_tests!(@rules $fresh;
            submit_creates_a_queued_job_that_survives_reopening,
            max_attempts_comes_from_the_job_or_the_store_and_is_at_least_one,
            claim_sets_a_lease_that_progress_renews,
            expired_lease_requeues_and_a_stale_worker_changes_nothing,
            backoff_delays_the_retry_of_an_interrupted_job,
            interrupted_max_attempts_times_fails_with_a_reason,
            retryable_failure_requeues_until_the_last_attempt_and_final_failure_ends_at_once,
            release_returns_the_job_without_spending_an_attempt,
            idempotency_key_same_body_same_job_other_body_conflict,
            least_busy_account_first_then_priority_then_age,
            running_cap_per_account_makes_its_jobs_wait,
            queue_full_total_and_per_account,
            retry_after_is_estimated_from_the_queue,
            cancel_queued_at_once_and_running_via_flag,
            cancel_requested_job_whose_lease_expires_ends_cancelled,
            tokens_map_to_their_account,
            provider_keys_are_per_account_and_provider,
            list_is_newest_first_per_account_and_pages,
            every_write_notifies_subscribers_and_bumps_version,
            expired_results_lists_old_ended_jobs_until_forgotten,
            two_handles_on_one_database_never_claim_the_same_job,
            recover_orphaned_requeues_running_jobs_whose_leases_have_not_expired,
            inline_inputs_are_forgotten_only_once_the_job_ended,
            ping_answers_while_the_database_is_up,
        );
    };
    (@rules $fresh:path; $($rule:ident),* $(,)?) => {
        $(
            #[test]
            fn $rule() {
                $crate::contract::$rule($fresh());
            }
        )*
    };
}

/// Leases of a minute and no backoff: nothing expires unless a rule asks for it.
pub fn config() -> StoreConfig {
    StoreConfig {
        lease_ms: 60_000,
        backoff_base_ms: 0,
        backoff_max_ms: 0,
        ..StoreConfig::default()
    }
}

pub fn new_job(account: &str) -> NewJob {
    NewJob {
        account: account.to_string(),
        model: "alibaba/hh1-i2v".to_string(),
        request: json!({"prompt": "a horse", "account": account}),
        priority: 0,
        max_attempts: None,
        idempotency: None,
    }
}

/// Submits a job that must be created; its id.
pub fn submit(store: &impl JobStore, job: NewJob) -> String {
    match store.submit(job).expect("submit") {
        Submitted::Created(j) => j.id,
        other => panic!("expected a new job, got {other:?}"),
    }
}

/// The next job id a subscriber is told of. Backends may deliver through the database (LISTEN),
/// so this waits a little instead of expecting the event at once.
pub fn next_event(events: &mut broadcast::Receiver<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match events.try_recv() {
            Ok(id) => return id,
            Err(broadcast::error::TryRecvError::Empty) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) => panic!("no job event within 10 s: {e:?}"),
        }
    }
}

/// `workers` threads, spread over `stores`, claim and complete jobs until none is left; the
/// ids each claim got, in no particular order.
pub fn claim_until_empty<S: JobStore>(stores: &[S], workers: usize) -> Vec<String> {
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..workers)
            .map(|w| {
                let store = &stores[w % stores.len()];
                s.spawn(move || {
                    let mut got = Vec::new();
                    while let Some(c) = store.claim(&format!("w{w}")).unwrap() {
                        got.push(c.lease.job_id.clone());
                        store.progress(&c.lease, 1, 1).unwrap();
                        assert!(store.complete(&c.lease, "k").unwrap(), "lease lost");
                    }
                    got
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

fn get(store: &impl JobStore, id: &str) -> Job {
    store.get(id).expect("get").expect("job exists")
}

fn final_failure(code: &str, message: &str) -> Failure {
    Failure::Final {
        code: code.into(),
        message: message.into(),
    }
}

pub fn submit_creates_a_queued_job_that_survives_reopening<S: JobStore>(
    open: impl Fn(StoreConfig) -> S,
) {
    let id = {
        let store = open(config());
        submit(&store, new_job("acme"))
    };
    let store = open(config());
    let job = get(&store, &id);
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.account, "acme");
    assert_eq!(job.model, "alibaba/hh1-i2v");
    assert_eq!(job.request["prompt"], "a horse");
    assert_eq!(job.attempt, 0);
    assert_eq!(job.max_attempts, 3);
    assert_eq!(job.version, 1);
    assert!(job.created_at_ms > 1_700_000_000_000, "DB clock in unix ms");
    assert_eq!(job.started_at_ms, None);
    assert_eq!(store.queue_position(&id).unwrap(), Some(1));
    // Another account does not see it.
    assert!(store.get_for_account("other", &id).unwrap().is_none());
    assert!(store.get_for_account("acme", &id).unwrap().is_some());
    assert!(store.get("no-such-job").unwrap().is_none());
}

pub fn max_attempts_comes_from_the_job_or_the_store_and_is_at_least_one<S: JobStore>(
    open: impl Fn(StoreConfig) -> S,
) {
    let store = open(StoreConfig {
        default_max_attempts: 4,
        ..config()
    });
    let default = submit(&store, new_job("acme"));
    let five = submit(
        &store,
        NewJob {
            max_attempts: Some(5),
            ..new_job("acme")
        },
    );
    let zero = submit(
        &store,
        NewJob {
            max_attempts: Some(0),
            ..new_job("acme")
        },
    );
    assert_eq!(get(&store, &default).max_attempts, 4);
    assert_eq!(get(&store, &five).max_attempts, 5);
    assert_eq!(get(&store, &zero).max_attempts, 1);
}

pub fn claim_sets_a_lease_that_progress_renews<S: JobStore>(open: impl Fn(StoreConfig) -> S) {
    // Long enough that a loaded machine pausing a thread between two calls does not expire it.
    let lease_ms = 500;
    let store = open(StoreConfig {
        lease_ms,
        ..config()
    });
    let id = submit(&store, new_job("acme"));
    let claim = store.claim("w1").unwrap().expect("a job to claim");
    assert_eq!(claim.lease.job_id, id);
    assert_eq!(claim.lease.worker_id, "w1");
    assert_eq!(claim.lease.attempt, 1);
    assert_eq!(claim.job.status, JobStatus::Running);
    assert_eq!(claim.job.attempt, 1);
    assert!(claim.job.started_at_ms.is_some());
    assert_eq!(store.queue_position(&id).unwrap(), None);
    // Nothing else to claim.
    assert!(store.claim("w2").unwrap().is_none());

    // Progress every 100 ms for twice the lease keeps the job: each write renews the lease.
    let started = Instant::now();
    let mut step = 0;
    while started.elapsed() < Duration::from_millis(2 * lease_ms as u64) {
        std::thread::sleep(Duration::from_millis(100));
        step += 1;
        let state = store.progress(&claim.lease, step, 100).unwrap();
        assert_eq!(
            state,
            LeaseState::Held {
                cancel_requested: false
            }
        );
        assert_eq!(store.recover_expired().unwrap(), Recovered::default());
    }
    let job = get(&store, &id);
    assert_eq!((job.status, job.attempt), (JobStatus::Running, 1));
    assert_eq!((job.progress_step, job.progress_total), (step, 100));

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
    let job = get(&store, &id);
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.seed, Some(42));
    assert_eq!(job.engine, Some(json!({"engine": "preview"})));
    assert_eq!(job.result_key.as_deref(), Some("results/x/attempt-1.mp4"));
    assert_eq!(job.progress_step, job.progress_total, "completed is 100%");
    assert!(job.finished_at_ms.unwrap() >= job.started_at_ms.unwrap());
    // A completed job's lease is over: it never expires back into the queue.
    std::thread::sleep(Duration::from_millis(lease_ms as u64 + 50));
    assert_eq!(store.recover_expired().unwrap(), Recovered::default());
    assert_eq!(get(&store, &id).status, JobStatus::Completed);
}

pub fn expired_lease_requeues_and_a_stale_worker_changes_nothing<S: JobStore>(
    open: impl Fn(StoreConfig) -> S,
) {
    let store = open(StoreConfig {
        lease_ms: 50,
        ..config()
    });
    let id = submit(&store, new_job("acme"));
    let first = store.claim("old-worker").unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(120));
    // The next claim recovers the expired lease and takes the job as attempt 2.
    let second = store.claim("new-worker").unwrap().expect("requeued job");
    assert_eq!(second.lease.job_id, id);
    assert_eq!(second.lease.attempt, 2);

    // Every write of the stale worker is refused and changes nothing.
    let version = get(&store, &id).version;
    assert_eq!(
        store.progress(&first.lease, 9, 10).unwrap(),
        LeaseState::Lost
    );
    assert!(!store.set_run_info(&first.lease, 7, &json!({})).unwrap());
    assert!(!store.complete(&first.lease, "results/stale.mp4").unwrap());
    assert!(!store.fail(&first.lease, &final_failure("x", "y")).unwrap());
    let retry = Failure::Retryable {
        code: "x".into(),
        message: "y".into(),
    };
    assert!(!store.fail(&first.lease, &retry).unwrap());
    assert!(!store.finish_cancelled(&first.lease).unwrap());
    assert!(!store.release(&first.lease).unwrap());
    // The same attempt under another worker's name is stale too.
    let impostor = Lease {
        worker_id: "old-worker".into(),
        ..second.lease.clone()
    };
    assert!(!store.complete(&impostor, "results/impostor.mp4").unwrap());
    let job = get(&store, &id);
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(job.attempt, 2);
    assert_eq!(job.progress_step, 0);
    assert_eq!(job.seed, None);
    assert_eq!(job.result_key, None);
    assert_eq!(job.version, version, "a refused write bumps no version");

    // The current worker's writes apply.
    assert!(store.complete(&second.lease, "results/good.mp4").unwrap());
    assert_eq!(
        get(&store, &id).result_key.as_deref(),
        Some("results/good.mp4")
    );
}

pub fn backoff_delays_the_retry_of_an_interrupted_job<S: JobStore>(
    open: impl Fn(StoreConfig) -> S,
) {
    let backoff_ms = 600;
    let store = open(StoreConfig {
        lease_ms: 30,
        backoff_base_ms: backoff_ms,
        backoff_max_ms: backoff_ms,
        ..config()
    });
    let id = submit(&store, new_job("acme"));
    store.claim("w1").unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(80));
    let before_recovery = Instant::now();
    let recovered = store.recover_expired().unwrap();
    assert_eq!(
        recovered,
        Recovered {
            requeued: 1,
            failed: 0
        }
    );
    let job = get(&store, &id);
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.error_code.as_deref(), Some(error_code::INTERRUPTED));
    assert!(job.error_message.unwrap().contains("attempt 1"));
    // Within the backoff nobody may claim it; after it, someone does.
    let claim = loop {
        if let Some(c) = store.claim("w2").unwrap() {
            break c;
        }
        assert!(
            before_recovery.elapsed() < Duration::from_secs(10),
            "never claimable again"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        before_recovery.elapsed() >= Duration::from_millis(backoff_ms as u64),
        "claimed {:?} after the interruption, within the {backoff_ms} ms backoff",
        before_recovery.elapsed()
    );
    assert_eq!(claim.lease.attempt, 2);
}

pub fn interrupted_max_attempts_times_fails_with_a_reason<S: JobStore>(
    open: impl Fn(StoreConfig) -> S,
) {
    let store = open(StoreConfig {
        lease_ms: 20,
        default_max_attempts: 2,
        ..config()
    });
    let id = submit(&store, new_job("acme"));
    for attempt in 1..=2 {
        let c = store.claim("w").unwrap().expect("claimable");
        assert_eq!(c.lease.attempt, attempt);
        std::thread::sleep(Duration::from_millis(50));
    }
    let recovered = store.recover_expired().unwrap();
    assert_eq!(
        recovered,
        Recovered {
            requeued: 0,
            failed: 1
        }
    );
    let job = get(&store, &id);
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error_code.as_deref(), Some(error_code::INTERRUPTED));
    let msg = job.error_message.unwrap();
    assert!(msg.contains("interrupted 2 times"), "{msg}");
    assert!(job.finished_at_ms.is_some());
    assert!(store.claim("w").unwrap().is_none());
}

pub fn retryable_failure_requeues_until_the_last_attempt_and_final_failure_ends_at_once<
    S: JobStore,
>(
    open: impl Fn(StoreConfig) -> S,
) {
    let store = open(StoreConfig {
        default_max_attempts: 2,
        ..config()
    });
    let id = submit(&store, new_job("acme"));
    let retry = Failure::Retryable {
        code: error_code::INTERNAL.into(),
        message: "encoder crashed".into(),
    };
    let c1 = store.claim("w").unwrap().unwrap();
    assert!(store.fail(&c1.lease, &retry).unwrap());
    let job = get(&store, &id);
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.finished_at_ms, None);
    let c2 = store.claim("w").unwrap().unwrap();
    assert_eq!(c2.lease.attempt, 2);
    assert!(store.fail(&c2.lease, &retry).unwrap());
    let job = get(&store, &id);
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error_code.as_deref(), Some(error_code::INTERNAL));
    assert!(job.error_message.unwrap().contains("encoder crashed"));
    assert!(job.finished_at_ms.is_some());

    let id2 = submit(&store, new_job("acme"));
    let c = store.claim("w").unwrap().unwrap();
    assert_eq!(c.lease.job_id, id2);
    let bad = final_failure(
        error_code::BAD_INPUT,
        "/input/image: image is 200x200 px; each side must be at least 300 px",
    );
    assert!(store.fail(&c.lease, &bad).unwrap());
    let job = get(&store, &id2);
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.attempt, 1);
    assert_eq!(job.error_code.as_deref(), Some(error_code::BAD_INPUT));
    assert!(job.error_message.unwrap().starts_with("/input/image: "));
    assert!(store.claim("w").unwrap().is_none());
}

pub fn release_returns_the_job_without_spending_an_attempt<S: JobStore>(
    open: impl Fn(StoreConfig) -> S,
) {
    let store = open(config());
    let id = submit(&store, new_job("acme"));
    let c = store.claim("w").unwrap().unwrap();
    store.progress(&c.lease, 3, 10).unwrap();
    assert!(store.release(&c.lease).unwrap());
    let job = get(&store, &id);
    assert_eq!((job.status, job.attempt), (JobStatus::Queued, 0));
    assert_eq!((job.progress_step, job.progress_total), (0, 0));
    assert_eq!(store.queue_position(&id).unwrap(), Some(1));
    assert_eq!(store.claim("w").unwrap().unwrap().lease.attempt, 1);
}

pub fn idempotency_key_same_body_same_job_other_body_conflict<S: JobStore>(
    open: impl Fn(StoreConfig) -> S,
) {
    let store = open(config());
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
    // The key still answers once the job ran.
    let c = store.claim("w").unwrap().unwrap();
    store.complete(&c.lease, "k").unwrap();
    match store.submit(with_key("h1", "acme")).unwrap() {
        Submitted::Existing(j) => {
            assert_eq!((j.id, j.status), (first.clone(), JobStatus::Completed))
        }
        other => panic!("expected the existing job, got {other:?}"),
    }
    // Keys are per account.
    let other = submit(&store, with_key("h2", "zeta"));
    assert_ne!(other, first);
    assert_eq!(store.list("acme", 10, None).unwrap().len(), 1);
}

pub fn least_busy_account_first_then_priority_then_age<S: JobStore>(
    open: impl Fn(StoreConfig) -> S,
) {
    let store = open(config());
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
    assert_eq!(store.queue_position(&a3).unwrap(), Some(4));
    assert_eq!(store.queue_position(&b1).unwrap(), Some(5));

    let order: Vec<String> = (0..5)
        .map(|i| store.claim(&format!("w{i}")).unwrap().unwrap().lease.job_id)
        .collect();
    // Both idle: priority wins (b_urgent). Then a has 0 running, b has 1: a1. Then 1 each:
    // oldest is a2. Then a has 2, b 1: b1. Then a3.
    assert_eq!(order, vec![b_urgent, a1, a2, b1, a3]);
}

pub fn running_cap_per_account_makes_its_jobs_wait<S: JobStore>(open: impl Fn(StoreConfig) -> S) {
    let store = open(StoreConfig {
        max_running_per_account: 1,
        ..config()
    });
    let a1 = submit(&store, new_job("a"));
    let a2 = submit(&store, new_job("a"));
    let c1 = store.claim("w1").unwrap().unwrap();
    assert_eq!(c1.lease.job_id, a1);
    assert!(store.claim("w2").unwrap().is_none(), "a is at its cap");
    // Another account is not held up by a's cap.
    let b1 = submit(&store, new_job("b"));
    assert_eq!(store.claim("w2").unwrap().unwrap().lease.job_id, b1);
    store.complete(&c1.lease, "k").unwrap();
    assert_eq!(store.claim("w3").unwrap().unwrap().lease.job_id, a2);
}

pub fn queue_full_total_and_per_account<S: JobStore>(open: impl Fn(StoreConfig) -> S) {
    let store = open(StoreConfig {
        max_queued_total: 3,
        max_queued_per_account: 2,
        ..config()
    });
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
        Err(StoreError::Full {
            reason,
            retry_after_secs,
        }) => {
            assert!(reason.contains("3 jobs are queued"), "{reason}");
            assert!(retry_after_secs > 0);
        }
        other => panic!("expected Full, got {other:?}"),
    }
    // Running jobs free queue room.
    store.claim("w").unwrap().unwrap();
    submit(&store, new_job("c"));
}

pub fn retry_after_is_estimated_from_the_queue<S: JobStore>(open: impl Fn(StoreConfig) -> S) {
    let store = open(StoreConfig {
        max_queued_total: 100,
        max_queued_per_account: 2,
        ..config()
    });
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

pub fn cancel_queued_at_once_and_running_via_flag<S: JobStore>(open: impl Fn(StoreConfig) -> S) {
    let store = open(config());
    let running = submit(&store, new_job("acme"));
    let queued = submit(&store, new_job("acme"));
    let c = store.claim("w").unwrap().unwrap();
    assert_eq!(c.lease.job_id, running);

    assert_eq!(
        store.cancel("other", &queued).unwrap(),
        CancelOutcome::NotFound
    );
    assert_eq!(
        store.cancel("acme", "no-such-job").unwrap(),
        CancelOutcome::NotFound
    );
    assert_eq!(
        store.cancel("acme", &queued).unwrap(),
        CancelOutcome::Cancelled
    );
    let job = get(&store, &queued);
    assert_eq!(job.status, JobStatus::Cancelled);
    assert!(job.finished_at_ms.is_some());
    assert_eq!(store.queue_position(&queued).unwrap(), None);
    assert_eq!(
        store.cancel("acme", &queued).unwrap(),
        CancelOutcome::AlreadyEnded(JobStatus::Cancelled)
    );

    assert_eq!(
        store.cancel("acme", &running).unwrap(),
        CancelOutcome::Requested
    );
    let job = get(&store, &running);
    assert_eq!(job.status, JobStatus::Running);
    assert!(job.cancel_requested);
    assert_eq!(
        store.progress(&c.lease, 1, 10).unwrap(),
        LeaseState::Held {
            cancel_requested: true
        }
    );
    assert!(store.finish_cancelled(&c.lease).unwrap());
    let job = get(&store, &running);
    assert_eq!(job.status, JobStatus::Cancelled);
    assert!(job.finished_at_ms.is_some());
    assert!(
        store.claim("w").unwrap().is_none(),
        "a cancelled job is never claimed"
    );
}

pub fn cancel_requested_job_whose_lease_expires_ends_cancelled<S: JobStore>(
    open: impl Fn(StoreConfig) -> S,
) {
    let store = open(StoreConfig {
        lease_ms: 30,
        ..config()
    });
    let id = submit(&store, new_job("acme"));
    store.claim("w").unwrap().unwrap();
    assert_eq!(store.cancel("acme", &id).unwrap(), CancelOutcome::Requested);
    // The worker died before it saw the flag: the job ends cancelled, not retried.
    std::thread::sleep(Duration::from_millis(80));
    store.recover_expired().unwrap();
    let job = get(&store, &id);
    assert_eq!(job.status, JobStatus::Cancelled);
    assert!(job.finished_at_ms.is_some());
    assert!(store.claim("w").unwrap().is_none());
}

pub fn tokens_map_to_their_account<S: JobStore>(open: impl Fn(StoreConfig) -> S) {
    let store = open(config());
    assert_eq!(store.token_count().unwrap(), 0);
    let t1 = store.create_token("acme").unwrap();
    let t2 = store.create_token("zeta").unwrap();
    assert_ne!(t1, t2);
    assert!(t1.starts_with("gal_"), "{t1}");
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
    // A token differing in one character is another token.
    let mut near = t1.clone();
    let last = if near.ends_with('0') { "1" } else { "0" };
    near.replace_range(near.len() - 1.., last);
    assert_eq!(store.account_for_token(&near).unwrap(), None);
    // Tokens outlive the handle that made them.
    drop(store);
    let store = open(config());
    assert_eq!(
        store.account_for_token(&t1).unwrap().as_deref(),
        Some("acme")
    );
}

pub fn provider_keys_are_per_account_and_provider<S: JobStore>(open: impl Fn(StoreConfig) -> S) {
    let store = open(config());
    assert_eq!(store.provider_key("acme", "dashscope").unwrap(), None);
    let sealed = [0u8, 1, 2, 255, 0, 42];
    store
        .put_provider_key("acme", "dashscope", &sealed)
        .unwrap();
    assert_eq!(
        store.provider_key("acme", "dashscope").unwrap().as_deref(),
        Some(&sealed[..])
    );
    assert_eq!(store.provider_key("zeta", "dashscope").unwrap(), None);
    assert_eq!(store.provider_key("acme", "other").unwrap(), None);
    // Put replaces.
    store
        .put_provider_key("acme", "dashscope", b"second")
        .unwrap();
    assert_eq!(
        store.provider_key("acme", "dashscope").unwrap().as_deref(),
        Some(&b"second"[..])
    );
    store
        .put_provider_key("zeta", "dashscope", b"zeta's")
        .unwrap();
    assert!(store.delete_provider_key("acme", "dashscope").unwrap());
    assert!(!store.delete_provider_key("acme", "dashscope").unwrap());
    assert_eq!(store.provider_key("acme", "dashscope").unwrap(), None);
    assert_eq!(
        store.provider_key("zeta", "dashscope").unwrap().as_deref(),
        Some(&b"zeta's"[..])
    );
}

pub fn list_is_newest_first_per_account_and_pages<S: JobStore>(open: impl Fn(StoreConfig) -> S) {
    let store = open(config());
    let ids: Vec<String> = (0..5).map(|_| submit(&store, new_job("acme"))).collect();
    let other = submit(&store, new_job("other"));
    let ids_of = |jobs: Vec<Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(
        ids_of(store.list("acme", 2, None).unwrap()),
        vec![ids[4].clone(), ids[3].clone()]
    );
    assert_eq!(
        ids_of(store.list("acme", 10, Some(&ids[3])).unwrap()),
        vec![ids[2].clone(), ids[1].clone(), ids[0].clone()]
    );
    // Another account's job is no page mark.
    assert!(store.list("acme", 10, Some(&other)).unwrap().is_empty());
    assert_eq!(ids_of(store.list("other", 10, None).unwrap()), vec![other]);
    assert_eq!(
        store.count_by_status().unwrap(),
        vec![(JobStatus::Queued, 6)]
    );
    let c = store.claim("w").unwrap().unwrap();
    store.complete(&c.lease, "k").unwrap();
    store.claim("w").unwrap().unwrap();
    let mut counts = store.count_by_status().unwrap();
    counts.sort_by_key(|(s, _)| s.as_str());
    assert_eq!(
        counts,
        vec![
            (JobStatus::Completed, 1),
            (JobStatus::Queued, 4),
            (JobStatus::Running, 1)
        ]
    );
}

pub fn every_write_notifies_subscribers_and_bumps_version<S: JobStore>(
    open: impl Fn(StoreConfig) -> S,
) {
    let store = open(config());
    let mut events = store.subscribe();
    let id = submit(&store, new_job("acme"));
    assert_eq!(next_event(&mut events), id);
    let v0 = get(&store, &id).version;
    let c = store.claim("w").unwrap().unwrap();
    assert_eq!(next_event(&mut events), id);
    store.progress(&c.lease, 1, 2).unwrap();
    assert_eq!(next_event(&mut events), id);
    store.set_run_info(&c.lease, 1, &json!({})).unwrap();
    assert_eq!(next_event(&mut events), id);
    assert_eq!(get(&store, &id).version, v0 + 3);
    // A refused stale write notifies nobody: the next event is the next job's.
    let stale = Lease {
        attempt: 99,
        ..c.lease.clone()
    };
    store.progress(&stale, 2, 2).unwrap();
    let id2 = submit(&store, new_job("acme"));
    assert_eq!(next_event(&mut events), id2);
    // Cancel and the end of a job notify.
    store.cancel("acme", &id2).unwrap();
    assert_eq!(next_event(&mut events), id2);
    store.complete(&c.lease, "k").unwrap();
    assert_eq!(next_event(&mut events), id);
    store.forget_result(&id).unwrap();
    assert_eq!(next_event(&mut events), id);
    assert_eq!(get(&store, &id).version, v0 + 5);
}

pub fn expired_results_lists_old_ended_jobs_until_forgotten<S: JobStore>(
    open: impl Fn(StoreConfig) -> S,
) {
    let store = open(config());
    let id = submit(&store, new_job("acme"));
    let running = submit(&store, new_job("acme"));
    let c = store.claim("w").unwrap().unwrap();
    assert_eq!(c.lease.job_id, id);
    store.complete(&c.lease, "results/k.mp4").unwrap();
    store.claim("w").unwrap().unwrap();
    assert!(
        store.expired_results(60_000, 10).unwrap().is_empty(),
        "not old yet"
    );
    std::thread::sleep(Duration::from_millis(30));
    // Only ended jobs: the running one is not listed.
    assert_eq!(store.expired_results(10, 10).unwrap(), vec![id.clone()]);
    assert!(!store.expired_results(10, 10).unwrap().contains(&running));
    store.forget_result(&id).unwrap();
    assert!(store.expired_results(10, 10).unwrap().is_empty());
    let job = get(&store, &id);
    assert_eq!(job.result_key, None);
    assert_eq!(job.status, JobStatus::Completed);
}

pub fn two_handles_on_one_database_never_claim_the_same_job<S: JobStore>(
    open: impl Fn(StoreConfig) -> S,
) {
    let stores = [open(config()), open(config())];
    let n = 60;
    for i in 0..n {
        submit(&stores[i % 2], new_job(&format!("acct{}", i % 3)));
    }
    let claimed = claim_until_empty(&stores, 4);
    assert_eq!(claimed.len(), n);
    let mut unique = claimed.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), n, "a job was claimed twice");
    assert_eq!(
        stores[0].count_by_status().unwrap(),
        vec![(JobStatus::Completed, n as u64)]
    );
}

pub fn recover_orphaned_requeues_running_jobs_whose_leases_have_not_expired<S: JobStore>(
    open: impl Fn(StoreConfig) -> S,
) {
    let store = open(config());
    let running = submit(&store, new_job("acme"));
    let queued = submit(&store, new_job("acme"));
    let c = store.claim("dead-process-0").unwrap().unwrap();
    assert_eq!(c.lease.job_id, running);
    // The lease has a minute left: plain recovery leaves it alone.
    assert_eq!(store.recover_expired().unwrap().requeued, 0);
    let r = store.recover_orphaned().unwrap();
    assert_eq!((r.requeued, r.failed), (1, 0));
    let job = get(&store, &running);
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.error_code.as_deref(), Some(error_code::INTERRUPTED));
    assert_eq!(get(&store, &queued).status, JobStatus::Queued);
    // The dead process's lease is void.
    assert_eq!(store.progress(&c.lease, 1, 2).unwrap(), LeaseState::Lost);
    assert_eq!(store.claim("new").unwrap().unwrap().lease.attempt, 2);
}

pub fn inline_inputs_are_forgotten_only_once_the_job_ended<S: JobStore>(
    open: impl Fn(StoreConfig) -> S,
) {
    let store = open(config());
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
        get(&store, &id).request["images"][0],
        "data:image/png;base64,AAAA"
    );
    assert_eq!(
        get(&store, &id).request["images"][2],
        "https://bob:hunter2@example.com/b.png?token=t0k",
        "the worker still needs the credentials"
    );
    store.complete(&c.lease, "k").unwrap();
    let version = get(&store, &id).version;
    assert!(store.forget_inputs(&id).unwrap());
    let job = get(&store, &id);
    assert_eq!(
        job.request["images"],
        json!([
            DELETED_INLINE_INPUT,
            "https://example.com/a.png",
            "https://REDACTED@example.com/b.png?token=REDACTED"
        ])
    );
    assert_eq!(job.version, version + 1);
    assert!(
        !store.forget_inputs(&id).unwrap(),
        "second call changes nothing"
    );
    assert!(!store.forget_inputs("no-such-job").unwrap());
}

pub fn ping_answers_while_the_database_is_up<S: JobStore>(open: impl Fn(StoreConfig) -> S) {
    let store = open(config());
    store.ping().expect("ping a live database");
}

#[cfg(test)]
mod tests {
    /// Every rule function is named in `contract_tests!`, so no backend can miss one.
    #[test]
    fn the_macro_runs_every_rule() {
        let source = include_str!("contract.rs");
        let listed_from = source
            .find("$crate::contract_tests!(@rules $fresh;")
            .unwrap();
        let listed_to = listed_from + source[listed_from..].find(");").unwrap();
        let mut listed: Vec<&str> = source[listed_from..listed_to]
            .lines()
            .skip(1)
            .map(|l| l.trim().trim_end_matches(','))
            .filter(|l| !l.is_empty())
            .collect();
        // A rule takes the opener of stores: `open: impl Fn(StoreConfig) -> S`.
        let lines: Vec<&str> = source.lines().collect();
        let mut rules: Vec<&str> = (0..lines.len())
            .filter(|&i| {
                lines[i..(i + 5).min(lines.len())]
                    .concat()
                    .contains("open: impl Fn(")
            })
            .filter_map(|i| lines[i].strip_prefix("pub fn "))
            .filter_map(|l| l.split_once('<').map(|(name, _)| name))
            .collect();
        listed.sort();
        rules.sort();
        assert!(rules.len() >= 20, "{rules:?}");
        assert_eq!(listed, rules);
    }
}
