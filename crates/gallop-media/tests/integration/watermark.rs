//! The watermark changes only the bottom-right corner and shows both bright text and a
//! dark edge, so it reads on light and dark frames.

use crate::common;

use gallop_media::{DEFAULT_WATERMARK, Watermark};
use image::{Rgb, RgbImage};

/// Pixels that differ between two frames of one size.
fn changed_pixels(a: &RgbImage, b: &RgbImage) -> Vec<(u32, u32)> {
    a.enumerate_pixels()
        .filter(|(x, y, p)| b.get_pixel(*x, *y) != *p)
        .map(|(x, y, _)| (x, y))
        .collect()
}

fn luma(p: &Rgb<u8>) -> f32 {
    0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32
}

/// Writes a crop of the marked corner, enlarged, for a person to look at.
fn save_for_eyes(frame: &RgbImage, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    frame.save(dir.join(format!("{name}.png"))).unwrap();
}

#[test]
fn mark_changes_only_the_bottom_right_corner() {
    for (width, height) in [(1280, 720), (720, 1280), (1920, 1080), (960, 960)] {
        let clean = common::pattern_frame(width, height, 3);
        let mark = Watermark::new(DEFAULT_WATERMARK, width, height);
        let mut marked = clean.clone();
        mark.apply(&mut marked);

        let changed = changed_pixels(&clean, &marked);
        assert!(
            changed.len() > 1000,
            "{width}x{height}: only {} pixels changed",
            changed.len()
        );
        for &(x, y) in &changed {
            assert!(
                x >= width / 2 && y >= height * 9 / 10,
                "{width}x{height}: pixel ({x},{y}) changed outside the bottom-right corner"
            );
        }
        let (left, top, w, h) = mark.region();
        assert!(left + w <= width && top + h <= height);
        assert!(
            changed
                .iter()
                .all(|&(x, y)| x >= left && x < left + w && y >= top && y < top + h)
        );
        // The text is about 3.5% of the frame height (or narrower to fit a portrait frame).
        assert!(
            h as f32 >= height as f32 * 0.02 && h as f32 <= height as f32 * 0.07,
            "{width}x{height}: mark {w}x{h}"
        );
        // A margin is left to the frame edges.
        assert!(left + w < width && top + h < height);
    }
}

#[test]
fn mark_reads_on_light_and_dark_frames() {
    let (width, height) = (1280, 720);
    let mark = Watermark::new(DEFAULT_WATERMARK, width, height);
    let (left, top, w, h) = mark.region();
    for (name, background) in [
        ("watermark_light", [235, 235, 230]),
        ("watermark_dark", [15, 20, 25]),
    ] {
        let mut frame = RgbImage::from_pixel(width, height, Rgb(background));
        mark.apply(&mut frame);
        save_for_eyes(&frame, name);
        let corner: Vec<f32> = (top..top + h)
            .flat_map(|y| (left..left + w).map(move |x| (x, y)))
            .map(|(x, y)| luma(frame.get_pixel(x, y)))
            .collect();
        let bright = corner.iter().filter(|&&l| l > 240.0).count();
        let dark = corner.iter().filter(|&&l| l < 70.0).count();
        // Both white strokes and their dark outline must be present in quantity.
        assert!(bright > 500, "{name}: {bright} bright pixels");
        assert!(dark > 500, "{name}: {dark} dark pixels");
    }
}

#[test]
fn same_text_and_size_give_the_same_mark_and_tiny_frames_do_not_panic() {
    let a = Watermark::new(DEFAULT_WATERMARK, 640, 360);
    let b = Watermark::new(DEFAULT_WATERMARK, 640, 360);
    let mut fa = common::pattern_frame(640, 360, 0);
    let mut fb = fa.clone();
    a.apply(&mut fa);
    b.apply(&mut fb);
    assert_eq!(fa, fb);

    let other = Watermark::new("another text", 640, 360);
    let mut fc = common::pattern_frame(640, 360, 0);
    other.apply(&mut fc);
    assert_ne!(fa, fc);

    for (w, h) in [(16, 16), (64, 32), (2, 2)] {
        let mark = Watermark::new(DEFAULT_WATERMARK, w, h);
        let mut frame = RgbImage::new(w, h);
        mark.apply(&mut frame);
        let (left, top, rw, rh) = mark.region();
        assert!(left + rw <= w && top + rh <= h);
    }
    let empty = Watermark::new("", 640, 360);
    let mut frame = common::pattern_frame(640, 360, 0);
    let before = frame.clone();
    empty.apply(&mut frame);
    assert_eq!(frame, before);
}
