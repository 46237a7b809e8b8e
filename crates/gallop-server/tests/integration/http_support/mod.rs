//! Shared by the `http_*` tests: a gallop server on 127.0.0.1:0 in a temporary data directory
//! (preview engine, private fetches allowed), a loopback image server, and small HTTP helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use gallop_server::{RunningServer, ServerConfig};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

pub struct TestServer {
    pub server: RunningServer,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The first token, for account `local`.
    pub token: String,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
}

pub const ACCOUNT: &str = "local";

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap()
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            allow_private_fetch: true,
            workers: 2,
            ..ServerConfig::default()
        };
        adjust(&mut config);
        let server = gallop_server::start(config).await.unwrap();
        let token = server
            .first_token
            .clone()
            .expect("a fresh data dir gets a first token");
        let base = format!("http://{}", server.addr);
        TestServer {
            server,
            base,
            token,
            client: client(),
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn run_path(&self) -> String {
        format!("/client/v4/accounts/{ACCOUNT}/ai/run")
    }

    /// POST a JSON body with the first token.
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, HeaderMap, Value) {
        self.post_as(&self.token, path, body).await
    }

    pub async fn post_as(
        &self,
        token: &str,
        path: &str,
        body: &Value,
    ) -> (StatusCode, HeaderMap, Value) {
        self.send_as(token, "POST", path, body).await
    }

    /// `method path` with `token` and `body` as JSON.
    pub async fn send_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: &Value,
    ) -> (StatusCode, HeaderMap, Value) {
        let response = self
            .client
            .request(method.parse().unwrap(), self.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        read(response).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, HeaderMap, Value) {
        self.get_as(&self.token, path).await
    }

    pub async fn get_as(&self, token: &str, path: &str) -> (StatusCode, HeaderMap, Value) {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        read(response).await
    }

    /// `POST /v1/uploads` with the first token; the status and the answer.
    pub async fn upload(&self, bytes: Vec<u8>) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url("/v1/uploads"))
            .bearer_auth(&self.token)
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .unwrap();
        let (status, _, body) = read(response).await;
        (status, body)
    }

    /// Queues a Cloudflare body; returns the request id.
    pub async fn queue(&self, body: &Value) -> String {
        let (status, _, answer) = self
            .post(&format!("{}?queueRequest=true", self.run_path()), body)
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["state"], "Queued", "{answer}");
        answer["request_id"].as_str().unwrap().to_string()
    }

    /// Polls `GET /v1/jobs/{id}` until `done` says so (panics after `limit`).
    pub async fn wait_job(
        &self,
        id: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let (status, _, job) = self.get(&format!("/v1/jobs/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{job}");
            if done(&job) {
                return job;
            }
            assert!(
                start.elapsed() < limit,
                "job {id} did not reach the awaited state in {limit:?}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_ended(&self, id: &str) -> Value {
        self.wait_job(id, Duration::from_secs(300), |j| {
            matches!(
                j["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
        })
        .await
    }
}

pub async fn read(response: reqwest::Response) -> (StatusCode, HeaderMap, Value) {
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, value)
}

/// Downloads a signed result link (no bearer token) and decodes the MP4.
pub async fn download_video(url: &str) -> gallop_media::DecodedVideo {
    let response = client().get(url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200, "{url}");
    let mp4 = response.bytes().await.unwrap();
    gallop_media::decode_mp4(&mp4).unwrap()
}

/// 206 with the exact bytes for the forms players send; 416 past the end.
pub async fn check_ranges(url: &str, mp4: &[u8]) {
    let len = mp4.len();
    let cases = [
        ("bytes=0-99".to_string(), 0..100),
        (format!("bytes={}-", len - 50), len - 50..len),
        ("bytes=-10".to_string(), len - 10..len),
        ("bytes=1000-1999".to_string(), 1000..2000),
    ];
    for (header, want) in cases {
        let response = client()
            .get(url)
            .header("range", &header)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{header}");
        assert_eq!(
            response.headers()["content-range"],
            format!("bytes {}-{}/{len}", want.start, want.end - 1).as_str()
        );
        assert_eq!(
            response.headers()["content-length"],
            want.len().to_string().as_str()
        );
        let body = response.bytes().await.unwrap();
        assert_eq!(&body[..], &mp4[want], "{header}");
    }
    let response = client()
        .get(url)
        .header("range", format!("bytes={len}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes */{len}").as_str()
    );
}

/// Asserts a Cloudflare v4 error envelope with `code` and returns its message.
pub fn assert_envelope(body: &Value, code: u32) -> String {
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["errors"][0]["code"], code, "{body}");
    assert_eq!(body["messages"], json!([]), "{body}");
    assert!(body.get("result").is_some(), "{body}");
    body["errors"][0]["message"].as_str().unwrap().to_string()
}

/// A test picture: smooth gradients plus a few discs, so motion and compression have detail.
pub fn picture(width: u32, height: u32, seed: u32) -> image::RgbImage {
    let discs: Vec<(f32, f32, f32, [u8; 3])> = (0..4)
        .map(|i| {
            let k = (seed * 7 + i * 13) as f32;
            (
                (k * 37.0) % width as f32,
                (k * 53.0) % height as f32,
                30.0 + (k * 11.0) % 60.0,
                [(k * 5.0) as u8, (k * 9.0) as u8, (k * 3.0) as u8],
            )
        })
        .collect();
    image::RgbImage::from_fn(width, height, |x, y| {
        for (cx, cy, r, color) in &discs {
            let (dx, dy) = (x as f32 - cx, y as f32 - cy);
            if dx * dx + dy * dy < r * r {
                return image::Rgb(*color);
            }
        }
        image::Rgb([
            (x * 255 / width) as u8,
            (y * 255 / height) as u8,
            ((x + y + seed * 40) % 256) as u8,
        ])
    })
}

pub fn encode(img: &image::RgbImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// Serves fixed images by path on 127.0.0.1:0; counts the requests it answered.
pub struct ImageServer {
    pub base: String,
    pub hits: Arc<std::sync::atomic::AtomicUsize>,
}

struct Images {
    files: HashMap<String, (Vec<u8>, &'static str)>,
    hits: Arc<std::sync::atomic::AtomicUsize>,
}

async fn serve_image(State(images): State<Arc<Images>>, Path(path): Path<String>) -> Response {
    images
        .hits
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match images.files.get(&path) {
        Some((bytes, mime)) => ([(header::CONTENT_TYPE, *mime)], bytes.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

impl ImageServer {
    /// Images at the seeds' paths (hosts replaced by this server), plus `/small.png` (200x200,
    /// under the 300 px minimum).
    pub async fn start() -> ImageServer {
        let mut files = HashMap::new();
        let png = image::ImageFormat::Png;
        let jpeg = image::ImageFormat::Jpeg;
        files.insert(
            "file-manage-files/zh-CN/20250925/wpimhv/rap.png".to_string(),
            (encode(&picture(480, 640, 1), png), "image/png"),
        );
        files.insert(
            "catalog/bytedance__seedream-5-lite/portrait-photo-0.jpeg".to_string(),
            (encode(&picture(480, 640, 2), jpeg), "image/jpeg"),
        );
        files.insert(
            "catalog/google__nano-banana-2/futuristic-city.png".to_string(),
            (encode(&picture(800, 450, 3), png), "image/png"),
        );
        files.insert(
            "catalog/google__nano-banana-2/high-resolution-portrait.jpg".to_string(),
            (encode(&picture(512, 512, 4), jpeg), "image/jpeg"),
        );
        files.insert(
            "small.png".to_string(),
            (encode(&picture(200, 200, 5), png), "image/png"),
        );
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::get(serve_image))
            .with_state(Arc::new(Images {
                files,
                hits: hits.clone(),
            }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        ImageServer { base, hits }
    }

    /// The seeds' i2v image uri, on this server.
    pub fn rap(&self) -> String {
        format!(
            "{}/file-manage-files/zh-CN/20250925/wpimhv/rap.png",
            self.base
        )
    }

    pub fn r2v_images(&self) -> Vec<String> {
        [
            "catalog/bytedance__seedream-5-lite/portrait-photo-0.jpeg",
            "catalog/google__nano-banana-2/futuristic-city.png",
            "catalog/google__nano-banana-2/high-resolution-portrait.jpg",
        ]
        .iter()
        .map(|p| format!("{}/{p}", self.base))
        .collect()
    }

    /// The seeds' text with their image hosts pointed at this server.
    pub fn localize(&self, seed_json: &str) -> Value {
        let text = seed_json
            .replace("https://help-static-aliyun-doc.aliyuncs.com", &self.base)
            .replace(
                "https://pub-04a6d208d361438ea01b797e6973bd19.r2.dev",
                &self.base,
            );
        serde_json::from_str(&text).unwrap()
    }
}

/// A short i2v body (3 s, 720P) on `image`.
pub fn quick_i2v(image: &str) -> Value {
    json!({
        "model": "alibaba/hh1-i2v",
        "input": { "image": image, "prompt": "A gentle camera push-in", "duration": 3 }
    })
}

/// A long i2v body (15 s, 1080P): runs long enough to watch progress and cancel it.
pub fn long_i2v(image: &str) -> Value {
    json!({
        "model": "alibaba/hh1-i2v",
        "input": { "image": image, "prompt": "Camera orbits slowly", "duration": 15, "resolution": "1080P" }
    })
}
