//! `POST /v1/uploads`: an input image sent as the raw body or as one multipart file part,
//! answered with an id usable as the image uri `gallop://uploads/{id}` by the same account.

use axum::Json;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::SharedState;
use super::auth::Account;
use super::error::ApiError;
use crate::storage::UPLOAD_URI_PREFIX;

/// Upstream's limit for one input image.
pub const MAX_UPLOAD_BYTES: usize = 20 * 1024 * 1024;

pub async fn create(
    State(state): State<SharedState>,
    Account(account): Account,
    request: Request,
) -> Result<Response, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let bytes = if content_type.starts_with("multipart/form-data") {
        first_file_part(&state, request).await?
    } else {
        axum::body::to_bytes(request.into_body(), state.body_limit)
            .await
            .map_err(|_| ApiError::too_large(state.body_limit))?
            .to_vec()
    };
    if bytes.is_empty() {
        return Err(ApiError::bad_input(
            "the upload is empty; send the image bytes",
        ));
    }
    if bytes.len() > MAX_UPLOAD_BYTES {
        let mut e = ApiError::too_large(MAX_UPLOAD_BYTES);
        e.message = format!(
            "Request too large: an image may be at most {MAX_UPLOAD_BYTES} bytes, got {}",
            bytes.len()
        );
        return Err(e);
    }
    let format = match image::guess_format(&bytes) {
        Ok(
            f @ (image::ImageFormat::Jpeg
            | image::ImageFormat::Png
            | image::ImageFormat::WebP
            | image::ImageFormat::Bmp),
        ) => f,
        _ => {
            return Err(ApiError::bad_input(
                "the upload must be a JPEG, PNG, WebP or BMP image",
            ));
        }
    };
    let size = bytes.len();
    let id = state
        .storage
        .put_upload(&account, bytes)
        .await
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": id,
            "uri": format!("{UPLOAD_URI_PREFIX}{id}"),
            "bytes": size,
            "format": format.extensions_str().first().copied().unwrap_or(""),
        })),
    )
        .into_response())
}

/// The bytes of the first part that carries a file name (or the first part at all).
async fn first_file_part(state: &SharedState, request: Request) -> Result<Vec<u8>, ApiError> {
    let mut multipart = Multipart::from_request(request, state)
        .await
        .map_err(|e| ApiError::bad_input(format!("multipart body: {}", e.body_text())))?;
    let mut fallback = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(e.status(), e.body_text(), state.body_limit))?
    {
        let has_file_name = field.file_name().is_some();
        let data = field
            .bytes()
            .await
            .map_err(|e| multipart_error(e.status(), e.body_text(), state.body_limit))?;
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
    } else {
        ApiError::bad_input(format!("multipart body: {text}"))
    }
}
