//! Per-account quotas: one account filling its share of the queue does not lock out another,
//! every shape answers its own throttling code with a `Retry-After` computed from the queue,
//! and uploads are capped per account in count and bytes.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::http_support::*;

async fn queue_as(
    server: &TestServer,
    token: &str,
    body: &serde_json::Value,
) -> (StatusCode, u64, serde_json::Value) {
    let (status, headers, answer) = server
        .post_as(
            token,
            &format!("{}?queueRequest=true", server.run_path()),
            body,
        )
        .await;
    let retry = headers
        .get("retry-after")
        .map_or(0, |v| v.to_str().unwrap().parse().unwrap());
    (status, retry, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_accounts_each_get_their_share_of_a_full_queue() {
    let images = ImageServer::start().await;
    let server = TestServer::start_with(|c| {
        c.workers = 1;
        c.queue_limit = 4;
        c.queue_limit_per_account = 2;
    })
    .await;
    let acme = server.server.create_token("acme").unwrap();
    let late = server.server.create_token("late").unwrap();
    // One long job keeps the only worker busy, so what follows stays queued.
    let running = server.queue(&long_i2v(&images.rap())).await;
    server
        .wait_job(&running, Duration::from_secs(60), |j| {
            j["status"] == "running"
        })
        .await;

    // local takes its share (2), then is refused though the queue has room.
    let body = long_i2v(&images.rap());
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, _, answer) = queue_as(&server, &server.token, &body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        ids.push(answer["request_id"].as_str().unwrap().to_string());
    }
    let (status, local_retry, answer) = queue_as(&server, &server.token, &body).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    let message = assert_envelope(&answer, 3040);
    assert!(message.contains("limit 2 per account"), "{message}");

    // acme still gets its share: the queue is then full (4).
    let acme_path = "/client/v4/accounts/acme/ai/run?queueRequest=true";
    for _ in 0..2 {
        let (status, _, answer) = server.post_as(&acme, acme_path, &body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        ids.push(answer["request_id"].as_str().unwrap().to_string());
    }
    let (status, headers, answer) = server.post_as(&acme, acme_path, &body).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    let acme_retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    // A third account meets the full queue, in each shape's own words.
    let (status, headers, answer) = server
        .post_as(
            &late,
            "/client/v4/accounts/late/ai/run?queueRequest=true",
            &body,
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert!(
        assert_envelope(&answer, 3040).contains("4 jobs are queued"),
        "{answer}"
    );
    let late_retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    let response = server
        .client
        .post(server.url("/api/v1/services/aigc/video-generation/video-synthesis"))
        .bearer_auth(&late)
        .header("x-dashscope-async", "enable")
        .header("content-type", "application/json")
        .body(json!({"model": "happyhorse-1.0-i2v", "input": {"media": [{"type": "first_frame", "url": images.rap()}]}}).to_string())
        .send()
        .await
        .unwrap();
    let (status, headers, answer) = read(response).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert_eq!(answer["code"], "Throttling.RateQuota");
    assert!(headers.contains_key("retry-after"));
    let response = server
        .client
        .post(server.url("/v1/jobs"))
        .bearer_auth(&late)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let (status, _, answer) = read(response).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert_envelope(&answer, 3040);

    // Retry-After comes from the queue: acme's oldest job waits behind local's two, so acme
    // waits longer than local, whose own is next; nobody is told less than a second.
    assert!(
        local_retry >= 1 && late_retry >= 1,
        "{local_retry} {late_retry}"
    );
    assert!(
        acme_retry > local_retry,
        "acme waits behind 2 jobs ({acme_retry} s), local behind none ({local_retry} s)"
    );

    ids.push(running);
    for id in &ids {
        server
            .post(&format!("/v1/jobs/{id}/cancel"), &json!({}))
            .await;
    }
    for id in ids.iter().skip(4) {
        server.wait_ended(id).await;
    }
    server.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_are_capped_per_account_in_count_and_bytes() {
    let png = encode(&picture(400, 300, 1), image::ImageFormat::Png);
    let server = TestServer::start_with(|c| {
        c.uploads.max_count = 2;
        c.uploads.max_bytes = png.len() as u64 * 3;
    })
    .await;
    let upload = |token: String, bytes: Vec<u8>| {
        let client = server.client.clone();
        let url = server.url("/v1/uploads");
        async move {
            let response = client
                .post(url)
                .bearer_auth(token)
                .header("content-type", "image/png")
                .body(bytes)
                .send()
                .await
                .unwrap();
            read(response).await
        }
    };
    for _ in 0..2 {
        let (status, _, answer) = upload(server.token.clone(), png.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
    let (status, headers, answer) = upload(server.token.clone(), png.clone()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    let message = assert_envelope(&answer, 3040);
    assert!(message.contains("keeps 2 uploads (limit 2)"), "{message}");
    // Retry-After: until the oldest upload expires (24 h from now, give or take a second).
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((86_390..=86_400).contains(&retry), "{retry}");

    // Another account has its own quota; a big one is refused on bytes.
    let other = server.server.create_token("other").unwrap();
    let (status, _, answer) = upload(other.clone(), png.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let big = encode(&picture(1200, 900, 2), image::ImageFormat::Png);
    assert!(big.len() > png.len() * 2);
    let (status, _, answer) = upload(other, big).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert!(
        assert_envelope(&answer, 3040).contains("bytes of uploads"),
        "{answer}"
    );
    server.server.shutdown().await;
}
