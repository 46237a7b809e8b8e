//! Retries of image fetches: transient failures (HTTP 5xx and 429, a dropped connection, a
//! refused connection) are retried up to `FetchPolicy::attempts`, everything else fails at once;
//! and a worker job whose image host answers 503 before the image completes. Real HTTP over
//! loopback; backoffs of a few ms, so nothing here asserts timing.

use std::collections::VecDeque;
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gallop_api::{GenerationRequest, ModelId, Resolution};
use gallop_engine::PreviewEngine;
use gallop_fetch::{FetchPolicy, fetch_image};
use gallop_server::EngineMap;
use gallop_server::storage::Storage;
use gallop_server::store::{
    Job, JobStatus, JobStore, NewJob, SqliteStore, StoreConfig, error_code,
};
use gallop_server::worker::{Worker, WorkerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IMAGE: &[u8] = b"\x89PNG\r\n\x1a\nnot-really-a-png-but-bytes";

/// A loopback server whose `/img` answers each scripted status in turn (with its headers), then
/// `body` with 200 for every request after; every request is counted.
struct ScriptedServer {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

type Scripted = (StatusCode, Vec<(&'static str, &'static str)>);

impl ScriptedServer {
    async fn start(script: Vec<Scripted>, body: Vec<u8>) -> ScriptedServer {
        let hits = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let counter = hits.clone();
        let app = Router::new().route(
            "/img",
            get(move || {
                let (script, counter, body) = (script.clone(), counter.clone(), body.clone());
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let next = script.lock().unwrap().pop_front();
                    match next {
                        Some((status, headers)) => {
                            let mut response: Response = (status, "try later").into_response();
                            for (name, value) in headers {
                                response
                                    .headers_mut()
                                    .insert(HeaderName::from_static(name), value.parse().unwrap());
                            }
                            response
                        }
                        None => body.into_response(),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        ScriptedServer { addr, hits }
    }

    fn url(&self) -> String {
        format!("http://{}/img", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn unavailable() -> Scripted {
    (StatusCode::SERVICE_UNAVAILABLE, vec![])
}

/// Private addresses allowed (the servers are on loopback), 3 attempts, a 5 ms backoff.
fn quick() -> FetchPolicy {
    FetchPolicy {
        allow_private: true,
        retry_backoff: Duration::from_millis(5),
        ..FetchPolicy::default()
    }
}

#[tokio::test]
async fn two_503s_then_the_image_succeeds_on_the_third_request() {
    assert_eq!(FetchPolicy::default().attempts, 3);
    let server = ScriptedServer::start(vec![unavailable(), unavailable()], IMAGE.to_vec()).await;
    assert_eq!(fetch_image(&server.url(), &quick()).await.unwrap(), IMAGE);
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn a_429_with_retry_after_0_is_retried_once() {
    let server = ScriptedServer::start(
        vec![(StatusCode::TOO_MANY_REQUESTS, vec![("retry-after", "0")])],
        IMAGE.to_vec(),
    )
    .await;
    // A backoff longer than the deadline: only the header's 0 s lets the second attempt happen.
    let policy = FetchPolicy {
        retry_backoff: Duration::from_secs(60),
        ..quick()
    };
    assert_eq!(fetch_image(&server.url(), &policy).await.unwrap(), IMAGE);
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn a_persistent_503_fails_after_every_attempt_naming_them() {
    let server = ScriptedServer::start(vec![unavailable(); 10], IMAGE.to_vec()).await;
    let url = server.url();
    let msg = fetch_image(&url, &quick()).await.unwrap_err().to_string();
    assert_eq!(
        msg,
        format!("image uri {url}: HTTP status 503 Service Unavailable (3 attempts)")
    );
    assert_eq!(server.hits(), 3);

    // `attempts` is the number of requests in all; 1 means no retry (and no count in the message).
    let policy = FetchPolicy {
        attempts: 5,
        ..quick()
    };
    let msg = fetch_image(&url, &policy).await.unwrap_err().to_string();
    assert!(msg.contains("503") && msg.contains("(5 attempts)"), "{msg}");
    assert_eq!(server.hits(), 3 + 5);
    let policy = FetchPolicy {
        attempts: 1,
        ..quick()
    };
    let msg = fetch_image(&url, &policy).await.unwrap_err().to_string();
    assert_eq!(
        msg,
        format!("image uri {url}: HTTP status 503 Service Unavailable")
    );
    assert_eq!(server.hits(), 3 + 5 + 1);
}

#[tokio::test]
async fn other_5xx_are_retried_and_4xx_are_not() {
    let server = ScriptedServer::start(
        vec![
            (StatusCode::BAD_GATEWAY, vec![]),
            (StatusCode::GATEWAY_TIMEOUT, vec![]),
            (StatusCode::INTERNAL_SERVER_ERROR, vec![]),
        ],
        IMAGE.to_vec(),
    )
    .await;
    let policy = FetchPolicy {
        attempts: 4,
        ..quick()
    };
    assert_eq!(fetch_image(&server.url(), &policy).await.unwrap(), IMAGE);
    assert_eq!(server.hits(), 4);

    for status in [
        StatusCode::NOT_FOUND,
        StatusCode::FORBIDDEN,
        StatusCode::UNAUTHORIZED,
        StatusCode::GONE,
        StatusCode::BAD_REQUEST,
    ] {
        let server = ScriptedServer::start(vec![(status, vec![])], IMAGE.to_vec()).await;
        let url = server.url();
        let msg = fetch_image(&url, &quick()).await.unwrap_err().to_string();
        assert_eq!(msg, format!("image uri {url}: HTTP status {status}"));
        assert_eq!(server.hits(), 1, "{status} was retried");
    }
}

#[tokio::test]
async fn a_transient_failure_then_a_404_names_both_attempts() {
    let server = ScriptedServer::start(
        vec![unavailable(), (StatusCode::NOT_FOUND, vec![])],
        IMAGE.to_vec(),
    )
    .await;
    let msg = fetch_image(&server.url(), &quick())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.ends_with("HTTP status 404 Not Found (2 attempts)"),
        "{msg}"
    );
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn refused_addresses_are_never_retried_or_requested() {
    let server = ScriptedServer::start(vec![], IMAGE.to_vec()).await;
    // The strict policy refuses loopback; a fast backoff and many attempts change nothing.
    let policy = FetchPolicy {
        attempts: 5,
        retry_backoff: Duration::from_millis(5),
        ..FetchPolicy::default()
    };
    let url = server.url();
    let msg = fetch_image(&url, &policy).await.unwrap_err().to_string();
    assert_eq!(
        msg,
        format!("image uri {url}: address 127.0.0.1 is loopback; refused")
    );
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn too_big_bodies_are_not_retried() {
    let server = ScriptedServer::start(vec![], vec![7u8; 100]).await;
    let policy = FetchPolicy {
        max_bytes: 10,
        ..quick()
    };
    let msg = fetch_image(&server.url(), &policy)
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.ends_with("larger than 10 bytes; refused"), "{msg}");
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn a_dropped_connection_is_retried() {
    // A raw server: the first connection is closed without an answer, the next gets the image.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            if n == 0 {
                drop(socket);
                continue;
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                IMAGE.len()
            );
            socket.write_all(head.as_bytes()).await.unwrap();
            socket.write_all(IMAGE).await.unwrap();
            socket.shutdown().await.unwrap();
        }
    });
    let url = format!("http://{addr}/img");
    assert_eq!(fetch_image(&url, &quick()).await.unwrap(), IMAGE);
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_named() {
    // A port nothing listens on (bound, then released).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/img");
    let msg = fetch_image(&url, &quick()).await.unwrap_err().to_string();
    assert!(msg.contains("connection failed"), "{msg}");
    assert!(msg.ends_with("(3 attempts)"), "{msg}");
}

#[tokio::test]
async fn retries_stop_at_the_deadline() {
    let server = ScriptedServer::start(vec![unavailable(); 10], IMAGE.to_vec()).await;
    // The second attempt would start after the deadline: the fetch gives up at once with the
    // 503 it has, rather than sleeping into a timeout.
    let policy = FetchPolicy {
        attempts: 10,
        retry_backoff: Duration::from_secs(5),
        timeout: Duration::from_secs(1),
        ..quick()
    };
    let msg = fetch_image(&server.url(), &policy)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.ends_with("HTTP status 503 Service Unavailable"),
        "{msg}"
    );
    assert_eq!(server.hits(), 1);
}

/// A real PNG the preview engine accepts.
fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Submits `request` and waits until its job ends.
async fn run_job(store: &Arc<dyn JobStore>, request: &GenerationRequest) -> Job {
    let id = store
        .submit(NewJob {
            account: "acme".into(),
            model: request.model.as_str().into(),
            request: serde_json::to_value(request).unwrap(),
            priority: 0,
            max_attempts: None,
            idempotency: None,
        })
        .unwrap()
        .job()
        .id
        .clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let job = store.get(&id).unwrap().unwrap();
        if job.status.is_terminal() {
            return job;
        }
        assert!(Instant::now() < deadline, "job did not end: {job:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_image_host_answers_503_then_the_image_completes() {
    let server = ScriptedServer::start(vec![unavailable()], png(640, 480)).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn JobStore> =
        Arc::new(SqliteStore::open(dir.path(), StoreConfig::default()).unwrap());
    let worker = Worker::spawn(
        store.clone(),
        Storage::local(dir.path()).unwrap(),
        EngineMap::every_model(Arc::new(PreviewEngine)),
        WorkerConfig {
            poll_interval: Duration::from_millis(50),
            fetch: quick(),
            ..WorkerConfig::default()
        },
    );
    let request = GenerationRequest {
        model: ModelId::HhI2v,
        prompt: "the camera pushes in slowly".into(),
        negative_prompt: None,
        images: vec![server.url()],
        resolution: Resolution::P720,
        ratio: None,
        duration: 3,
        seed: Some(7),
        watermark: true,
    };
    let job = run_job(&store, &request).await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert_eq!(
        job.attempt, 1,
        "the retry was inside the fetch, not a job attempt"
    );
    assert_eq!(server.hits(), 2);

    // A host that keeps answering 503 still fails the job as bad input, naming the attempts.
    let down = ScriptedServer::start(vec![unavailable(); 10], png(640, 480)).await;
    let job = run_job(
        &store,
        &GenerationRequest {
            images: vec![down.url()],
            ..request
        },
    )
    .await;
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    assert_eq!(job.error_code.as_deref(), Some(error_code::BAD_INPUT));
    assert_eq!(
        job.error_message.unwrap(),
        format!(
            "/input/image: image uri {}: HTTP status 503 Service Unavailable (3 attempts)",
            down.url()
        )
    );
    assert_eq!(down.hits(), 3);
    worker.stop().await;
}
