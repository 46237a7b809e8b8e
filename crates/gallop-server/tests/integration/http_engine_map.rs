//! A server with an engine per model id: each job runs on, and reports, its own model's engine;
//! with a checkpoint for only one id, a request for the other is refused at submit time on every
//! API shape (never queued, never handed to the preview), and `/v1/models` says what serves each.

use crate::http_support;

use std::sync::Arc;

use axum::http::StatusCode;
use gallop_api::ModelId;
use gallop_engine::{Engine, EngineError, EngineInfo, EngineInput, PreviewEngine, RunContext};
use gallop_server::EngineMap;
use http_support::*;
use serde_json::json;

/// The real preview engine under another checkpoint name, so the test can tell which engine
/// served a job.
struct Named(&'static str);

impl Engine for Named {
    fn info(&self) -> EngineInfo {
        EngineInfo {
            engine: "preview".into(),
            checkpoint: Some(self.0.into()),
            compute: None,
            windows: None,
        }
    }

    fn generate(
        &self,
        input: &EngineInput<'_>,
        ctx: &mut RunContext<'_>,
    ) -> Result<(), EngineError> {
        PreviewEngine.generate(input, ctx)
    }
}

fn quick_r2v(images: &[String]) -> serde_json::Value {
    json!({
        "model": "alibaba/hh1.1-r2v",
        "input": { "images": images, "prompt": "The two meet in the city", "duration": 3 }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_model_runs_on_its_own_engine() {
    let images = ImageServer::start().await;
    let server = TestServer::start_with(|c| {
        c.engines = EngineMap::configured(vec![
            (ModelId::HhI2v, Arc::new(Named("ckpt-i2v"))),
            (ModelId::HhR2v, Arc::new(Named("ckpt-r2v"))),
        ])
    })
    .await;
    let (status, _, models) = server.get("/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(models["models"][0]["checkpoint"], "ckpt-i2v", "{models}");
    assert_eq!(models["models"][1]["checkpoint"], "ckpt-r2v", "{models}");
    assert!(
        models["models"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["served"] == true)
    );

    let i2v = server.queue(&quick_i2v(&images.rap())).await;
    let r2v = server.queue(&quick_r2v(&images.r2v_images()[..2])).await;
    for (id, checkpoint) in [(i2v, "ckpt-i2v"), (r2v, "ckpt-r2v")] {
        let job = server.wait_ended(&id).await;
        assert_eq!(job["status"], "completed", "{job}");
        assert_eq!(job["engine"]["checkpoint"], checkpoint, "{job}");
    }
    server.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_without_a_checkpoint_is_refused_at_submit_on_every_shape() {
    let images = ImageServer::start().await;
    let server = TestServer::start_with(|c| {
        c.engines = EngineMap::configured(vec![(ModelId::HhI2v, Arc::new(Named("ckpt-i2v")))])
    })
    .await;

    let (_, _, models) = server.get("/v1/models").await;
    let r2v = &models["models"][1];
    assert_eq!(r2v["id"], "alibaba/hh1.1-r2v", "{models}");
    assert_eq!(r2v["served"], false, "{models}");
    assert!(
        r2v["engine"].is_null() && r2v["checkpoint"].is_null(),
        "{r2v}"
    );
    assert!(
        r2v["note"]
            .as_str()
            .unwrap()
            .contains("no checkpoint is configured"),
        "{r2v}"
    );

    let body = quick_r2v(&images.r2v_images()[..2]);
    let classic = format!("/client/v4/accounts/{ACCOUNT}/ai/run/alibaba/hh1.1-r2v");
    for (path, body) in [
        (server.run_path(), body.clone()),
        (
            format!("{}?queueRequest=true", server.run_path()),
            body.clone(),
        ),
        (classic, body["input"].clone()),
        ("/v1/jobs".to_string(), body.clone()),
    ] {
        let (status, _, answer) = server.post(&path, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
        let message = assert_envelope(&answer, 5007);
        assert!(
            message.contains("model alibaba/hh1.1-r2v is not served here")
                && message.contains("[models.\"alibaba/hh1.1-r2v\"]"),
            "{path}: {message}"
        );
    }
    let media: Vec<_> = images.r2v_images()[..2]
        .iter()
        .map(|url| json!({"type": "reference_image", "url": url}))
        .collect();
    let response = server
        .client
        .post(server.url("/api/v1/services/aigc/video-generation/video-synthesis"))
        .bearer_auth(&server.token)
        .header("x-dashscope-async", "enable")
        .header("content-type", "application/json")
        .body(
            json!({"model": "happyhorse-1.1-r2v", "input": {"prompt": "They meet", "media": media}})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    let (status, _, answer) = read(response).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(answer["code"], "ModelNotFound", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("alibaba/hh1.1-r2v is not served"),
        "{answer}"
    );

    // Nothing was queued; the served model still runs.
    let (_, _, list) = server.get("/v1/jobs").await;
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(0), "{list}");
    let id = server.queue(&quick_i2v(&images.rap())).await;
    let job = server.wait_ended(&id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["engine"]["checkpoint"], "ckpt-i2v", "{job}");
    server.server.shutdown().await;
}
