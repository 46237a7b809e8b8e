//! gallop's own job resource under `/v1/jobs`: create (with Idempotency-Key), read, list, cancel,
//! and follow as server-sent events.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use gallop_api::{RunBody, parse_run_body};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::auth::Account;
use super::body::json_object;
use super::cloudflare::api_error;
use super::error::{ApiError, code};
use super::path::PathParams;
use super::view::job_json;
use super::{SharedState, store_error, with_store};
use crate::store::{CancelOutcome, Idempotency, Job, Submitted};

const DEFAULT_LIST_LIMIT: u32 = 20;
const MAX_LIST_LIMIT: u32 = 100;
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// `POST /v1/jobs`: `{"model", "input"}` (Cloudflare's body) -> 202 with the job.
pub async fn create(
    State(state): State<SharedState>,
    Account(account): Account,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let object = json_object(&headers, body, state.body_limit)?;
    // serde_json's maps are sorted, so this is a canonical form: key order and whitespace do
    // not make two bodies differ for Idempotency-Key.
    let body_hash = hex::encode(Sha256::digest(
        serde_json::to_vec(&object).map_err(ApiError::internal)?,
    ));
    // The same body as Cloudflare's /ai/run; a job here is always queued.
    let request = match parse_run_body(&Value::Object(object)).map_err(api_error)? {
        RunBody::Submit { request, .. } => request,
        RunBody::Poll { .. } => {
            return Err(ApiError::bad_input(
                "/request_id is not allowed here: read a job with GET /v1/jobs/{id}",
            ));
        }
    };

    state.check_served(&request)?;
    state.check_upstream_key(&account, request.model).await?;
    let idempotency = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY);
            let key = key.ok_or_else(|| {
                ApiError::bad_input(format!(
                    "header Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters"
                ))
            })?;
            Some(Idempotency {
                key: key.to_string(),
                body_hash,
            })
        }
    };

    let submitted = state
        .submit(&account, &request, idempotency)
        .await
        .map_err(store_error)?;
    let replayed = matches!(submitted, Submitted::Existing(_));
    let job = submitted.job();
    let extras = state.extras(job).await?;
    let mut response = (StatusCode::ACCEPTED, Json(job_json(job, &extras))).into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/jobs/{}", job.id)) {
        headers.insert(axum::http::header::LOCATION, location);
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// `GET /v1/jobs/{id}`.
pub async fn get(
    State(state): State<SharedState>,
    Account(account): Account,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let job = state.job_for(&account, &id).await?;
    let extras = state.extras(&job).await?;
    Ok(Json(job_json(&job, &extras)))
}

/// `GET /v1/jobs?limit=N&cursor=ID`: the token's jobs, newest first.
pub async fn list(
    State(state): State<SharedState>,
    Account(account): Account,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut limit = DEFAULT_LIST_LIMIT;
    let mut cursor: Option<String> = None;
    for pair in query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_input(format!(
                            "query limit must be an integer 1..={MAX_LIST_LIMIT}, got {value:?}"
                        ))
                    })?;
            }
            "cursor" if !value.is_empty() => cursor = Some(value.to_string()),
            _ => {}
        }
    }
    let account_owned = account.clone();
    let jobs: Vec<Job> = with_store(&state, move |s| {
        s.list(&account_owned, limit, cursor.as_deref())
    })
    .await
    .map_err(store_error)?;
    let mut items = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let extras = state.extras(job).await?;
        items.push(job_json(job, &extras));
    }
    let next_cursor = if jobs.len() == limit as usize {
        jobs.last().map(|j| j.id.clone())
    } else {
        None
    };
    Ok(Json(json!({ "jobs": items, "next_cursor": next_cursor })))
}

/// `POST /v1/jobs/{id}/cancel`: a queued job ends now, a running one at its next step.
pub async fn cancel(
    State(state): State<SharedState>,
    Account(account): Account,
    PathParams(id): PathParams<String>,
) -> Result<Response, ApiError> {
    let (acc, job_id) = (account.clone(), id.clone());
    let outcome = with_store(&state, move |s| s.cancel(&acc, &job_id))
        .await
        .map_err(store_error)?;
    let status = match outcome {
        CancelOutcome::NotFound => return Err(ApiError::not_found(&format!("job {id:?}"))),
        CancelOutcome::AlreadyEnded(st) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                code::JOB_CANCELLED,
                format!(
                    "job {id} already ended ({}); nothing to cancel",
                    st.as_str()
                ),
            ));
        }
        CancelOutcome::Cancelled => StatusCode::OK,
        CancelOutcome::Requested => StatusCode::ACCEPTED,
    };
    let job = state.job_for(&account, &id).await?;
    let extras = state.extras(&job).await?;
    Ok((status, Json(job_json(&job, &extras))).into_response())
}

/// `GET /v1/jobs/{id}/events`: one `job` event (id = the row's version) per change until the job
/// ends. With `Last-Event-ID`, states already seen are not sent again.
pub async fn events(
    State(state): State<SharedState>,
    Account(account): Account,
    PathParams(id): PathParams<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let first = state.job_for(&account, &id).await?;
    let last_seen: i64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1);
    let mut changes = state.store.subscribe();
    let mut closing = state.closing.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(16);
    tokio::spawn(async move {
        let mut sent = last_seen;
        let mut job = first;
        loop {
            if job.version > sent {
                let extras = match state.extras(&job).await {
                    Ok(e) => e,
                    Err(_) => return,
                };
                let event = Event::default()
                    .event("job")
                    .id(job.version.to_string())
                    .json_data(job_json(&job, &extras))
                    .unwrap_or_else(|_| Event::default().event("job"));
                if tx.send(event).await.is_err() {
                    return; // client went away
                }
                sent = job.version;
            }
            if job.status.is_terminal() {
                let _ = tx
                    .send(Event::default().event("end").data(job.status.as_str()))
                    .await;
                return;
            }
            // Wake on our job's change, a lag, or once a second (a missed notification).
            let tick = tokio::time::sleep(Duration::from_secs(1));
            tokio::pin!(tick);
            loop {
                tokio::select! {
                    _ = &mut tick => break,
                    _ = tx.closed() => return,
                    _ = closing.changed() => return, // server shutting down
                    msg = changes.recv() => match msg {
                        Ok(changed) if changed != job.id => continue,
                        _ => break,
                    },
                }
            }
            let job_id = job.id.clone();
            match with_store(&state, move |s| s.get(&job_id)).await {
                Ok(Some(fresh)) => job = fresh,
                _ => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
