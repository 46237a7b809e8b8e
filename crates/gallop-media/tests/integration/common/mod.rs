//! Shared by the integration tests and the benchmark: a moving test picture that looks
//! like video (smooth gradients, soft and hard edges, motion), not like noise.
#![allow(dead_code)]

use image::{Rgb, RgbImage};

/// Width of the soft edge of the shapes, in pixels.
const EDGE_PX: f32 = 4.0;

/// Frame `index` of a pattern: a drifting sky-like gradient, a sun-like disc moving right,
/// a dark box moving left and a soft bright blob moving down.
pub fn pattern_frame(width: u32, height: u32, index: u32) -> RgbImage {
    let (w, h) = (width as f32, height as f32);
    let t = index as f32;
    let disc = (w * (0.2 + 0.01 * t), h * 0.4, h * 0.15);
    let box_left = w * (0.7 - 0.008 * t);
    let box_top = h * 0.55;
    let (box_w, box_h) = (w * 0.15, h * 0.25);
    let blob = (w * 0.5, h * (0.2 + 0.006 * t), h * 0.2);
    RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32, y as f32);
        let u = (fx / w + 0.004 * t).fract();
        let v = fy / h;
        let mut rgb = [
            40.0 + 150.0 * u,
            70.0 + 120.0 * v,
            200.0 - 120.0 * v + 30.0 * (6.0 * u).sin(),
        ];
        let d = ((fx - disc.0).powi(2) + (fy - disc.1).powi(2)).sqrt();
        // Edges ramp over a few pixels, as a camera lens would blur them.
        let disc_alpha = ((disc.2 - d) / EDGE_PX + 0.5).clamp(0.0, 1.0);
        mix(&mut rgb, [250.0, 200.0, 60.0], disc_alpha);
        let inside_x = ((fx - box_left).min(box_left + box_w - fx) / EDGE_PX + 0.5).clamp(0.0, 1.0);
        let inside_y = ((fy - box_top).min(box_top + box_h - fy) / EDGE_PX + 0.5).clamp(0.0, 1.0);
        let shade = 30.0 + 40.0 * ((fy - box_top) / box_h).clamp(0.0, 1.0);
        mix(
            &mut rgb,
            [shade, shade * 0.8, shade * 1.5],
            inside_x * inside_y,
        );
        let bd2 = ((fx - blob.0).powi(2) + (fy - blob.1).powi(2)) / (blob.2 * blob.2);
        mix(&mut rgb, [255.0, 255.0, 255.0], 0.6 * (-bd2).exp());
        Rgb(rgb.map(|c| c.round().clamp(0.0, 255.0) as u8))
    })
}

fn mix(rgb: &mut [f32; 3], over: [f32; 3], alpha: f32) {
    for c in 0..3 {
        rgb[c] = rgb[c] * (1.0 - alpha) + over[c] * alpha;
    }
}

/// The pattern with a fine moving texture on top (like foliage or fabric): the kind of
/// detail that makes the encoder spend its whole bitrate.
pub fn textured_frame(width: u32, height: u32, index: u32) -> RgbImage {
    let mut frame = pattern_frame(width, height, index);
    for (x, y, p) in frame.enumerate_pixels_mut() {
        let fx = x as f32 + 2.0 * index as f32;
        let fy = y as f32;
        let texture = ((fx * 0.9).sin() * (fy * 1.3).cos() + (fx * 0.31 + fy * 0.47).sin()) * 25.0;
        for c in p.0.iter_mut() {
            *c = (*c as f32 + texture).clamp(0.0, 255.0) as u8;
        }
    }
    frame
}
