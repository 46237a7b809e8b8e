//! Operational routes: models, OpenAPI, health, readiness, metrics, and the envelope answers for
//! unknown routes and methods.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use std::sync::Arc;

use super::auth::Account;
use super::error::{ApiError, code};
use super::{SharedState, openapi, with_store};
use crate::upstreams::UpstreamRoute;

/// `GET /v1/models`: each id and the engine and checkpoint that serve it. The preview engine
/// says so; an id routed upstream names the upstream, its model and whose key would pay for
/// this token's account; an id nothing serves is listed with `served: false` and why.
pub async fn models(
    State(state): State<SharedState>,
    Account(account): Account,
) -> Result<Json<Value>, ApiError> {
    let mut models: Vec<Value> = Vec::new();
    for (model, info) in state.engines.infos() {
        if let Some(route) = state.upstreams.route_for(model) {
            models.push(upstream_model(&state, &account, model, route).await?);
            continue;
        }
        models.push(match info {
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
        });
    }
    Ok(Json(json!({ "models": models })))
}

/// A `/v1/models` entry for an id routed to Model Studio, with the key source a job of
/// `account` would use now (null, and how to set one, when there is none).
async fn upstream_model(
    state: &SharedState,
    account: &str,
    model: gallop_api::ModelId,
    route: &Arc<UpstreamRoute>,
) -> Result<Value, ApiError> {
    let (key_source, note) = match state.key_source(account, route).await? {
        Ok(source) => (
            Some(source.as_str()),
            format!(
                "the real model on Alibaba Model Studio ({}), paid by the {source} key",
                route.upstream.base_url()
            ),
        ),
        Err(why) => (None, why),
    };
    Ok(json!({
        "id": model.as_str(),
        "served": true,
        "engine": route.describe(),
        "checkpoint": null,
        "compute": null,
        "upstream": route.upstream.name(),
        "upstream_model": route.model,
        "keySource": key_source,
        "note": note,
    }))
}

pub async fn openapi(State(state): State<SharedState>) -> Json<Value> {
    Json(openapi::document(&state.public_url))
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the job store and the object storage both answer: a load balancer then sends
/// no requests to a process that could only fail them.
pub async fn readyz(State(state): State<SharedState>) -> Response {
    let store = with_store(&state, |s| s.ping()).await;
    let storage = state.storage.check().await;
    match (store, storage) {
        (Ok(()), Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        (Err(e), _) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response()
        }
        (_, Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: storage: {e}\n"),
        )
            .into_response(),
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
