//! Renders one camera view of a source image: an affine map from output pixels to source
//! positions, sampled bilinearly so motion moves in fractions of a pixel, never in whole-pixel jumps.

use image::RgbImage;

use crate::camera::View;

/// Renders `view` of `source` into `frame`, overwriting every pixel. Rows are split over the
/// machine's cores; each pixel's value does not depend on the split, so output is deterministic.
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
    let map = Affine {
        a,
        b,
        c: view.center.0 * sw + a * ox + b * oy - 0.5,
        d,
        e,
        f: view.center.1 * sh + d * ox + e * oy - 0.5,
    };
    // Without roll, x depends only on the column and y only on the row: tap positions and
    // weights are computed once per column and once per row instead of once per pixel.
    let columns: Option<Vec<Tap>> = (view.roll == 0.0).then(|| {
        (0..width)
            .map(|x| Tap::new(map.a * x as f32 + map.c, source.width(), 3))
            .collect()
    });

    let row_len = width as usize * 3;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let rows_per_chunk = (height as usize).div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (chunk_index, chunk) in frame.chunks_mut(rows_per_chunk * row_len).enumerate() {
            let columns = columns.as_deref();
            let map = &map;
            scope.spawn(move || {
                let first_row = chunk_index * rows_per_chunk;
                for (i, row) in chunk.chunks_exact_mut(row_len).enumerate() {
                    let y = (first_row + i) as f32;
                    match columns {
                        Some(columns) => {
                            let tap_y = Tap::new(map.e * y + map.f, source.height(), 1);
                            separable_row(source, columns, tap_y, row);
                        }
                        None => affine_row(source, map, y, row),
                    }
                }
            });
        }
    });
}

struct Affine {
    a: f32,
    b: f32,
    c: f32,
    d: f32,
    e: f32,
    f: f32,
}

/// One axis of a bilinear sample: the two neighbouring indices (times `step`) and the weight of
/// the second, in 1/256ths. Positions outside the image replicate its edge.
#[derive(Clone, Copy)]
struct Tap {
    near: usize,
    far: usize,
    weight: u32,
}

impl Tap {
    fn new(pos: f32, len: u32, step: usize) -> Tap {
        let pos = pos.clamp(0.0, (len - 1) as f32);
        let i = pos as usize;
        let weight = ((pos - i as f32) * 256.0 + 0.5) as u32;
        let (near, far) = if weight == 256 {
            (i + 1, i + 1)
        } else {
            (i, (i + 1).min(len as usize - 1))
        };
        Tap {
            near: near * step,
            far: far * step,
            weight: weight.min(255),
        }
    }
}

/// Bilinear blend of four bytes with 8-bit weights, rounded.
#[inline(always)]
fn blend(p00: u8, p01: u8, p10: u8, p11: u8, wx: u32, wy: u32) -> u8 {
    let top = p00 as u32 * (256 - wx) + p01 as u32 * wx;
    let bottom = p10 as u32 * (256 - wx) + p11 as u32 * wx;
    ((top * (256 - wy) + bottom * wy + 32768) >> 16) as u8
}

fn separable_row(source: &RgbImage, columns: &[Tap], tap_y: Tap, row: &mut [u8]) {
    let stride = source.width() as usize * 3;
    let src = source.as_raw();
    let upper = &src[tap_y.near * stride..][..stride];
    let lower = &src[tap_y.far * stride..][..stride];
    for (px, tap) in row.chunks_exact_mut(3).zip(columns) {
        for ch in 0..3 {
            px[ch] = blend(
                upper[tap.near + ch],
                upper[tap.far + ch],
                lower[tap.near + ch],
                lower[tap.far + ch],
                tap.weight,
                tap_y.weight,
            );
        }
    }
}

fn affine_row(source: &RgbImage, map: &Affine, y: f32, row: &mut [u8]) {
    let stride = source.width() as usize * 3;
    let src = source.as_raw();
    let mut sx = map.b * y + map.c;
    let mut sy = map.e * y + map.f;
    for px in row.chunks_exact_mut(3) {
        let tx = Tap::new(sx, source.width(), 3);
        let ty = Tap::new(sy, source.height(), 1);
        let upper = ty.near * stride;
        let lower = ty.far * stride;
        for ch in 0..3 {
            px[ch] = blend(
                src[upper + tx.near + ch],
                src[upper + tx.far + ch],
                src[lower + tx.near + ch],
                src[lower + tx.far + ch],
                tx.weight,
                ty.weight,
            );
        }
        sx += map.a;
        sy += map.d;
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
    fn rolled_and_separable_paths_agree() {
        // A roll too small to move anything takes the per-pixel path; it must match the
        // per-row/column path to within rounding.
        let src = gradient(300, 200);
        let flat = View {
            center: (0.47, 0.52),
            size: 0.83,
            roll: 0.0,
        };
        let rolled = View { roll: 1e-7, ..flat };
        let a = render_view(&src, &flat, 160, 90);
        let b = render_view(&src, &rolled, 160, 90);
        let worst = a
            .iter()
            .zip(b.iter())
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap();
        assert!(worst <= 1, "paths differ by {worst}");
    }

    #[test]
    fn blend_weights() {
        let mut a = RgbImage::from_pixel(2, 2, Rgb([0, 100, 200]));
        let b = RgbImage::from_pixel(2, 2, Rgb([200, 100, 0]));
        blend_into(&mut a, &b, 0.25);
        assert_eq!(a.get_pixel(1, 1), &Rgb([50, 100, 150]));
    }
}
