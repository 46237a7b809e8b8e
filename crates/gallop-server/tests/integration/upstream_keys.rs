//! Accounts' own Model Studio keys (BYOK) over loopback: stored sealed through
//! `PUT /v1/keys/alibaba`, never answered back, removed with `DELETE`; a model routed upstream
//! is refused at submit, saying how to set a key, when neither the account nor the server has
//! one; `/v1/models` says whose key would pay, per account.

use crate::http_support;

use std::time::Duration;

use gallop_api::ModelId;
use gallop_server::upstreams::{UpstreamRoute, UpstreamRoutes};
use gallop_upstream::{ApiKey, Upstream};
use http_support::{TestServer, quick_i2v, read};
use reqwest::StatusCode;
use serde_json::{Value, json};

const KEY: &str = "sk-byok-3f9a1c77d2e54b0e";

/// i2v routed to an upstream nobody listens on (nothing here reaches it).
fn routes(unified: Option<&str>) -> UpstreamRoutes {
    UpstreamRoutes::new(vec![(
        ModelId::HhI2v,
        UpstreamRoute {
            upstream: Upstream::new(
                "alibaba",
                "http://127.0.0.1:9/api/v1",
                Duration::from_secs(2),
            ),
            model: "happyhorse-1.0-i2v".into(),
            unified_key: unified.and_then(ApiKey::new),
            key_env: Some("DASHSCOPE_API_KEY".into()),
            patience: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
        },
    )])
}

async fn send(
    server: &TestServer,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let mut request = server
        .client
        .request(method.parse().unwrap(), server.url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    (status, response.text().await.unwrap())
}

fn models_entry(models: &str, id: &str) -> Value {
    let models: Value = serde_json::from_str(models).unwrap();
    models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .cloned()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn byok_keys_are_stored_sealed_never_answered_and_decide_the_key_source() {
    let server = TestServer::start_with(|c| c.upstreams = routes(None)).await;
    let bob = server.server.create_token("bob").unwrap();
    let mut answers = Vec::new();

    // Neither the account nor the server has a key: refused at submit, saying how to set one.
    let (status, _, answer) = server
        .post(
            &format!("{}?queueRequest=true", server.run_path()),
            &quick_i2v("https://example.com/a.png"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let message = answer["errors"][0]["message"].as_str().unwrap();
    for needle in [
        "PUT /v1/keys/alibaba",
        "gallop keys set --account local --provider alibaba",
        "DASHSCOPE_API_KEY",
    ] {
        assert!(message.contains(needle), "{needle}: {message}");
    }
    let response = server
        .client
        .post(server.url("/api/v1/services/aigc/video-generation/video-synthesis"))
        .bearer_auth(&server.token)
        .header("x-dashscope-async", "enable")
        .header("content-type", "application/json")
        .body(json!({"model": "happyhorse-1.0-i2v", "input": {"img_url": "https://example.com/a.png"}}).to_string())
        .send()
        .await
        .unwrap();
    let (status, _, answer) = read(response).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert_eq!(answer["code"], "InvalidApiKey");
    let (_, _, list) = server.get("/v1/jobs").await;
    assert_eq!(list["jobs"], json!([]), "nothing was queued");
    let (_, models) = send(&server, "GET", "/v1/models", &server.token, None).await;
    let i2v = models_entry(&models, "alibaba/hh1-i2v");
    assert_eq!(i2v["engine"], "upstream alibaba (happyhorse-1.0-i2v)");
    assert_eq!(i2v["keySource"], Value::Null);

    // Stored for account local only.
    let (status, body) = send(
        &server,
        "PUT",
        "/v1/keys/alibaba",
        &server.token,
        Some(json!({"api_key": KEY})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["keySource"],
        "BYOK"
    );
    answers.push(body);
    let (_, models) = send(&server, "GET", "/v1/models", &server.token, None).await;
    assert_eq!(
        models_entry(&models, "alibaba/hh1-i2v")["keySource"],
        "BYOK"
    );
    answers.push(models);
    let (_, models) = send(&server, "GET", "/v1/models", &bob, None).await;
    assert_eq!(
        models_entry(&models, "alibaba/hh1-i2v")["keySource"],
        Value::Null,
        "local's key is not bob's"
    );
    answers.push(models);
    let (status, _, answer) = server
        .post_as(
            &bob,
            "/client/v4/accounts/bob/ai/run?queueRequest=true",
            &quick_i2v("https://example.com/a.png"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "bob has no key: {answer}");

    // Bad bodies are refused without quoting the value.
    for (body, rule) in [
        (
            json!({"api_key": format!("{KEY} x")}),
            "/api_key must be a string of 1-512 visible characters",
        ),
        (json!({"api_key": 5}), "/api_key must be a string"),
        (json!({"key": KEY}), "/key is not allowed"),
        (json!({}), "/api_key is required"),
    ] {
        let (status, answer) = send(
            &server,
            "PUT",
            "/v1/keys/alibaba",
            &server.token,
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(answer.contains(rule), "{rule}: {answer}");
        answers.push(answer);
    }
    let (status, answer) = send(
        &server,
        "PUT",
        "/v1/keys/openai",
        &server.token,
        Some(json!({"api_key": KEY})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let (status, _) = send(
        &server,
        "PUT",
        "/v1/keys/alibaba",
        "wrong",
        Some(json!({"api_key": KEY})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // At rest only sealed: the key's bytes are nowhere in the data directory.
    for entry in walk(server.dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !contains(&bytes, KEY.as_bytes()),
            "{} holds the key",
            entry.display()
        );
    }
    let (status, body) = send(&server, "DELETE", "/v1/keys/alibaba", &server.token, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    answers.push(body);
    let (status, _) = send(&server, "DELETE", "/v1/keys/alibaba", &server.token, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, models) = send(&server, "GET", "/v1/models", &server.token, None).await;
    assert_eq!(
        models_entry(&models, "alibaba/hh1-i2v")["keySource"],
        Value::Null
    );
    for answer in &answers {
        assert!(!answer.contains(KEY), "an answer holds the key: {answer}");
    }
    server.server.shutdown().await;

    // With the server's own key, an account without one uses it.
    let server = TestServer::start_with(|c| c.upstreams = routes(Some("sk-unified-1"))).await;
    let (_, models) = send(&server, "GET", "/v1/models", &server.token, None).await;
    let i2v = models_entry(&models, "alibaba/hh1-i2v");
    assert_eq!(i2v["keySource"], "Unified", "{i2v}");
    assert!(!models.contains("sk-unified-1"));
    // The r2v id is not routed: the preview still serves it.
    assert_eq!(
        models_entry(&models, "alibaba/hh1.1-r2v")["engine"],
        "preview"
    );
    server.server.shutdown().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
