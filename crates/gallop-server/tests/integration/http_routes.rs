//! The other shapes and the operational routes over loopback: Cloudflare's classic route with the
//! model id raw and percent-encoded, the DashScope task flow, `/v1/models`, the OpenAPI document
//! (every route listed and routed), `/healthz`, `/readyz` and `/metrics`.

use crate::http_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use http_support::{ImageServer, TestServer, client, download_video, quick_i2v, read};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn classic_route_takes_the_model_raw_and_percent_encoded() {
    let images = ImageServer::start().await;
    let server = TestServer::start().await;
    let input = quick_i2v(&images.rap())["input"].clone();
    for model in ["alibaba/hh1-i2v", "alibaba%2Fhh1-i2v", "alibaba%2fhh1-i2v"] {
        let path = format!("{}/{model}", server.run_path());
        let (status, _, answer) = server.post(&path, &input).await;
        assert_eq!(status, StatusCode::OK, "{model}: {answer}");
        assert_eq!(answer["success"], true);
        assert_eq!(answer["errors"], json!([]));
        assert_eq!(answer["messages"], json!([]));
        let url = answer["result"]["video"].as_str().unwrap();
        let video = download_video(url).await;
        assert_eq!(video.frames.len(), 72, "3 s at 24 fps");
    }
    // Queued through the classic route too.
    let path = format!(
        "{}/alibaba%2Fhh1.1-r2v?queueRequest=true",
        server.run_path()
    );
    let r2v = json!({"prompt": "image 1 then image 2", "images": images.r2v_images()[..2], "duration": 3, "resolution": "720P"});
    let (status, _, answer) = server.post(&path, &r2v).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["result"]["state"], "Queued");
    assert_eq!(answer["result"]["model"], "alibaba/hh1.1-r2v");
    let id = answer["result"]["request_id"].as_str().unwrap();
    assert_eq!(server.wait_ended(id).await["status"], "completed");
    server.server.shutdown().await;
}

async fn dashscope_post(
    server: &TestServer,
    body: &Value,
    async_header: bool,
) -> (StatusCode, Value) {
    let mut request = server
        .client
        .post(server.url("/api/v1/services/aigc/video-generation/video-synthesis"))
        .bearer_auth(&server.token)
        .header("content-type", "application/json");
    if async_header {
        request = request.header("X-DashScope-Async", "enable");
    }
    let (status, _, answer) = read(request.body(body.to_string()).send().await.unwrap()).await;
    (status, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashscope_task_flow() {
    let images = ImageServer::start().await;
    let server = TestServer::start().await;
    let body = json!({
        "model": "happyhorse-1.0-i2v",
        "input": {
            "prompt": "A gentle camera push-in",
            "media": [{"type": "first_frame", "url": images.rap()}]
        },
        "parameters": {"resolution": "720P", "duration": 3, "watermark": false, "seed": 5}
    });
    let (status, answer) = dashscope_post(&server, &body, false).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["code"], "InvalidParameter");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("X-DashScope-Async")
    );

    let (status, answer) = dashscope_post(&server, &body, true).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["output"]["task_status"], "PENDING");
    assert!(answer["request_id"].is_string());
    let task_id = answer["output"]["task_id"].as_str().unwrap().to_string();

    let start = Instant::now();
    let mut seen = BTreeSet::new();
    let done = loop {
        let (status, _, task) = server.get(&format!("/api/v1/tasks/{task_id}")).await;
        assert_eq!(status, StatusCode::OK, "{task}");
        let st = task["output"]["task_status"].as_str().unwrap().to_string();
        seen.insert(st.clone());
        if st == "SUCCEEDED" {
            break task;
        }
        assert!(["PENDING", "RUNNING"].contains(&st.as_str()), "{task}");
        assert!(start.elapsed() < Duration::from_secs(300));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let output = &done["output"];
    assert_eq!(output["task_id"], task_id.as_str());
    for field in ["submit_time", "scheduled_time", "end_time"] {
        let t = output[field].as_str().unwrap();
        assert_eq!(t.len(), "2025-01-08 16:43:36.318".len(), "{field}: {t}");
    }
    let url = output["video_url"].as_str().unwrap();
    assert_eq!(download_video(url).await.frames.len(), 72);
    let (_, _, job) = server.get(&format!("/v1/jobs/{task_id}")).await;
    assert_eq!(job["seed"], 5);

    // Errors in DashScope's shape.
    let mut bad = body.clone();
    bad["parameters"]["duration"] = json!(20);
    let (status, answer) = dashscope_post(&server, &bad, true).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["code"], "InvalidParameter");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("/parameters/duration"),
        "{answer}"
    );
    let mut bad = body.clone();
    bad["model"] = json!("wanx-unknown");
    let (status, answer) = dashscope_post(&server, &bad, true).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(answer["code"], "ModelNotFound");
    let (status, _, answer) = server.get("/api/v1/tasks/no-such-task").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["output"]["task_status"], "UNKNOWN");
    server.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openapi_lists_every_route_and_each_is_routed() {
    let server = TestServer::start().await;
    let (status, _, doc) = server.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(doc["servers"][0]["url"], server.base.as_str());

    let mut listed = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            listed.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let expected: BTreeSet<String> = [
        "GET /",
        "GET /app.js",
        "GET /app.css",
        "POST /client/v4/accounts/{account_id}/ai/run",
        "POST /client/v4/accounts/{account_id}/ai/run/{model}",
        "POST /api/v1/services/aigc/video-generation/video-synthesis",
        "GET /api/v1/tasks/{task_id}",
        "POST /api/v1/tasks/{task_id}/cancel",
        "GET /api/v1/tasks",
        "POST /v1/jobs",
        "GET /v1/jobs",
        "GET /v1/jobs/{id}",
        "POST /v1/jobs/{id}/cancel",
        "GET /v1/jobs/{id}/events",
        "GET /v1/files/{id}",
        "POST /v1/uploads",
        "PUT /v1/keys/{provider}",
        "DELETE /v1/keys/{provider}",
        "GET /v1/uploads/{id}",
        "GET /v1/models",
        "GET /openapi.json",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(listed, expected);

    // Each documented route is served: whatever it answers, it is not the unknown-route (7000)
    // or wrong-method (7001) answer.
    for entry in &listed {
        let (method, path) = entry.split_once(' ').unwrap();
        let path = path
            .replace("{account_id}", "local")
            .replace("{model}", "alibaba/hh1-i2v")
            .replace("{task_id}", "x")
            .replace("{provider}", "alibaba")
            .replace("{id}", "x");
        let response = client()
            .request(method.parse().unwrap(), server.url(&path))
            .bearer_auth(&server.token)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let (status, _, body) = read(response).await;
        assert!(status != StatusCode::METHOD_NOT_ALLOWED, "{entry}: {body}");
        let code = body["errors"][0]["code"].as_u64();
        assert!(code != Some(7000) && code != Some(7001), "{entry}: {body}");
        assert!(!status.is_server_error(), "{entry}: {status} {body}");
    }
    server.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn models_health_readiness_and_metrics() {
    let images = ImageServer::start().await;
    let server = TestServer::start().await;
    let (status, _, models) = server.get("/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["engine"], "preview", "{m}");
            assert!(m["note"].as_str().unwrap().contains("not the neural model"));
            m["id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids, ["alibaba/hh1-i2v", "alibaba/hh1.1-r2v"]);

    for (path, text) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let response = client().get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.unwrap().trim(), text);
    }

    let (_, _, answer) = server
        .post(&server.run_path(), &quick_i2v(&images.rap()))
        .await;
    assert_eq!(answer["state"], "Completed", "{answer}");
    let id = answer["gatewayMetadata"]["requestId"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..3 {
        server.get(&format!("/v1/jobs/{id}")).await;
    }
    // The duration is observed from the job's end notification: give it a moment.
    let start = Instant::now();
    let text = loop {
        let response = client().get(server.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let text = response.text().await.unwrap();
        if text.contains("gallop_job_duration_seconds_count{status=\"completed\"} 1") {
            break text;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        text.contains("gallop_jobs{status=\"completed\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("gallop_jobs{status=\"queued\"} 0\n"),
        "{text}"
    );
    assert!(text.contains("gallop_queue_depth 0\n"), "{text}");
    assert!(
        text.contains(
            "gallop_http_requests_total{method=\"GET\",route=\"/v1/jobs/{id}\",status=\"200\"} 3\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("route=\"/v1/models\",status=\"200\"} 1\n"),
        "{text}"
    );
    server.server.shutdown().await;
}

/// `#/components/schemas/NAME` of the served document, `$ref` followed once.
fn schema<'a>(doc: &'a Value, node: &'a Value) -> &'a Value {
    match node["$ref"].as_str() {
        Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().unwrap()],
        None => node,
    }
}

/// schemathesis (positive_data_acceptance) found requests the document called valid and the
/// server refused: each is refused still, and the document now says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openapi_document_states_the_rules_the_server_applies() {
    let server = TestServer::start().await;
    let (_, _, doc) = server.get("/openapi.json").await;
    let http = client();

    // DashScope without X-DashScope-Async: refused; the header is a required parameter.
    let synthesis = "/api/v1/services/aigc/video-generation/video-synthesis";
    let body =
        json!({"model": "alibaba/hh1-i2v", "input": {"img_url": "https://example.com/a.png"}});
    let (status, _, answer) = server.post(synthesis, &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("X-DashScope-Async")
    );
    let params = doc["paths"][synthesis]["post"]["parameters"]
        .as_array()
        .unwrap();
    let async_header = params
        .iter()
        .find(|p| p["name"] == "X-DashScope-Async")
        .unwrap();
    assert_eq!(async_header["in"], "header");
    assert_eq!(async_header["required"], true);
    assert_eq!(async_header["schema"]["enum"], json!(["enable"]));

    // /v1/jobs with request_id, or an i2v input with r2v's images: refused; the document's
    // job body lists neither, and refuses unlisted fields.
    let i2v =
        json!({"image": "https://example.com/a.png", "images": ["https://example.com/a.png"]});
    for body in [
        json!({"model": "alibaba/hh1-i2v", "input": {"image": "https://example.com/a.png"}, "request_id": ""}),
        json!({"model": "alibaba/hh1-i2v", "input": i2v}),
    ] {
        let (status, _, answer) = server.post("/v1/jobs", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
    }
    let submit = schema(
        &doc,
        &doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"],
    );
    let branches = submit["oneOf"].as_array().unwrap();
    assert_eq!(branches.len(), 2, "{submit}");
    for branch in branches {
        let run = schema(&doc, branch);
        assert_eq!(run["additionalProperties"], false, "{run}");
        assert!(run["properties"].get("request_id").is_none(), "{run}");
        assert_eq!(run["required"], json!(["model", "input"]));
        let input = schema(&doc, &run["properties"]["input"]);
        assert_eq!(input["additionalProperties"], false, "{input}");
    }
    let i2v_input = &doc["components"]["schemas"]["I2vInput"];
    assert!(i2v_input["properties"].get("images").is_none());
    assert_eq!(i2v_input["required"], json!(["image"]));
    // r2v takes no negative_prompt; the document's r2v input lists none.
    let r2v = json!({"model": "alibaba/hh1.1-r2v", "input": {"prompt": "a cat",
        "images": ["https://example.com/a.png"], "negative_prompt": "blur"}});
    let (status, _, answer) = server.post("/v1/jobs", &r2v).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let r2v_input = &doc["components"]["schemas"]["R2vInput"];
    assert!(r2v_input["properties"].get("negative_prompt").is_none());
    // A null field counts as absent (schemathesis sent queueRequest and watermark null); the
    // document marks every optional field nullable.
    let queued = json!({"model": "alibaba/hh1-i2v",
        "input": {"image": "https://example.com/a.png"}, "queueRequest": null});
    let (status, _, answer) = server.post("/v1/jobs", &queued).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let i2v_run = &doc["components"]["schemas"]["I2vRun"];
    assert_eq!(i2v_run["properties"]["queueRequest"]["nullable"], true);
    let i2v_input = &doc["components"]["schemas"]["I2vInput"];
    assert_eq!(i2v_input["properties"]["watermark"]["nullable"], true);
    let resolution = &i2v_input["properties"]["resolution"]["enum"];
    assert_eq!(resolution, &json!(["720P", "1080P", null]));
    assert!(i2v_input["properties"]["image"].get("nullable").is_none());
    // Cancelling a running job answers 202 (it stops at its next step): documented.
    let cancel = &doc["paths"]["/v1/jobs/{id}/cancel"]["post"]["responses"];
    assert!(
        cancel["202"].is_object() && cancel["200"].is_object(),
        "{cancel}"
    );

    // An upload without a body: refused; the document's body is required and not empty.
    let response = http
        .post(server.url("/v1/uploads"))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    let (status, _, answer) = read(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let upload = &doc["paths"]["/v1/uploads"]["post"]["requestBody"];
    assert_eq!(upload["required"], true);
    assert_eq!(upload["content"]["image/*"]["schema"]["minLength"], 1);
    server.server.shutdown().await;
}
