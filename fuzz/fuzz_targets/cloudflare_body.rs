//! `POST /client/v4/accounts/{id}/ai/run`: any bytes as the body. Whatever parses must be a
//! request inside the contract's ranges; whatever does not must say why. The same text goes
//! through secret redaction (which slices strings: it must never cut a character).
#![no_main]

use gallop_api::{RunBody, parse_run_body, redact_secrets};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = redact_secrets(text);
    }
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    match parse_run_body(&body) {
        Ok(RunBody::Submit { request, .. }) => {
            assert!((1..=9).contains(&request.images.len()));
            assert!((3..=15).contains(&request.duration));
            assert!(request.prompt.chars().count() <= 2500);
            serde_json::to_value(&request).expect("a parsed request serializes");
        }
        Ok(RunBody::Poll { request_id }) => assert!(!request_id.trim().is_empty()),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
