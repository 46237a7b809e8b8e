//! Reading our own MP4s back: for tests and for checking a result before it is stored.

use std::io::{Cursor, Read, Seek, SeekFrom};

use image::RgbImage;
use mp4::{Mp4Reader, TrackType};
use openh264::OpenH264API;
use openh264::decoder::{DecodedYUV, Decoder, DecoderConfig};
use openh264::formats::YUVSource;

use crate::MediaError;

/// Every frame of the first video track, as RGB.
#[derive(Debug, Clone)]
pub struct DecodedVideo {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub frames: Vec<RgbImage>,
}

/// A cursor over the file that fails once asked for more reads and seeks than parsing it can
/// need. The `mp4` crate loops forever on a child box of size 0 (it seeks back to the box's
/// own header; found by fuzzing): every turn of such a loop spends budget, so it ends in an
/// error instead. An honest parse does far fewer operations than the file has bytes.
struct BudgetedCursor<'a> {
    inner: Cursor<&'a [u8]>,
    operations_left: u64,
}

impl<'a> BudgetedCursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BudgetedCursor {
            inner: Cursor::new(bytes),
            operations_left: 2 * bytes.len() as u64 + 4096,
        }
    }

    fn spend(&mut self) -> std::io::Result<()> {
        self.operations_left = self.operations_left.checked_sub(1).ok_or_else(|| {
            std::io::Error::other("the box structure makes the reader go round in circles")
        })?;
        Ok(())
    }
}

impl Read for BudgetedCursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.spend()?;
        self.inner.read(buf)
    }
}

impl Seek for BudgetedCursor<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.spend()?;
        self.inner.seek(to)
    }
}

/// Decodes every frame of the first H.264 video track of an MP4.
pub fn decode_mp4(bytes: &[u8]) -> Result<DecodedVideo, MediaError> {
    let read_error = |e: mp4::Error| MediaError::Mp4Read(e.to_string());
    let mut reader = Mp4Reader::read_header(BudgetedCursor::new(bytes), bytes.len() as u64)
        .map_err(read_error)?;
    let track = reader
        .tracks()
        .values()
        .find(|t| matches!(t.track_type(), Ok(TrackType::Video)))
        .ok_or_else(|| MediaError::Mp4Read("the file has no video track".into()))?;
    let track_id = track.track_id();
    let (width, height, fps) = (
        track.width() as u32,
        track.height() as u32,
        track.frame_rate(),
    );
    let sample_count = track.sample_count();
    // Parameter sets live in the avcC box; the decoder wants them in-band first.
    let mut parameter_sets = Vec::new();
    for set in [
        track.sequence_parameter_set(),
        track.picture_parameter_set(),
    ] {
        parameter_sets.extend_from_slice(&[0, 0, 0, 1]);
        parameter_sets.extend_from_slice(set.map_err(read_error)?);
    }

    let mut decoder = Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())
        .map_err(|e| MediaError::Decoder(e.to_string()))?;
    let decoder_error = |e: openh264::Error| MediaError::Decoder(e.to_string());
    decoder.decode(&parameter_sets).map_err(decoder_error)?;

    let mut frames = Vec::with_capacity(sample_count as usize);
    for sample_id in 1..=sample_count {
        let sample = reader
            .read_sample(track_id, sample_id)
            .map_err(read_error)?
            .ok_or_else(|| MediaError::Mp4Read(format!("sample {sample_id} is missing")))?;
        let annex_b = length_prefixed_to_annex_b(&sample.bytes).ok_or_else(|| {
            MediaError::Mp4Read(format!("sample {sample_id} has a broken NAL length"))
        })?;
        if let Some(yuv) = decoder.decode(&annex_b).map_err(decoder_error)? {
            frames.push(to_rgb(&yuv));
        }
    }
    for yuv in decoder.flush_remaining().map_err(decoder_error)? {
        frames.push(to_rgb(&yuv));
    }
    Ok(DecodedVideo {
        width,
        height,
        fps,
        frames,
    })
}

/// A decoded picture as RGB, rounded as players convert it (openh264's own converter truncates).
fn to_rgb(yuv: &DecodedYUV<'_>) -> RgbImage {
    let (width, height) = yuv.dimensions();
    let (y_stride, u_stride, v_stride) = yuv.strides();
    crate::yuv::yuv_planes_to_rgb(
        [yuv.y(), yuv.u(), yuv.v()],
        [y_stride, u_stride, v_stride],
        width as u32,
        height as u32,
    )
}

/// MP4 samples carry NAL units behind 4-byte big-endian lengths; the decoder wants start codes.
fn length_prefixed_to_annex_b(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() + 16);
    while !data.is_empty() {
        let length = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
        let nal = data.get(4..4 + length)?;
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
        data = &data[4 + length..];
    }
    Some(out)
}

/// Four-character codes of the top-level boxes, in file order. Stops at the first box
/// whose size does not fit the file.
pub fn top_level_boxes(bytes: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut offset = 0usize;
    while offset + 8 <= bytes.len() {
        let size32 = u32::from_be_bytes(bytes[offset..offset + 4].try_into().unwrap()) as u64;
        let name = String::from_utf8_lossy(&bytes[offset + 4..offset + 8]).into_owned();
        let size = match size32 {
            0 => (bytes.len() - offset) as u64, // runs to the end of the file
            1 => match bytes.get(offset + 8..offset + 16) {
                Some(large) => u64::from_be_bytes(large.try_into().unwrap()),
                None => break,
            },
            n => n,
        };
        // A 64-bit size near 2^64 must not wrap the bound (found by fuzzing).
        let fits = (offset as u64)
            .checked_add(size)
            .is_some_and(|end| end <= bytes.len() as u64);
        if size < 8 || !fits {
            break;
        }
        names.push(name);
        offset += size as usize;
    }
    names
}

/// Peak signal-to-noise ratio in dB over all RGB samples; infinite for identical images.
///
/// # Panics
/// If the images differ in size.
pub fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(
        a.dimensions(),
        b.dimensions(),
        "psnr needs images of one size"
    );
    let squared_error: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| {
            let d = x as i64 - y as i64;
            (d * d) as u64
        })
        .sum();
    if squared_error == 0 {
        return f64::INFINITY;
    }
    let mse = squared_error as f64 / a.as_raw().len() as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// PSNR in dB of the worst `block` x `block` tile (edge tiles may be smaller): where a whole-frame
/// PSNR averages a local artefact away (a ghost trail beside a moving edge), this finds it.
///
/// # Panics
/// If the images differ in size or `block` is 0.
pub fn worst_block_psnr(a: &RgbImage, b: &RgbImage, block: u32) -> f64 {
    assert_eq!(
        a.dimensions(),
        b.dimensions(),
        "worst_block_psnr needs images of one size"
    );
    assert!(block > 0, "worst_block_psnr needs a block of at least 1 px");
    let (width, height) = a.dimensions();
    let (columns, rows) = (
        width.div_ceil(block) as usize,
        height.div_ceil(block) as usize,
    );
    // Squared error and sample count per tile, accumulated row by row.
    let mut tiles = vec![(0u64, 0u64); columns * rows];
    let row_len = width as usize * 3;
    for (y, (ra, rb)) in a
        .as_raw()
        .chunks_exact(row_len)
        .zip(b.as_raw().chunks_exact(row_len))
        .enumerate()
    {
        let tile_row = &mut tiles[(y / block as usize) * columns..][..columns];
        for (x, (pa, pb)) in ra.chunks_exact(3).zip(rb.chunks_exact(3)).enumerate() {
            let tile = &mut tile_row[x / block as usize];
            for (&p, &q) in pa.iter().zip(pb) {
                let d = p as i64 - q as i64;
                tile.0 += (d * d) as u64;
            }
            tile.1 += 3;
        }
    }
    tiles
        .iter()
        .map(|&(squared, samples)| match squared {
            0 => f64::INFINITY,
            _ => 10.0 * (255.0f64 * 255.0 * samples as f64 / squared as f64).log10(),
        })
        .fold(f64::INFINITY, f64::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_listed_in_order_and_bad_sizes_stop_the_walk() {
        let mut file = Vec::new();
        file.extend_from_slice(&[0, 0, 0, 8]);
        file.extend_from_slice(b"ftyp");
        file.extend_from_slice(&[0, 0, 0, 12]);
        file.extend_from_slice(b"moov");
        file.extend_from_slice(&[1, 2, 3, 4]);
        file.extend_from_slice(&[0, 0, 0, 0]);
        file.extend_from_slice(b"mdat");
        assert_eq!(top_level_boxes(&file), ["ftyp", "moov", "mdat"]);
        file[11] = 200; // moov now claims more bytes than the file has
        assert_eq!(top_level_boxes(&file), ["ftyp"]);
    }

    #[test]
    fn psnr_of_a_known_error() {
        let a = RgbImage::from_pixel(4, 4, image::Rgb([100, 100, 100]));
        let mut b = a.clone();
        assert_eq!(psnr(&a, &b), f64::INFINITY);
        b.pixels_mut().for_each(|p| p.0 = [110, 110, 110]);
        // MSE 100 -> 10 log10(65025 / 100) = 28.13 dB
        assert!((psnr(&a, &b) - 28.1308).abs() < 1e-3);
    }

    #[test]
    fn worst_block_finds_a_local_error_that_the_frame_average_hides() {
        let a = RgbImage::from_pixel(64, 48, image::Rgb([100, 100, 100]));
        let mut b = a.clone();
        assert_eq!(worst_block_psnr(&a, &b, 16), f64::INFINITY);
        // One 16x16 tile off by 10 everywhere: that tile is at 28.13 dB, the frame far above.
        for y in 16..32 {
            for x in 32..48 {
                b.put_pixel(x, y, image::Rgb([110, 110, 110]));
            }
        }
        assert!((worst_block_psnr(&a, &b, 16) - 28.1308).abs() < 1e-3);
        assert!(psnr(&a, &b) > 38.0);
        // A partial edge tile (60 is not a multiple of 16) counts its own pixels only.
        let c = RgbImage::from_pixel(60, 48, image::Rgb([100, 100, 100]));
        let mut d = c.clone();
        d.put_pixel(59, 0, image::Rgb([110, 110, 110]));
        let expected = 10.0 * (65025.0f64 * (12.0 * 16.0 * 3.0) / 300.0).log10();
        assert!((worst_block_psnr(&c, &d, 16) - expected).abs() < 1e-9);
    }

    #[test]
    fn nal_lengths_become_start_codes() {
        let avcc = [0, 0, 0, 2, 0x67, 0x42, 0, 0, 0, 1, 0x68];
        assert_eq!(
            length_prefixed_to_annex_b(&avcc).unwrap(),
            [0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68]
        );
        assert_eq!(length_prefixed_to_annex_b(&[0, 0, 0, 9, 1]), None);
    }
}
