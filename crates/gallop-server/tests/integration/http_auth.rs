//! The auth matrix over loopback: no token, bad token, a token used on another account's path
//! (401, code 10000), another account's jobs and files (404), and signed links that are expired
//! or tampered with (403).

use crate::http_support;

use std::time::{SystemTime, UNIX_EPOCH};

use http_support::{ACCOUNT, ImageServer, TestServer, assert_envelope, client, quick_i2v, read};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auth_matrix() {
    let images = ImageServer::start().await;
    let server = TestServer::start().await;
    let other = server.server.create_token("other").unwrap();
    let body = quick_i2v(&images.rap());

    // No token / bad token / not a bearer: 401 with code 10000 on every authenticated route.
    for (method, path) in &authenticated_routes(&server) {
        for auth in [
            None,
            Some("Bearer not-a-token"),
            Some("Basic dXNlcjpwYXNz"),
            Some("Bearer"),
        ] {
            let mut request = client().request(method.parse().unwrap(), server.url(path));
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let response = request
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let (status, _, answer) = read(response).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} {auth:?}: {answer}"
            );
            assert!(assert_envelope(&answer, 10000).starts_with("Authentication error"));
        }
    }
    // DashScope routes answer in DashScope's shape.
    let response = client()
        .get(server.url("/api/v1/tasks/x"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    let (status, _, answer) = read(response).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer["code"], "InvalidApiKey", "{answer}");

    // A valid token on another account's path: 401, it grants nothing there.
    let (status, _, answer) = server.post_as(&other, &server.run_path(), &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert!(assert_envelope(&answer, 10000).contains(ACCOUNT));

    // A completed job of `local`...
    let (status, _, done) = server.post(&server.run_path(), &body).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let id = done["gatewayMetadata"]["requestId"]
        .as_str()
        .unwrap()
        .to_string();
    let url = done["result"]["video"].as_str().unwrap().to_string();

    // ...does not exist for `other`.
    for path in [format!("/v1/jobs/{id}"), format!("/v1/jobs/{id}/events")] {
        let (status, _, answer) = server.get_as(&other, &path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {answer}");
        assert_envelope(&answer, 7003);
    }
    let (status, _, answer) = server
        .post_as(&other, &format!("/v1/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let (status, _, answer) = server
        .post_as(
            &other,
            "/client/v4/accounts/other/ai/run",
            &json!({ "request_id": id }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_envelope(&answer, 7003);
    let (status, _, answer) = server.get_as(&other, &format!("/api/v1/tasks/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["output"]["task_status"], "UNKNOWN", "{answer}");
    let (_, _, list) = server.get_as(&other, "/v1/jobs").await;
    assert_eq!(list["jobs"], json!([]));
    let (_, _, list) = server.get("/v1/jobs").await;
    assert_eq!(list["jobs"][0]["id"], id.as_str());

    // Files: without the signed link, another account's bearer finds nothing.
    let (status, _, answer) = server.get_as(&other, &format!("/v1/files/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    // The link itself works with no bearer at all...
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // ...but not tampered with, or pointed at another job, or expired.
    let tampered = if url.ends_with('0') {
        format!("{}1", &url[..url.len() - 1])
    } else {
        format!("{}0", &url[..url.len() - 1])
    };
    let (status, _, answer) = read(client().get(&tampered).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(assert_envelope(&answer, 10001).contains("signature"));
    let (status, _, _) = read(
        client()
            .get(url.replace(&id, "someone-elses-job"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let past = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 10;
    let expired = server.server.state.signer.url_with_exp(&id, past);
    let (status, _, answer) = read(client().get(&expired).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(assert_envelope(&answer, 10001).contains("expired"));

    // An upload belongs to its account: another account cannot use it as an image uri.
    let response = client()
        .post(server.url("/v1/uploads"))
        .bearer_auth(&server.token)
        .body(http_support::encode(
            &http_support::picture(400, 400, 3),
            image::ImageFormat::Png,
        ))
        .send()
        .await
        .unwrap();
    let (_, _, upload) = read(response).await;
    let (status, _, answer) = server
        .post_as(
            &other,
            "/client/v4/accounts/other/ai/run",
            &quick_i2v(upload["uri"].as_str().unwrap()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["state"], "Failed", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not found")
    );
    server.server.shutdown().await;
}

/// A valid token while the job store is unreachable (PostgreSQL stopped): every auth path
/// answers 503 with Retry-After in its shape's own error body, so a client retries; not 401
/// (the token is fine) and not 500 (nothing is broken here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_while_the_database_is_down_answers_503_not_401_or_500() {
    // A cluster of its own: this test stops it.
    let pg = std::sync::Arc::new(
        tokio::task::spawn_blocking(gallop_testkit::TempPostgres::start)
            .await
            .unwrap(),
    );
    let url = {
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || pg.fresh_database())
            .await
            .unwrap()
    };
    let server = TestServer::start_with(|c| c.database_url = Some(url)).await;
    let (status, _, models) = server.get("/v1/models").await;
    assert_eq!(status, StatusCode::OK, "{models}");
    {
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || pg.stop())
            .await
            .unwrap();
    }

    // Each check waits for the pool's connect timeout (5 s): send them all at once.
    let run = quick_i2v("https://example.com/a.png");
    let cloudflare = authenticated_routes(&server);
    let dashscope = [
        ("GET", "/api/v1/tasks/some-task"),
        ("GET", "/api/v1/tasks"),
        (
            "POST",
            "/api/v1/services/aigc/video-generation/video-synthesis",
        ),
    ];
    let requests = cloudflare
        .iter()
        .map(|(method, path)| (*method, path.as_str()))
        .chain(dashscope);
    let (server, run) = (&server, &run);
    let answers = futures_util::future::join_all(requests.map(|(method, path)| async move {
        (
            method,
            path,
            server.send_as(&server.token, method, path, run).await,
        )
    }))
    .await;
    for (method, path, (status, headers, answer)) in answers {
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {path}: {answer}"
        );
        assert!(headers.contains_key("retry-after"), "{method} {path}");
        let message = match path.starts_with("/api/v1/") {
            // DashScope's shape: {request_id, code, message}.
            true => {
                assert!(answer["request_id"].is_string(), "{answer}");
                answer["message"].as_str().unwrap_or_default().to_string()
            }
            false => assert_envelope(&answer, 3040),
        };
        assert!(message.contains("unavailable"), "{method} {path}: {answer}");
    }
}

/// Every route behind bearer auth that answers in Cloudflare's envelope.
fn authenticated_routes(server: &TestServer) -> [(&'static str, String); 8] {
    [
        ("POST", server.run_path()),
        ("POST", format!("{}/alibaba/hh1-i2v", server.run_path())),
        ("POST", "/v1/jobs".to_string()),
        ("GET", "/v1/jobs".to_string()),
        ("GET", "/v1/jobs/some-job".to_string()),
        ("GET", "/v1/models".to_string()),
        ("POST", "/v1/uploads".to_string()),
        ("GET", "/v1/uploads/x".to_string()),
    ]
}
