//! Alibaba Model Studio (DashScope) shape: `POST .../video-synthesis` (async only, as upstream)
//! and `GET /api/v1/tasks/{task_id}`, with DashScope's own error bodies and codes.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use gallop_api::{DashScopeErrorCode, parse_video_synthesis};
use serde_json::{Value, json};

use super::SharedState;
use super::auth::authenticate;
use super::body::json_object;
use super::error::ApiError;
use super::path::PathParams;
use super::view::{dashscope_status, dashscope_task};
use crate::store::StoreError;

/// DashScope's error body: `{"request_id", "code", "message"}`.
pub struct DsError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl DsError {
    fn new(code: DashScopeErrorCode, message: impl Into<String>) -> Self {
        DsError {
            status: StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
            code: code.as_str(),
            message: message.into(),
            retry_after: None,
        }
    }
}

impl IntoResponse for DsError {
    fn into_response(self) -> Response {
        let body = json!({
            "request_id": uuid::Uuid::new_v4().to_string(),
            "code": self.code,
            "message": self.message,
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// The envelope errors shared with the other shapes (body size, JSON syntax), re-coded.
impl From<ApiError> for DsError {
    fn from(e: ApiError) -> Self {
        let code = match e.status {
            StatusCode::UNAUTHORIZED => DashScopeErrorCode::InvalidApiKey,
            StatusCode::TOO_MANY_REQUESTS => DashScopeErrorCode::ThrottlingRateQuota,
            s if s.is_server_error() => DashScopeErrorCode::InternalError,
            _ => DashScopeErrorCode::InvalidParameter,
        };
        let mut ds = DsError::new(code, e.message);
        // Keep 413/415/404 as they were: the code says what kind, the status what happened.
        ds.status = e.status;
        ds.retry_after = e.retry_after;
        ds
    }
}

fn store_error(e: StoreError) -> DsError {
    match e {
        StoreError::Full {
            reason,
            retry_after_secs,
        } => {
            let mut ds = DsError::new(
                DashScopeErrorCode::ThrottlingRateQuota,
                format!("Requests rate limit exceeded: {reason}"),
            );
            ds.retry_after = Some(u64::from(retry_after_secs.max(1)));
            ds
        }
        other => DsError::from(super::store_error(other)),
    }
}

async fn account(state: &SharedState, headers: &HeaderMap) -> Result<String, DsError> {
    authenticate(state, headers).await.map_err(|f| match f {
        super::auth::AuthFailure::Backend(e) => DsError::new(DashScopeErrorCode::InternalError, e),
        other => DsError::new(
            DashScopeErrorCode::InvalidApiKey,
            format!("Invalid API-key provided: {}", other.reason()),
        ),
    })
}

/// `POST /api/v1/services/aigc/video-generation/video-synthesis`.
pub async fn create(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, DsError> {
    let account = account(&state, &headers).await?;
    let is_async = headers
        .get("x-dashscope-async")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("enable"));
    if !is_async {
        return Err(DsError::new(
            DashScopeErrorCode::InvalidParameter,
            "current user api does not support synchronous calls: \
             send the header X-DashScope-Async: enable",
        ));
    }
    let body = Value::Object(json_object(&headers, body, state.body_limit)?);
    let request = parse_video_synthesis(&body).map_err(|e| {
        let mut ds = DsError::new(e.dashscope_code(), e.to_string());
        ds.status = StatusCode::from_u16(e.dashscope_code().http_status())
            .unwrap_or(StatusCode::BAD_REQUEST);
        ds
    })?;
    if let Err(e) = state.check_served(&request) {
        return Err(DsError::new(DashScopeErrorCode::ModelNotFound, e.message));
    }
    let submitted = state
        .submit(&account, &request, None)
        .await
        .map_err(store_error)?;
    let job = submitted.job();
    Ok(Json(json!({
        "output": {
            "task_status": dashscope_status(job.status),
            "task_id": job.id,
        },
        "request_id": uuid::Uuid::new_v4().to_string(),
    }))
    .into_response())
}

/// `GET /api/v1/tasks/{task_id}`. An unknown id, or another account's, answers `UNKNOWN` as
/// DashScope does for ids it does not know.
pub async fn task(
    State(state): State<SharedState>,
    PathParams(task_id): PathParams<String>,
    headers: HeaderMap,
) -> Result<Response, DsError> {
    let account = account(&state, &headers).await?;
    let job = match state.job_for(&account, &task_id).await {
        Ok(job) => job,
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            return Ok(Json(json!({
                "request_id": uuid::Uuid::new_v4().to_string(),
                "output": { "task_id": task_id, "task_status": "UNKNOWN" },
            }))
            .into_response());
        }
        Err(e) => return Err(e.into()),
    };
    let extras = state.extras(&job).await?;
    Ok(Json(dashscope_task(&job, &extras)).into_response())
}
