//! Real encoded files (made here with the `image` encoders and a few hand-built headers)
//! through `decode_image`: what must decode, and the matrix of what must be refused.

use gallop_media::{DecodeLimits, MediaError, decode_image};
use image::codecs::bmp::BmpEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::{ExtendedColorType, ImageEncoder, Rgb, RgbImage, Rgba, RgbaImage};

/// A photo-like gradient with some structure.
fn photo(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let u = x as f32 / width as f32;
        let v = y as f32 / height as f32;
        Rgb([
            (60.0 + 180.0 * u) as u8,
            (40.0 + 160.0 * v) as u8,
            (120.0 + 80.0 * (8.0 * u).sin() * v) as u8,
        ])
    })
}

fn png(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            ExtendedColorType::Rgb8,
        )
        .unwrap();
    out
}

fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 92)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            ExtendedColorType::Rgb8,
        )
        .unwrap();
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose IHDR claims `width` x `height` and whose IDAT holds almost nothing.
fn png_header_claiming(width: u32, height: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &[0x78, 0x9C, 0x03, 0x00]);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Random bytes from a fixed-seed xorshift: the same "noise" every run.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[test]
fn the_four_formats_decode_by_content() {
    let original = photo(400, 300);
    let limits = DecodeLimits::i2v();

    assert_eq!(decode_image(&png(&original), &limits).unwrap(), original);

    let mut bmp = Vec::new();
    BmpEncoder::new(&mut bmp)
        .write_image(original.as_raw(), 400, 300, ExtendedColorType::Rgb8)
        .unwrap();
    assert_eq!(decode_image(&bmp, &limits).unwrap(), original);

    let mut webp = Vec::new();
    WebPEncoder::new_lossless(&mut webp)
        .write_image(original.as_raw(), 400, 300, ExtendedColorType::Rgb8)
        .unwrap();
    assert_eq!(decode_image(&webp, &limits).unwrap(), original);

    let decoded = decode_image(&jpeg(&original), &limits).unwrap();
    assert_eq!(decoded.dimensions(), (400, 300));
    assert!(gallop_media::psnr(&decoded, &original) > 30.0);
}

#[test]
fn transparency_is_composited_on_white() {
    // Left half fully transparent red, right half opaque blue, one half-transparent black pixel.
    let mut rgba = RgbaImage::from_fn(320, 320, |x, _| {
        if x < 160 {
            Rgba([255, 0, 0, 0])
        } else {
            Rgba([0, 0, 255, 255])
        }
    });
    rgba.put_pixel(200, 10, Rgba([0, 0, 0, 128]));
    let mut bytes = Vec::new();
    PngEncoder::new(&mut bytes)
        .write_image(rgba.as_raw(), 320, 320, ExtendedColorType::Rgba8)
        .unwrap();
    let rgb = decode_image(&bytes, &DecodeLimits::i2v()).unwrap();
    assert_eq!(rgb.get_pixel(10, 10), &Rgb([255, 255, 255]));
    assert_eq!(rgb.get_pixel(300, 10), &Rgb([0, 0, 255]));
    assert_eq!(rgb.get_pixel(200, 10), &Rgb([127, 127, 127]));
}

#[test]
fn oversized_header_is_refused_before_allocating() {
    let err =
        decode_image(&png_header_claiming(100_000, 100_000), &DecodeLimits::i2v()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "image is 100000x100000 px; each side must be at most 8192 px"
    );

    // Just the signature and IHDR, nothing after it: still "too large", not "truncated".
    let header_only = &png_header_claiming(100_000, 100_000)[..33];
    assert!(matches!(
        decode_image(header_only, &DecodeLimits::i2v()),
        Err(MediaError::TooLarge { width: 100_000, .. })
    ));

    // The same for a JPEG whose frame header claims 60000x60000.
    let mut bytes = jpeg(&photo(320, 240));
    let sof = bytes
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline SOF0");
    bytes[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
    assert_eq!(
        decode_image(&bytes, &DecodeLimits::i2v()).unwrap_err(),
        MediaError::TooLarge {
            width: 60000,
            height: 60000,
            max: 8192
        }
    );
}

#[test]
fn truncated_files_are_refused() {
    let original = photo(640, 480);
    let limits = DecodeLimits::i2v();

    let full = jpeg(&original);
    let err = decode_image(&full[..full.len() * 6 / 10], &limits).unwrap_err();
    assert!(matches!(err, MediaError::Truncated(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "image file is truncated: the JPEG data ends before its end-of-image marker"
    );
    // Only the last two bytes (the end marker) missing is still truncated.
    assert!(matches!(
        decode_image(&full[..full.len() - 2], &limits),
        Err(MediaError::Truncated(_))
    ));

    let full = png(&original);
    let err = decode_image(&full[..full.len() / 2], &limits).unwrap_err();
    assert!(matches!(err, MediaError::Truncated(_)), "{err:?}");

    let mut webp = Vec::new();
    WebPEncoder::new_lossless(&mut webp)
        .write_image(original.as_raw(), 640, 480, ExtendedColorType::Rgb8)
        .unwrap();
    let err = decode_image(&webp[..webp.len() / 2], &limits).unwrap_err();
    assert!(matches!(err, MediaError::Truncated(_)), "{err:?}");

    let mut bmp = Vec::new();
    BmpEncoder::new(&mut bmp)
        .write_image(original.as_raw(), 640, 480, ExtendedColorType::Rgb8)
        .unwrap();
    let err = decode_image(&bmp[..bmp.len() / 2], &limits).unwrap_err();
    assert!(matches!(err, MediaError::Truncated(_)), "{err:?}");
}

#[test]
fn noise_is_not_an_image() {
    // 10 MB of random bytes, as if uploaded as "photo.png": the name never matters.
    let bytes = noise(10_000_000);
    let err = decode_image(&bytes, &DecodeLimits::i2v()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "image format is not recognised; only JPEG, PNG, WebP and BMP are accepted"
    );
    // Noise behind a real PNG signature is an error too, not a panic.
    let mut disguised = b"\x89PNG\r\n\x1a\n".to_vec();
    disguised.extend_from_slice(&bytes[..100_000]);
    assert!(decode_image(&disguised, &DecodeLimits::i2v()).is_err());
    // Other formats are named as unsupported, even when `image` could read them.
    assert_eq!(
        decode_image(b"GIF89a\x01\x00\x01\x00", &DecodeLimits::i2v()),
        Err(MediaError::UnknownFormat)
    );
}

#[test]
fn too_small_and_extreme_aspect_are_refused_with_the_rule() {
    let limits = DecodeLimits::i2v();
    let err = decode_image(&png(&photo(200, 200)), &limits).unwrap_err();
    assert_eq!(
        err.to_string(),
        "image is 200x200 px; each side must be at least 300 px"
    );

    let err = decode_image(&png(&photo(300, 900)), &limits).unwrap_err();
    assert_eq!(
        err.to_string(),
        "image is 300x900 px (aspect 3.00:1); the aspect ratio must be between 1:2.5 and 2.5:1"
    );
    // Exactly 2.5:1 is allowed.
    assert!(decode_image(&png(&photo(750, 300)), &limits).is_ok());

    // r2v wants a short side of 400 px.
    let image = png(&photo(350, 700));
    assert!(decode_image(&image, &DecodeLimits::i2v()).is_ok());
    assert_eq!(
        decode_image(&image, &DecodeLimits::r2v())
            .unwrap_err()
            .to_string(),
        "image is 350x700 px; the short side must be at least 400 px"
    );

    // Test geometry may go down to 16 px.
    assert!(decode_image(&png(&photo(32, 16)), &DecodeLimits::tiny_test()).is_ok());
}

#[test]
fn more_than_20_mb_is_refused_before_parsing() {
    let mut bytes = png(&photo(320, 240));
    bytes.resize(20_000_001, 0);
    assert_eq!(
        decode_image(&bytes, &DecodeLimits::i2v())
            .unwrap_err()
            .to_string(),
        "image is 20000001 bytes; at most 20000000 bytes (20 MB) are allowed"
    );
}

/// Inserts an APP1 Exif segment (little-endian TIFF, one IFD entry: Orientation) after SOI.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"II\x2a\x00\x08\x00\x00\x00".to_vec();
    tiff.extend_from_slice(&1u16.to_le_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_le_bytes()); // count
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding
    tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn exif_orientation_is_applied_for_all_eight_values() {
    // 64x32 stored image with four colour quadrants.
    const RED: [u8; 3] = [220, 30, 30];
    const GREEN: [u8; 3] = [30, 200, 40];
    const BLUE: [u8; 3] = [30, 40, 220];
    const WHITE: [u8; 3] = [245, 245, 245];
    let (w, h) = (64u32, 32u32);
    let stored = RgbImage::from_fn(w, h, |x, y| {
        Rgb(match (x < w / 2, y < h / 2) {
            (true, true) => RED,
            (false, true) => GREEN,
            (true, false) => BLUE,
            (false, false) => WHITE,
        })
    });
    let bytes = jpeg(&stored);

    // Where each displayed pixel comes from in the stored image (EXIF 2.3, tag 0x0112).
    let source = |orientation: u16, x: u32, y: u32| -> (u32, u32) {
        match orientation {
            1 => (x, y),
            2 => (w - 1 - x, y),
            3 => (w - 1 - x, h - 1 - y),
            4 => (x, h - 1 - y),
            5 => (y, x),
            6 => (y, h - 1 - x),
            7 => (w - 1 - y, h - 1 - x),
            8 => (w - 1 - y, x),
            _ => unreachable!(),
        }
    };
    for orientation in 1..=8u16 {
        let decoded = decode_image(
            &with_exif_orientation(&bytes, orientation),
            &DecodeLimits::tiny_test(),
        )
        .unwrap_or_else(|e| panic!("orientation {orientation}: {e}"));
        let expected_size = if orientation >= 5 { (h, w) } else { (w, h) };
        assert_eq!(
            decoded.dimensions(),
            expected_size,
            "orientation {orientation}"
        );
        // Check the centre of each displayed quadrant, away from JPEG ringing at the edges.
        let (dw, dh) = decoded.dimensions();
        for (qx, qy) in [
            (dw / 4, dh / 4),
            (3 * dw / 4, dh / 4),
            (dw / 4, 3 * dh / 4),
            (3 * dw / 4, 3 * dh / 4),
        ] {
            let (sx, sy) = source(orientation, qx, qy);
            let want = stored.get_pixel(sx, sy).0;
            let got = decoded.get_pixel(qx, qy).0;
            let close = want
                .iter()
                .zip(got)
                .all(|(a, b)| (*a as i32 - b as i32).abs() < 24);
            assert!(
                close,
                "orientation {orientation} at ({qx},{qy}): got {got:?}, want {want:?}"
            );
        }
    }
}

#[test]
fn orientation_is_applied_before_the_size_rules() {
    // Stored 800x360 with orientation 6 is shown as 360x800.
    let bytes = with_exif_orientation(&jpeg(&photo(800, 360)), 6);
    let decoded = decode_image(&bytes, &DecodeLimits::i2v()).unwrap();
    assert_eq!(decoded.dimensions(), (360, 800));
    // r2v: 360 px short side is refused, and the message shows the upright size.
    assert_eq!(
        decode_image(&bytes, &DecodeLimits::r2v())
            .unwrap_err()
            .to_string(),
        "image is 360x800 px; the short side must be at least 400 px"
    );
}
