//! gallop's own job API and the queued Cloudflare flow over loopback: Queued -> Running (with
//! progress) -> Completed, server-sent events (with Last-Event-ID resume), cancel of a running
//! job, Idempotency-Key, listing with a cursor, and uploads used as image uris.

use crate::http_support;

use std::time::{Duration, Instant};

use http_support::{ImageServer, TestServer, encode, long_i2v, picture, quick_i2v, read};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_run_goes_queued_running_with_progress_completed() {
    let images = ImageServer::start().await;
    let server = TestServer::start().await;
    let body = json!({
        "model": "alibaba/hh1-i2v",
        // Long enough (about 2 s or more) to see a progress write, which comes once a second.
        "input": { "image": images.rap(), "duration": 10, "seed": 7 },
        "queueRequest": true
    });
    // queueRequest in the body answers at once.
    let (status, _, answer) = server.post(&server.run_path(), &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["state"], "Queued");
    assert_eq!(answer["model"], "alibaba/hh1-i2v");
    let id = answer["request_id"].as_str().unwrap().to_string();

    let poll = json!({ "request_id": id });
    let mut states = Vec::new();
    let mut best_progress = 0u64;
    let start = Instant::now();
    loop {
        let (status, _, answer) = server.post(&server.run_path(), &poll).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let state = answer["state"].as_str().unwrap().to_string();
        if state == "Running" {
            let step = answer["progress"]["step"].as_u64().unwrap();
            if step > 0 {
                // One step per output frame: 10 s at 24 fps.
                assert_eq!(answer["progress"]["total"], 240, "{answer}");
            }
            best_progress = best_progress.max(step);
        }
        if states.last() != Some(&state) {
            states.push(state.clone());
        }
        if state == "Completed" {
            assert!(
                answer["result"]["video"]
                    .as_str()
                    .unwrap()
                    .contains("/v1/files/")
            );
            assert_eq!(answer["gatewayMetadata"]["seed"], 7);
            assert_eq!(answer["gatewayMetadata"]["requestId"], id.as_str());
            break;
        }
        assert_ne!(state, "Failed", "{answer}");
        assert!(start.elapsed() < Duration::from_secs(300), "{answer}");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert!(states.contains(&"Running".to_string()), "{states:?}");
    assert_eq!(states.last().unwrap(), "Completed");
    assert!(best_progress > 0, "progress was reported while running");

    // The same job through gallop's own API: seed, engine, timings.
    let (_, _, job) = server.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["seed"], 7);
    assert_eq!(job["engine"]["engine"], "preview");
    assert_eq!(job["progress"]["step"], job["progress"]["total"]);
    assert!(job["timings"]["run_ms"].as_i64().unwrap() > 0, "{job}");
    assert!(job["timings"]["queued_ms"].as_i64().unwrap() >= 0, "{job}");
    server.server.shutdown().await;
}

/// `(id, event name, data)` of each SSE event in `text`.
fn parse_events(text: &str) -> Vec<(Option<i64>, String, String)> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty() && !block.starts_with(':'))
        .map(|block| {
            let (mut id, mut name, mut data) = (None, String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            (id, name, data)
        })
        .collect()
}

/// Reads an SSE response until its `end` event (or the stream closes).
async fn read_sse(mut response: reqwest::Response) -> String {
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !text.contains("event: end") {
        assert!(Instant::now() < deadline, "no end event: {text}");
        match tokio::time::timeout(Duration::from_secs(60), response.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Ok(None)) => break,
            other => panic!("SSE read failed: {other:?}; so far: {text}"),
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_stream_progress_and_the_final_state_and_resume() {
    let images = ImageServer::start().await;
    let server = TestServer::start().await;
    let mut body = quick_i2v(&images.rap());
    // Long enough to see progress written (once a second) before the end.
    body["input"]["duration"] = json!(10);
    let id = server.queue(&body).await;

    let response = server
        .client
        .get(server.url(&format!("/v1/jobs/{id}/events")))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = read_sse(response).await;
    let events = parse_events(&text);
    let jobs: Vec<(i64, Value)> = events
        .iter()
        .filter(|(_, name, _)| name == "job")
        .map(|(id, _, data)| (id.unwrap(), serde_json::from_str(data).unwrap()))
        .collect();
    assert!(jobs.len() >= 2, "{text}");
    assert!(
        jobs.windows(2).all(|w| w[0].0 < w[1].0),
        "event ids increase: {text}"
    );
    assert!(
        jobs.iter()
            .any(|(_, j)| j["status"] == "running" && j["progress"]["step"].as_u64().unwrap() > 0),
        "a progress event while running: {text}"
    );
    let (last_id, last) = jobs.last().unwrap();
    assert_eq!(last["status"], "completed", "{text}");
    assert!(last["result"]["video"].is_string());
    assert_eq!(events.last().unwrap().1, "end");
    assert_eq!(events.last().unwrap().2, "completed");

    // Resuming after the last event seen sends no state again, only the end.
    let response = server
        .client
        .get(server.url(&format!("/v1/jobs/{id}/events")))
        .bearer_auth(&server.token)
        .header("last-event-id", last_id.to_string())
        .send()
        .await
        .unwrap();
    let text = read_sse(response).await;
    let events = parse_events(&text);
    assert!(events.iter().all(|(_, name, _)| name != "job"), "{text}");
    assert_eq!(events.last().unwrap().1, "end", "{text}");

    let (status, _, err) = server.get("/v1/jobs/nope/events").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    http_support::assert_envelope(&err, 7003);
    server.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_stops_a_running_job_and_a_queued_one() {
    let images = ImageServer::start().await;
    let server = TestServer::start_with(|c| c.workers = 1).await;
    let running = server.queue(&long_i2v(&images.rap())).await;
    let queued = server.queue(&long_i2v(&images.rap())).await;

    let job = server
        .wait_job(&running, Duration::from_secs(120), |j| {
            j["status"] == "running" && j["progress"]["step"].as_u64().unwrap() > 0
        })
        .await;
    let total = job["progress"]["total"].as_u64().unwrap();
    assert_eq!(total, 360);
    assert!(job["eta_seconds"].as_f64().unwrap() > 0.0, "{job}");

    // The queued one ends at once (200), the running one at its next step (202).
    let (status, _, answer) = server
        .post(&format!("/v1/jobs/{queued}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "cancelled");

    let asked = Instant::now();
    let (status, _, answer) = server
        .post(&format!("/v1/jobs/{running}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["cancel_requested"], true);
    let ended = server.wait_ended(&running).await;
    let took = asked.elapsed();
    assert_eq!(ended["status"], "cancelled", "{ended}");
    assert!(ended["result"].is_null());
    assert!(
        ended["progress"]["step"].as_u64().unwrap() < total,
        "{ended}"
    );
    // Progress is written about once a second and the engine checks between steps.
    assert!(took < Duration::from_secs(10), "cancel took {took:?}");

    // Cancelling an ended job changes nothing and says so.
    let (status, _, answer) = server
        .post(&format!("/v1/jobs/{running}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(http_support::assert_envelope(&answer, 7009).contains("already ended"));

    // Cloudflare's poll reports a cancelled job as Failed with code "cancelled".
    let (_, _, answer) = server
        .post(&server.run_path(), &json!({ "request_id": running }))
        .await;
    assert_eq!(answer["state"], "Failed");
    assert_eq!(answer["error"]["code"], "cancelled");
    server.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_with_idempotency_key_and_list_with_cursor() {
    let images = ImageServer::start().await;
    let server = TestServer::start().await;
    let post = |key: &'static str, body: String| {
        let server = &server;
        async move {
            let response = server
                .client
                .post(server.url("/v1/jobs"))
                .bearer_auth(&server.token)
                .header("content-type", "application/json")
                .header("idempotency-key", key)
                .body(body)
                .send()
                .await
                .unwrap();
            read(response).await
        }
    };
    let body = quick_i2v(&images.rap());
    let (status, headers, first) = post("key-1", body.to_string()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let id = first["id"].as_str().unwrap().to_string();
    assert_eq!(headers["location"], format!("/v1/jobs/{id}").as_str());

    // The same body spelled with other whitespace is the same body.
    let pretty = serde_json::to_string_pretty(&body).unwrap();
    assert_ne!(pretty, body.to_string());
    let (status, headers, again) = post("key-1", pretty).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(again["id"], id.as_str(), "same key, same body: same job");
    assert_eq!(headers["idempotent-replayed"], "true");

    let mut other = body.clone();
    other["input"]["prompt"] = json!("another prompt");
    let (status, _, conflict) = post("key-1", other.to_string()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{conflict}");
    assert!(http_support::assert_envelope(&conflict, 10021).contains("key-1"));

    let (status, _, second) = post("key-2", other.to_string()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let second_id = second["id"].as_str().unwrap().to_string();
    assert_ne!(second_id, id);

    // Newest first, one per page.
    let (status, _, page) = server.get("/v1/jobs?limit=1").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(page["jobs"][0]["id"], second_id.as_str());
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, _, page) = server
        .get(&format!("/v1/jobs?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(page["jobs"][0]["id"], id.as_str());
    let (_, _, page) = server.get("/v1/jobs").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 2);
    assert!(page["next_cursor"].is_null());

    let (status, _, err) = server.get("/v1/jobs?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(http_support::assert_envelope(&err, 5006).contains("limit"));

    for job in [id, second_id] {
        assert_eq!(server.wait_ended(&job).await["status"], "completed");
    }
    server.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_raw_and_multipart_serve_as_image_uris() {
    let server = TestServer::start().await;
    let png = encode(&picture(640, 480, 9), image::ImageFormat::Png);

    let response = server
        .client
        .post(server.url("/v1/uploads"))
        .bearer_auth(&server.token)
        .header("content-type", "image/png")
        .body(png.clone())
        .send()
        .await
        .unwrap();
    let (status, _, raw) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "{raw}");
    assert_eq!(raw["format"], "png");
    assert_eq!(raw["bytes"], png.len());
    let uri = raw["uri"].as_str().unwrap().to_string();
    assert_eq!(
        uri,
        format!("gallop://uploads/{}", raw["id"].as_str().unwrap())
    );

    let jpeg = encode(&picture(640, 480, 10), image::ImageFormat::Jpeg);
    let boundary = "gallop-test-boundary";
    let mut multipart = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\
         Content-Type: image/jpeg\r\n\r\n"
    )
    .into_bytes();
    multipart.extend_from_slice(&jpeg);
    multipart.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let response = server
        .client
        .post(server.url("/v1/uploads"))
        .bearer_auth(&server.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(multipart)
        .send()
        .await
        .unwrap();
    let (status, _, part) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "{part}");
    assert_eq!(part["format"], "jpg");
    assert_eq!(part["bytes"], jpeg.len());

    let response = server
        .client
        .post(server.url("/v1/uploads"))
        .bearer_auth(&server.token)
        .body("this is not an image")
        .send()
        .await
        .unwrap();
    let (status, _, err) = read(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(http_support::assert_envelope(&err, 5006).contains("only JPEG, PNG, WebP and BMP"));

    // The upload is an image uri for a job of the same account.
    let (status, _, answer) = server.post(&server.run_path(), &quick_i2v(&uri)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["state"], "Completed", "{answer}");
    // An upload is reusable: a second job from the same upload completes too.
    let (_, _, answer) = server.post(&server.run_path(), &quick_i2v(&uri)).await;
    assert_eq!(answer["state"], "Completed", "{answer}");

    let response = server
        .client
        .post(server.url("/v1/uploads"))
        .bearer_auth(&server.token)
        .body(encode(&picture(500, 500, 11), image::ImageFormat::Png))
        .send()
        .await
        .unwrap();
    let (_, _, fresh) = read(response).await;
    let r2v = json!({
        "model": "alibaba/hh1.1-r2v",
        "input": {
            "prompt": "image 1 meets image 2",
            "images": [
                format!("gallop://uploads/{}", part["id"].as_str().unwrap()),
                fresh["uri"].as_str().unwrap(),
            ],
            "duration": 3, "resolution": "720P", "ratio": "1:1"
        }
    });
    let (_, _, answer) = server.post(&server.run_path(), &r2v).await;
    assert_eq!(answer["state"], "Completed", "{answer}");
    server.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_ends_event_streams_and_sync_waits_promptly() {
    let images = ImageServer::start().await;
    let server = TestServer::start_with(|c| c.workers = 1).await;
    let id = server.queue(&long_i2v(&images.rap())).await;
    server
        .wait_job(&id, Duration::from_secs(60), |j| j["status"] == "running")
        .await;
    let events = server
        .client
        .get(server.url(&format!("/v1/jobs/{id}/events")))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    // A synchronous run queued behind the running job, waiting.
    let sync = tokio::spawn(
        server
            .client
            .post(server.url(&server.run_path()))
            .bearer_auth(&server.token)
            .header("content-type", "application/json")
            .body(long_i2v(&images.rap()).to_string())
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let asked = Instant::now();
    server.server.shutdown().await;
    let took = asked.elapsed();
    // Under the 10 s grace: the streams and waits ended, nothing had to be cut.
    assert!(took < Duration::from_secs(8), "shutdown took {took:?}");

    let (status, _, answer) = read(sync.await.unwrap().unwrap()).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{answer}");
    assert!(answer["result"]["request_id"].is_string(), "{answer}");
    let text = tokio::time::timeout(Duration::from_secs(5), events.text())
        .await
        .expect("the event stream ended")
        .unwrap_or_default();
    assert!(text.contains("event: job"), "{text}");
}
