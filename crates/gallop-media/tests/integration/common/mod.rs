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

/// A camera move over [`scene`] for the encoder-quality clips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraMove {
    /// Sideways and a little down, 7.3 px per frame.
    Pan,
    /// Pushing in by 1.2% per frame.
    Zoom,
    /// Turning about the centre (0.6 degrees per frame) while circling it.
    Orbit,
}

impl CameraMove {
    pub const ALL: [CameraMove; 3] = [CameraMove::Pan, CameraMove::Zoom, CameraMove::Orbit];

    pub fn name(self) -> &'static str {
        match self {
            CameraMove::Pan => "pan",
            CameraMove::Zoom => "zoom",
            CameraMove::Orbit => "orbit",
        }
    }
}

/// Frame `index` of `camera` moving over [`scene`], `width` x `height` px, one scene unit per
/// pixel: a smaller frame is the middle of the 720P view, with the same detail. Each pixel
/// averages 3x3 samples (a camera's pixel integrates light; point samples would alias).
pub fn camera_frame(camera: CameraMove, width: u32, height: u32, index: u32) -> RgbImage {
    let t = index as f32;
    let (mut cx, mut cy, mut zoom, mut roll) = (0.0f32, 0.0f32, 1.0f32, 0.0f32);
    match camera {
        CameraMove::Pan => {
            cx = 7.0 * t;
            cy = 2.1 * t;
        }
        CameraMove::Zoom => zoom = 1.012f32.powf(t),
        CameraMove::Orbit => {
            roll = (0.6 * t).to_radians();
            cx = 60.0 * (0.05 * t).sin();
            cy = 60.0 * (1.0 - (0.05 * t).cos());
        }
    }
    let (sin, cos) = roll.sin_cos();
    let (half_w, half_h) = (width as f32 / 2.0, height as f32 / 2.0);
    let mut frame = RgbImage::new(width, height);
    let rows = frame.as_mut().chunks_mut(width as usize * 3).enumerate();
    std::thread::scope(|scope| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut chunks: Vec<Vec<(usize, &mut [u8])>> = (0..threads).map(|_| Vec::new()).collect();
        for (y, row) in rows {
            chunks[y % threads].push((y, row));
        }
        for chunk in chunks {
            scope.spawn(move || {
                for (y, row) in chunk {
                    for (x, pixel) in row.chunks_exact_mut(3).enumerate() {
                        let mut sum = [0.0f32; 3];
                        for sy in 0..3 {
                            for sx in 0..3 {
                                let px = (x as f32 + (sx as f32 + 0.5) / 3.0 - half_w) / zoom;
                                let py = (y as f32 + (sy as f32 + 0.5) / 3.0 - half_h) / zoom;
                                let rgb = scene(cx + cos * px - sin * py, cy + sin * px + cos * py);
                                (0..3).for_each(|c| sum[c] += rgb[c]);
                            }
                        }
                        for c in 0..3 {
                            pixel[c] = (sum[c] / 9.0).round().clamp(0.0, 255.0) as u8;
                        }
                    }
                }
            });
        }
    });
    frame
}

/// A scene that is hard on an encoder, as a function of position (scene units, origin at the
/// centre): saturated tiles (red, green, blue, yellow, magenta, cyan, white, black) with sharp
/// edges, thin saturated lines, and bands of fine texture like fabric or foliage.
pub fn scene(x: f32, y: f32) -> [f32; 3] {
    const TILES: [[f32; 3]; 8] = [
        [235.0, 20.0, 20.0],
        [20.0, 220.0, 40.0],
        [25.0, 35.0, 230.0],
        [240.0, 225.0, 20.0],
        [225.0, 25.0, 220.0],
        [20.0, 220.0, 225.0],
        [245.0, 245.0, 245.0],
        [15.0, 15.0, 15.0],
    ];
    let tile = 192.0;
    let (tx, ty) = ((x / tile).floor(), (y / tile).floor());
    let hash = ((tx as i32).wrapping_mul(7) + (ty as i32).wrapping_mul(13)).rem_euclid(8);
    // Each tile is shaded a little across, as light falls on a real surface.
    let shade = 0.85 + 0.15 * ((x - tx * tile) / tile);
    let mut rgb = TILES[hash as usize].map(|v| v * shade);
    // Inside each tile: a disc of the complementary colour and a thin line, both hard-edged.
    let (fx, fy) = (x - (tx + 0.5) * tile, y - (ty + 0.5) * tile);
    if fx * fx + fy * fy < 40.0 * 40.0 {
        rgb = TILES[(hash as usize + 4) % 8];
    }
    if (fx - 0.6 * fy).abs() < 1.5 {
        rgb = TILES[(hash as usize + 2) % 8];
    }
    // Every third row of tiles carries fine texture, like fabric or foliage: its brightness
    // ripples at 3-9 px periods (natural detail is mostly in brightness, not in hue).
    if (ty as i32).rem_euclid(3) == 1 {
        let weave = (x * 1.9).sin() * (y * 1.3).cos() + (x * 0.7 + y * 1.1).sin();
        let k = 0.7 + 0.15 * weave;
        rgb = rgb.map(|v| 20.0 + (v - 20.0) * k);
    }
    rgb
}
