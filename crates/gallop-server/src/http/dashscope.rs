//! Alibaba Model Studio (DashScope) shape: `POST .../video-synthesis` (async only, as upstream),
//! and the task API: `GET /api/v1/tasks/{task_id}`, `POST /api/v1/tasks/{task_id}/cancel` and
//! `GET /api/v1/tasks`, with DashScope's own error bodies and codes.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use gallop_api::{DashScopeErrorCode, VideoSynthesis, parse_video_synthesis};
use serde_json::{Value, json};

use super::auth::authenticate;
use super::body::json_object;
use super::error::ApiError;
use super::path::PathParams;
use super::view::{
    DASHSCOPE_KEY, dashscope_list_item, dashscope_model_name, dashscope_status, dashscope_task,
    parse_compact_time,
};
use super::{SharedState, now_ms, with_store};
use crate::store::{CancelOutcome, Job, StoreError};

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
        super::auth::AuthFailure::Store(e) => store_error(e),
        other => DsError::new(
            DashScopeErrorCode::InvalidApiKey,
            format!("Invalid API-key provided: {other}"),
        ),
    })
}

/// The account of a DashScope request, refused in DashScope's shape. As an extractor it runs
/// before the body is read: a client without a valid key never gets a body buffered.
pub struct DsAccount(pub String);

impl FromRequestParts<SharedState> for DsAccount {
    type Rejection = DsError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        Ok(DsAccount(account(state, &parts.headers).await?))
    }
}

/// `POST /api/v1/services/aigc/video-generation/video-synthesis`.
pub async fn create(
    State(state): State<SharedState>,
    DsAccount(account): DsAccount,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, DsError> {
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
    let synthesis = parse_video_synthesis(&body).map_err(api_error)?;
    if let Err(e) = state.check_served(&synthesis.request) {
        return Err(DsError::new(DashScopeErrorCode::ModelNotFound, e.message));
    }
    check_prompt_extend(&state, &synthesis)?;
    if let Err(e) = state
        .check_upstream_key(&account, synthesis.request.model)
        .await
    {
        let code = match e.status {
            StatusCode::BAD_REQUEST => DashScopeErrorCode::InvalidApiKey,
            _ => DashScopeErrorCode::InternalError,
        };
        return Err(DsError::new(code, e.message));
    }
    let submitted = state
        .submit_value(
            &account,
            synthesis.request.model,
            job_request(&synthesis)?,
            None,
        )
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

fn api_error(e: gallop_api::ApiError) -> DsError {
    DsError::new(e.dashscope_code(), e.to_string())
}

/// gallop's engines take the prompt as written: asking for Model Studio's prompt rewriting is
/// refused rather than silently not done, unless the model is routed to Model Studio, which
/// is given the setting.
fn check_prompt_extend(state: &SharedState, synthesis: &VideoSynthesis) -> Result<(), DsError> {
    let upstream = state.upstreams.route_for(synthesis.request.model).is_some();
    if synthesis.prompt_extend == Some(true) && !upstream {
        return Err(DsError::new(
            DashScopeErrorCode::InvalidParameter,
            format!(
                "Bad input: /parameters/prompt_extend must be false for {}: gallop's engines \
                 use the prompt as written (Model Studio's prompt rewriting is not available here)",
                synthesis.model_name
            ),
        ));
    }
    Ok(())
}

/// The row's request: the shared request plus what only this shape carries, under
/// `dashscope` (the model id as spelled, `prompt_extend`, and each image's field).
fn job_request(synthesis: &VideoSynthesis) -> Result<Value, DsError> {
    let mut request = serde_json::to_value(&synthesis.request)
        .map_err(|e| DsError::new(DashScopeErrorCode::InternalError, e.to_string()))?;
    request[DASHSCOPE_KEY] = json!({
        "model": synthesis.model_name,
        "prompt_extend": synthesis.prompt_extend,
        "image_fields": synthesis.image_fields,
    });
    Ok(request)
}

/// A job the client can no longer see as a task: ended longer ago than results are kept
/// (Model Studio keeps task ids for 24 h and then answers UNKNOWN).
fn expired(state: &SharedState, job: &Job) -> bool {
    job.finished_at_ms.is_some_and(|end| {
        end + i64::try_from(state.url_ttl.as_millis()).unwrap_or(i64::MAX) < now_ms()
    })
}

fn unknown_task(task_id: &str) -> Response {
    Json(json!({
        "request_id": uuid::Uuid::new_v4().to_string(),
        "output": { "task_id": task_id, "task_status": "UNKNOWN" },
    }))
    .into_response()
}

/// `GET /api/v1/tasks/{task_id}`. An unknown id, an expired one, or another account's, answers
/// `UNKNOWN` as DashScope does for ids it does not know.
pub async fn task(
    State(state): State<SharedState>,
    PathParams(task_id): PathParams<String>,
    headers: HeaderMap,
) -> Result<Response, DsError> {
    let account = account(&state, &headers).await?;
    let job = match state.job_for(&account, &task_id).await {
        Ok(job) if !expired(&state, &job) => job,
        Ok(_) => return Ok(unknown_task(&task_id)),
        Err(e) if e.status == StatusCode::NOT_FOUND => return Ok(unknown_task(&task_id)),
        Err(e) => return Err(e.into()),
    };
    let extras = state.extras(&job).await?;
    Ok(Json(dashscope_task(&job, &extras)).into_response())
}

/// `POST /api/v1/tasks/{task_id}/cancel`: a queued task ends now, a running one at its next
/// step (Model Studio cancels only PENDING tasks; gallop can do more). An ended task answers
/// `UnsupportedOperation`.
pub async fn cancel(
    State(state): State<SharedState>,
    PathParams(task_id): PathParams<String>,
    headers: HeaderMap,
) -> Result<Response, DsError> {
    let account = account(&state, &headers).await?;
    let id = task_id.clone();
    let outcome = with_store(&state, move |s| s.cancel(&account, &id))
        .await
        .map_err(store_error)?;
    match outcome {
        CancelOutcome::Cancelled | CancelOutcome::Requested => Ok(Json(json!({
            "request_id": uuid::Uuid::new_v4().to_string(),
        }))
        .into_response()),
        CancelOutcome::AlreadyEnded(status) => Err(DsError::new(
            DashScopeErrorCode::UnsupportedOperation,
            format!(
                "task {task_id} already ended ({}): only PENDING or RUNNING tasks can be canceled",
                dashscope_status(status)
            ),
        )),
        CancelOutcome::NotFound => Err(DsError::new(
            DashScopeErrorCode::InvalidParameter,
            format!("task {task_id} does not exist (or has expired)"),
        )),
    }
}

/// Jobs read per store page while listing, and at most this many in all (the newest).
const LIST_PAGE: u32 = 100;
const LIST_SCAN_LIMIT: usize = 10_000;
const MAX_PAGE_SIZE: u64 = 100;

/// `GET /api/v1/tasks`: the account's tasks, newest first, filtered by `status`, `model_name`
/// and submit time (`start_time`/`end_time`, `YYYYMMDDhhmmss` UTC; by default the last 24 h,
/// as long as task ids live), paged by `page_no`/`page_size`.
pub async fn list(
    State(state): State<SharedState>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, DsError> {
    let account = account(&state, &headers).await?;
    let Query(query) =
        query.map_err(|e| DsError::new(DashScopeErrorCode::InvalidParameter, e.body_text()))?;
    let filter = TaskFilter::parse(&query, &state)?;
    let mut matched = Vec::new();
    let mut scanned = 0;
    let mut cursor: Option<String> = None;
    'pages: loop {
        let (acc, before) = (account.clone(), cursor.clone());
        let page = with_store(&state, move |s| s.list(&acc, LIST_PAGE, before.as_deref()))
            .await
            .map_err(store_error)?;
        for job in &page {
            scanned += 1;
            if job.created_at_ms < filter.from_ms || scanned > LIST_SCAN_LIMIT {
                break 'pages;
            }
            if filter.admits(job) && !expired(&state, job) {
                matched.push(job.clone());
            }
        }
        match page.last() {
            Some(last) if page.len() == LIST_PAGE as usize => cursor = Some(last.id.clone()),
            _ => break,
        }
    }
    let total = matched.len() as u64;
    let skip = (filter.page_no - 1).saturating_mul(filter.page_size);
    let data: Vec<Value> = matched
        .iter()
        .skip(usize::try_from(skip).unwrap_or(usize::MAX))
        .take(filter.page_size as usize)
        .map(dashscope_list_item)
        .collect();
    Ok(Json(json!({
        "request_id": uuid::Uuid::new_v4().to_string(),
        "data": data,
        "total": total,
        "total_page": total.div_ceil(filter.page_size),
        "page_no": filter.page_no,
        "page_size": filter.page_size,
    }))
    .into_response())
}

/// The list's query, checked.
struct TaskFilter {
    status: Option<String>,
    model_name: Option<String>,
    from_ms: i64,
    to_ms: i64,
    page_no: u64,
    page_size: u64,
}

impl TaskFilter {
    fn parse(query: &HashMap<String, String>, state: &SharedState) -> Result<Self, DsError> {
        let bad = |message: String| DsError::new(DashScopeErrorCode::InvalidParameter, message);
        if let Some(key) = ["api_key_id", "region"]
            .into_iter()
            .find(|k| query.contains_key(*k))
        {
            return Err(bad(format!(
                "query {key} is not supported: gallop has one region and bearer tokens, not \
                 API key ids; filter by status, model_name, start_time and end_time"
            )));
        }
        if let Some(key) = query.keys().find(|k| !LIST_KEYS.contains(&k.as_str())) {
            return Err(bad(format!(
                "query {key} is not allowed (allowed: {})",
                LIST_KEYS.join(", ")
            )));
        }
        let status = query.get("status").cloned();
        if let Some(s) = &status
            && !TASK_STATUSES.contains(&s.as_str())
        {
            return Err(bad(format!(
                "query status must be one of {}, got {s:?}",
                TASK_STATUSES.join(", ")
            )));
        }
        let number = |key: &str, default: u64, max: u64| -> Result<u64, DsError> {
            match query.get(key) {
                None => Ok(default),
                Some(v) => v
                    .parse()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        bad(format!(
                            "query {key} must be an integer 1..={max}, got {v:?}"
                        ))
                    }),
            }
        };
        let time = |key: &str| -> Result<Option<i64>, DsError> {
            query
                .get(key)
                .map(|v| {
                    parse_compact_time(v).ok_or_else(|| {
                        bad(format!(
                            "query {key} must be a time as YYYYMMDDhhmmss (UTC), got {v:?}"
                        ))
                    })
                })
                .transpose()
        };
        let ttl_ms = i64::try_from(state.url_ttl.as_millis()).unwrap_or(i64::MAX);
        Ok(TaskFilter {
            status,
            model_name: query.get("model_name").cloned(),
            from_ms: time("start_time")?.unwrap_or(now_ms().saturating_sub(ttl_ms)),
            to_ms: time("end_time")?.unwrap_or(i64::MAX),
            page_no: number("page_no", 1, u64::from(u32::MAX))?,
            page_size: number("page_size", 10, MAX_PAGE_SIZE)?,
        })
    }

    fn admits(&self, job: &Job) -> bool {
        job.created_at_ms <= self.to_ms
            && self
                .status
                .as_deref()
                .is_none_or(|s| s == dashscope_status(job.status))
            && self
                .model_name
                .as_deref()
                .is_none_or(|m| m == dashscope_model_name(job))
    }
}

const LIST_KEYS: [&str; 6] = [
    "status",
    "model_name",
    "start_time",
    "end_time",
    "page_no",
    "page_size",
];
const TASK_STATUSES: [&str; 5] = ["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED"];
