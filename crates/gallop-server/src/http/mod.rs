//! The HTTP face: one router over every API shape (Cloudflare, DashScope, gallop's own `/v1`),
//! bearer auth, downloads with Range, OpenAPI, health and metrics. Handlers only translate between
//! HTTP and the store; validation lives in `gallop-api`, generation in the worker.

pub mod auth;
pub mod body;
pub(crate) mod cloudflare;
mod dashscope;
pub mod error;
mod files;
mod jobs;
mod keys;
pub mod metrics;
pub mod openapi;
mod ops;
mod path;
pub mod range;
pub mod uploads;
pub mod view;
mod web;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use gallop_api::{GenerationRequest, ModelId};
use tower_http::trace::TraceLayer;

use crate::engines::EngineMap;
use crate::keys::KeyVault;
use crate::signing::UrlSigner;
use crate::storage::Storage;
use crate::store::{Idempotency, Job, JobStatus, JobStore, NewJob, StoreError, Submitted};
use crate::upstreams::{KeyError, UpstreamRoute, UpstreamRoutes, choose_key};
use error::ApiError;
use gallop_upstream::KeySource;
use metrics::Metrics;
use view::JobExtras;

/// Everything a handler reads. Built once by `app::build`.
pub struct AppState {
    pub store: Arc<dyn JobStore>,
    pub storage: Storage,
    /// Result links redirect to a presigned bucket URL where the storage can make one.
    pub presign_downloads: bool,
    pub signer: UrlSigner,
    pub metrics: Metrics,
    /// Absolute base of URLs handed out, no trailing slash.
    pub public_url: String,
    /// How long a synchronous `/ai/run` waits before answering 408.
    pub sync_wait: Duration,
    /// Largest accepted request body.
    pub body_limit: usize,
    /// Lifetime of a result link, counted from the job's end.
    pub url_ttl: Duration,
    /// Lifetime of an upload, counted from its upload (the upload answer states it).
    pub upload_ttl: Duration,
    /// What each account may keep uploaded.
    pub uploads: crate::config::UploadQuota,
    /// Held from an upload's quota check to its write, so two uploads cannot both take the
    /// last room.
    pub upload_lock: tokio::sync::Mutex<()>,
    /// Which engine serves each model id: `/v1/models` reports it, submits for an id nothing
    /// serves are refused.
    pub engines: EngineMap,
    /// Model ids served by an upstream Model Studio endpoint instead of `engines`.
    pub upstreams: UpstreamRoutes,
    /// Seals accounts' own upstream keys (BYOK) before they reach the store.
    pub vault: Arc<KeyVault>,
    /// Set when the server shuts down: long waits (sync runs, event streams) end early so the
    /// graceful shutdown is not held up by them.
    pub closing: tokio::sync::watch::Sender<bool>,
}

pub type SharedState = Arc<AppState>;

/// The whole router with its layers.
pub fn router(state: SharedState) -> Router {
    let body_limit = state.body_limit;
    Router::new()
        .route("/", get(web::index))
        .route("/app.js", get(web::script))
        .route("/app.css", get(web::style))
        .route(
            "/client/v4/accounts/{account_id}/ai/run",
            post(cloudflare::run),
        )
        .route(
            "/client/v4/accounts/{account_id}/ai/run/{*model}",
            post(cloudflare::run_classic),
        )
        .route(
            "/api/v1/services/aigc/video-generation/video-synthesis",
            post(dashscope::create),
        )
        .route("/api/v1/tasks", get(dashscope::list))
        .route("/api/v1/tasks/{task_id}", get(dashscope::task))
        .route("/api/v1/tasks/{task_id}/cancel", post(dashscope::cancel))
        .route("/v1/jobs", post(jobs::create).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/jobs/{id}/events", get(jobs::events))
        .route("/v1/files/{id}", get(files::download))
        .route("/v1/uploads", post(uploads::create))
        .route("/v1/keys/{provider}", put(keys::put).delete(keys::delete))
        .route("/v1/uploads/{id}", get(uploads::read))
        .route("/v1/models", get(ops::models))
        .route("/openapi.json", get(ops::openapi))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(ops::no_route)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_declared_oversize,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(state)
}

/// The span each request is traced in: a signed link's `sig=` (and any other secret a client
/// put in the query) never reaches the logs.
fn request_span(req: &Request) -> tracing::Span {
    tracing::debug_span!(
        "request",
        method = %req.method(),
        uri = %gallop_api::redact_uri(&req.uri().to_string()),
        version = ?req.version(),
    )
}

/// How much of a refused body is read and thrown away so the client gets to read the 413.
const OVERSIZE_DRAIN_LIMIT: usize = 128 * 1024 * 1024;

/// A body whose Content-Length is over the limit is answered 413 at once. The body is drained
/// first (up to a bound): answering while the client is still writing makes many clients see a
/// broken pipe instead of the answer.
async fn refuse_declared_oversize(
    State(state): State<SharedState>,
    req: Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    match declared {
        Some(len) if len > state.body_limit => {
            if len <= OVERSIZE_DRAIN_LIMIT {
                let mut stream = req.into_body().into_data_stream();
                while let Some(Ok(_)) = futures_util::StreamExt::next(&mut stream).await {}
            }
            error::ApiError::too_large(state.body_limit).into_response()
        }
        _ => next.run(req).await,
    }
}

/// Counts every answer by method, matched route pattern and status for `/metrics`.
async fn count_requests(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(req).await;
    state
        .metrics
        .count_request(&method, &route, response.status().as_u16());
    response
}

/// Runs a synchronous store call off the async threads.
pub async fn with_store<T, F>(state: &AppState, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&dyn JobStore) -> Result<T, StoreError> + Send + 'static,
{
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
}

/// Store errors in the Cloudflare envelope.
pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Full {
            reason,
            retry_after_secs,
        } => {
            let mut e = ApiError::queue_full(u64::from(retry_after_secs.max(1)));
            e.message = format!("Out of capacity: {reason}; retry later");
            e
        }
        StoreError::IdempotencyConflict { key } => ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            error::code::IDEMPOTENCY_CONFLICT,
            format!("Idempotency-Key {key:?} was already used with a different body"),
        ),
        StoreError::Unavailable(why) => ApiError::unavailable(&why),
        StoreError::Backend(msg) => ApiError::internal(msg),
    }
}

impl AppState {
    /// Refuses a request for a model nothing serves here, before it is queued.
    pub fn check_served(&self, request: &GenerationRequest) -> Result<(), ApiError> {
        if self.upstreams.route_for(request.model).is_some() {
            return Ok(());
        }
        match self.engines.refusal(request.model) {
            Some(why) => Err(ApiError::model_not_served(&why)),
            None => Ok(()),
        }
    }

    /// For a model routed upstream: refuses the request when neither `account` nor the server
    /// has a key (the message says how to set one), before it is queued. Which key pays is
    /// decided again when the job runs, and reported then.
    pub async fn check_upstream_key(
        self: &Arc<Self>,
        account: &str,
        model: ModelId,
    ) -> Result<(), ApiError> {
        let Some(route) = self.upstreams.route_for(model) else {
            return Ok(());
        };
        self.key_source(account, route)
            .await?
            .map(drop)
            .map_err(ApiError::no_upstream_key)
    }

    /// Whose key a job of `account` on `route` would use now, or how to set one when there is
    /// none.
    pub async fn key_source(
        self: &Arc<Self>,
        account: &str,
        route: &Arc<UpstreamRoute>,
    ) -> Result<Result<KeySource, String>, ApiError> {
        let (state, account, route) = (self.clone(), account.to_string(), route.clone());
        let chosen = tokio::task::spawn_blocking(move || {
            choose_key(state.store.as_ref(), &state.vault, &account, &route).map(|(s, _)| s)
        })
        .await
        .map_err(ApiError::internal)?;
        match chosen {
            Ok(source) => Ok(Ok(source)),
            Err(KeyError::Missing(why)) => Ok(Err(why)),
            Err(e) => Err(ApiError::internal(e)),
        }
    }

    /// Queues a validated request for `account`.
    pub async fn submit(
        &self,
        account: &str,
        request: &GenerationRequest,
        idempotency: Option<Idempotency>,
    ) -> Result<Submitted, StoreError> {
        let value = serde_json::to_value(request)
            .map_err(|e| StoreError::Backend(format!("request to JSON: {e}")))?;
        self.submit_value(account, request.model, value, idempotency)
            .await
    }

    /// Queues a validated request already in its stored form (a `GenerationRequest` as JSON,
    /// possibly with a shape's own extras beside its fields).
    pub async fn submit_value(
        &self,
        account: &str,
        model: ModelId,
        request: serde_json::Value,
        idempotency: Option<Idempotency>,
    ) -> Result<Submitted, StoreError> {
        let new = NewJob {
            account: account.to_string(),
            model: model.as_str().to_string(),
            request,
            priority: 0,
            max_attempts: None,
            idempotency,
        };
        with_store(self, move |s| s.submit(new)).await
    }

    /// The job if it belongs to `account`; 404 otherwise (another account's job does not exist).
    pub async fn job_for(&self, account: &str, id: &str) -> Result<Job, ApiError> {
        let (account, id_owned) = (account.to_string(), id.to_string());
        with_store(self, move |s| s.get_for_account(&account, &id_owned))
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::not_found(&format!("job {id:?}")))
    }

    /// The signed link of a completed job's video, valid until `url_ttl` after the job ended
    /// (when the sweeper deletes the file), so every poll hands out the same link.
    pub fn video_url(&self, job: &Job) -> Option<String> {
        if job.status != JobStatus::Completed || job.result_key.is_none() {
            return None;
        }
        let ended_s = job.finished_at_ms.unwrap_or(job.updated_at_ms).max(0) as u64 / 1000;
        Some(
            self.signer
                .url_with_exp(&job.id, ended_s + self.url_ttl.as_secs()),
        )
    }

    /// What the views need besides the row: the link and the queue position.
    pub async fn extras(&self, job: &Job) -> Result<JobExtras, ApiError> {
        let queue_position = if job.status == JobStatus::Queued {
            let id = job.id.clone();
            with_store(self, move |s| s.queue_position(&id))
                .await
                .map_err(store_error)?
        } else {
            None
        };
        Ok(JobExtras {
            video_url: self.video_url(job),
            queue_position,
            now_ms: now_ms(),
        })
    }

    /// Waits until the job ends or `wait` passes; returns the last row read. Wakes on the
    /// store's change notifications, and re-reads every second in case one was missed.
    pub async fn wait_for_end(&self, job: Job, wait: Duration) -> Result<Job, ApiError> {
        let mut changes = self.store.subscribe();
        let mut closing = self.closing.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        let mut current = job;
        loop {
            if current.status.is_terminal() || *closing.borrow() {
                return Ok(current);
            }
            let until = (tokio::time::Instant::now() + Duration::from_secs(1)).min(deadline);
            loop {
                tokio::select! {
                    got = tokio::time::timeout_at(until, changes.recv()) => match got {
                        Ok(Ok(id)) if id != current.id => continue,
                        // Ours, a lag (re-read to be safe), or the tick.
                        _ => break,
                    },
                    _ = closing.changed() => break,
                }
            }
            let id = current.id.clone();
            if let Some(job) = with_store(self, move |s| s.get(&id))
                .await
                .map_err(store_error)?
            {
                current = job;
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(current);
            }
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
