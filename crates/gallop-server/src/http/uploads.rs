//! `POST /v1/uploads`: an input image sent as the raw body or as one multipart file part,
//! checked against the rules of a job's image and answered with the uri
//! `gallop://uploads/{id}`, which any number of the same account's jobs may use until it expires.
//! `GET /v1/uploads/{id}`: the image back (the web page shows inputs with it).

use axum::Json;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gallop_api::ModelId;
use gallop_media::{DecodeLimits, MediaError, decode_image};
use serde_json::json;

use super::auth::Account;
use super::body::body_timeout;
use super::error::ApiError;
use super::path::PathParams;
use super::{SharedState, now_ms};
use crate::connections::BODY_TIMEOUT_MESSAGE;
use crate::storage::{StorageError, UPLOAD_URI_PREFIX};

pub async fn create(
    State(state): State<SharedState>,
    Account(account): Account,
    request: Request,
) -> Result<Response, ApiError> {
    let bytes = upload_bytes(request, state.body_limit).await?;
    if bytes.is_empty() {
        return Err(ApiError::bad_input(
            "the upload is empty; send the image bytes",
        ));
    }
    let checked = check_image(bytes).await?;
    let size = checked.bytes.len();
    let _one_at_a_time = state.upload_lock.lock().await;
    check_quota(&state, &account, size as u64).await?;
    let id = state
        .storage
        .put_upload(&account, checked.bytes)
        .await
        .map_err(ApiError::internal)?;
    let ttl = state.upload_ttl.as_secs();
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": id,
            "uri": format!("{UPLOAD_URI_PREFIX}{id}"),
            "bytes": size,
            "format": checked.format,
            "width": checked.width,
            "height": checked.height,
            "models": checked.models,
            "expires_at": now_ms() / 1000 + ttl as i64,
            "expires_in_seconds": ttl,
        })),
    )
        .into_response())
}

/// `GET /v1/uploads/{id}`: the account's own upload (another account's does not exist).
pub async fn read(
    State(state): State<SharedState>,
    Account(account): Account,
    PathParams(id): PathParams<String>,
) -> Result<Response, ApiError> {
    let bytes = state
        .storage
        .read_upload(&account, &id)
        .await
        .map_err(|e| match e {
            StorageError::NotFound(_) | StorageError::Invalid(_) => {
                ApiError::not_found(&format!("upload {id:?}"))
            }
            other => ApiError::internal(other),
        })?;
    let mime = image::guess_format(&bytes)
        .map(|f| f.to_mime_type())
        .unwrap_or("application/octet-stream");
    let mut response = bytes.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    Ok(response)
}

/// An upload that passed a job image's checks.
struct CheckedImage {
    bytes: Vec<u8>,
    format: &'static str,
    width: u32,
    height: u32,
    /// The models whose image rules it meets (r2v asks a longer short side than i2v).
    models: Vec<&'static str>,
}

/// Decodes the image with i2v's rules (size, format, sides, aspect; r2v's differ only in the
/// short side), so a file no job could use is refused now, not when a job runs.
async fn check_image(bytes: Vec<u8>) -> Result<CheckedImage, ApiError> {
    tokio::task::spawn_blocking(move || {
        let image = decode_image(&bytes, &DecodeLimits::i2v()).map_err(refusal)?;
        let (width, height) = image.dimensions();
        let mut models = vec![ModelId::HhI2v.as_str()];
        if width.min(height) >= DecodeLimits::r2v().min_short_side {
            models.push(ModelId::HhR2v.as_str());
        }
        let format = image::guess_format(&bytes)
            .ok()
            .and_then(|f| f.extensions_str().first().copied())
            .unwrap_or("");
        Ok(CheckedImage {
            bytes,
            format,
            width,
            height,
            models,
        })
    })
    .await
    .map_err(ApiError::internal)?
}

/// 400 naming the rule the image broke (`upload: image is 200x200 px; each side must be at
/// least 300 px`).
fn refusal(e: MediaError) -> ApiError {
    ApiError::bad_input(format!("upload: {e}"))
}

/// Refuses an upload that would take `account` past its quota (429, code 3040), with
/// `Retry-After` set to when its oldest upload expires and frees room.
async fn check_quota(state: &SharedState, account: &str, size: u64) -> Result<(), ApiError> {
    let quota = state.uploads;
    let ttl = state.upload_ttl;
    let usage = state
        .storage
        .upload_usage(account)
        .await
        .map_err(ApiError::internal)?;
    let over = if usage.count >= quota.max_count {
        format!(
            "account {account} keeps {} uploads (limit {})",
            usage.count, quota.max_count
        )
    } else if usage.bytes + size > quota.max_bytes {
        format!(
            "account {account} keeps {} bytes of uploads and this one is {size} (limit {} bytes)",
            usage.bytes, quota.max_bytes
        )
    } else {
        return Ok(());
    };
    let expires_ms = usage.oldest_ms.unwrap_or_else(now_ms) + ttl.as_millis() as i64;
    let retry_after = ((expires_ms - now_ms()).max(1000) as u64).div_ceil(1000);
    let mut e = ApiError::queue_full(retry_after);
    e.message = format!(
        "Out of capacity: upload quota reached: {over}; an upload is deleted {} s after \
         it was made",
        ttl.as_secs()
    );
    Err(e)
}

/// The image bytes of an upload request: its raw body, or the first file part of a multipart
/// body; at most `body_limit` bytes are read.
pub async fn upload_bytes(request: Request, body_limit: usize) -> Result<Vec<u8>, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        return first_file_part(request, body_limit).await;
    }
    match axum::body::to_bytes(request.into_body(), body_limit).await {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(e) if e.to_string().contains(BODY_TIMEOUT_MESSAGE) => Err(body_timeout()),
        Err(_) => Err(ApiError::too_large(body_limit)),
    }
}

/// The bytes of the first part that carries a file name (or the first part at all).
async fn first_file_part(request: Request, body_limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| ApiError::bad_input(format!("multipart body: {}", e.body_text())))?;
    let mut fallback = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(e.status(), e.body_text(), body_limit))?
    {
        let has_file_name = field.file_name().is_some();
        let data = field
            .bytes()
            .await
            .map_err(|e| multipart_error(e.status(), e.body_text(), body_limit))?;
        if has_file_name {
            return Ok(data.to_vec());
        }
        fallback.get_or_insert(data.to_vec());
    }
    fallback.ok_or_else(|| ApiError::bad_input("the multipart body has no file part"))
}

fn multipart_error(status: StatusCode, text: String, limit: usize) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(limit)
    } else if text.contains(BODY_TIMEOUT_MESSAGE) {
        body_timeout()
    } else {
        ApiError::bad_input(format!("multipart body: {text}"))
    }
}
