//! `POST /v1/uploads` with a multipart body: the server's own reading of the image part. The
//! first byte picks the boundary's length, the rest is the body.
#![no_main]

use axum::body::Body;
use axum::http::Request;
use gallop_server::http::uploads::upload_bytes;
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let boundary = &"gallopboundary0123456789"[..1 + pick as usize % 24];
    let request = Request::builder()
        .method("POST")
        .uri("/v1/uploads")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(rest.to_vec()))
        .expect("a valid request");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    match runtime.block_on(upload_bytes(request, LIMIT)) {
        Ok(bytes) => assert!(bytes.len() <= LIMIT),
        Err(e) => assert!(e.status.is_client_error(), "{e}"),
    }
});
