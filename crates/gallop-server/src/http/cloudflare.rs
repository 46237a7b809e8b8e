//! Cloudflare's shapes: `POST /client/v4/accounts/{account}/ai/run` (the seeds' own: sync by
//! default, `queueRequest` to queue, `{"request_id"}` to poll) and the classic Workers AI route
//! `/ai/run/{model}` whose body is the input object itself.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use gallop_api::{GenerationRequest, RunBody, parse_input, parse_run_body, resolve_model};
use serde_json::{Value, json};

use super::auth::{Account, check_path_account};
use super::body::json_object;
use super::error::{ApiError, code};
use super::path::PathParams;
use super::view::cloudflare_state;
use super::{SharedState, store_error};
use crate::store::{Job, JobStatus, error_code};

/// `POST /client/v4/accounts/{account_id}/ai/run`.
pub async fn run(
    State(state): State<SharedState>,
    PathParams(account_id): PathParams<String>,
    Account(account): Account,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_path_account(&account, &account_id)?;
    let body = Value::Object(json_object(&headers, body, state.body_limit)?);
    let (request, queue_in_body) = match parse_run_body(&body).map_err(api_error)? {
        RunBody::Poll { request_id } => {
            let job = state.job_for(&account, &request_id).await?;
            let extras = state.extras(&job).await?;
            return Ok(Json(cloudflare_state(&job, &extras)).into_response());
        }
        RunBody::Submit {
            request,
            queue_request,
        } => (request, queue_request),
    };
    let queue = queue_in_body || queue_in_query(query.as_deref())?;

    let job = submit(&state, &account, &request).await?;
    if queue {
        return Ok(Json(json!({
            "state": "Queued",
            "request_id": job.id,
            "model": job.model,
        }))
        .into_response());
    }
    let waiting = std::time::Instant::now();
    let job = state.wait_for_end(job, state.sync_wait).await?;
    if !job.status.is_terminal() {
        return Err(ApiError::sync_timeout(&job.id, waiting.elapsed().as_secs()));
    }
    let extras = state.extras(&job).await?;
    Ok(Json(cloudflare_state(&job, &extras)).into_response())
}

/// `POST /client/v4/accounts/{account_id}/ai/run/{model}`: classic route, the body is the input.
pub async fn run_classic(
    State(state): State<SharedState>,
    PathParams((account_id, model)): PathParams<(String, String)>,
    Account(account): Account,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_path_account(&account, &account_id)?;
    // axum has already percent-decoded the path, so `alibaba%2Fhh1-i2v` arrives with its slash.
    let model = resolve_model(Some(model.trim_start_matches('/'))).map_err(api_error)?;
    let input = Value::Object(json_object(&headers, body, state.body_limit)?);
    let request = parse_input(model, &input).map_err(ApiError::bad_input)?;
    let queue = queue_in_query(query.as_deref())?;

    let job = submit(&state, &account, &request).await?;
    if queue {
        return Ok(success(json!({
            "state": "Queued",
            "request_id": job.id,
            "model": job.model,
        })));
    }
    let waiting = std::time::Instant::now();
    let job = state.wait_for_end(job, state.sync_wait).await?;
    match job.status {
        JobStatus::Completed => {
            let url = state.video_url(&job);
            Ok(success(json!({ "video": url })))
        }
        JobStatus::Failed | JobStatus::Cancelled => Err(failed_job_error(&job)),
        JobStatus::Queued | JobStatus::Running => {
            Err(ApiError::sync_timeout(&job.id, waiting.elapsed().as_secs()))
        }
    }
}

fn success(result: Value) -> Response {
    Json(json!({
        "result": result,
        "success": true,
        "errors": [],
        "messages": [],
    }))
    .into_response()
}

/// `?queueRequest=true` in the query.
fn queue_in_query(query: Option<&str>) -> Result<bool, ApiError> {
    let mut queue = false;
    for pair in query.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, "true"));
        if key == "queueRequest" {
            queue = match value {
                "true" | "1" => true,
                "false" | "0" => false,
                other => {
                    return Err(ApiError::bad_input(format!(
                        "query queueRequest must be true or false, got {other:?}"
                    )));
                }
            };
        }
    }
    Ok(queue)
}

/// gallop-api's refusal in the envelope, with the status its Cloudflare code travels with.
pub fn api_error(e: gallop_api::ApiError) -> ApiError {
    let code = e.cloudflare_code();
    ApiError::new(
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
        code.code(),
        e.to_string(),
    )
}

async fn submit(
    state: &SharedState,
    account: &str,
    request: &GenerationRequest,
) -> Result<Job, ApiError> {
    state.check_served(request)?;
    state.check_upstream_key(account, request.model).await?;
    let submitted = state
        .submit(account, request, None)
        .await
        .map_err(store_error)?;
    Ok(submitted.job().clone())
}

/// A job that ended without a video, as the classic route's error envelope.
fn failed_job_error(job: &Job) -> ApiError {
    let message = job
        .error_message
        .clone()
        .unwrap_or_else(|| "the job failed".into());
    if job.status == JobStatus::Cancelled {
        return ApiError::new(
            StatusCode::CONFLICT,
            code::JOB_CANCELLED,
            format!("job {} was cancelled", job.id),
        );
    }
    match job.error_code.as_deref() {
        Some(error_code::BAD_INPUT) => ApiError::bad_input(message),
        Some(error_code::TIMEOUT) => {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, code::TIMEOUT, message)
        }
        _ => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            code::INTERNAL,
            format!("job {} failed: {message}", job.id),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_in_query_reads_true_and_false() {
        assert!(!queue_in_query(None).unwrap());
        assert!(queue_in_query(Some("queueRequest=true")).unwrap());
        assert!(queue_in_query(Some("a=b&queueRequest=1")).unwrap());
        assert!(!queue_in_query(Some("queueRequest=false")).unwrap());
        let err = queue_in_query(Some("queueRequest=maybe")).unwrap_err();
        assert!(
            err.message.contains("queueRequest must be true or false"),
            "{}",
            err.message
        );
    }
}
