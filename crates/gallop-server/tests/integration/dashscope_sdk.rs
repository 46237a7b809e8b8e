//! What Alibaba's official Python SDK (`dashscope` 2.0.2) sends, recorded by
//! `scripts/fixtures/dashscope_sdk_capture.py` under `tests/fixtures/dashscope_sdk/`, replayed
//! byte for byte (headers and bodies; only the key, the image hosts and the task ids swapped)
//! against a real gallop over loopback: every calling style of both models completes, the task
//! API answers as the SDK reads it, and recorded bad requests are refused naming their field.

use crate::http_support;

use std::time::{Duration, Instant};

use http_support::{ImageServer, TestServer, download_video, read};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// One recorded request.
struct Recorded {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Option<Value>,
}

/// The requests of fixture `name`, with the example image hosts pointed at `images`.
fn fixture(name: &str, images: &ImageServer) -> Vec<Recorded> {
    let path = format!(
        "{}/tests/fixtures/dashscope_sdk/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let r2v = images.r2v_images();
    let text = text
        .replace("https://example.com/portrait.png", &r2v[0])
        .replace("https://example.com/city.png", &r2v[1]);
    let record: Value = serde_json::from_str(&text).unwrap();
    assert!(record["sdk"].as_str().unwrap().starts_with("dashscope "));
    record["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Recorded {
            method: r["method"].as_str().unwrap().to_string(),
            path: r["path"].as_str().unwrap().to_string(),
            query: r["query"].as_str().unwrap().to_string(),
            headers: r["headers"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect(),
            body: Some(r["body"].clone()).filter(|b| !b.is_null()),
        })
        .collect()
}

/// Sends a recorded request to `server` as the SDK did, with the server's token for the SDK's
/// placeholder key and `task_id` for the task id it was recorded with.
async fn replay(server: &TestServer, r: &Recorded, task_id: &str) -> (StatusCode, Value) {
    let path = r
        .path
        .replace("TASK_ID", task_id)
        .replace("echo-task", task_id);
    let url = match r.query.as_str() {
        "" => server.url(&path),
        q => server.url(&format!("{path}?{q}")),
    };
    let mut request = server.client.request(r.method.parse().unwrap(), url);
    for (name, value) in &r.headers {
        let value = match name.as_str() {
            "authorization" => {
                assert_eq!(value, "Bearer sk-fixture-key");
                format!("Bearer {}", server.token)
            }
            _ => value.clone(),
        };
        request = request.header(name, value);
    }
    if let Some(body) = &r.body {
        request = request.body(body.to_string());
    }
    let (status, _, answer) = read(request.send().await.unwrap()).await;
    (status, answer)
}

/// Polls the task with the SDK's recorded `fetch` request until it is no longer pending or
/// running.
async fn fetch_until_ended(server: &TestServer, fetch: &Recorded, task_id: &str) -> Value {
    let start = Instant::now();
    loop {
        let (status, task) = replay(server, fetch, task_id).await;
        assert_eq!(status, StatusCode::OK, "{task}");
        let st = task["output"]["task_status"].as_str().unwrap();
        if !["PENDING", "RUNNING"].contains(&st) {
            return task;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "{task}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Submits with a recorded request; returns the task id.
async fn submit(server: &TestServer, r: &Recorded) -> String {
    let (status, answer) = replay(server, r, "").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["output"]["task_status"], "PENDING", "{answer}");
    assert!(answer["request_id"].is_string(), "{answer}");
    answer["output"]["task_id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_recorded_sdk_call_completes_through_the_router() {
    let images = ImageServer::start().await;
    let server = TestServer::start().await;
    let fetch = fixture("fetch", &images).remove(0);
    let mut submitted = Vec::new();
    for name in [
        "i2v_media",
        "i2v_img_url",
        "i2v_first_frame_url",
        "r2v_media",
        "r2v_reference_urls",
    ] {
        let recorded = fixture(name, &images);
        let body = recorded[0].body.clone().unwrap();
        submitted.push((name, submit(&server, &recorded[0]).await, body));
    }
    // VideoSynthesis.call: the submit, then its own poll of the task.
    let call = fixture("i2v_call_and_wait", &images);
    let call_id = submit(&server, &call[0]).await;
    let polled = fetch_until_ended(&server, &call[1], &call_id).await;
    assert_eq!(polled["output"]["task_status"], "SUCCEEDED", "{polled}");
    submitted.push(("i2v_call_and_wait", call_id, call[0].body.clone().unwrap()));

    for (name, task_id, body) in &submitted {
        let task = fetch_until_ended(&server, &fetch, task_id).await;
        let output = &task["output"];
        assert_eq!(output["task_status"], "SUCCEEDED", "{name}: {task}");
        assert_eq!(output["task_id"], task_id.as_str());
        for field in ["submit_time", "scheduled_time", "end_time"] {
            let t = output[field].as_str().unwrap();
            assert_eq!(
                t.len(),
                "2025-01-08 16:43:36.318".len(),
                "{name} {field}: {t}"
            );
        }
        assert_eq!(
            output["orig_prompt"],
            body["input"]["prompt"].as_str().unwrap_or("")
        );
        let usage = &task["usage"];
        assert_eq!(usage["duration"], 3, "{name}: {task}");
        assert_eq!(usage["output_video_duration"], 3);
        assert_eq!(usage["video_count"], 1);
        assert_eq!(usage["SR"], 720);
        if let Some(ratio) = body["parameters"].get("ratio") {
            assert_eq!(&usage["ratio"], ratio, "{name}");
        }
        let video = download_video(output["video_url"].as_str().unwrap()).await;
        assert_eq!(video.frames.len(), 72, "{name}: 3 s at 24 fps");
        // The parameters the SDK sent are the ones the job ran with.
        let (_, _, job) = server.get(&format!("/v1/jobs/{task_id}")).await;
        let seed = body["parameters"].get("seed");
        if let Some(seed) = seed {
            assert_eq!(&job["seed"], seed, "{name}");
        }
        let want_model = if name.starts_with("i2v") {
            "alibaba/hh1-i2v"
        } else {
            "alibaba/hh1.1-r2v"
        };
        assert_eq!(job["model"], want_model, "{name}");
        assert_eq!(job["engine"]["engine"], "preview", "{name}");
    }

    // VideoSynthesis.list with the SDK's filters: the three happyhorse-1.0-i2v tasks.
    let list = fixture("list", &images).remove(0);
    let (status, page) = replay(&server, &list, "").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut want: Vec<&str> = submitted
        .iter()
        .filter(|(name, ..)| {
            ["i2v_media", "i2v_first_frame_url", "i2v_call_and_wait"].contains(name)
        })
        .map(|(_, id, _)| id.as_str())
        .collect();
    want.reverse(); // newest first
    let got: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, want, "{page}");
    assert_eq!(page["total"], 3);
    assert_eq!(page["total_page"], 1);
    assert_eq!(
        (page["page_no"].clone(), page["page_size"].clone()),
        (json!(1), json!(5))
    );
    for item in page["data"].as_array().unwrap() {
        assert_eq!(item["status"], "SUCCEEDED");
        assert_eq!(item["model_name"], "happyhorse-1.0-i2v");
    }
    server.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recorded_bad_sdk_requests_are_refused_naming_the_dashscope_field() {
    let images = ImageServer::start().await;
    let server = TestServer::start().await;
    for (name, message) in [
        (
            "bad_duration",
            "Bad input: /parameters/duration must be <= 15",
        ),
        (
            "bad_media_url",
            "Bad input: /input/media/0/url must be a uri: https://, http://, \
             data:image/...;base64,... or gallop://uploads/ID",
        ),
        (
            "bad_size",
            "Bad input: /parameters/size is not a parameter of happyhorse-1.0-i2v: use \
             resolution (720P or 1080P)",
        ),
    ] {
        let recorded = fixture(name, &images).remove(0);
        let (status, answer) = replay(&server, &recorded, "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {answer}");
        assert_eq!(answer["code"], "InvalidParameter", "{name}");
        assert_eq!(answer["message"], message, "{name}");
        assert!(answer["request_id"].is_string(), "{name}");
    }
    // prompt_extend: true is refused by name (gallop's engines do not rewrite prompts).
    let mut recorded = fixture("i2v_img_url", &images).remove(0);
    recorded.body.as_mut().unwrap()["parameters"]["prompt_extend"] = json!(true);
    let (status, answer) = replay(&server, &recorded, "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["code"], "InvalidParameter");
    assert!(
        answer["message"].as_str().unwrap().starts_with(
            "Bad input: /parameters/prompt_extend must be false for happyhorse-1.1-i2v"
        ),
        "{answer}"
    );
    // An image that cannot be fetched fails the task naming the field as the SDK sent it.
    let mut recorded = fixture("i2v_img_url", &images).remove(0);
    let missing = format!("{}/missing.png", images.base);
    recorded.body.as_mut().unwrap()["input"]["img_url"] = json!(missing);
    let task_id = submit(&server, &recorded).await;
    let fetch = fixture("fetch", &images).remove(0);
    let task = fetch_until_ended(&server, &fetch, &task_id).await;
    assert_eq!(task["output"]["task_status"], "FAILED", "{task}");
    assert_eq!(task["output"]["code"], "InvalidParameter", "{task}");
    let message = task["output"]["message"].as_str().unwrap();
    assert!(message.starts_with("/input/img_url"), "{message}");
    assert!(message.contains("404"), "{message}");
    server.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recorded_cancel_stops_a_task_and_ended_or_expired_ids_answer_as_model_studio() {
    let images = ImageServer::start().await;
    // Results (and so task ids) live 3 s here, so expiry can be watched.
    let server = TestServer::start_with(|c| c.url_ttl = Duration::from_secs(3)).await;
    let mut long = fixture("r2v_media", &images).remove(0);
    let body = long.body.as_mut().unwrap();
    body["parameters"]["duration"] = json!(15);
    body["parameters"]["resolution"] = json!("1080P");
    let task_id = submit(&server, &long).await;

    let cancel = fixture("cancel", &images).remove(0);
    let (status, answer) = replay(&server, &cancel, &task_id).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer["request_id"].is_string(), "{answer}");
    let fetch = fixture("fetch", &images).remove(0);
    let task = fetch_until_ended(&server, &fetch, &task_id).await;
    assert_eq!(task["output"]["task_status"], "CANCELED", "{task}");
    assert!(task["output"]["end_time"].is_string(), "{task}");

    // Cancelling an ended task is Model Studio's UnsupportedOperation.
    let (status, answer) = replay(&server, &cancel, &task_id).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["code"], "UnsupportedOperation", "{answer}");
    // The SDK's wait() on an id gallop never issued gets UNKNOWN, as from Model Studio.
    let wait = fixture("wait", &images).remove(0);
    let (status, answer) = replay(&server, &wait, "no-such-task").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["output"]["task_status"], "UNKNOWN", "{answer}");
    // Once its result has expired, the task is UNKNOWN too.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, answer) = replay(&server, &fetch, &task_id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["output"]["task_status"], "UNKNOWN", "{answer}");
    server.server.shutdown().await;
}
