//! Reading JSON request bodies so that every failure (size, content type, syntax) answers in the
//! envelope instead of axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::Value;

use super::error::ApiError;
use crate::connections::BODY_TIMEOUT_MESSAGE;

/// The raw body, or 413 (code 3006) past the limit.
pub fn body_bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    match body {
        Ok(bytes) => Ok(bytes),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::too_large(limit))
        }
        Err(rejection) if rejection.body_text().contains(BODY_TIMEOUT_MESSAGE) => {
            Err(body_timeout())
        }
        Err(rejection) => Err(ApiError::bad_input(format!(
            "could not read the request body: {}",
            rejection.body_text()
        ))),
    }
}

/// 408 (code 3007): the body did not arrive within the body-read timeout.
pub fn body_timeout() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        super::error::code::TIMEOUT,
        format!("Request timeout: {BODY_TIMEOUT_MESSAGE}"),
    )
}

/// The body as a JSON object. The content type must be JSON when given: clients that send none
/// (curl `-d` sends a form type, which is refused) still get a clear message.
pub fn json_object(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        if !is_json_content_type(ct) {
            return Err(ApiError::unsupported_media_type(ct));
        }
    }
    let bytes = body_bytes(body, limit)?;
    if bytes.is_empty() {
        return Err(ApiError::bad_input(
            "the request body is empty; send a JSON object",
        ));
    }
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_input(format!("the body is not valid JSON: {e}")))?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ApiError::bad_input(format!(
            "the body must be a JSON object, got {}",
            json_type_name(&other)
        ))),
    }
}

fn is_json_content_type(ct: &str) -> bool {
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

pub fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
        h
    }

    #[test]
    fn accepts_json_with_charset() {
        let map = json_object(
            &headers("application/json; charset=utf-8"),
            Ok(Bytes::from_static(br#"{"a":1}"#)),
            100,
        )
        .unwrap();
        assert_eq!(map["a"], 1);
    }

    #[test]
    fn refuses_form_content_type_with_415() {
        let err = json_object(
            &headers("application/x-www-form-urlencoded"),
            Ok(Bytes::from_static(b"{}")),
            100,
        )
        .unwrap_err();
        assert_eq!(err.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(err.message.contains("application/json"), "{}", err.message);
    }

    #[test]
    fn malformed_json_and_non_objects_are_bad_input() {
        let err =
            json_object(&HeaderMap::new(), Ok(Bytes::from_static(b"{\"a\":")), 100).unwrap_err();
        assert_eq!((err.status, err.code), (StatusCode::BAD_REQUEST, 5006));
        assert!(err.message.contains("not valid JSON"), "{}", err.message);
        let err = json_object(&HeaderMap::new(), Ok(Bytes::from_static(b"[1]")), 100).unwrap_err();
        assert!(err.message.contains("got an array"), "{}", err.message);
    }
}
