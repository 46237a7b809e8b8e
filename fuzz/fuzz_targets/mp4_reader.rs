//! The MP4 reader (the box walk and the H.264 decode behind `decode_mp4`): any bytes.
#![no_main]

use gallop_media::{decode_mp4, top_level_boxes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = top_level_boxes(data);
    if let Ok(video) = decode_mp4(data) {
        for frame in &video.frames {
            assert!(frame.width() > 0 && frame.height() > 0);
        }
    }
});
