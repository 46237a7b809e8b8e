//! The visible "AI generated" mark in the bottom-right corner: white text with a dark
//! outline, so it reads on light and dark frames alike.

use ab_glyph::{Font, FontRef, GlyphId, PxScale, ScaleFont, point};
use image::RgbImage;

pub const DEFAULT_WATERMARK: &str = "AI generated · gallop";

/// DejaVu Sans Bold (Bitstream Vera licence, see assets/fonts/LICENSE-DejaVu.txt).
const FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans-Bold.ttf");

/// Text height as a share of the frame height, and the gap to the frame edges.
const TEXT_HEIGHT_SHARE: f32 = 0.035;
const MARGIN_SHARE: f32 = 0.02;
/// The mark never takes more than this share of the frame width.
const MAX_WIDTH_SHARE: f32 = 0.45;
const MIN_TEXT_PX: f32 = 6.0;
/// Opacity of the dark outline (of 255).
const OUTLINE_OPACITY: f32 = 200.0;

/// A mark rendered once for one frame size; `apply` only blends two alpha masks.
#[derive(Debug, Clone)]
pub struct Watermark {
    frame_width: u32,
    frame_height: u32,
    /// Top-left corner of the masks in the frame; the masks are already clipped to it.
    left: u32,
    top: u32,
    width: u32,
    height: u32,
    /// Per pixel of the region: how much to darken (the outline), then how much to whiten (the text).
    outline: Vec<u8>,
    text: Vec<u8>,
}

impl Watermark {
    /// Lays out `text` for frames of `width` x `height` px.
    pub fn new(text: &str, width: u32, height: u32) -> Watermark {
        let font = FontRef::try_from_slice(FONT).expect("the bundled font parses");
        let mut px = (height as f32 * TEXT_HEIGHT_SHARE).max(MIN_TEXT_PX);
        let natural_width = line_width(&font, text, px);
        let max_width = width as f32 * MAX_WIDTH_SHARE;
        if natural_width > max_width {
            px = (px * max_width / natural_width).max(MIN_TEXT_PX);
        }
        let scaled = font.as_scaled(PxScale::from(px));
        let outline_radius = (px / 12.0).round().max(1.0) as i32;
        let pad = outline_radius + 1;
        let text_width = line_width(&font, text, px).ceil() as i32;
        let text_height = (scaled.ascent() - scaled.descent()).ceil() as i32;
        let mask_width = (text_width + 2 * pad).max(0) as usize;
        let mask_height = (text_height + 2 * pad).max(0) as usize;

        // Text coverage in [0, 1].
        let mut coverage = vec![0f32; mask_width * mask_height];
        let mut caret = 0.0f32;
        let mut previous: Option<GlyphId> = None;
        for ch in text.chars() {
            let id = font.glyph_id(ch);
            if let Some(prev) = previous {
                caret += scaled.kern(prev, id);
            }
            let glyph = id.with_scale_and_position(px, point(caret, scaled.ascent()));
            caret += scaled.h_advance(id);
            previous = Some(id);
            let Some(outlined) = font.outline_glyph(glyph) else {
                continue; // spaces have no outline
            };
            let bounds = outlined.px_bounds();
            outlined.draw(|gx, gy, c| {
                let x = bounds.min.x as i32 + gx as i32 + pad;
                let y = bounds.min.y as i32 + gy as i32 + pad;
                if (0..mask_width as i32).contains(&x) && (0..mask_height as i32).contains(&y) {
                    let cell = &mut coverage[y as usize * mask_width + x as usize];
                    *cell = (*cell + c).min(1.0);
                }
            });
        }

        // The outline is the coverage spread over a disc: a thick dark edge around every stroke.
        let mut outline = vec![0f32; coverage.len()];
        for y in 0..mask_height as i32 {
            for x in 0..mask_width as i32 {
                let mut strongest = 0f32;
                for dy in -outline_radius..=outline_radius {
                    for dx in -outline_radius..=outline_radius {
                        if dx * dx + dy * dy > outline_radius * outline_radius + outline_radius {
                            continue;
                        }
                        let (sx, sy) = (x + dx, y + dy);
                        if (0..mask_width as i32).contains(&sx)
                            && (0..mask_height as i32).contains(&sy)
                        {
                            strongest =
                                strongest.max(coverage[sy as usize * mask_width + sx as usize]);
                        }
                    }
                }
                outline[y as usize * mask_width + x as usize] = strongest;
            }
        }

        // Place bottom-right and clip whatever does not fit in a tiny frame.
        let margin = (height as f32 * MARGIN_SHARE).round() as i64;
        let left_in_frame = width as i64 - margin - mask_width as i64;
        let top_in_frame = height as i64 - margin - mask_height as i64;
        let skip_x = (-left_in_frame).max(0) as usize;
        let skip_y = (-top_in_frame).max(0) as usize;
        let left = left_in_frame.max(0) as u32;
        let top = top_in_frame.max(0) as u32;
        let region_width = mask_width
            .saturating_sub(skip_x)
            .min((width - left) as usize);
        let region_height = mask_height
            .saturating_sub(skip_y)
            .min((height - top) as usize);
        let mut outline_mask = Vec::with_capacity(region_width * region_height);
        let mut text_mask = Vec::with_capacity(region_width * region_height);
        for y in 0..region_height {
            let row = (y + skip_y) * mask_width + skip_x;
            for i in row..row + region_width {
                outline_mask.push((outline[i] * OUTLINE_OPACITY).round() as u8);
                text_mask.push((coverage[i] * 255.0).round() as u8);
            }
        }
        Watermark {
            frame_width: width,
            frame_height: height,
            left,
            top,
            width: region_width as u32,
            height: region_height as u32,
            outline: outline_mask,
            text: text_mask,
        }
    }

    /// The rectangle (left, top, width, height) outside which `apply` changes nothing.
    pub fn region(&self) -> (u32, u32, u32, u32) {
        (self.left, self.top, self.width, self.height)
    }

    /// Draws the mark onto a frame of the size given to `new`.
    ///
    /// # Panics
    /// If the frame has another size: that is a programming error, not bad input.
    pub fn apply(&self, frame: &mut RgbImage) {
        assert_eq!(
            frame.dimensions(),
            (self.frame_width, self.frame_height),
            "watermark was laid out for another frame size"
        );
        for y in 0..self.height {
            for x in 0..self.width {
                let i = (y * self.width + x) as usize;
                let (dark, white) = (self.outline[i] as u32, self.text[i] as u32);
                if dark == 0 && white == 0 {
                    continue;
                }
                let pixel = frame.get_pixel_mut(self.left + x, self.top + y);
                for c in pixel.0.iter_mut() {
                    let darkened = (*c as u32 * (255 - dark) + 127) / 255;
                    *c = ((darkened * (255 - white) + 255 * white + 127) / 255) as u8;
                }
            }
        }
    }
}

/// Advance width of one line of text at `px` pixels, kerning included.
fn line_width(font: &FontRef<'_>, text: &str, px: f32) -> f32 {
    let scaled = font.as_scaled(PxScale::from(px));
    let mut width = 0.0;
    let mut previous: Option<GlyphId> = None;
    for ch in text.chars() {
        let id = font.glyph_id(ch);
        if let Some(prev) = previous {
            width += scaled.kern(prev, id);
        }
        width += scaled.h_advance(id);
        previous = Some(id);
    }
    width
}
