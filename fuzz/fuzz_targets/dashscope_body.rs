//! `POST /api/v1/services/aigc/video-generation/video-synthesis` (Model Studio): any body.
#![no_main]

use gallop_api::parse_video_synthesis;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    match parse_video_synthesis(&body) {
        Ok(request) => {
            assert!((1..=9).contains(&request.request.images.len()));
            assert!((3..=15).contains(&request.request.duration));
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            let _ = (e.dashscope_code().as_str(), e.dashscope_code().http_status());
        }
    }
});
