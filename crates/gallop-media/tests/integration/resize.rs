//! fit_and_crop covers and centres; fit_on_canvas contains and pads.

use gallop_media::{fit_and_crop, fit_on_canvas};
use image::{Rgb, RgbImage};

const RED: Rgb<u8> = Rgb([220, 20, 20]);
const BLUE: Rgb<u8> = Rgb([20, 20, 220]);
const GREEN: Rgb<u8> = Rgb([20, 200, 20]);

fn close(a: &Rgb<u8>, b: &Rgb<u8>, tolerance: i32) -> bool {
    a.0.iter()
        .zip(b.0)
        .all(|(x, y)| (*x as i32 - y as i32).abs() <= tolerance)
}

#[test]
fn wide_source_is_cropped_equally_left_and_right() {
    // 4000x1000 with red outer quarters and a blue centre half: covering 1000x1000 keeps
    // exactly the centre 1000 source columns, all blue.
    let src = RgbImage::from_fn(4000, 1000, |x, _| {
        if (1000..3000).contains(&x) { BLUE } else { RED }
    });
    let out = fit_and_crop(&src, 1000, 1000);
    assert_eq!(out.dimensions(), (1000, 1000));
    for x in [0, 10, 500, 989, 999] {
        assert!(
            close(out.get_pixel(x, 500), &BLUE, 2),
            "column {x}: {:?}",
            out.get_pixel(x, 500)
        );
    }
}

#[test]
fn tall_source_is_cropped_equally_top_and_bottom_and_marks_stay_centred() {
    // 600x1800 -> 1280x720: scale 1280/600, keep the middle 337.5 source rows.
    // A green band at source rows 880..920 (centred) must land in the middle of the output.
    let src = RgbImage::from_fn(
        600,
        1800,
        |_, y| if (880..920).contains(&y) { GREEN } else { RED },
    );
    let out = fit_and_crop(&src, 1280, 720);
    assert_eq!(out.dimensions(), (1280, 720));
    let green_rows: Vec<u32> = (0..720)
        .filter(|&y| close(out.get_pixel(640, y), &GREEN, 8))
        .collect();
    let first = *green_rows.first().expect("green band survives");
    let last = *green_rows.last().unwrap();
    let centre = (first + last) as f32 / 2.0;
    assert!((centre - 359.5).abs() <= 1.0, "band centred at {centre}");
    assert!(close(out.get_pixel(640, 0), &RED, 2) && close(out.get_pixel(640, 719), &RED, 2));
}

#[test]
fn same_size_is_returned_unchanged_and_upscaling_works() {
    let src = RgbImage::from_fn(64, 48, |x, y| Rgb([x as u8 * 3, y as u8 * 5, 100]));
    assert_eq!(fit_and_crop(&src, 64, 48), src);
    let up = fit_and_crop(&src, 640, 480);
    assert_eq!(up.dimensions(), (640, 480));
    // A smooth gradient stays smooth: the centre matches the source centre.
    assert!(close(up.get_pixel(320, 240), src.get_pixel(32, 24), 6));
}

#[test]
fn canvas_fit_pads_with_the_background() {
    let src = RgbImage::from_pixel(400, 200, BLUE);
    let white = [255, 255, 255];
    let out = fit_on_canvas(&src, 300, 300, white);
    assert_eq!(out.dimensions(), (300, 300));
    // Scaled to 300x150 and centred: rows 75..225 blue, the rest white.
    assert_eq!(out.get_pixel(150, 10), &Rgb(white));
    assert_eq!(out.get_pixel(150, 290), &Rgb(white));
    assert!(close(out.get_pixel(150, 150), &BLUE, 1));
    assert!(close(out.get_pixel(0, 80), &BLUE, 1) && close(out.get_pixel(299, 220), &BLUE, 1));
    assert_eq!(out.get_pixel(0, 74), &Rgb(white));
    assert_eq!(out.get_pixel(0, 225), &Rgb(white));

    // A tall source pads left and right.
    let tall = fit_on_canvas(&RgbImage::from_pixel(100, 400, RED), 400, 400, [0, 0, 0]);
    assert_eq!(tall.get_pixel(10, 200), &Rgb([0, 0, 0]));
    assert!(close(tall.get_pixel(200, 200), &RED, 1));
    assert_eq!(tall.get_pixel(151, 200), &RED);
    assert_eq!(tall.get_pixel(149, 200), &Rgb([0, 0, 0]));
}
