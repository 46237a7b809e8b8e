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
    let routes = [
        ("POST", server.run_path()),
        ("POST", format!("{}/alibaba/hh1-i2v", server.run_path())),
        ("POST", "/v1/jobs".to_string()),
        ("GET", "/v1/jobs".to_string()),
        ("GET", "/v1/models".to_string()),
        ("POST", "/v1/uploads".to_string()),
        ("GET", "/v1/uploads/x".to_string()),
    ];
    for (method, path) in &routes {
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
