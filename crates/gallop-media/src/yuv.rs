//! RGB <-> YUV 4:2:0 in BT.601 limited range (what the stream's VUI says), rounded to nearest.
//! openh264's own converters truncate both ways, which darkens every frame by about one level.

use image::RgbImage;

/// Luma and colour-difference weights of BT.601.
const KR: f32 = 0.299;
const KB: f32 = 0.114;
const KG: f32 = 1.0 - KR - KB;
/// Limited range: luma spans 16..=235 (219 steps), chroma 16..=240 (224 steps).
const Y_SCALE: f32 = 219.0 / 255.0;
const C_SCALE: f32 = 224.0 / 255.0;

fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// One frame (even width and height) as contiguous Y, U and V planes: luma per pixel, chroma
/// from the mean colour of each 2x2 square.
pub fn rgb_to_yuv420(frame: &RgbImage) -> Vec<u8> {
    let (width, height) = (frame.width() as usize, frame.height() as usize);
    let mut planes = vec![0u8; width * height * 3 / 2];
    rgb_to_yuv420_into(frame, &mut planes);
    planes
}

/// As [`rgb_to_yuv420`], into `planes` (width x height x 3/2 bytes).
pub(crate) fn rgb_to_yuv420_into(frame: &RgbImage, planes: &mut [u8]) {
    let (width, height) = (frame.width() as usize, frame.height() as usize);
    let (luma, chroma) = planes.split_at_mut(width * height);
    let (u_plane, v_plane) = chroma.split_at_mut(width * height / 4);
    let raw = frame.as_raw();
    for (out, pixel) in luma.iter_mut().zip(raw.chunks_exact(3)) {
        let [r, g, b] = [0, 1, 2].map(|c| pixel[c] as f32);
        *out = to_u8(16.0 + Y_SCALE * (KR * r + KG * g + KB * b));
    }
    let half_width = width / 2;
    for cy in 0..height / 2 {
        for cx in 0..half_width {
            let mut sum = [0.0f32; 3];
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let i = ((2 * cy + dy) * width + 2 * cx + dx) * 3;
                (0..3).for_each(|c| sum[c] += raw[i + c] as f32);
            }
            let [r, g, b] = sum.map(|s| s * 0.25);
            let y = KR * r + KG * g + KB * b;
            u_plane[cy * half_width + cx] = to_u8(128.0 + C_SCALE * (b - y) / (2.0 * (1.0 - KB)));
            v_plane[cy * half_width + cx] = to_u8(128.0 + C_SCALE * (r - y) / (2.0 * (1.0 - KR)));
        }
    }
}

/// Contiguous Y, U and V planes of a `width` x `height` frame -> RGB.
pub fn yuv420_to_rgb(planes: &[u8], width: u32, height: u32) -> RgbImage {
    let (w, h) = (width as usize, height as usize);
    let (luma, chroma) = planes.split_at(w * h);
    let (u_plane, v_plane) = chroma.split_at(w * h / 4);
    yuv_planes_to_rgb([luma, u_plane, v_plane], [w, w / 2, w / 2], width, height)
}

/// Y, U, V planes with their row strides -> RGB; chroma is shared by each 2x2 square.
pub(crate) fn yuv_planes_to_rgb(
    [luma, u_plane, v_plane]: [&[u8]; 3],
    [y_stride, u_stride, v_stride]: [usize; 3],
    width: u32,
    height: u32,
) -> RgbImage {
    let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
    for y in 0..height as usize {
        for x in 0..width as usize {
            let l = (luma[y * y_stride + x] as f32 - 16.0) / Y_SCALE;
            let u = (u_plane[(y / 2) * u_stride + x / 2] as f32 - 128.0) / C_SCALE;
            let v = (v_plane[(y / 2) * v_stride + x / 2] as f32 - 128.0) / C_SCALE;
            let r = l + 2.0 * (1.0 - KR) * v;
            let b = l + 2.0 * (1.0 - KB) * u;
            let g = (l - KR * r - KB * b) / KG;
            rgb.extend_from_slice(&[to_u8(r), to_u8(g), to_u8(b)]);
        }
    }
    RgbImage::from_raw(width, height, rgb).expect("buffer sized for the frame")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_colours_convert_to_their_bt601_codes_and_back() {
        let cases = [
            ([0u8, 0, 0], [16u8, 128, 128]),
            ([255, 255, 255], [235, 128, 128]),
            ([255, 0, 0], [81, 90, 240]),
            ([0, 255, 0], [145, 54, 34]),
            ([0, 0, 255], [41, 240, 110]),
        ];
        for (rgb, yuv) in cases {
            let frame = RgbImage::from_pixel(2, 2, image::Rgb(rgb));
            let planes = rgb_to_yuv420(&frame);
            assert_eq!([planes[0], planes[4], planes[5]], yuv, "{rgb:?}");
            let back = yuv420_to_rgb(&planes, 2, 2);
            for (c, (&got, &want)) in back.get_pixel(1, 1).0.iter().zip(&rgb).enumerate() {
                assert!(
                    (got as i32 - want as i32).abs() <= 1,
                    "{rgb:?} channel {c}: {got}"
                );
            }
        }
    }

    #[test]
    fn round_trip_of_smooth_colour_has_no_bias() {
        // Truncating converters lose about one level on average; rounding ones lose none.
        let frame = RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 4) as u8, ((x + y) * 2) as u8])
        });
        let back = yuv420_to_rgb(&rgb_to_yuv420(&frame), 64, 64);
        let bias: f64 = back
            .as_raw()
            .iter()
            .zip(frame.as_raw())
            .map(|(&a, &b)| a as f64 - b as f64)
            .sum::<f64>()
            / frame.as_raw().len() as f64;
        assert!(bias.abs() < 0.1, "mean error {bias:.3} levels");
    }
}
