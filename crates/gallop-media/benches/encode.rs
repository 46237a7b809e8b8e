//! Encode speed at 720P and 1080P, plus the per-frame helpers that run beside it.
//! Run: `cargo bench -p gallop-media --bench encode`

use std::time::Instant;

use gallop_media::{DEFAULT_WATERMARK, Mp4Encoder, Watermark, decode_mp4, fit_and_crop, psnr};

#[path = "../tests/integration/common/mod.rs"]
mod common;

const FRAMES: u32 = 120;

fn main() {
    for (label, width, height) in [("720P", 1280, 720), ("1080P", 1920, 1080)] {
        let frames: Vec<_> = (0..FRAMES)
            .map(|i| common::pattern_frame(width, height, i))
            .collect();

        let mut encoder = Mp4Encoder::new(width, height, 24).unwrap();
        let start = Instant::now();
        for frame in &frames {
            encoder.push(frame).unwrap();
        }
        let mp4 = encoder.finish().unwrap();
        let seconds = start.elapsed().as_secs_f64();
        println!(
            "encode {label} {width}x{height}: {FRAMES} frames in {seconds:.2} s = {:.1} fps, {:.2} Mbps at 24 fps",
            FRAMES as f64 / seconds,
            mp4.len() as f64 * 8.0 / (FRAMES as f64 / 24.0) / 1e6
        );

        let mark = Watermark::new(DEFAULT_WATERMARK, width, height);
        let mut frame = frames[0].clone();
        let start = Instant::now();
        for _ in 0..FRAMES {
            mark.apply(&mut frame);
        }
        println!(
            "watermark apply {label}: {:.3} ms per frame",
            start.elapsed().as_secs_f64() * 1e3 / FRAMES as f64
        );
    }

    // Quality where detail is hard: bitrate reached and PSNR of every frame decoded back.
    let textured: Vec<_> = (0..48)
        .map(|i| common::textured_frame(1280, 720, i))
        .collect();
    let mut encoder = Mp4Encoder::new(1280, 720, 24).unwrap();
    for frame in &textured {
        encoder.push(frame).unwrap();
    }
    let mp4 = encoder.finish().unwrap();
    let decoded = decode_mp4(&mp4).unwrap();
    let scores: Vec<f64> = decoded
        .frames
        .iter()
        .zip(&textured)
        .map(|(a, b)| psnr(a, b))
        .collect();
    println!(
        "textured 720P: {:.2} Mbps, PSNR min {:.1} dB, mean {:.1} dB over {} frames",
        mp4.len() as f64 * 8.0 / 2.0 / 1e6,
        scores.iter().cloned().fold(f64::INFINITY, f64::min),
        scores.iter().sum::<f64>() / scores.len() as f64,
        scores.len()
    );

    let photo = common::pattern_frame(4000, 3000, 0);
    let runs = 10;
    let start = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(fit_and_crop(&photo, 1920, 1080));
    }
    println!(
        "fit_and_crop 4000x3000 -> 1920x1080: {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3 / runs as f64
    );
}
