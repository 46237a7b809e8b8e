//! Retryable failures: an engine that fails (or panics) on some attempts. The job goes back to
//! the queue, a later attempt stores its own result, and after the last attempt the job fails
//! with the engine's message.

use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use gallop_api::{GenerationRequest, ModelId, Resolution};
use gallop_engine::{Engine, EngineError, EngineInfo, EngineInput, PreviewEngine, RunContext};
use gallop_server::EngineMap;
use gallop_server::storage::Storage;
use gallop_server::store::{
    Job, JobStatus, JobStore, NewJob, SqliteStore, StoreConfig, error_code,
};
use gallop_server::worker::{Worker, WorkerConfig};

/// How a failing run fails.
#[derive(Clone, Copy)]
enum Fail {
    Internal,
    Panic,
    /// The engine rejects the input (a field it cannot take).
    BadInput,
    /// The engine runs out of memory.
    Exhausted,
}

/// The preview engine, except that its first `failures` runs fail (or panic).
struct FailingFirst {
    failures: AtomicU32,
    fail: Fail,
}

impl Engine for FailingFirst {
    fn info(&self) -> EngineInfo {
        PreviewEngine.info()
    }

    fn generate(
        &self,
        input: &EngineInput<'_>,
        ctx: &mut RunContext<'_>,
    ) -> Result<(), EngineError> {
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(match self.fail {
                Fail::Panic => panic!("the device fell over"),
                Fail::Internal => EngineError::Internal("the device fell over".into()),
                Fail::BadInput => EngineError::bad_input("/input/image", "no face to animate"),
                Fail::Exhausted => EngineError::ResourceExhausted("out of memory".into()),
            });
        }
        PreviewEngine.generate(input, ctx)
    }
}

fn request() -> GenerationRequest {
    let img = image::RgbImage::from_fn(480, 360, |x, y| image::Rgb([x as u8, y as u8, 60]));
    let mut png = Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png).unwrap();
    GenerationRequest {
        model: ModelId::HhI2v,
        prompt: String::new(),
        negative_prompt: None,
        images: vec![format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(png.into_inner())
        )],
        resolution: Resolution::P720,
        ratio: None,
        duration: 3,
        seed: Some(5),
        watermark: false,
    }
}

async fn run(failures: u32, fail: Fail, max_attempts: u32) -> (Job, Storage, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn JobStore> = Arc::new(
        SqliteStore::open(
            dir.path(),
            StoreConfig {
                default_max_attempts: max_attempts,
                backoff_base_ms: 50,
                backoff_max_ms: 50,
                ..StoreConfig::default()
            },
        )
        .unwrap(),
    );
    let storage = Storage::local(dir.path()).unwrap();
    let worker = Worker::spawn(
        store.clone(),
        storage.clone(),
        EngineMap::every_model(Arc::new(FailingFirst {
            failures: AtomicU32::new(failures),
            fail,
        })),
        WorkerConfig {
            poll_interval: Duration::from_millis(25),
            progress_interval: Duration::from_millis(100),
            ..WorkerConfig::default()
        },
    );
    let r = request();
    let id = store
        .submit(NewJob {
            account: "acme".into(),
            model: r.model.as_str().into(),
            request: serde_json::to_value(&r).unwrap(),
            priority: 0,
            max_attempts: None,
            idempotency: None,
        })
        .unwrap()
        .job()
        .id
        .clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    let job = loop {
        let job = store.get(&id).unwrap().unwrap();
        if job.status.is_terminal() {
            break job;
        }
        assert!(Instant::now() < deadline, "job never ended: {job:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    worker.stop().await;
    (job, storage, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_is_retried_and_the_retry_stores_its_own_result() {
    let (job, storage, _dir) = run(1, Fail::Internal, 3).await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert_eq!(job.attempt, 2);
    assert_eq!(job.error_code, None, "a success clears the earlier error");
    let key = job.result_key.unwrap();
    assert_eq!(key, format!("results/{}/attempt-2.mp4", job.id));
    let video = gallop_media::decode_mp4(&storage.read(&key).await.unwrap()).unwrap();
    assert_eq!(video.frames.len(), 72);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_engine_is_retried_too() {
    let (job, _storage, _dir) = run(1, Fail::Panic, 3).await;
    assert_eq!(
        (job.status, job.attempt),
        (JobStatus::Completed, 2),
        "{job:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_last_attempt_the_job_fails_with_the_engine_message() {
    let (job, _storage, _dir) = run(10, Fail::Internal, 3).await;
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    assert_eq!(job.attempt, 3);
    assert_eq!(job.error_code.as_deref(), Some(error_code::INTERNAL));
    let msg = job.error_message.unwrap();
    assert!(
        msg.contains("the device fell over") && msg.contains("attempt 3"),
        "{msg}"
    );
    assert_eq!(job.result_key, None);
}

/// An input the engine rejects is final: the job fails once, naming the field, and is never
/// retried like a crash (three attempts were allowed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_the_engine_rejects_fails_its_job_once() {
    let (job, _storage, _dir) = run(3, Fail::BadInput, 3).await;
    assert_eq!((job.status, job.attempt), (JobStatus::Failed, 1), "{job:?}");
    assert_eq!(job.error_code.as_deref(), Some(error_code::BAD_INPUT));
    let message = job.error_message.unwrap_or_default();
    assert!(
        message.contains("/input/image: no face to animate"),
        "{message}"
    );
}

/// Running out of memory would happen again on the same machine: final, not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_engine_fails_its_job_once() {
    let (job, _storage, _dir) = run(3, Fail::Exhausted, 3).await;
    assert_eq!((job.status, job.attempt), (JobStatus::Failed, 1), "{job:?}");
    assert_eq!(
        job.error_code.as_deref(),
        Some(error_code::RESOURCE_EXHAUSTED)
    );
}
