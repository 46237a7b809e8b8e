//! Output sizes: the known upstream table, the sizes derived for the other ratios, and the
//! snapping of an input image's aspect to the nearest ratio.

use crate::request::{FPS, GenerationRequest, Geometry, ModelId, Ratio, Resolution};

impl Resolution {
    /// The 16:9 size whose area every ratio of this resolution aims at.
    pub fn target_area(self) -> u32 {
        match self {
            Resolution::P720 => 1280 * 720,
            Resolution::P1080 => 1920 * 1080,
        }
    }
}

/// The exact output size (width, height) of a resolution and ratio. Always even.
pub fn output_size(resolution: Resolution, ratio: Ratio) -> (u32, u32) {
    use Ratio::*;
    use Resolution::*;
    // Upstream's own sizes, kept exactly (its 4:3 is 1.31, not 1.33).
    let known = match (resolution, ratio) {
        (P720, R16x9) => Some((1280, 720)),
        (P720, R1x1) => Some((960, 960)),
        (P720, R4x3) => Some((1088, 832)),
        (P1080, R16x9) => Some((1920, 1080)),
        (P1080, R1x1) => Some((1440, 1440)),
        (P1080, R4x3) => Some((1632, 1248)),
        _ => None,
    };
    if let Some(size) = known {
        return size;
    }
    let (w, h) = ratio.parts();
    if w < h {
        // Portrait sizes are the landscape ones turned, so 9:16 is exactly 16:9 transposed.
        let (lw, lh) = output_size(resolution, portrait_to_landscape(ratio));
        return (lh, lw);
    }
    derive_size(resolution.target_area(), ratio.value())
}

fn portrait_to_landscape(ratio: Ratio) -> Ratio {
    match ratio {
        Ratio::R9x16 => Ratio::R16x9,
        Ratio::R3x4 => Ratio::R4x3,
        Ratio::R9x21 => Ratio::R21x9,
        Ratio::R4x5 => Ratio::R5x4,
        landscape => landscape,
    }
}

/// The landscape size in multiples of 16 (what latent-space models like) with an aspect within
/// 1% of `ratio` and the area closest to `target_area`.
fn derive_size(target_area: u32, ratio: f64) -> (u32, u32) {
    let ideal_height = (target_area as f64 / ratio).sqrt();
    let mut best: Option<((u32, u32), f64)> = None;
    let lowest = ((ideal_height * 0.8) / 16.0) as u32;
    let highest = ((ideal_height * 1.2) / 16.0) as u32 + 1;
    for height in (lowest..=highest).map(|k| k * 16) {
        let width_floor = (height as f64 * ratio / 16.0).floor() as u32 * 16;
        for width in [width_floor, width_floor + 16] {
            let aspect_error = ((width as f64 / height as f64) / ratio - 1.0).abs();
            if height == 0 || aspect_error > 0.01 {
                continue;
            }
            let area_error = ((width * height) as f64 / target_area as f64 - 1.0).abs();
            if best.is_none_or(|(_, e)| area_error < e) {
                best = Some(((width, height), area_error));
            }
        }
    }
    best.expect("some multiple of 16 fits any ratio within 1% at 720P or more")
        .0
}

impl Ratio {
    /// The ratio nearest to an image's aspect, compared in log space so 2:1 and 1:2 are equally
    /// far from 1:1. A zero side counts as one pixel.
    pub fn nearest(width: u32, height: u32) -> Ratio {
        let aspect = (width.max(1) as f64 / height.max(1) as f64).ln();
        Ratio::ALL
            .into_iter()
            .min_by(|a, b| {
                let da = (a.value().ln() - aspect).abs();
                let db = (b.value().ln() - aspect).abs();
                da.total_cmp(&db)
            })
            .expect("Ratio::ALL is not empty")
    }
}

impl GenerationRequest {
    /// The output of this request: r2v uses its ratio; i2v the ratio nearest to its image
    /// (`first_image` is that image's width and height; 16:9 when unknown).
    pub fn geometry(&self, first_image: Option<(u32, u32)>) -> Geometry {
        let ratio = match self.model {
            ModelId::HhR2v => self.ratio.unwrap_or_default(),
            ModelId::HhI2v => first_image
                .map(|(w, h)| Ratio::nearest(w, h))
                .unwrap_or_default(),
        };
        let (width, height) = output_size(self.resolution, ratio);
        Geometry {
            width,
            height,
            fps: FPS,
            frames: FPS * self.duration,
        }
    }
}
