//! The worker against a real SQLite file, a real object directory and the preview engine:
//! completion with a decodable MP4, bad images, refused uris, uploads, cancel, time limit,
//! graceful stop, and the result sweeper.

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use gallop_api::{GenerationRequest, ModelId, Resolution};
use gallop_engine::PreviewEngine;
use gallop_server::EngineMap;
use gallop_server::storage::Storage;
use gallop_server::store::{
    CancelOutcome, Job, JobStatus, JobStore, NewJob, SqliteStore, StoreConfig, error_code,
};
use gallop_server::worker::{Worker, WorkerConfig, sweep_once};

struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<dyn JobStore>,
    storage: Storage,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), StoreConfig::default()).unwrap();
    let storage = Storage::local(dir.path()).unwrap();
    Setup {
        _dir: dir,
        store: Arc::new(store),
        storage,
    }
}

fn worker_config() -> WorkerConfig {
    WorkerConfig {
        concurrency: 2,
        poll_interval: Duration::from_millis(50),
        progress_interval: Duration::from_millis(100),
        ..WorkerConfig::default()
    }
}

fn spawn(s: &Setup, config: WorkerConfig) -> Worker {
    Worker::spawn(
        s.store.clone(),
        s.storage.clone(),
        EngineMap::every_model(Arc::new(PreviewEngine)),
        config,
    )
}

/// A real PNG: a smooth gradient with a bright square, `w` x `h`.
fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let inside = x > w / 3 && x < w / 2 && y > h / 3 && y < h / 2;
        if inside {
            image::Rgb([250, 240, 40])
        } else {
            image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128])
        }
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn data_uri(bytes: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn i2v(image: String, duration: u32, seed: Option<u32>) -> GenerationRequest {
    GenerationRequest {
        model: ModelId::HhI2v,
        prompt: "the camera pushes in slowly".into(),
        negative_prompt: None,
        images: vec![image],
        resolution: Resolution::P720,
        ratio: None,
        duration,
        seed,
        watermark: true,
    }
}

fn submit(store: &Arc<dyn JobStore>, account: &str, request: &GenerationRequest) -> String {
    store
        .submit(NewJob {
            account: account.into(),
            model: request.model.as_str().into(),
            request: serde_json::to_value(request).unwrap(),
            priority: 0,
            max_attempts: None,
            idempotency: None,
        })
        .unwrap()
        .job()
        .id
        .clone()
}

/// Polls until `done(job)` or the deadline.
async fn wait_for(
    store: &Arc<dyn JobStore>,
    id: &str,
    within: Duration,
    done: impl Fn(&Job) -> bool,
) -> Job {
    let deadline = Instant::now() + within;
    loop {
        let job = store.get(id).unwrap().unwrap();
        if done(&job) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} did not get there in {within:?}: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ended(j: &Job) -> bool {
    j.status.is_terminal()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_with_a_decodable_mp4_stored_under_its_attempt() {
    let s = setup();
    let worker = spawn(&s, worker_config());
    let request = i2v(data_uri(&png(640, 480)), 3, Some(1234));
    let id = submit(&s.store, "acme", &request);
    let job = wait_for(&s.store, &id, Duration::from_secs(120), ended).await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert_eq!(job.seed, Some(1234));
    // The inline image does not outlive the job.
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.store.get(&id).unwrap().unwrap().request["images"][0]
        != gallop_server::store::DELETED_INLINE_INPUT
    {
        assert!(
            Instant::now() < deadline,
            "the data: input outlived its job"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(job.engine.as_ref().unwrap()["engine"], "preview");
    assert_eq!(job.attempt, 1);
    let key = job.result_key.clone().unwrap();
    assert_eq!(key, format!("results/{id}/attempt-1.mp4"));
    let mp4 = s.storage.read(&key).await.unwrap();
    let video = gallop_media::decode_mp4(&mp4).unwrap();
    let geometry = request.geometry(Some((640, 480)));
    assert_eq!(video.frames.len() as u32, geometry.frames);
    assert_eq!(geometry.frames, 72);
    assert_eq!(
        (video.width, video.height),
        (geometry.width, geometry.height)
    );
    assert_eq!(job.progress_step, job.progress_total);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_without_seed_records_the_seed_it_used() {
    let s = setup();
    let worker = spawn(&s, worker_config());
    let id = submit(&s.store, "acme", &i2v(data_uri(&png(400, 400)), 3, None));
    let job = wait_for(&s.store, &id, Duration::from_secs(120), ended).await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    let seed = job.seed.expect("seed recorded");
    assert!(seed <= gallop_api::MAX_SEED);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_small_image_fails_at_once_naming_the_field() {
    let s = setup();
    let worker = spawn(&s, worker_config());
    let id = submit(&s.store, "acme", &i2v(data_uri(&png(200, 200)), 3, Some(1)));
    let job = wait_for(&s.store, &id, Duration::from_secs(30), ended).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.attempt, 1, "bad input is not retried");
    assert_eq!(job.error_code.as_deref(), Some(error_code::BAD_INPUT));
    let msg = job.error_message.unwrap();
    assert!(
        msg.starts_with("/input/image: image is 200x200 px"),
        "{msg}"
    );

    let r2v = GenerationRequest {
        model: ModelId::HhR2v,
        images: vec![data_uri(&png(640, 480)), data_uri(&png(350, 350))],
        ratio: Some(gallop_api::Ratio::R16x9),
        ..i2v(String::new(), 3, Some(1))
    };
    let id = submit(&s.store, "acme", &r2v);
    let job = wait_for(&s.store, &id, Duration::from_secs(30), ended).await;
    let msg = job.error_message.unwrap();
    assert!(msg.starts_with("/input/images/1: "), "{msg}");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_uri_fails_with_the_guard_message() {
    let s = setup();
    let worker = spawn(&s, worker_config());
    let id = submit(
        &s.store,
        "acme",
        &i2v("http://127.0.0.1:9/a.png".into(), 3, Some(1)),
    );
    let job = wait_for(&s.store, &id, Duration::from_secs(30), ended).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(
        job.error_message.as_deref(),
        Some(
            "/input/image: image uri http://127.0.0.1:9/a.png: address 127.0.0.1 is loopback; refused"
        )
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_serves_two_jobs_and_other_accounts_cannot_use_it() {
    let s = setup();
    let worker = spawn(&s, worker_config());
    let upload = s.storage.put_upload("acme", png(500, 400)).await.unwrap();
    let uri = format!("gallop://uploads/{upload}");

    // Another account naming the same upload id finds nothing.
    let theirs = submit(&s.store, "zeta", &i2v(uri.clone(), 3, Some(1)));
    let job = wait_for(&s.store, &theirs, Duration::from_secs(30), ended).await;
    assert_eq!(job.status, JobStatus::Failed);
    let message = job.error_message.unwrap();
    assert!(
        message.contains(&format!("upload {upload} not found")) && message.contains("24 h"),
        "{message}"
    );

    // The same upload serves one job, then another after the first ended.
    for seed in [1, 2] {
        let ours = submit(&s.store, "acme", &i2v(uri.clone(), 3, Some(seed)));
        let job = wait_for(&s.store, &ours, Duration::from_secs(120), ended).await;
        assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    }
    assert!(s.storage.read_upload("acme", &upload).await.is_ok());
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_a_running_engine_between_steps() {
    let s = setup();
    let worker = spawn(&s, worker_config());
    // 15 s = 360 frames: far longer than the cancel takes.
    let id = submit(
        &s.store,
        "acme",
        &i2v(data_uri(&png(640, 480)), 15, Some(3)),
    );
    let running = wait_for(&s.store, &id, Duration::from_secs(60), |j| {
        j.status == JobStatus::Running && j.progress_step > 0
    })
    .await;
    assert_eq!(running.progress_total, 360);
    assert_eq!(
        s.store.cancel("acme", &id).unwrap(),
        CancelOutcome::Requested
    );
    let job = wait_for(&s.store, &id, Duration::from_secs(10), ended).await;
    assert_eq!(job.status, JobStatus::Cancelled);
    assert!(job.progress_step < 360, "ran to the end: {job:?}");
    assert_eq!(job.result_key, None);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_limit_stops_a_long_job() {
    let s = setup();
    let worker = spawn(
        &s,
        WorkerConfig {
            job_timeout: Duration::from_millis(300),
            ..worker_config()
        },
    );
    let id = submit(
        &s.store,
        "acme",
        &i2v(data_uri(&png(640, 480)), 15, Some(3)),
    );
    let job = wait_for(&s.store, &id, Duration::from_secs(30), ended).await;
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    assert_eq!(job.error_code.as_deref(), Some(error_code::TIMEOUT));
    assert!(job.error_message.unwrap().contains("time limit"));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_gives_running_jobs_back_without_spending_an_attempt() {
    let s = setup();
    let worker = spawn(&s, worker_config());
    let id = submit(
        &s.store,
        "acme",
        &i2v(data_uri(&png(640, 480)), 15, Some(3)),
    );
    wait_for(&s.store, &id, Duration::from_secs(60), |j| {
        j.status == JobStatus::Running && j.progress_step > 0
    })
    .await;
    tokio::time::timeout(Duration::from_secs(10), worker.stop())
        .await
        .expect("stop finished");
    let job = s.store.get(&id).unwrap().unwrap();
    assert_eq!((job.status, job.attempt), (JobStatus::Queued, 0), "{job:?}");

    // The next worker picks it up and it completes.
    let worker = spawn(&s, worker_config());
    let job = wait_for(&s.store, &id, Duration::from_secs(180), ended).await;
    assert_eq!((job.status, job.attempt), (JobStatus::Completed, 1));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_deletes_expired_results_and_old_uploads() {
    let s = setup();
    let worker = spawn(&s, worker_config());
    let id = submit(&s.store, "acme", &i2v(data_uri(&png(400, 400)), 3, Some(1)));
    let job = wait_for(&s.store, &id, Duration::from_secs(120), ended).await;
    let key = job.result_key.unwrap();
    worker.stop().await;
    let stray = s.storage.put_upload("acme", png(300, 300)).await.unwrap();

    // Nothing is old enough under the default TTLs.
    assert_eq!(
        sweep_once(&s.store, &s.storage, &worker_config())
            .await
            .unwrap(),
        0
    );
    assert!(s.storage.size(&key).await.unwrap() > 1000);
    assert!(s.storage.read_upload("acme", &stray).await.is_ok());

    tokio::time::sleep(Duration::from_millis(20)).await;
    let expire_now = WorkerConfig {
        result_ttl: Duration::from_millis(1),
        upload_ttl: Duration::from_millis(1),
        ..worker_config()
    };
    assert_eq!(
        sweep_once(&s.store, &s.storage, &expire_now).await.unwrap(),
        1
    );
    assert!(s.storage.size(&key).await.is_err(), "result not deleted");
    assert!(
        s.storage.read_upload("acme", &stray).await.is_err(),
        "upload not deleted"
    );
    let job = s.store.get(&id).unwrap().unwrap();
    assert_eq!((job.status, job.result_key), (JobStatus::Completed, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_jobs_upload_still_serves_the_next_job() {
    let s = setup();
    // One slot, busy with a long job, so the second job stays queued.
    let worker = spawn(
        &s,
        WorkerConfig {
            concurrency: 1,
            ..worker_config()
        },
    );
    let long = submit(
        &s.store,
        "acme",
        &i2v(data_uri(&png(640, 480)), 15, Some(3)),
    );
    wait_for(&s.store, &long, Duration::from_secs(60), |j| {
        j.status == JobStatus::Running
    })
    .await;
    let upload = s.storage.put_upload("acme", png(500, 400)).await.unwrap();
    let uri = format!("gallop://uploads/{upload}");
    let queued = submit(&s.store, "acme", &i2v(uri.clone(), 3, Some(1)));
    assert_eq!(
        s.store.get(&queued).unwrap().unwrap().status,
        JobStatus::Queued
    );
    assert_eq!(
        s.store.cancel("acme", &queued).unwrap(),
        CancelOutcome::Cancelled
    );
    s.store.cancel("acme", &long).unwrap();
    wait_for(&s.store, &long, Duration::from_secs(60), ended).await;

    let next = submit(&s.store, "acme", &i2v(uri, 3, Some(1)));
    let job = wait_for(&s.store, &next, Duration::from_secs(120), ended).await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_worker_on_the_same_data_dir_does_not_take_running_jobs() {
    let s = setup();
    let lock = s._dir.path().join("worker.lock");
    let first = spawn(
        &s,
        WorkerConfig {
            exclusive_lock: Some(lock.clone()),
            ..worker_config()
        },
    );
    let id = submit(
        &s.store,
        "acme",
        &i2v(data_uri(&png(640, 480)), 15, Some(3)),
    );
    wait_for(&s.store, &id, Duration::from_secs(60), |j| {
        j.status == JobStatus::Running && j.progress_step > 0
    })
    .await;
    // The lock is taken, so this worker must not treat the running lease as orphaned.
    let second = spawn(
        &s,
        WorkerConfig {
            exclusive_lock: Some(lock.clone()),
            ..worker_config()
        },
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let job = s.store.get(&id).unwrap().unwrap();
    assert_eq!(
        (job.status, job.attempt),
        (JobStatus::Running, 1),
        "{job:?}"
    );
    second.stop().await;
    first.stop().await;

    // With both gone the lock is free: a new worker takes it over and requeues nothing
    // (the graceful stop gave the job back already) and runs it.
    let third = spawn(
        &s,
        WorkerConfig {
            exclusive_lock: Some(lock),
            ..worker_config()
        },
    );
    let job = wait_for(&s.store, &id, Duration::from_secs(180), ended).await;
    assert_eq!((job.status, job.attempt), (JobStatus::Completed, 1));
    third.stop().await;
}

/// A job queued under another configuration (say, before a restart that dropped its model's
/// checkpoint) fails at once with the reason, instead of running on some other engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_for_a_model_no_longer_served_fails_naming_it() {
    let s = setup();
    let mut request = i2v(data_uri(&png(640, 480)), 3, Some(1));
    request.model = ModelId::HhR2v;
    let id = submit(&s.store, "acme", &request);
    let _worker = Worker::spawn(
        s.store.clone(),
        s.storage.clone(),
        EngineMap::configured(vec![(ModelId::HhI2v, Arc::new(PreviewEngine) as _)]),
        worker_config(),
    );
    let job = wait_for(&s.store, &id, Duration::from_secs(60), ended).await;
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    assert_eq!(job.error_code.as_deref(), Some(error_code::BAD_INPUT));
    let message = job.error_message.unwrap_or_default();
    assert!(
        message.contains("model alibaba/hh1.1-r2v is not served here"),
        "{message}"
    );
    assert_eq!(job.attempt, 1, "a refusal is final, not retried");
}
