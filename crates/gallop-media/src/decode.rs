//! Untrusted image bytes -> an upright RGB image, refusing anything outside the limits
//! before the pixel buffer is allocated.

use std::io::Cursor;

use image::{
    DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, RgbImage,
    metadata::Orientation,
};

use crate::MediaError;

/// What an input image may look like. Sides are checked after EXIF orientation.
///
/// Memory: a decode may allocate at most [`DecodeLimits::memory_budget`] for its pixels (the
/// frame in the sample type the file stores, e.g. 16-bit RGBA) and at most
/// [`DecodeLimits::metadata_budget`] for what else a decoder keeps (colour profiles, EXIF, XMP
/// and text chunks, inflated). Both follow from `max_pixels`, and are checked before anything
/// that large is allocated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeLimits {
    /// Refused before anything is parsed.
    pub max_bytes: usize,
    /// Refused from the header, before the pixels are allocated.
    pub max_side: u32,
    /// Width x height; refused from the header.
    pub max_pixels: u64,
    pub min_side: u32,
    pub min_short_side: u32,
    /// Long side / short side.
    pub max_aspect: f32,
}

/// Bytes per pixel the memory budget allows at the largest size: one 8-bit RGBA frame.
const BUDGET_BYTES_PER_PIXEL: u64 = 4;
/// Share of the memory budget metadata may take: 1/16, 12.6 MB at 50 megapixels, more than
/// any real colour profile or EXIF block.
const METADATA_SHARE: u64 = 16;

impl DecodeLimits {
    /// Image-to-video input: at most 20 MB, each side 300..=8192 px and at most 50.3 megapixels
    /// (8192 x 6144, room for 50 MP phone photos), aspect within 1:2.5..2.5:1.
    pub fn i2v() -> Self {
        Self {
            max_bytes: 20_000_000,
            max_side: 8192,
            max_pixels: 8192 * 6144,
            min_side: 300,
            min_short_side: 300,
            max_aspect: 2.5,
        }
    }

    /// Reference-to-video input: as i2v, and the short side at least 400 px.
    pub fn r2v() -> Self {
        Self {
            min_short_side: 400,
            ..Self::i2v()
        }
    }

    /// Most bytes a decode may allocate for its pixels: one 8-bit RGBA frame of `max_pixels`.
    /// A file whose frame, in its own sample type, needs more is refused from its header.
    pub fn memory_budget(&self) -> u64 {
        self.max_pixels * BUDGET_BYTES_PER_PIXEL
    }

    /// Most bytes a decoder may allocate besides the pixels: colour profiles, EXIF, XMP and
    /// text chunks, inflated. A file that needs more is refused; a compressed PNG colour profile
    /// past it is dropped instead (colour profiles are not applied: pixels are taken as sRGB).
    pub fn metadata_budget(&self) -> u64 {
        self.memory_budget() / METADATA_SHARE
    }

    /// As i2v but sides down to 16 px, so tests can use small geometry.
    pub fn tiny_test() -> Self {
        Self {
            min_side: 16,
            min_short_side: 16,
            ..Self::i2v()
        }
    }
}

/// Decodes JPEG, PNG, WebP or BMP (recognised by content, never by name), applies the EXIF
/// orientation and composites any alpha onto white.
pub fn decode_image(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, MediaError> {
    if bytes.len() > limits.max_bytes {
        return Err(MediaError::TooManyBytes {
            bytes: bytes.len(),
            max: limits.max_bytes,
        });
    }
    let format = match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Bmp)) => f,
        _ => return Err(MediaError::UnknownFormat),
    };
    // `image` fills a cut-off JPEG with gray and calls it a success; insist on the end marker.
    if format == ImageFormat::Jpeg && !jpeg_reaches_end_marker(bytes) {
        return Err(MediaError::Truncated(
            "the JPEG data ends before its end-of-image marker".into(),
        ));
    }

    // A PNG names its size in the first chunk: refuse a giant even if nothing follows it.
    if let Some((width, height)) = png_header_size(bytes) {
        check_size(width, height, limits)?;
    }
    if format == ImageFormat::WebP {
        crate::webp_check::check_webp(bytes, |w, h| check_size(w, h, limits))?;
    }

    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // Only the memory cap goes on now: the side limits are checked below, where the error can
    // say which rule the image broke. PNG headers inflate colour profiles and keep text chunks
    // while they are parsed, so the cap must be in place before the header is read.
    let mut metadata_limits = Limits::no_limits();
    metadata_limits.max_alloc = Some(limits.metadata_budget());
    reader.limits(metadata_limits);
    let mut decoder = reader.into_decoder().map_err(|e| decode_error(e, limits))?;
    let (width, height) = decoder.dimensions();
    check_size(width, height, limits)?;
    check_frame_memory(width, height, decoder.total_bytes(), limits)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let (upright_width, upright_height) = if swaps_sides(orientation) {
        (height, width)
    } else {
        (width, height)
    };
    check_geometry(upright_width, upright_height, limits)?;

    let mut pixel_limits = Limits::no_limits();
    pixel_limits.max_image_width = Some(limits.max_side);
    pixel_limits.max_image_height = Some(limits.max_side);
    pixel_limits.max_alloc = Some(limits.memory_budget());
    decoder
        .set_limits(pixel_limits)
        .map_err(|e| decode_error(e, limits))?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| decode_error(e, limits))?;
    image.apply_orientation(orientation);
    Ok(flatten_on_white(image))
}

/// Sides and pixel count, from a header, before anything sized by them is allocated.
fn check_size(width: u32, height: u32, limits: &DecodeLimits) -> Result<(), MediaError> {
    if width > limits.max_side || height > limits.max_side {
        return Err(MediaError::TooLarge {
            width,
            height,
            max: limits.max_side,
        });
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(MediaError::TooManyPixels {
            width,
            height,
            max_pixels: limits.max_pixels,
        });
    }
    Ok(())
}

/// The decoded frame, in the sample type the file stores (16-bit RGBA takes 8 bytes a pixel),
/// must fit the memory budget.
fn check_frame_memory(
    width: u32,
    height: u32,
    frame_bytes: u64,
    limits: &DecodeLimits,
) -> Result<(), MediaError> {
    if frame_bytes > limits.memory_budget() {
        return Err(MediaError::OverMemoryBudget {
            width,
            height,
            needed: frame_bytes,
            budget: limits.memory_budget(),
        });
    }
    Ok(())
}

/// Width and height from a PNG's IHDR chunk, which must come first.
fn png_header_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.get(..8)? != b"\x89PNG\r\n\x1a\n" || bytes.get(12..16)? != b"IHDR" {
        return None;
    }
    let width = u32::from_be_bytes(bytes.get(16..20)?.try_into().ok()?);
    let height = u32::from_be_bytes(bytes.get(20..24)?.try_into().ok()?);
    Some((width, height))
}

/// Size rules that do not need pixels: minimum sides and aspect ratio.
fn check_geometry(width: u32, height: u32, limits: &DecodeLimits) -> Result<(), MediaError> {
    let short = width.min(height);
    let long = width.max(height);
    if short < limits.min_side {
        return Err(MediaError::TooSmall {
            width,
            height,
            min: limits.min_side,
        });
    }
    if short < limits.min_short_side {
        return Err(MediaError::ShortSideTooSmall {
            width,
            height,
            min: limits.min_short_side,
        });
    }
    let aspect = long as f32 / short as f32;
    if long as f64 > short as f64 * limits.max_aspect as f64 {
        return Err(MediaError::ExtremeAspect {
            width,
            height,
            aspect,
            max: limits.max_aspect,
        });
    }
    Ok(())
}

fn swaps_sides(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

fn decode_error(error: ImageError, limits: &DecodeLimits) -> MediaError {
    match &error {
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            MediaError::Truncated("the file ends before the image data is complete".into())
        }
        // Sides, pixels and the frame were checked from the header: what is left over the
        // budget is metadata.
        ImageError::Limits(_) => MediaError::MetadataOverBudget {
            budget: limits.metadata_budget(),
        },
        _ => MediaError::Corrupt(error.to_string()),
    }
}

/// Transparent pixels become white, as a viewer with a white page would show them.
fn flatten_on_white(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.into_rgb8();
    }
    let rgba = image.into_rgba8();
    let mut rgb = RgbImage::new(rgba.width(), rgba.height());
    for (out, px) in rgb.pixels_mut().zip(rgba.pixels()) {
        let alpha = px[3] as u32;
        for c in 0..3 {
            out[c] = ((px[c] as u32 * alpha + 255 * (255 - alpha) + 127) / 255) as u8;
        }
    }
    rgb
}

/// Walks the JPEG marker segments and entropy-coded data; true only if an EOI marker is
/// reached. Inside scan data 0xFF is always followed by 0x00 or a restart marker, so a
/// cut-off scan can never be mistaken for the end.
fn jpeg_reaches_end_marker(bytes: &[u8]) -> bool {
    const SOI: u8 = 0xD8;
    const EOI: u8 = 0xD9;
    const SOS: u8 = 0xDA;
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != SOI {
        return false;
    }
    let mut i = 2;
    loop {
        // Tolerate junk between segments and fill bytes before a marker.
        while i < bytes.len() && bytes[i] != 0xFF {
            i += 1;
        }
        while i + 1 < bytes.len() && bytes[i + 1] == 0xFF {
            i += 1;
        }
        if i + 1 >= bytes.len() {
            return false;
        }
        let marker = bytes[i + 1];
        match marker {
            EOI => return true,
            0x00 | 0x01 | 0xD0..=0xD7 => {
                i += 2;
                continue;
            }
            _ => {}
        }
        if i + 4 > bytes.len() {
            return false;
        }
        let length = u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize;
        i += 2 + length;
        if i > bytes.len() {
            return false;
        }
        if marker == SOS {
            // Skip entropy-coded data up to the next real marker.
            while i + 1 < bytes.len() {
                if bytes[i] == 0xFF && !matches!(bytes[i + 1], 0x00 | 0xD0..=0xD7 | 0xFF) {
                    break;
                }
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_marker_walk_needs_the_end_marker() {
        // SOI, a 4-byte APP0 stub, SOS with 2 bytes of header, scan data with a stuffed FF00.
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x00, 0x00];
        jpeg.extend_from_slice(&[
            0xFF, 0xDA, 0x00, 0x02, 0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56,
        ]);
        assert!(!jpeg_reaches_end_marker(&jpeg));
        jpeg.extend_from_slice(&[0xFF, 0xD9]);
        assert!(jpeg_reaches_end_marker(&jpeg));
        // An EOI hidden in a segment's payload (as in an EXIF thumbnail) does not count.
        let hidden = [
            0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x04, 0xFF, 0xD9, 0xFF, 0xDA, 0x00, 0x02, 0x11,
        ];
        assert!(!jpeg_reaches_end_marker(&hidden));
    }

    #[test]
    fn geometry_rules_in_order() {
        let limits = DecodeLimits::r2v();
        assert!(matches!(
            check_geometry(200, 900, &limits),
            Err(MediaError::TooSmall { min: 300, .. })
        ));
        assert!(matches!(
            check_geometry(350, 800, &limits),
            Err(MediaError::ShortSideTooSmall { min: 400, .. })
        ));
        assert!(matches!(
            check_geometry(400, 1001, &limits),
            Err(MediaError::ExtremeAspect { .. })
        ));
        assert_eq!(check_geometry(400, 1000, &limits), Ok(()));
        assert_eq!(check_geometry(1000, 400, &limits), Ok(()));
    }
}
