//! A WebP file's chunk structure, checked before a decoder reads it. Decoders allocate a
//! chunk's declared size before reading it, and size an image's buffers from its bitstream's
//! own header (which may disagree with the canvas the file declares), so both are checked
//! here: every chunk fits in the file, and every bitstream (a still image's, or an animation
//! frame's) has the size of its canvas or frame, within the limits.

use crate::MediaError;

/// Where a RIFF chunk's payload lies in the file.
struct Chunk<'a> {
    fourcc: [u8; 4],
    payload: &'a [u8],
}

/// Checks `bytes` (a WebP, by its magic) with `check_size` applied to every canvas, frame and
/// bitstream size.
pub(crate) fn check_webp(
    bytes: &[u8],
    check_size: impl Fn(u32, u32) -> Result<(), MediaError>,
) -> Result<(), MediaError> {
    let riff_size = bytes
        .get(4..8)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or_else(|| MediaError::Truncated("the WebP data ends inside its RIFF header".into()))?;
    if bytes.len() < 12 || 8 + riff_size > bytes.len() {
        return Err(MediaError::Truncated(
            "the WebP data is shorter than its RIFF header says".into(),
        ));
    }
    let chunks = chunks(&bytes[12..8 + riff_size])?;
    let mut canvas = None;
    for chunk in &chunks {
        match &chunk.fourcc {
            b"VP8X" => {
                let (w, h) = (u24(chunk, 4)? + 1, u24(chunk, 7)? + 1);
                check_size(w, h)?;
                canvas = Some((w, h));
            }
            b"VP8 " | b"VP8L" => {
                let size = bitstream_size(chunk)?;
                check_size(size.0, size.1)?;
                if let Some(canvas) = canvas {
                    same_size("the image bitstream", size, "canvas", canvas)?;
                }
            }
            b"ANMF" => check_frame(chunk, canvas, &check_size)?,
            _ => {}
        }
    }
    Ok(())
}

/// An animation frame: its size within the limits, and its bitstream of that size.
fn check_frame(
    frame: &Chunk<'_>,
    canvas: Option<(u32, u32)>,
    check_size: &impl Fn(u32, u32) -> Result<(), MediaError>,
) -> Result<(), MediaError> {
    const HEADER: usize = 16;
    let size = (u24(frame, 6)? + 1, u24(frame, 9)? + 1);
    check_size(size.0, size.1)?;
    if let Some((w, h)) = canvas
        && (size.0 > w || size.1 > h)
    {
        return Err(MediaError::Corrupt(format!(
            "a WebP animation frame is {}x{} px, larger than its {w}x{h} canvas",
            size.0, size.1
        )));
    }
    let inner = frame
        .payload
        .get(HEADER..)
        .ok_or_else(|| too_short(frame))?;
    for sub in chunks(inner)? {
        if matches!(&sub.fourcc, b"VP8 " | b"VP8L") {
            same_size("a frame's bitstream", bitstream_size(&sub)?, "frame", size)?;
        }
    }
    Ok(())
}

/// The chunks of a RIFF body, each fitting in it.
fn chunks(mut body: &[u8]) -> Result<Vec<Chunk<'_>>, MediaError> {
    let mut out = Vec::new();
    while body.len() >= 8 {
        let fourcc: [u8; 4] = body[..4].try_into().expect("4 bytes");
        let size = u32::from_le_bytes(body[4..8].try_into().expect("4 bytes")) as usize;
        let rest = &body[8..];
        if size > rest.len() {
            return Err(MediaError::Truncated(format!(
                "the WebP {} chunk claims {size} bytes but only {} follow",
                String::from_utf8_lossy(&fourcc),
                rest.len()
            )));
        }
        out.push(Chunk {
            fourcc,
            payload: &rest[..size],
        });
        // Chunks are padded to an even size.
        body = rest.get(size + (size & 1)..).unwrap_or(&[]);
    }
    Ok(out)
}

/// Width and height from a VP8 (lossy) or VP8L (lossless) bitstream header.
fn bitstream_size(chunk: &Chunk<'_>) -> Result<(u32, u32), MediaError> {
    let p = chunk.payload;
    if &chunk.fourcc == b"VP8 " {
        if p.len() < 10 || p[3..6] != [0x9d, 0x01, 0x2a] {
            return Err(too_short(chunk));
        }
        let w = u32::from(u16::from_le_bytes([p[6], p[7]]) & 0x3FFF);
        let h = u32::from(u16::from_le_bytes([p[8], p[9]]) & 0x3FFF);
        Ok((w, h))
    } else {
        if p.len() < 5 || p[0] != 0x2F {
            return Err(too_short(chunk));
        }
        let bits = u32::from_le_bytes(p[1..5].try_into().expect("4 bytes"));
        Ok(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
    }
}

fn same_size(
    what: &str,
    size: (u32, u32),
    of: &str,
    expected: (u32, u32),
) -> Result<(), MediaError> {
    if size == expected {
        return Ok(());
    }
    Err(MediaError::Corrupt(format!(
        "{what} is {}x{} px but its {of} is {}x{} px",
        size.0, size.1, expected.0, expected.1
    )))
}

/// A 24-bit little-endian number at `at` in the chunk's payload.
fn u24(chunk: &Chunk<'_>, at: usize) -> Result<u32, MediaError> {
    let b = chunk
        .payload
        .get(at..at + 3)
        .ok_or_else(|| too_short(chunk))?;
    Ok(u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16)
}

fn too_short(chunk: &Chunk<'_>) -> MediaError {
    MediaError::Corrupt(format!(
        "the WebP {} chunk is too short or malformed",
        String::from_utf8_lossy(&chunk.fourcc)
    ))
}
