//! `GET /v1/files/{id}?exp&sig`: a result video through its signed link. The link is the
//! capability (no bearer token); Range requests answer 206 so players can seek. The bytes are
//! streamed from storage chunk by chunk, or, when the operator asks for it and the storage can,
//! the link redirects to a presigned URL of the bucket valid no longer than the link itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, code};
use super::path::PathParams;
use super::range::{RangeRequest, parse_range};
use super::{SharedState, store_error, with_store};
use crate::signing::SignatureError;
use crate::storage::StorageError;
use crate::store::JobStatus;

pub async fn download(
    State(state): State<SharedState>,
    PathParams(id): PathParams<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found(&format!("file {id:?}"));
    let (exp, sig) = link_params(query.as_deref().unwrap_or("")).ok_or_else(not_found)?;
    state.signer.verify(&id, exp, &sig).map_err(|e| {
        let why = match e {
            SignatureError::Expired => "this link has expired",
            SignatureError::BadSignature => "this link's signature is not valid",
        };
        ApiError::new(StatusCode::FORBIDDEN, code::BAD_LINK, why)
    })?;

    let job_id = id.clone();
    let job = with_store(&state, move |s| s.get(&job_id))
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    let key = match (&job.status, &job.result_key) {
        (JobStatus::Completed, Some(key)) => key.clone(),
        _ => return Err(not_found()),
    };
    if state.presign_downloads
        && let Some(url) = state
            .storage
            .presigned_get(&key, remaining(exp))
            .await
            .map_err(ApiError::internal)?
    {
        return Ok(redirect(&url));
    }
    let len = state.storage.size(&key).await.map_err(|e| match e {
        StorageError::NotFound(_) => not_found(),
        other => ApiError::internal(other),
    })?;

    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, range) = match parse_range(range_header, len) {
        RangeRequest::Full => (StatusCode::OK, 0..len),
        RangeRequest::Partial(r) => (StatusCode::PARTIAL_CONTENT, r),
        RangeRequest::Unsatisfiable => {
            let mut response = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                code::BAD_INPUT,
                format!("Bad input: Range {range_header:?} is outside the file's {len} bytes"),
            )
            .into_response();
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes */{len}")),
            );
            return Ok(response);
        }
    };
    let body = if range.is_empty() {
        Body::empty()
    } else {
        let chunks = state
            .storage
            .stream_range(&key, range.clone())
            .await
            .map_err(|e| match e {
                StorageError::NotFound(_) => not_found(),
                other => ApiError::internal(other),
            })?;
        Body::from_stream(chunks)
    };

    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // A streamed body has no length of its own: say it, so it is not sent chunked.
    h.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(range.end - range.start),
    );
    // The key names the job and the attempt: it changes only if the content does.
    h.insert(
        header::ETAG,
        header_value(&format!("\"{}\"", key.replace('"', ""))),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            header_value(&format!("bytes {}-{}/{len}", range.start, range.end - 1)),
        );
    }
    Ok(response)
}

/// The presigned URL lives as long as the link that led to it (at least a second, at most the
/// week S3 allows).
fn remaining(exp: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Duration::from_secs(exp.saturating_sub(now).clamp(1, 7 * 24 * 3600))
}

/// 307 to the bucket; not cached, as the URL expires.
fn redirect(url: &str) -> Response {
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    let h = response.headers_mut();
    h.insert(header::LOCATION, header_value(url));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `exp` and `sig` from the query; None if either is missing or `exp` is not a number.
fn link_params(query: &str) -> Option<(u64, String)> {
    let mut exp = None;
    let mut sig = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("exp", v)) => exp = v.parse().ok(),
            Some(("sig", v)) => sig = Some(v.to_string()),
            _ => {}
        }
    }
    Some((exp?, sig?))
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_params_need_both_exp_and_sig() {
        assert_eq!(link_params("exp=12&sig=ab"), Some((12, "ab".into())));
        assert_eq!(link_params("sig=ab&exp=12&x=1"), Some((12, "ab".into())));
        assert_eq!(link_params("exp=12"), None);
        assert_eq!(link_params("exp=soon&sig=ab"), None);
        assert_eq!(link_params(""), None);
    }
}
