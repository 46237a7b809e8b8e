//! The SQLite job store against real database files: the contract every store passes
//! (`gallop_store::contract`: leases, fencing, expiry, backoff, caps, fairness, idempotency,
//! cancel, events, tokens, keys), then what only a file has (WAL, schema version, no token in
//! the files, the worker lock beside the database).

use gallop_store::contract::{config, new_job, submit};
use gallop_store::{JobStatus, JobStore, StoreConfig};
use gallop_store_sqlite::SqliteStore;

/// A fresh data directory, and an opener of store handles on its database file.
fn fresh() -> impl Fn(StoreConfig) -> SqliteStore {
    let dir = tempfile::tempdir().expect("temp dir");
    move |config| SqliteStore::open(dir.path(), config).expect("open store")
}

mod contract {
    gallop_store::contract_tests!(super::fresh);
}

fn open(dir: &tempfile::TempDir, config: StoreConfig) -> SqliteStore {
    SqliteStore::open(dir.path(), config).expect("open store")
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
fn the_database_is_one_file_in_the_data_dir_with_the_worker_lock_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = open(&dir, config());
        assert_eq!(store.path(), dir.path().join("gallop.db"));
        assert_eq!(
            store.worker_lock_path(),
            Some(dir.path().join("worker.lock"))
        );
        submit(&store, new_job("acme"))
    };
    assert!(dir.path().join("gallop.db").exists());
    let store = open(&dir, config());
    assert_eq!(store.get(&id).unwrap().unwrap().status, JobStatus::Queued);
}

#[test]
fn tokens_are_never_in_the_database_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, config());
    let t1 = store.create_token("acme").unwrap();
    let t2 = store.create_token("zeta").unwrap();
    assert_eq!(
        store.account_for_token(&t1).unwrap().as_deref(),
        Some("acme")
    );
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
    assert!(
        haystack.contains(&gallop_store::hash_token(&t1)),
        "the hash is what is kept"
    );
}
