//! Durability: a worker process is killed with SIGKILL in the middle of a job; a new process
//! holding the data directory's worker lock requeues the orphaned job at once (without waiting
//! out its lease) and every accepted job ends Completed.
//!
//! The worker process is this test binary itself, re-run with an environment variable that
//! makes the test body act as the worker (store + storage + preview engine) until killed.

use std::io::Cursor;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use gallop_api::{GenerationRequest, ModelId, Resolution};
use gallop_engine::PreviewEngine;
use gallop_server::EngineMap;
use gallop_server::storage::Storage;
use gallop_server::store::{JobStatus, JobStore, NewJob, SqliteStore, StoreConfig};
use gallop_server::worker::{Worker, WorkerConfig};

const CHILD_ENV: &str = "GALLOP_TEST_WORKER_CHILD_DIR";
/// The test's path as libtest names it (module within the test binary, then the function), which
/// `--exact` needs.
fn test_name() -> String {
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    format!("{module}::accepted_jobs_survive_kill_9_of_the_worker_process")
}

fn store_config() -> StoreConfig {
    StoreConfig {
        // The default minute: the restarted process must not wait it out (it holds the worker
        // lock, so it knows the running job is orphaned).
        lease_ms: 60_000,
        backoff_base_ms: 200,
        backoff_max_ms: 200,
        ..StoreConfig::default()
    }
}

/// The worker process: runs until killed.
fn run_child(dir: &Path) -> ! {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = Arc::new(SqliteStore::open(dir, store_config()).unwrap());
        let storage = Storage::local(dir).unwrap();
        let _worker = Worker::spawn(
            store,
            storage,
            EngineMap::every_model(Arc::new(PreviewEngine)),
            WorkerConfig {
                concurrency: 1,
                poll_interval: Duration::from_millis(50),
                progress_interval: Duration::from_millis(200),
                ..WorkerConfig::default()
            },
        );
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    })
}

/// Kills the worker process when dropped, so a failing assertion leaves nothing running.
struct WorkerProcess(Child);

impl WorkerProcess {
    fn start(dir: &Path) -> WorkerProcess {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &test_name(), "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        WorkerProcess(child)
    }

    /// SIGKILL: no destructor, no graceful release, exactly like a crash.
    fn kill_9(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn png_data_uri(w: u32, h: u32) -> String {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 90])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(out.into_inner())
    )
}

fn wait_until<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn accepted_jobs_survive_kill_9_of_the_worker_process() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        run_child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), store_config()).unwrap();
    let n = 4;
    let image = png_data_uri(640, 480);
    let ids: Vec<String> = (0..n)
        .map(|i| {
            let request = GenerationRequest {
                model: ModelId::HhI2v,
                prompt: "pan left across the field".into(),
                negative_prompt: None,
                images: vec![image.clone()],
                resolution: Resolution::P720,
                ratio: None,
                duration: 5,
                seed: Some(i),
                watermark: true,
            };
            store
                .submit(NewJob {
                    account: "acme".into(),
                    model: request.model.as_str().into(),
                    request: serde_json::to_value(&request).unwrap(),
                    priority: 0,
                    max_attempts: None,
                    idempotency: None,
                })
                .unwrap()
                .job()
                .id
                .clone()
        })
        .collect();

    let mut first = WorkerProcess::start(dir.path());
    // Kill it while a job is mid-run (some frames done, not finished).
    let victim = wait_until(Duration::from_secs(120), "a job in progress", || {
        ids.iter().find_map(|id| {
            let j = store.get(id).unwrap().unwrap();
            (j.status == JobStatus::Running && j.progress_step > 0).then_some(j)
        })
    });
    first.kill_9();
    let after_kill = store.get(&victim.id).unwrap().unwrap();
    assert_eq!(after_kill.status, JobStatus::Running, "killed mid-job");
    assert_eq!(after_kill.attempt, 1);
    assert!(after_kill.progress_step < after_kill.progress_total);
    let old_lease_expiry: i64 = rusqlite::Connection::open(dir.path().join("gallop.db"))
        .unwrap()
        .query_row(
            "SELECT lease_expires_ms FROM jobs WHERE id = ?1",
            [&victim.id],
            |r| r.get(0),
        )
        .unwrap();
    let completed_before = ids
        .iter()
        .filter(|id| store.get(id).unwrap().unwrap().status == JobStatus::Completed)
        .count();
    assert!(completed_before < n as usize);

    // A new process recovers the expired lease and finishes everything.
    let _second = WorkerProcess::start(dir.path());
    wait_until(Duration::from_secs(300), "all jobs to end", || {
        ids.iter()
            .all(|id| store.get(id).unwrap().unwrap().status.is_terminal())
            .then_some(())
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let storage = Storage::local(dir.path()).unwrap();
    for id in &ids {
        let job = store.get(id).unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Completed, "{job:?}");
        let expected_attempt = if *id == victim.id { 2 } else { 1 };
        if *id == victim.id {
            // Attempt 2 began while the dead process's lease was still unexpired.
            assert!(
                job.started_at_ms.unwrap() < old_lease_expiry,
                "the restart waited for the old lease to expire"
            );
        }
        assert_eq!(job.attempt, expected_attempt, "{job:?}");
        let key = job.result_key.unwrap();
        assert_eq!(key, format!("results/{id}/attempt-{expected_attempt}.mp4"));
        let mp4 = rt.block_on(storage.read(&key)).unwrap();
        let video = gallop_media::decode_mp4(&mp4).unwrap();
        assert_eq!(video.frames.len(), 120);
    }
}
