//! Queue throughput of a job store: JOBS queued jobs (from three accounts), then 1, 2 and 4
//! worker threads that each claim a job and complete it at once (a no-op engine: what is
//! measured is the store's claim -> complete path), until the queue is empty.
//!
//! cargo run --release -p gallop-server --example queue_bench -- sqlite|postgres [JOBS]
//!
//! `postgres` starts a throwaway PostgreSQL cluster from the installed binaries (gallop-testkit);
//! `sqlite` uses a file in a temporary directory. Each run starts from an empty database.

use std::sync::Arc;
use std::time::Instant;

use gallop_server::backends::{DatabaseUrl, open_store};
use gallop_server::store::{JobStore, NewJob, StoreConfig};
use gallop_testkit::TempPostgres;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let backend = args.next().unwrap_or_else(|| "sqlite".to_string());
    let jobs: usize = args.next().map_or(Ok(2000), |a| a.parse())?;
    let postgres = match backend.as_str() {
        "postgres" => Some(TempPostgres::start()),
        "sqlite" => None,
        other => anyhow::bail!("backend must be sqlite or postgres, got {other:?}"),
    };
    let dir = tempfile::tempdir()?;
    for workers in [1, 2, 4] {
        let url = match &postgres {
            Some(pg) => DatabaseUrl::Postgres(pg.fresh_database()),
            None => DatabaseUrl::Sqlite(dir.path().join(format!("queue-{workers}.db"))),
        };
        let store = open_store(&url, config(jobs))?;
        for i in 0..jobs {
            store.submit(new_job(i))?;
        }
        let started = Instant::now();
        let done: usize = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..workers)
                .map(|w| {
                    let store = Arc::clone(&store);
                    scope.spawn(move || drain(store.as_ref(), &format!("bench-{w}")))
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).sum()
        });
        let seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!(done == jobs, "completed {done} of {jobs}");
        println!(
            "{backend}: {workers} worker(s): {jobs} jobs claimed and completed in {seconds:.2} s: {:.0} jobs/s",
            jobs as f64 / seconds
        );
    }
    Ok(())
}

/// Room for every job in the queue, and no per-account running cap in the way.
fn config(jobs: usize) -> StoreConfig {
    StoreConfig {
        max_queued_total: jobs as u32,
        max_queued_per_account: jobs as u32,
        max_running_per_account: 64,
        ..StoreConfig::default()
    }
}

fn new_job(i: usize) -> NewJob {
    NewJob {
        account: ["acme", "zebra", "local"][i % 3].to_string(),
        model: "alibaba/hh1-i2v".to_string(),
        request: serde_json::json!({"prompt": format!("horse {i}"), "images": []}),
        priority: 0,
        max_attempts: None,
        idempotency: None,
    }
}

/// Claims and completes jobs until none is left; returns how many.
fn drain(store: &dyn JobStore, worker_id: &str) -> usize {
    let mut done = 0;
    while let Some(claim) = store.claim(worker_id).expect("claim") {
        let key = format!(
            "results/{}/attempt-{}.mp4",
            claim.job.id, claim.lease.attempt
        );
        assert!(store.complete(&claim.lease, &key).expect("complete"));
        done += 1;
    }
    done
}
