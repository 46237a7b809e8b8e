//! The PostgreSQL store against a real throwaway cluster: the contract every store passes, then
//! what only a shared database has (several processes, events across them, outages, schema).

use std::time::{Duration, Instant};

use gallop_store::contract::{claim_until_empty, config, new_job, next_event, submit};
use gallop_store::{JobStatus, JobStore, StoreConfig, StoreError};
use gallop_store_postgres::PostgresStore;
use gallop_testkit::TempPostgres;

/// A fresh database on the shared cluster, and an opener of store handles on it (each handle is
/// what one gallop process would hold).
fn fresh() -> impl Fn(StoreConfig) -> PostgresStore {
    let url = TempPostgres::shared().fresh_database();
    move |config| PostgresStore::connect(&url, config).expect("connect to the test database")
}

mod contract {
    gallop_store::contract_tests!(super::fresh);
}

#[test]
fn two_processes_claiming_concurrently_take_each_job_exactly_once() {
    let open = fresh();
    let stores = [open(config()), open(config())];
    let n = 200;
    for i in 0..n {
        submit(&stores[i % 2], new_job(&format!("acct{}", i % 5)));
    }
    // Four workers in each process.
    let claimed = claim_until_empty(&stores, 8);
    assert_eq!(claimed.len(), n, "claims: {}", claimed.len());
    let mut unique = claimed.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), n, "a job was handed to two workers");
    for id in &unique {
        let job = stores[0].get(id).unwrap().unwrap();
        assert_eq!((job.status, job.attempt), (JobStatus::Completed, 1), "{id}");
    }
}

#[test]
fn running_caps_hold_across_processes_claiming_at_once() {
    let open = fresh();
    let capped = StoreConfig {
        max_running_per_account: 2,
        ..config()
    };
    let stores = [open(capped.clone()), open(capped)];
    for _ in 0..10 {
        submit(&stores[0], new_job("a"));
    }
    // Eight workers at once, none finishing: only two of a's jobs may run.
    let claimed = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|w| {
                let store = &stores[w % 2];
                s.spawn(move || store.claim(&format!("w{w}")).unwrap().is_some())
            })
            .collect();
        workers
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|got| *got)
            .count()
    });
    assert_eq!(claimed, 2);
}

#[test]
fn a_submit_on_one_process_reaches_subscribers_of_another_at_once() {
    let open = fresh();
    let api = open(config());
    let worker = open(config());
    let mut events = worker.subscribe();
    let started = Instant::now();
    let id = submit(&api, new_job("acme"));
    assert_eq!(next_event(&mut events), id);
    let waited = started.elapsed();
    // The worker claims it and reports progress: the API process hears of each write.
    let mut api_events = api.subscribe();
    let c = worker.claim("w").unwrap().unwrap();
    assert_eq!(next_event(&mut api_events), id);
    worker.progress(&c.lease, 1, 4).unwrap();
    assert_eq!(next_event(&mut api_events), id);
    assert_eq!(api.get(&id).unwrap().unwrap().progress_step, 1);
    // Delivered by the database, not by a poll of ours: well within the listener's 200 ms look-up.
    assert!(waited < Duration::from_secs(2), "{waited:?}");
}

#[test]
fn an_outage_is_unavailable_and_events_resume_when_the_database_is_back() {
    // A cluster of its own: this test stops it.
    let pg = TempPostgres::start();
    let url = pg.fresh_database();
    let store = PostgresStore::connect(&url, config()).unwrap();
    let mut events = store.subscribe();
    store.ping().unwrap();
    pg.stop();
    match store.ping() {
        Err(StoreError::Unavailable(msg)) => assert!(!msg.is_empty()),
        other => panic!("expected Unavailable while the database is down, got {other:?}"),
    }
    match store.submit(new_job("acme")) {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected Unavailable while the database is down, got {other:?}"),
    }
    match PostgresStore::connect(&url, config()) {
        Err(StoreError::Unavailable(_)) => {}
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("connected to a stopped database"),
    }
    pg.restart();
    // The pool reconnects: a write goes through (possibly after a failed try on a dead
    // connection), and the listener, reconnected, announces it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        match store.submit(new_job("acme")) {
            Ok(s) => break s.job().id.clone(),
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => panic!("store did not recover: {e}"),
        }
    };
    store.ping().unwrap();
    // Notifications sent before the listener reconnected are lost (SSE re-reads once a second);
    // those after it arrive. Keep writing until one is heard.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        store.forget_result(&id).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(got) = events.try_recv() {
            assert_eq!(got, id);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no event after the database came back"
        );
    }
}

/// Sessions the store opened (application name `gallop`) on the database at `url`.
fn gallop_sessions(url: &str) -> i64 {
    let database = url.rsplit('/').next().unwrap().to_string();
    let mut db = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let row = db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = 'gallop'",
            &[&database],
        )
        .unwrap();
    row.get(0)
}

/// An async server holds its store in an `Arc` and drops it on a runtime thread: the
/// synchronous client's close must not panic there ("Cannot start a runtime from within a
/// runtime"), and the connections must still close.
#[tokio::test]
async fn a_store_dropped_on_an_async_thread_closes_its_connections() {
    let url = TempPostgres::shared().fresh_database();
    let store = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let store = PostgresStore::connect(&url, config()).unwrap();
            submit(&store, new_job("acme"));
            store
        })
        .await
        .unwrap()
    };
    let count = |url: String| tokio::task::spawn_blocking(move || gallop_sessions(&url));
    // At least the pooled connection and the listener's.
    let open = count(url.clone()).await.unwrap();
    assert!(open >= 2, "{open} sessions before the drop");
    drop(store);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let open = count(url.clone()).await.unwrap();
        if open == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} sessions left open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn tokens_are_stored_only_as_hashes() {
    let url = TempPostgres::shared().fresh_database();
    let store = PostgresStore::connect(&url, config()).unwrap();
    let token = store.create_token("acme").unwrap();
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let rows = db
        .query("SELECT hash || ' ' || account FROM tokens", &[])
        .unwrap();
    assert_eq!(rows.len(), 1);
    let stored: String = rows[0].get(0);
    assert!(
        !stored.contains(&token[4..20]),
        "token text in the table: {stored}"
    );
    assert!(stored.starts_with(&gallop_store::hash_token(&token)));
}

#[test]
fn migrations_run_once_when_processes_start_together_and_newer_schemas_are_refused() {
    let url = TempPostgres::shared().fresh_database();
    let stores: Vec<PostgresStore> = std::thread::scope(|s| {
        let starting: Vec<_> = (0..4)
            .map(|_| s.spawn(|| PostgresStore::connect(&url, config())))
            .collect();
        starting
            .into_iter()
            .map(|h| h.join().unwrap().expect("concurrent start"))
            .collect()
    });
    let id = submit(&stores[0], new_job("acme"));
    assert!(stores[3].get(&id).unwrap().is_some());
    drop(stores);
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let versions: Vec<i64> = db
        .query("SELECT version FROM gallop_schema", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![gallop_store_postgres::schema_version()]);
    db.execute("UPDATE gallop_schema SET version = 99", &[])
        .unwrap();
    let err = match PostgresStore::connect(&url, config()) {
        Ok(_) => panic!("a newer schema must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("newer than this gallop"), "{err}");
}

#[test]
fn times_come_from_the_database_clock() {
    let url = TempPostgres::shared().fresh_database();
    let store = PostgresStore::connect(&url, config()).unwrap();
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let db_now = |db: &mut postgres::Client| -> i64 {
        db.query_one("SELECT gallop_now_ms()", &[]).unwrap().get(0)
    };
    let before = db_now(&mut db);
    let id = submit(&store, new_job("acme"));
    let after = db_now(&mut db);
    let job = store.get(&id).unwrap().unwrap();
    assert!(
        (before..=after).contains(&job.created_at_ms),
        "{before} <= {} <= {after}",
        job.created_at_ms
    );
    // The function reads clock_timestamp(): the server's clock, not the client's.
    let source: String = db
        .query_one(
            "SELECT prosrc FROM pg_proc WHERE proname = 'gallop_now_ms'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(source.contains("clock_timestamp()"), "{source}");
    assert_eq!(
        store.worker_lock_path(),
        None,
        "a shared database has no worker lock"
    );
}
