//! Fitting an image to an exact output size with Lanczos3 (fast_image_resize, SIMD).

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::{Rgb, RgbImage};

fn lanczos3() -> ResizeOptions {
    ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3))
}

fn resize_into(img: &RgbImage, dst: &mut RgbImage, options: &ResizeOptions) {
    Resizer::new()
        .resize(img, dst, options)
        // Both sides are RGB8 and non-empty, which is all the resizer can refuse.
        .expect("RGB8 to RGB8 resize of non-empty images cannot fail");
}

/// Scales `img` to cover `width` x `height` and crops the overflow equally from both sides.
///
/// # Panics
/// If the source or target has a zero side.
pub fn fit_and_crop(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    assert!(
        width > 0 && height > 0 && img.width() > 0 && img.height() > 0,
        "fit_and_crop needs non-empty images (source {}x{}, target {width}x{height})",
        img.width(),
        img.height()
    );
    if img.dimensions() == (width, height) {
        return img.clone();
    }
    let mut dst = RgbImage::new(width, height);
    resize_into(
        img,
        &mut dst,
        &lanczos3().fit_into_destination(Some((0.5, 0.5))),
    );
    dst
}

/// Scales `img` to fit inside `width` x `height` without cropping and centres it on a
/// canvas of `background`.
///
/// # Panics
/// If the source or target has a zero side.
pub fn fit_on_canvas(img: &RgbImage, width: u32, height: u32, background: [u8; 3]) -> RgbImage {
    assert!(
        width > 0 && height > 0 && img.width() > 0 && img.height() > 0,
        "fit_on_canvas needs non-empty images (source {}x{}, target {width}x{height})",
        img.width(),
        img.height()
    );
    let scale = f64::min(
        width as f64 / img.width() as f64,
        height as f64 / img.height() as f64,
    );
    let inner_width = ((img.width() as f64 * scale).round() as u32).clamp(1, width);
    let inner_height = ((img.height() as f64 * scale).round() as u32).clamp(1, height);
    let inner = if img.dimensions() == (inner_width, inner_height) {
        img.clone()
    } else {
        let mut dst = RgbImage::new(inner_width, inner_height);
        resize_into(img, &mut dst, &lanczos3());
        dst
    };
    let mut canvas = RgbImage::from_pixel(width, height, Rgb(background));
    let left = (width - inner_width) / 2;
    let top = (height - inner_height) / 2;
    image::imageops::replace(&mut canvas, &inner, left as i64, top as i64);
    canvas
}
