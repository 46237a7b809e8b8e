//! Operational routes: models, OpenAPI, health, readiness, metrics, and the envelope answers for
//! unknown routes and methods.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::auth::Account;
use super::error::{ApiError, code};
use super::{SharedState, openapi, with_store};

/// `GET /v1/models`: each id and the engine and checkpoint that serve it. The preview engine
/// says so; an id nothing serves is listed with `served: false` and why.
pub async fn models(State(state): State<SharedState>, _: Account) -> Json<Value> {
    let models: Vec<Value> = state
        .engines
        .infos()
        .into_iter()
        .map(|(model, info)| match info {
            Some(info) => json!({
                "id": model.as_str(),
                "served": true,
                "engine": info.engine,
                "checkpoint": info.checkpoint,
                "compute": info.compute,
                "note": if info.engine == "preview" {
                    "motion preview (camera moves and cross-dissolves over the input images); not the neural model"
                } else {
                    "neural model"
                },
            }),
            None => json!({
                "id": model.as_str(),
                "served": false,
                "engine": null,
                "checkpoint": null,
                "compute": null,
                "note": state.engines.refusal(model),
            }),
        })
        .collect();
    Json(json!({ "models": models }))
}

pub async fn openapi(State(state): State<SharedState>) -> Json<Value> {
    Json(openapi::document(&state.public_url))
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the job store answers.
pub async fn readyz(State(state): State<SharedState>) -> Response {
    match with_store(&state, |s| s.count_by_status()).await {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response(),
    }
}

pub async fn metrics(State(state): State<SharedState>) -> Response {
    let jobs = match with_store(&state, |s| s.count_by_status()).await {
        Ok(jobs) => jobs,
        Err(e) => return ApiError::internal(e).into_response(),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&jobs),
    )
        .into_response()
}

pub async fn no_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        code::NO_ROUTE,
        "No route for that URI; see /openapi.json",
    )
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        code::METHOD_NOT_ALLOWED,
        "Method not allowed on this route; see /openapi.json",
    )
}
