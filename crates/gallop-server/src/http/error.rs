//! Errors as clients see them: Cloudflare's v4 envelope (used by the Cloudflare routes and by
//! gallop's own `/v1` API) with the codes its users know.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Cloudflare's error codes, as its clients match on them.
pub mod code {
    /// Request body over the size limit (HTTP 413).
    pub const TOO_LARGE: u32 = 3006;
    /// Timed out waiting (HTTP 408).
    pub const TIMEOUT: u32 = 3007;
    /// Out of capacity: the queue is full (HTTP 429).
    pub const CAPACITY: u32 = 3040;
    /// Something failed inside the server (HTTP 500).
    pub const INTERNAL: u32 = 5000;
    /// Bad input: the message names the field and the rule.
    pub const BAD_INPUT: u32 = 5006;
    /// No such model.
    pub const NO_SUCH_MODEL: u32 = 5007;
    /// No route for that URI.
    pub const NO_ROUTE: u32 = 7000;
    /// Method not allowed on that route.
    pub const METHOD_NOT_ALLOWED: u32 = 7001;
    /// The object (job, file, upload) does not exist or belongs to another account.
    pub const NOT_FOUND: u32 = 7003;
    /// Missing or bad token (HTTP 401).
    pub const AUTH: u32 = 10000;
    /// Idempotency-Key reused with another body (HTTP 422).
    pub const IDEMPOTENCY_CONFLICT: u32 = 10021;
    /// The job was cancelled, or cannot be because it already ended (HTTP 409).
    pub const JOB_CANCELLED: u32 = 7009;
    /// A signed file link that is expired or tampered with (HTTP 403).
    pub const BAD_LINK: u32 = 10001;
}

/// One error answer: HTTP status, Cloudflare code, message, and optional extras.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
    /// Seconds, sent as `Retry-After` (429).
    pub retry_after: Option<u64>,
    /// Goes in the envelope's `result` (e.g. the request id of a sync wait that timed out).
    pub result: Option<Value>,
}

/// What a 503 asks a client to wait: about how long the store waits for a lock itself.
const UNAVAILABLE_RETRY_SECS: u64 = 10;

impl ApiError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            result: None,
        }
    }

    /// 400 with code 5006; `detail` names the field and the rule.
    pub fn bad_input(detail: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            code::BAD_INPUT,
            format!("Bad input: {detail}"),
        )
    }

    pub fn unsupported_media_type(got: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::BAD_INPUT,
            format!("Bad input: Content-Type must be application/json, got {got:?}"),
        )
    }

    pub fn no_such_model(model: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            code::NO_SUCH_MODEL,
            format!(
                "No such model {model:?}: this server serves {}",
                gallop_api::ModelId::ALL.map(|m| m.as_str()).join(", ")
            ),
        )
    }

    /// A known model this server has no engine for (see `EngineMap::refusal`).
    pub fn model_not_served(why: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::NO_SUCH_MODEL, why)
    }

    /// A model routed upstream that neither the account nor the server has a key for (400,
    /// code 5006): `why` says how to set one.
    pub fn no_upstream_key(why: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::BAD_INPUT, why)
    }

    pub fn unauthorized(why: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            code::AUTH,
            format!("Authentication error: {why}"),
        )
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            code::NOT_FOUND,
            format!("{what} not found"),
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            code::TOO_LARGE,
            format!("Request too large: the body limit is {limit} bytes"),
        )
    }

    /// The synchronous wait ran out (or the server is shutting down); the job goes on and can
    /// be polled by its id.
    pub fn sync_timeout(request_id: &str, waited_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::REQUEST_TIMEOUT,
            code::TIMEOUT,
            format!(
                "Request timeout: the video was not ready after {waited_secs} s; the job goes on: \
                 poll it with {{\"request_id\": \"{request_id}\"}}"
            ),
        );
        e.result = Some(json!({ "request_id": request_id }));
        e
    }

    pub fn queue_full(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            code::CAPACITY,
            "Out of capacity: the job queue is full, retry later",
        );
        e.retry_after = Some(retry_after);
        e
    }

    /// 503: the server is up but cannot take this now (its database is locked or its disk
    /// full); nothing was changed, and the same request may be sent again.
    pub fn unavailable(why: &str) -> Self {
        tracing::warn!("unavailable: {why}");
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code::CAPACITY,
            format!("Temporarily unavailable: {why}; nothing was changed, retry later"),
        );
        e.retry_after = Some(UNAVAILABLE_RETRY_SECS);
        e
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {err}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            code::INTERNAL,
            format!("Internal error: {err}"),
        )
    }

    /// The Cloudflare v4 envelope of this error.
    pub fn envelope(&self) -> Value {
        json!({
            "success": false,
            "errors": [{ "code": self.code, "message": self.message }],
            "messages": [],
            "result": self.result,
        })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.envelope())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_cloudflare_shape() {
        let v = ApiError::bad_input("/input/duration must be <= 15").envelope();
        assert_eq!(v["success"], false);
        assert_eq!(v["errors"][0]["code"], 5006);
        assert_eq!(
            v["errors"][0]["message"],
            "Bad input: /input/duration must be <= 15"
        );
        assert_eq!(v["messages"], json!([]));
        assert!(v["result"].is_null());
    }

    #[test]
    fn queue_full_sets_retry_after() {
        let r = ApiError::queue_full(7).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
    }
}
