//! `GET /v1/files/{id}` with any `Range` header over a file of any length: a partial answer
//! must lie inside the file and be non-empty.
#![no_main]

use gallop_server::http::range::{RangeRequest, parse_range};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let len = u64::from_le_bytes(data[..8].try_into().unwrap()) >> (data[0] % 64);
    let header = String::from_utf8_lossy(&data[8..]);
    match parse_range(Some(&header), len) {
        RangeRequest::Partial(range) => {
            assert!(range.start < range.end, "{header:?} {len} {range:?}");
            assert!(range.end <= len, "{header:?} {len} {range:?}");
        }
        RangeRequest::Full | RangeRequest::Unsatisfiable => {}
    }
});
