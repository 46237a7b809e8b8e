//! `POST /v1/jobs`: the server's own body reading (content type, emptiness, JSON syntax, object
//! shape) and then the submit body. The first byte picks a content type.
#![no_main]

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, header};
use gallop_api::{RunBody, parse_run_body};
use gallop_server::http::body::json_object;
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [Option<&str>; 4] = [
    None,
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("text/plain"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let mut headers = HeaderMap::new();
    if let Some(ct) = CONTENT_TYPES[pick as usize % CONTENT_TYPES.len()] {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    let body = Bytes::copy_from_slice(rest);
    match json_object(&headers, Ok(body), 30 * 1024 * 1024) {
        Ok(object) => {
            let value = serde_json::Value::Object(object);
            if let Ok(RunBody::Submit { request, .. }) = parse_run_body(&value) {
                assert!((1..=9).contains(&request.images.len()));
            }
        }
        Err(e) => assert!(e.status.is_client_error(), "{e}"),
    }
});
