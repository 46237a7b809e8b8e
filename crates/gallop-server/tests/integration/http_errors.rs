//! Bad requests answer a clean 4xx in Cloudflare's envelope, never a 5xx: malformed JSON, wrong
//! content type, wrong types, oversized bodies, 10 images, unknown models and fields, unknown
//! routes; a full queue answers 429 (3040) with Retry-After; a sync wait past its limit 408 (3007).

use crate::http_support;

use std::time::Duration;

use http_support::{ImageServer, TestServer, assert_envelope, long_i2v, quick_i2v, read};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn post_raw(
    server: &TestServer,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let response = server
        .client
        .post(server.url(path))
        .bearer_auth(&server.token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, _, body) = read(response).await;
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_answer_clean_4xx_envelopes() {
    let images = ImageServer::start().await;
    let server = TestServer::start().await;
    let run = server.run_path();
    let classic = format!("{run}/alibaba/hh1-i2v");
    let image = images.rap();

    // Malformed JSON, on every JSON route.
    for path in [run.as_str(), classic.as_str(), "/v1/jobs"] {
        let (status, body) =
            post_raw(&server, path, "application/json", b"{\"model\": ".to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(
            assert_envelope(&body, 5006).contains("not valid JSON"),
            "{body}"
        );
        let (status, body) = post_raw(&server, path, "application/json", b"[1, 2]".to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(assert_envelope(&body, 5006).contains("must be a JSON object"));
        let (status, body) = post_raw(&server, path, "application/json", Vec::new()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_envelope(&body, 5006);
    }
    // Wrong content type.
    let (status, body) = post_raw(
        &server,
        &run,
        "text/plain",
        quick_i2v(&image).to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    assert!(assert_envelope(&body, 5006).contains("application/json"));

    // Field errors name the field and the rule.
    let cases: Vec<(Value, u32, &str)> = vec![
        (
            json!({"model": "alibaba/hh1-i2v", "input": {"image": image, "duration": "5"}}),
            5006,
            "/input/duration",
        ),
        (
            json!({"model": "alibaba/hh1-i2v", "input": {"image": image, "duration": 16}}),
            5006,
            "/input/duration",
        ),
        (
            json!({"model": "alibaba/hh1-i2v", "input": {"image": image, "seed": -1}}),
            5006,
            "/input/seed",
        ),
        (
            json!({"model": "alibaba/hh1-i2v", "input": {"image": image, "resolution": "4K"}}),
            5006,
            "/input/resolution",
        ),
        (
            json!({"model": "alibaba/hh1-i2v", "input": {"image": 42}}),
            5006,
            "/input/image",
        ),
        (
            json!({"model": "alibaba/hh1-i2v", "input": {"image": image, "colour": "red"}}),
            5006,
            "/input/colour",
        ),
        (
            json!({"model": "alibaba/hh1-i2v", "input": {"image": "file:///etc/passwd"}}),
            5006,
            "/input/image",
        ),
        (
            json!({"model": "alibaba/hh1-i2v", "input": "a string"}),
            5006,
            "/input",
        ),
        (json!({"model": "alibaba/hh1-i2v"}), 5006, "/input"),
        (
            json!({"model": "alibaba/hh1.1-r2v", "input": {"prompt": "p", "images": vec![image.clone(); 10]}}),
            5006,
            "/input/images",
        ),
        (
            json!({"model": "alibaba/hh1.1-r2v", "input": {"prompt": "", "images": [image]}}),
            5006,
            "/input/prompt",
        ),
        (
            json!({"model": "alibaba/hh1-i2v", "input": {"image": image}, "queueRequest": "yes"}),
            5006,
            "/queueRequest",
        ),
        (
            json!({"model": "alibaba/hh1-i2v", "input": {"image": image}, "extra": 1}),
            5006,
            "/extra",
        ),
        (
            json!({"model": "alibaba/hh9-t2v", "input": {"image": image}}),
            5007,
            "alibaba/hh9-t2v",
        ),
        (
            json!({"model": 7, "input": {"image": image}}),
            5006,
            "/model",
        ),
        (json!({"request_id": 7}), 5006, "/request_id"),
    ];
    for (body, code, names) in &cases {
        for path in [run.as_str(), "/v1/jobs"] {
            let (status, _, answer) = server.post(path, body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {answer}");
            let message = assert_envelope(&answer, *code);
            assert!(message.contains(names), "{path} {body}: {message}");
        }
    }
    // Classic route: unknown model (raw and encoded), and field errors on the bare input.
    for path in [
        format!("{run}/alibaba/nope"),
        format!("{run}/alibaba%2Fnope"),
    ] {
        let (status, _, answer) = server.post(&path, &json!({"image": image})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(assert_envelope(&answer, 5007).contains("alibaba/nope"));
    }
    let (status, _, answer) = server
        .post(&classic, &json!({"image": image, "duration": 2}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        assert_envelope(&answer, 5006).contains("/input/duration"),
        "{answer}"
    );

    // Oversized: 413 with code 3006, for JSON and uploads alike.
    let huge = format!(
        "{{\"model\": \"alibaba/hh1-i2v\", \"input\": {{\"image\": \"data:image/png;base64,{}\"}}}}",
        "A".repeat(31 * 1024 * 1024)
    );
    let (status, body) =
        post_raw(&server, &run, "application/json", huge.clone().into_bytes()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(assert_envelope(&body, 3006).contains("limit"));
    let (status, body) = post_raw(&server, "/v1/uploads", "image/png", huge.into_bytes()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_envelope(&body, 3006);

    // A path parameter that is not valid percent-encoded UTF-8.
    let (status, _, answer) = server.get("/v1/jobs/%FF%FE").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(assert_envelope(&answer, 5006).contains("path"), "{answer}");

    // Unknown routes and methods.
    let (status, _, answer) = server.get("/v2/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(&answer, 7000);
    let (status, _, answer) = server.get(&run).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_envelope(&answer, 7001);
    let (status, _, answer) = server
        .post(&run, &json!({"request_id": "no-such-job"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(&answer, 7003);

    // Nothing above was queued.
    let (_, _, list) = server.get("/v1/jobs").await;
    assert_eq!(list["jobs"], json!([]), "refused bodies create no job");
    server.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_that_fail_after_acceptance_say_why() {
    let images = ImageServer::start().await;
    let server = TestServer::start().await;
    // Too small (200x200 < 300 px), and missing on the image server.
    for (uri, names) in [
        (format!("{}/small.png", images.base), "300"),
        (format!("{}/missing.png", images.base), "404"),
    ] {
        let (status, _, answer) = server.post(&server.run_path(), &quick_i2v(&uri)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["state"], "Failed", "{answer}");
        assert_eq!(answer["error"]["code"], "bad_input", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{message}");

        // The classic route answers the same failure as a 400 envelope.
        let classic = format!("{}/alibaba/hh1-i2v", server.run_path());
        let (status, _, answer) = server.post(&classic, &quick_i2v(&uri)["input"]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(assert_envelope(&answer, 5006).contains(names));
    }
    server.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_queue_answers_429_and_sync_wait_answers_408() {
    let images = ImageServer::start().await;
    let server = TestServer::start_with(|c| {
        c.workers = 1;
        c.queue_limit = 1;
        c.sync_wait = Duration::from_secs(1);
    })
    .await;
    // One running (sync call times out after 1 s, with the id to poll), one queued, then full.
    let (status, _, answer) = server
        .post(&server.run_path(), &long_i2v(&images.rap()))
        .await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{answer}");
    let message = assert_envelope(&answer, 3007);
    let running = answer["result"]["request_id"].as_str().unwrap().to_string();
    assert!(message.contains(&running), "{message}");
    server
        .wait_job(&running, Duration::from_secs(60), |j| {
            j["status"] == "running"
        })
        .await;
    let queued = server.queue(&long_i2v(&images.rap())).await;

    let (status, headers, answer) = server
        .post(
            &format!("{}?queueRequest=true", server.run_path()),
            &long_i2v(&images.rap()),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert_envelope(&answer, 3040);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    let response = server
        .client
        .post(server.url("/api/v1/services/aigc/video-generation/video-synthesis"))
        .bearer_auth(&server.token)
        .header("x-dashscope-async", "enable")
        .header("content-type", "application/json")
        .body(json!({"model": "happyhorse-1.0-i2v", "input": {"media": [{"type": "first_frame", "url": images.rap()}]}}).to_string())
        .send()
        .await
        .unwrap();
    let (status, _, answer) = read(response).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert_eq!(answer["code"], "Throttling.RateQuota");

    // The poll of the timed-out run shows it going on.
    let (_, _, answer) = server
        .post(&server.run_path(), &json!({"request_id": running}))
        .await;
    assert_eq!(answer["state"], "Running", "{answer}");

    for id in [&queued, &running] {
        server
            .post(&format!("/v1/jobs/{id}/cancel"), &json!({}))
            .await;
    }
    assert_eq!(server.wait_ended(&running).await["status"], "cancelled");
    server.server.shutdown().await;
}
