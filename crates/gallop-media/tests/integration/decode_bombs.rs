//! Decompression bombs and pixel floods through `decode_image`, each decoded in a forked child
//! process whose peak RSS (`VmHWM`, reset through `/proc/self/clear_refs` at the start) is
//! measured: every file is refused, or decoded with the peak growth under the bound stated for
//! it. Without the memory budget the metadata bombs below inflate to 500 MB.

use gallop_media::{DecodeLimits, MediaError, decode_image};
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};

const MB: u64 = 1_000_000;
/// What the metadata bombs inflate to, if let.
const BOMB_BYTES: usize = 500_000_000;

/// Runs `decode` in a forked child and returns its peak RSS growth in bytes and the outcome
/// (`Ok WxH` or the error's text). Forking leaves the other test threads, and their memory, out.
fn peak_growth_in_child(decode: impl FnOnce() -> String) -> (u64, String) {
    let mut fds = [0i32; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // Child: only this thread exists. Reset the peak to the current RSS, decode, report.
        let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
            let before = status_kb("VmHWM");
            let outcome = decode();
            let after = status_kb("VmHWM");
            format!("{}\n{outcome}", (after - before) * 1024)
        }))
        .unwrap_or_else(|_| "0\nchild panicked".to_string());
        unsafe {
            libc::write(fds[1], report.as_ptr().cast(), report.len());
            libc::_exit(0);
        }
    }
    unsafe { libc::close(fds[1]) };
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    let mut status = 0;
    unsafe {
        libc::close(fds[0]);
        libc::waitpid(pid, &mut status, 0);
    }
    let text = String::from_utf8(out).unwrap();
    let (growth, outcome) = text.split_once('\n').expect("the child reported");
    (growth.parse().unwrap(), outcome.to_string())
}

fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn decode_outcome(bytes: &[u8], limits: &DecodeLimits) -> String {
    match decode_image(bytes, limits) {
        Ok(img) => format!("Ok {}x{}", img.width(), img.height()),
        Err(e) => format!("Err {e}"),
    }
}

/// Asserts the file is refused or decoded within `bound` bytes of peak growth; returns the
/// outcome.
fn assert_bounded(name: &str, bytes: &[u8], bound: u64) -> String {
    let limits = DecodeLimits::i2v();
    let (growth, outcome) = peak_growth_in_child(|| decode_outcome(bytes, &limits));
    eprintln!(
        "{name}: {} KB file, peak RSS growth {:.1} MB (bound {:.0} MB): {outcome}",
        bytes.len() / 1000,
        growth as f64 / MB as f64,
        bound as f64 / MB as f64
    );
    assert!(outcome != "child panicked", "{name}: decoding panicked");
    assert!(
        growth < bound,
        "{name}: peak RSS grew {growth} bytes, over the bound {bound}: {outcome}"
    );
    outcome
}

// ---- building the files -------------------------------------------------------------------

/// A zlib stream of `n` zero bytes made of fixed-Huffman matches (258 bytes per 13 bits, so
/// about 160:1) without compressing anything.
fn zlib_zeros(n: usize) -> Vec<u8> {
    let mut bits = BitWriter::default();
    bits.put(1, 1); // final block
    bits.put(1, 2); // fixed Huffman
    let literal_zero = |bits: &mut BitWriter| bits.put_code(0b0011_0000, 8);
    literal_zero(&mut bits);
    let mut left = n - 1;
    while left >= 258 {
        bits.put_code(0b1100_0101, 8); // length code 285: 258 bytes
        bits.put_code(0, 5); // distance code 0: 1 byte back
        left -= 258;
    }
    for _ in 0..left {
        literal_zero(&mut bits);
    }
    bits.put_code(0, 7); // end of block
    let mut out = vec![0x78, 0x01];
    out.extend(bits.finish());
    // Adler-32 of n zeros: a stays 1, b gains 1 per byte.
    let adler = ((n % 65521) as u32) << 16 | 1;
    out.extend_from_slice(&adler.to_be_bytes());
    out
}

#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    count: u32,
}

impl BitWriter {
    /// `n` bits of `value`, least significant first (headers and extra bits).
    fn put(&mut self, value: u64, n: u32) {
        self.acc |= value << self.count;
        self.count += n;
        while self.count >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.count -= 8;
        }
    }

    /// A Huffman code, most significant bit first.
    fn put_code(&mut self, code: u64, n: u32) {
        let reversed = (0..n).fold(0, |r, i| r | ((code >> i) & 1) << (n - 1 - i));
        self.put(reversed, n);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.count > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
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

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A real 400x300 PNG with `extra` chunks put right after its IHDR.
fn png_with_chunks(extra: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
    let pixels: Vec<u8> = (0..400 * 300 * 3).map(|i| (i % 251) as u8).collect();
    let mut plain = Vec::new();
    PngEncoder::new(&mut plain)
        .write_image(&pixels, 400, 300, ExtendedColorType::Rgb8)
        .unwrap();
    let ihdr_end = 8 + 8 + 13 + 4;
    let mut out = plain[..ihdr_end].to_vec();
    for (kind, data) in extra {
        png_chunk(&mut out, kind, data);
    }
    out.extend_from_slice(&plain[ihdr_end..]);
    out
}

/// A PNG of the given header whose one IDAT inflates to `idat_zeros` zero bytes.
fn png_of_zeros(width: u32, height: u32, depth: u8, color: u8, idat_zeros: usize) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[depth, color, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(&mut out, b"IDAT", &zlib_zeros(idat_zeros));
    png_chunk(&mut out, b"IEND", &[]);
    out
}

// ---- the bombs ----------------------------------------------------------------------------

#[test]
fn png_colour_profile_bomb_is_decoded_within_the_metadata_budget() {
    // The probe's file: an iCCP chunk whose profile inflates about 160x (to 500 MB).
    let mut iccp = b"bomb\0\0".to_vec();
    iccp.extend(zlib_zeros(BOMB_BYTES));
    let file = png_with_chunks(&[(b"iCCP", iccp)]);
    let outcome = assert_bounded("iCCP bomb", &file, 40 * MB);
    assert_eq!(
        outcome, "Ok 400x300",
        "the profile is dropped, the pixels kept"
    );
}

#[test]
fn png_text_bombs_are_never_inflated() {
    let mut ztxt = b"Comment\0\0".to_vec();
    ztxt.extend(zlib_zeros(BOMB_BYTES));
    let outcome = assert_bounded("zTXt bomb", &png_with_chunks(&[(b"zTXt", ztxt)]), 40 * MB);
    assert_eq!(outcome, "Ok 400x300");

    // XMP travels in a compressed iTXt chunk.
    let mut itxt = b"XML:com.adobe.xmp\0\x01\0\0\0".to_vec();
    itxt.extend(zlib_zeros(BOMB_BYTES));
    let outcome = assert_bounded(
        "iTXt (XMP) bomb",
        &png_with_chunks(&[(b"iTXt", itxt)]),
        40 * MB,
    );
    assert_eq!(outcome, "Ok 400x300");
}

#[test]
fn png_metadata_over_the_budget_is_refused_naming_the_rule() {
    // Raw (uncompressed) EXIF past the metadata budget: kept as it is read, so refused.
    let budget = DecodeLimits::i2v().metadata_budget() as usize;
    let exif = vec![0u8; budget + 1024];
    let file = png_with_chunks(&[(b"eXIf", exif)]);
    let outcome = assert_bounded("eXIf over budget", &file, 60 * MB);
    assert!(
        outcome.contains("image metadata (colour profile, EXIF, XMP or text chunks) needs more"),
        "{outcome}"
    );
}

#[test]
fn png_pixel_data_past_the_frame_is_not_kept() {
    // 400x300 RGB needs 300 x 1201 bytes; the stream inflates to 500 MB.
    let file = png_of_zeros(400, 300, 8, 2, BOMB_BYTES);
    assert_bounded("IDAT overrun", &file, 40 * MB);
}

#[test]
fn pixel_floods_are_refused_from_the_header() {
    // 8192x8192 is within the side limit, not the pixel count: a 3 MB file asking for 201 MB.
    let file = png_of_zeros(8192, 8192, 8, 2, 8192 * (8192 * 3 + 1));
    let outcome = assert_bounded("8192x8192 pixel flood", &file, 20 * MB);
    assert!(outcome.contains("megapixels are allowed"), "{outcome}");
    // 16-bit RGBA at 6000x6000: 288 MB of samples, over the 201 MB memory budget.
    let file = png_of_zeros(6000, 6000, 16, 6, 1000);
    let outcome = assert_bounded("16-bit RGBA flood", &file, 20 * MB);
    assert!(outcome.contains("MB to decode"), "{outcome}");
}

#[test]
fn a_webp_bitstream_larger_than_its_canvas_is_refused_before_decoding() {
    // VP8X says 400x300; the lossless bitstream inside says 8000x6000 (192 MB of RGBA).
    let mut body = b"WEBP".to_vec();
    let mut vp8x = vec![0u8; 10];
    vp8x[4..7].copy_from_slice(&(400u32 - 1).to_le_bytes()[..3]);
    vp8x[7..10].copy_from_slice(&(300u32 - 1).to_le_bytes()[..3]);
    for (fourcc, data) in [
        (b"VP8X", vp8x),
        (b"VP8L", {
            let bits: u32 = (8000 - 1) | (6000 - 1) << 14;
            let mut d = vec![0x2F];
            d.extend_from_slice(&bits.to_le_bytes());
            d.extend_from_slice(&[0u8; 64]);
            d
        }),
    ] {
        body.extend_from_slice(fourcc);
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(&data);
    }
    let mut file = b"RIFF".to_vec();
    file.extend_from_slice(&(body.len() as u32).to_le_bytes());
    file.extend_from_slice(&body);
    let outcome = assert_bounded("WebP bitstream flood", &file, 20 * MB);
    assert!(
        outcome.contains("bitstream is 8000x6000 px but its canvas is 400x300 px"),
        "{outcome}"
    );
    // A chunk claiming 4 GB in a 100-byte file is refused before anything is allocated.
    let mut lying = file.clone();
    lying[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    let outcome = assert_bounded("WebP chunk size", &lying, 20 * MB);
    assert!(outcome.contains("claims 4294967295 bytes"), "{outcome}");
}

#[test]
fn an_rle_bmp_flood_decodes_within_its_frame_bound() {
    // 4000x3000 8-bit RLE in a 1 KB file: the decoded frame is 36 MB of RGB.
    let (w, h) = (4000u32, 3000u32);
    let mut file = b"BM".to_vec();
    let data_offset = 14 + 40 + 256 * 4;
    let rle = [0u8, 1]; // end of bitmap at once
    file.extend_from_slice(&((data_offset + rle.len()) as u32).to_le_bytes());
    file.extend_from_slice(&[0; 4]);
    file.extend_from_slice(&(data_offset as u32).to_le_bytes());
    file.extend_from_slice(&40u32.to_le_bytes());
    file.extend_from_slice(&(w as i32).to_le_bytes());
    file.extend_from_slice(&(h as i32).to_le_bytes());
    file.extend_from_slice(&1u16.to_le_bytes());
    file.extend_from_slice(&8u16.to_le_bytes());
    file.extend_from_slice(&1u32.to_le_bytes()); // BI_RLE8
    file.extend_from_slice(&(rle.len() as u32).to_le_bytes());
    file.extend_from_slice(&[0; 8]);
    file.extend_from_slice(&256u32.to_le_bytes());
    file.extend_from_slice(&0u32.to_le_bytes());
    for i in 0..256u32 {
        file.extend_from_slice(&[i as u8, i as u8, i as u8, 0]);
    }
    file.extend_from_slice(&rle);
    // Frame in the decoder's type (at most RGBA8) plus the RGB result, and slack.
    let frame = u64::from(w * h);
    let outcome = assert_bounded("BMP RLE flood", &file, frame * 4 + frame * 3 + 20 * MB);
    assert!(
        outcome.starts_with("Ok 4000x3000") || outcome.starts_with("Err"),
        "{outcome}"
    );
}

#[test]
fn a_jpeg_that_claims_a_larger_frame_decodes_within_its_bound() {
    // A real 64x48 JPEG whose frame header is rewritten to 6000x4500 (27 MP): the scan data
    // covers almost none of it.
    let pixels: Vec<u8> = (0..64 * 48 * 3).map(|i| (i % 200) as u8).collect();
    let mut file = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut file, 90)
        .write_image(&pixels, 64, 48, ExtendedColorType::Rgb8)
        .unwrap();
    let sof = file
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("a baseline frame header");
    file[sof + 5..sof + 7].copy_from_slice(&4500u16.to_be_bytes());
    file[sof + 7..sof + 9].copy_from_slice(&6000u16.to_be_bytes());
    let frame = 6000u64 * 4500;
    // The decoder's component planes and its RGB output, and slack.
    assert_bounded(
        "JPEG frame flood",
        &file,
        frame * 3 * 2 + frame * 3 + 20 * MB,
    );
}

#[test]
fn refusals_name_the_rule() {
    let limits = DecodeLimits::i2v();
    assert_eq!(limits.max_pixels, 8192 * 6144);
    assert_eq!(limits.memory_budget(), 8192 * 6144 * 4);
    let err = decode_image(&png_of_zeros(8192, 8192, 8, 2, 10), &limits).unwrap_err();
    assert!(matches!(err, MediaError::TooManyPixels { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "image is 8192x8192 px (67.1 megapixels); at most 50.3 megapixels are allowed"
    );
}
