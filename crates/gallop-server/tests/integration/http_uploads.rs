//! Uploads over real HTTP: one upload serves several jobs of its account (in gallop's own and
//! Cloudflare's shapes) until it expires, and a file no job could use is refused at upload time
//! with 400 naming the rule.

use std::time::Duration;

use axum::http::StatusCode;
use image::ImageFormat;
use serde_json::json;

use crate::http_support::{self, TestServer, assert_envelope, encode, picture, read};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_upload_serves_two_jobs_and_states_its_expiry() {
    let server = TestServer::start().await;
    let png = encode(&picture(640, 480, 21), ImageFormat::Png);
    let (status, up) = server.upload(png.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{up}");
    assert_eq!(
        (up["width"].as_u64(), up["height"].as_u64()),
        (Some(640), Some(480))
    );
    assert_eq!(
        up["models"],
        json!(["alibaba/hh1-i2v", "alibaba/hh1.1-r2v"])
    );
    assert_eq!(up["expires_in_seconds"], 24 * 3600);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expires_at = up["expires_at"].as_u64().unwrap();
    assert!(expires_at.abs_diff(now + 24 * 3600) <= 5, "{up}");
    let uri = up["uri"].as_str().unwrap();

    // Job 1 in gallop's own shape, job 2 (an r2v naming it twice) in Cloudflare's.
    let response = server
        .client
        .post(server.url("/v1/jobs"))
        .bearer_auth(&server.token)
        .header("content-type", "application/json")
        .body(http_support::quick_i2v(uri).to_string())
        .send()
        .await
        .unwrap();
    let (status, _, first) = read(response).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let first = server.wait_ended(first["id"].as_str().unwrap()).await;
    assert_eq!(first["status"], "completed", "{first}");
    let r2v = json!({
        "model": "alibaba/hh1.1-r2v",
        "input": {"prompt": "image 1 waves at image 2", "images": [uri, uri], "duration": 3}
    });
    let (status, _, second) = server.post(&server.run_path(), &r2v).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["state"], "Completed", "{second}");

    // Still there afterwards, readable by its account only.
    let id = up["id"].as_str().unwrap();
    let response = server
        .client
        .get(server.url(&format!("/v1/uploads/{id}")))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(response.bytes().await.unwrap().to_vec(), png);
    let other = server.server.create_token("other").unwrap();
    let (status, _, answer) = server.get_as(&other, &format!("/v1/uploads/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    server.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_upload_is_swept_and_a_job_naming_it_fails_saying_so() {
    let server = TestServer::start_with(|c| c.upload_ttl = Duration::from_millis(1)).await;
    let (status, up) = server
        .upload(encode(&picture(400, 400, 2), ImageFormat::Png))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{up}");
    assert_eq!(up["expires_in_seconds"], 0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let config = gallop_server::worker::WorkerConfig {
        upload_ttl: Duration::from_millis(1),
        ..Default::default()
    };
    gallop_server::worker::sweep_once(
        &server.server.state.store,
        &server.server.state.storage,
        &config,
    )
    .await
    .unwrap();
    let (_, _, answer) = server
        .post(
            &server.run_path(),
            &http_support::quick_i2v(up["uri"].as_str().unwrap()),
        )
        .await;
    assert_eq!(answer["state"], "Failed", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("not found (an upload is kept for"),
        "{message}"
    );
    server.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_that_no_job_could_use_are_refused_naming_the_rule() {
    let server = TestServer::start().await;
    let png = |w, h| encode(&picture(w, h, 5), ImageFormat::Png);
    let mut oversized = png(300, 300);
    oversized.resize(20_000_001, 0);
    let mut truncated = encode(&picture(400, 400, 6), ImageFormat::Jpeg);
    truncated.truncate(truncated.len() / 2);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("small", png(200, 320), "each side must be at least 300 px"),
        (
            "aspect",
            png(1000, 300),
            "the aspect ratio must be between 1:2.5 and 2.5:1",
        ),
        ("bytes", oversized, "at most 20000000 bytes"),
        (
            "format",
            b"GIF89a not really".to_vec(),
            "only JPEG, PNG, WebP and BMP",
        ),
        ("truncated", truncated, "truncated"),
    ];
    for (name, bytes, rule) in cases {
        let (status, answer) = server.upload(bytes).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {answer}");
        let message = assert_envelope(&answer, 5006);
        assert!(
            message.starts_with("Bad input: upload: ") && message.contains(rule),
            "{name}: {message}"
        );
    }

    // Fit for i2v but not r2v (short side under 400 px): accepted, and the answer says so.
    let (status, up) = server.upload(png(600, 350)).await;
    assert_eq!(status, StatusCode::CREATED, "{up}");
    assert_eq!(up["models"], json!(["alibaba/hh1-i2v"]));
    server.server.shutdown().await;
}
