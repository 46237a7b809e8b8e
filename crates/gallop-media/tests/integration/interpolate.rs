//! Frame interpolation 16 -> 24 fps: a textured square moving at constant (sub-pixel) speed over
//! a textured background lands where its motion puts it in every new frame, no output frame
//! repeats the one before, source frames pass through untouched, and the same frames give the
//! same bytes.

use gallop_media::{FrameRateConverter, MediaError, MotionPair, interpolate};
use image::{Rgb, RgbImage};

const WIDTH: u32 = 160;
const HEIGHT: u32 = 96;
const SIDE: f32 = 24.0;
/// Where the square's top-left corner starts and how far it moves per source frame.
const START: (f32, f32) = (20.0, 18.0);
const SPEED: (f32, f32) = (7.5, 2.25);

/// A dim, gently textured background: enough detail for motion search, far from the square's
/// brightness everywhere.
fn background(x: f32, y: f32) -> [f32; 3] {
    let ripple = 12.0 * (x * 0.45).sin() * (y * 0.35).cos();
    [
        40.0 + ripple + 0.1 * x,
        50.0 + ripple,
        60.0 + 0.15 * y - ripple,
    ]
}

/// The square's own texture (a bright checker), in its own coordinates.
fn square(u: f32, v: f32) -> [f32; 3] {
    let check = ((u / 4.0).floor() + (v / 4.0).floor()) as i32 % 2 == 0;
    if check {
        [250.0, 230.0, 200.0]
    } else {
        [200.0, 240.0, 250.0]
    }
}

/// The scene with the square's corner at `corner`, each pixel averaging 4x4 samples so the
/// square's sub-pixel position shows in its edge pixels as a camera would record it.
fn frame_with_square_at(corner: (f32, f32)) -> RgbImage {
    RgbImage::from_fn(WIDTH, HEIGHT, |x, y| {
        let mut sum = [0.0f32; 3];
        for sy in 0..4 {
            for sx in 0..4 {
                let px = x as f32 + (sx as f32 + 0.5) / 4.0;
                let py = y as f32 + (sy as f32 + 0.5) / 4.0;
                let (u, v) = (px - corner.0, py - corner.1);
                let rgb = if (0.0..SIDE).contains(&u) && (0.0..SIDE).contains(&v) {
                    square(u, v)
                } else {
                    background(px, py)
                };
                (0..3).for_each(|c| sum[c] += rgb[c] / 16.0);
            }
        }
        Rgb(sum.map(|v| v.round() as u8))
    })
}

/// Where the square sits after `source_frames` of motion (fractional: between frames).
fn corner_at(source_frames: f32) -> (f32, f32) {
    (
        START.0 + SPEED.0 * source_frames,
        START.1 + SPEED.1 * source_frames,
    )
}

/// The square's top-left corner as seen in `frame`: the centroid of how far each pixel is
/// above the background (the square is 150+ levels brighter), minus half a side.
fn measured_corner(frame: &RgbImage) -> (f32, f32) {
    let (mut total, mut sx, mut sy) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y, p) in frame.enumerate_pixels() {
        let bg = background(x as f32 + 0.5, y as f32 + 0.5);
        let lift = (0..3).map(|c| p[c] as f32 - bg[c]).sum::<f32>() / 3.0;
        let weight = (lift / 150.0).clamp(0.0, 1.0) as f64;
        // Pixel centres are at +0.5 in the coordinates the square was drawn in.
        total += weight;
        sx += weight * (x as f64 + 0.5);
        sy += weight * (y as f64 + 0.5);
    }
    let half = SIDE as f64 / 2.0;
    ((sx / total - half) as f32, (sy / total - half) as f32)
}

#[test]
fn a_moving_square_lands_where_its_motion_puts_it_at_24_fps() {
    let source: Vec<_> = (0..7)
        .map(|k| frame_with_square_at(corner_at(k as f32)))
        .collect();
    // 7 source frames at 16 fps cover 6/16 s: 10 output frames at 24 fps.
    let mut converter = FrameRateConverter::new(16, 24, 10).unwrap();
    assert_eq!(converter.source_frames_needed(), 7);
    let mut output = Vec::new();
    for frame in &source {
        output.extend(converter.push(frame.clone()).unwrap());
    }
    assert_eq!(output.len(), 10);
    assert_eq!(converter.frames_made(), 10);

    let mut largest: f32 = 0.0;
    for (i, frame) in output.iter().enumerate() {
        let time = i as f32 * 16.0 / 24.0;
        // Measured the same way in the frame drawn with the square at that time, so the
        // measurement's own bias (edge pixels, background texture) cancels.
        let expected = measured_corner(&frame_with_square_at(corner_at(time)));
        let got = measured_corner(frame);
        let error = ((got.0 - expected.0).powi(2) + (got.1 - expected.1).powi(2)).sqrt();
        largest = largest.max(error);
        assert!(
            error < 1.0,
            "output frame {i} (source time {time:.3}): square at ({:.2}, {:.2}), its motion puts \
             it at ({:.2}, {:.2}): {error:.2} px off",
            got.0,
            got.1,
            expected.0,
            expected.1
        );
        if i % 3 == 0 {
            assert_eq!(
                frame,
                &source[i * 2 / 3],
                "output {i} is source frame {}",
                i * 2 / 3
            );
        }
    }
    println!("largest position error {largest:.3} px");
    for (i, pair) in output.windows(2).enumerate() {
        assert_ne!(
            pair[0],
            pair[1],
            "output frames {i} and {} are identical",
            i + 1
        );
    }
    save_for_eyes(&output[..4], "interpolated_square");
}

#[test]
fn in_between_frames_are_sharp_not_cross_fades() {
    // A cross-fade of the two frames would show two half-bright squares; motion compensation
    // shows one whole square: no pixel sits halfway between square and background.
    let a = frame_with_square_at(corner_at(0.0));
    let b = frame_with_square_at(corner_at(1.0));
    let middle = interpolate(&a, &b, 0.5).unwrap();
    let expected = frame_with_square_at(corner_at(0.5));
    let psnr = gallop_media::psnr(&middle, &expected);
    assert!(
        psnr > 30.0,
        "interpolated frame vs the true middle frame: {psnr:.1} dB"
    );
    let fade = RgbImage::from_fn(WIDTH, HEIGHT, |x, y| {
        let (p, q) = (a.get_pixel(x, y), b.get_pixel(x, y));
        Rgb([0, 1, 2].map(|c| ((p[c] as u16 + q[c] as u16) / 2) as u8))
    });
    let fade_psnr = gallop_media::psnr(&fade, &expected);
    assert!(
        psnr > fade_psnr + 6.0,
        "motion compensation ({psnr:.1} dB) must beat a cross-fade ({fade_psnr:.1} dB) clearly"
    );
}

#[test]
fn still_frames_stay_still_and_runs_repeat_bytes() {
    let a = frame_with_square_at(corner_at(0.0));
    assert_eq!(interpolate(&a, &a, 0.5).unwrap(), a);
    let b = frame_with_square_at(corner_at(1.3));
    let pair = MotionPair::new(&a, &b).unwrap();
    let once = pair.frame_at(1.0 / 3.0);
    assert_eq!(once, MotionPair::new(&a, &b).unwrap().frame_at(1.0 / 3.0));
    assert_ne!(once, pair.frame_at(2.0 / 3.0));
}

#[test]
fn mismatched_frames_and_rates_are_refused() {
    let a = RgbImage::new(32, 32);
    let b = RgbImage::new(32, 30);
    assert!(matches!(
        MotionPair::new(&a, &b),
        Err(MediaError::FrameSizeMismatch { .. })
    ));
    let mut converter = FrameRateConverter::new(16, 24, 3).unwrap();
    converter.push(a).unwrap();
    let err = converter.push(b).unwrap_err();
    assert_eq!(
        err.to_string(),
        "frame 1 is 32x30 px; this video is 32x32 px"
    );
    assert_eq!(
        FrameRateConverter::new(0, 24, 3).err(),
        Some(MediaError::BadFrameRate(0))
    );
}

#[test]
fn equal_rates_pass_frames_through_and_a_wanted_count_is_never_exceeded() {
    let frames: Vec<_> = (0..4)
        .map(|k| frame_with_square_at(corner_at(k as f32)))
        .collect();
    let mut same = FrameRateConverter::new(24, 24, 3).unwrap();
    let out: Vec<_> = frames
        .iter()
        .flat_map(|f| same.push(f.clone()).unwrap())
        .collect();
    assert_eq!(out, frames[..3]);
}

/// Writes frames for a person to look at.
fn save_for_eyes(frames: &[RgbImage], name: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    for (i, frame) in frames.iter().enumerate() {
        frame.save(dir.join(format!("{name}_{i}.png"))).unwrap();
    }
}
