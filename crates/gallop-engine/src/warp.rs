//! Renders one camera view of a source image: an affine map from output pixels to source
//! positions, sampled bilinearly so motion moves in fractions of a pixel, never in whole-pixel jumps.

use image::RgbImage;

use crate::camera::View;

/// Renders `view` of `source` into `frame`, overwriting every pixel.
pub fn render_view_into(source: &RgbImage, view: &View, frame: &mut RgbImage) {
    let (width, height) = frame.dimensions();
    let (sw, sh) = (source.width() as f32, source.height() as f32);
    // Source pixels per output pixel on each axis.
    let kx = view.size * sw / width as f32;
    let ky = view.size * sh / height as f32;
    let (sin, cos) = view.roll.sin_cos();
    // source = centre + scale * rotate(output - output centre), in pixel-centre coordinates:
    // sx = a*x + b*y + c, sy = d*x + e*y + f, where x, y are output pixel indices.
    let (a, b) = (kx * cos, -kx * sin);
    let (d, e) = (ky * sin, ky * cos);
    let (ox, oy) = (0.5 - width as f32 / 2.0, 0.5 - height as f32 / 2.0);
    let c = view.center.0 * sw + a * ox + b * oy - 0.5;
    let f = view.center.1 * sh + d * ox + e * oy - 0.5;

    let src = source.as_raw();
    let stride = source.width() as usize * 3;
    let (max_x, max_y) = (sw - 1.0, sh - 1.0);
    let (last_x, last_y) = (source.width() as usize - 1, source.height() as usize - 1);
    let row_len = width as usize * 3;
    for (y, row) in frame.chunks_exact_mut(row_len).enumerate() {
        let y = y as f32;
        let mut sx = b * y + c;
        let mut sy = e * y + f;
        for px in row.chunks_exact_mut(3) {
            // Clamping replicates the edge for the rare sample a rolled view pushes outside.
            let cx = sx.clamp(0.0, max_x);
            let cy = sy.clamp(0.0, max_y);
            let (x0, y0) = (cx as usize, cy as usize);
            let (fx, fy) = (cx - x0 as f32, cy - y0 as f32);
            let x1 = (x0 + 1).min(last_x);
            let y1 = (y0 + 1).min(last_y);
            let top = y0 * stride;
            let bottom = y1 * stride;
            let (i00, i01) = (top + x0 * 3, top + x1 * 3);
            let (i10, i11) = (bottom + x0 * 3, bottom + x1 * 3);
            for ch in 0..3 {
                let upper =
                    src[i00 + ch] as f32 + (src[i01 + ch] as f32 - src[i00 + ch] as f32) * fx;
                let lower =
                    src[i10 + ch] as f32 + (src[i11 + ch] as f32 - src[i10 + ch] as f32) * fx;
                px[ch] = (upper + (lower - upper) * fy + 0.5) as u8;
            }
            sx += a;
            sy += d;
        }
    }
}

/// Cross-dissolve: `into` becomes `into * (1 - weight) + other * weight`.
pub fn blend_into(into: &mut RgbImage, other: &RgbImage, weight: f32) {
    debug_assert_eq!(into.dimensions(), other.dimensions());
    let w = weight.clamp(0.0, 1.0);
    for (a, &b) in into.iter_mut().zip(other.iter()) {
        *a = (*a as f32 + (b as f32 - *a as f32) * w + 0.5) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn render_view(source: &RgbImage, view: &View, width: u32, height: u32) -> RgbImage {
        let mut frame = RgbImage::new(width, height);
        render_view_into(source, view, &mut frame);
        frame
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 255 / (w - 1)) as u8, (y * 255 / (h - 1)) as u8, 90])
        })
    }

    #[test]
    fn whole_view_at_same_size_is_the_source() {
        let src = gradient(64, 36);
        let view = View {
            center: (0.5, 0.5),
            size: 1.0,
            roll: 0.0,
        };
        assert_eq!(render_view(&src, &view, 64, 36), src);
    }

    #[test]
    fn half_pixel_shift_interpolates() {
        // A one-pixel-wide bright column; moving the view half a pixel splits it over two columns.
        let mut src = RgbImage::from_pixel(40, 20, Rgb([0, 0, 0]));
        for y in 0..20 {
            src.put_pixel(20, y, Rgb([200, 200, 200]));
        }
        let view = View {
            center: (0.5 - 0.5 / 40.0, 0.5),
            size: 1.0,
            roll: 0.0,
        };
        let frame = render_view(&src, &view, 40, 20);
        assert_eq!(frame.get_pixel(20, 10)[0], 100);
        assert_eq!(frame.get_pixel(21, 10)[0], 100);
        assert_eq!(frame.get_pixel(19, 10)[0], 0);
    }

    #[test]
    fn blend_weights() {
        let mut a = RgbImage::from_pixel(2, 2, Rgb([0, 100, 200]));
        let b = RgbImage::from_pixel(2, 2, Rgb([200, 100, 0]));
        blend_into(&mut a, &b, 0.25);
        assert_eq!(a.get_pixel(1, 1), &Rgb([50, 100, 150]));
    }
}
