//! An input image: any bytes through `decode_image` with the real limits except the minimum
//! sides (so small inputs reach the pixel decoders). A decoded image obeys the limits; run with
//! `-malloc_limit_mb` at the memory budget to catch an allocation past it.
#![no_main]

use gallop_media::{DecodeLimits, decode_image};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits {
        min_side: 1,
        min_short_side: 1,
        ..DecodeLimits::i2v()
    };
    if let Ok(image) = decode_image(data, &limits) {
        let (w, h) = image.dimensions();
        assert!(w <= limits.max_side && h <= limits.max_side);
        assert!(u64::from(w) * u64::from(h) <= limits.max_pixels);
    }
});
