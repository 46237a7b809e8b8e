//! Real H.264 in a real MP4: encode a moving pattern, read the file back with an
//! independent reader (the mp4 crate) and the openh264 decoder, and compare pixels.

use crate::common;

use gallop_media::{
    MediaError, Mp4Encoder, VideoEncoder, decode_mp4, psnr, rgb_to_yuv420, top_level_boxes,
    worst_block_psnr, yuv420_to_rgb,
};
use image::RgbImage;

fn encode(frames: &[RgbImage], fps: u32) -> Vec<u8> {
    encode_with(&VideoEncoder::OpenH264, frames, fps)
}

pub(crate) fn encode_with(encoder: &VideoEncoder, frames: &[RgbImage], fps: u32) -> Vec<u8> {
    let (width, height) = frames[0].dimensions();
    let mut mp4 = Mp4Encoder::with_encoder(encoder, width, height, fps).unwrap();
    for frame in frames {
        mp4.push(frame).unwrap();
    }
    mp4.finish().unwrap()
}

fn roundtrip(width: u32, height: u32, count: u32) {
    roundtrip_with(&VideoEncoder::OpenH264, width, height, count);
}

/// The MP4 contract every encoder keeps: ftyp first, moov before mdat (faststart), every frame
/// decoded by gallop's own reader at the size and rate asked for, close to what went in, and
/// the same bytes for the same frames.
pub(crate) fn roundtrip_with(encoder: &VideoEncoder, width: u32, height: u32, count: u32) {
    let frames: Vec<_> = (0..count)
        .map(|i| common::pattern_frame(width, height, i))
        .collect();
    let mp4 = encode_with(encoder, &frames, 24);

    let boxes = top_level_boxes(&mp4);
    assert_eq!(
        boxes.first().map(String::as_str),
        Some("ftyp"),
        "boxes: {boxes:?}"
    );
    let moov = boxes.iter().position(|b| b == "moov").expect("a moov box");
    let mdat = boxes.iter().position(|b| b == "mdat").expect("an mdat box");
    assert!(moov < mdat, "faststart needs moov before mdat: {boxes:?}");

    let video = decode_mp4(&mp4).unwrap();
    assert_eq!((video.width, video.height), (width, height));
    assert!((video.fps - 24.0).abs() < 0.01, "fps {}", video.fps);
    assert_eq!(video.frames.len(), frames.len());
    for (i, (decoded, original)) in video.frames.iter().zip(&frames).enumerate() {
        assert_eq!(decoded.dimensions(), (width, height));
        let db = psnr(decoded, original);
        assert!(
            db >= 35.0,
            "frame {i} of {width}x{height}: PSNR {db:.2} dB < 35 dB"
        );
    }

    // Same frames, same bytes: no clocks or random ids in the file.
    assert!(
        mp4 == encode_with(encoder, &frames, 24),
        "re-encoding changed the bytes"
    );
}

#[test]
fn small_video_roundtrips_with_high_psnr() {
    roundtrip(320, 240, 24);
}

#[test]
fn video_720p_roundtrips_with_high_psnr() {
    roundtrip(1280, 720, 48);
}

#[test]
fn portrait_and_other_rates_roundtrip() {
    let frames: Vec<_> = (0..10)
        .map(|i| common::pattern_frame(144, 256, i))
        .collect();
    let video = decode_mp4(&encode(&frames, 30)).unwrap();
    assert_eq!(
        (video.width, video.height, video.frames.len()),
        (144, 256, 10)
    );
    assert!((video.fps - 30.0).abs() < 0.01, "fps {}", video.fps);
}

#[test]
fn sizes_and_frames_that_cannot_be_encoded_are_refused_clearly() {
    let err = Mp4Encoder::new(1281, 720, 24).err().unwrap();
    assert_eq!(
        err.to_string(),
        "video size 1281x720 px is not allowed: width and height must be even (YUV 4:2:0)"
    );
    assert!(matches!(
        Mp4Encoder::new(0, 720, 24),
        Err(MediaError::BadVideoSize { .. })
    ));
    assert!(matches!(
        Mp4Encoder::new(4096, 2160, 24),
        Err(MediaError::BadVideoSize { .. })
    ));
    assert_eq!(
        Mp4Encoder::new(64, 64, 0).err(),
        Some(MediaError::BadFrameRate(0))
    );

    let mut encoder = Mp4Encoder::new(64, 64, 24).unwrap();
    let err = encoder.push(&RgbImage::new(64, 66)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "frame 0 is 64x66 px; this video is 64x64 px"
    );
    assert_eq!(encoder.finish().err(), Some(MediaError::NoFrames));
}

#[test]
fn files_that_are_not_mp4_are_refused() {
    assert!(matches!(
        decode_mp4(b"definitely not a video"),
        Err(MediaError::Mp4Read(_))
    ));
    assert!(top_level_boxes(b"\x00\x00").is_empty());
}

/// Reads bits MSB first from an RBSP (emulation-prevention bytes already removed).
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> u32 {
        let b = (self.data[self.pos / 8] >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        b as u32
    }
    fn bits(&mut self, n: u32) -> u32 {
        (0..n).fold(0, |acc, _| (acc << 1) | self.bit())
    }
    fn ue(&mut self) -> u32 {
        let mut zeros = 0;
        while self.bit() == 0 {
            zeros += 1;
        }
        (1 << zeros) - 1 + self.bits(zeros)
    }
}

#[test]
fn stream_is_baseline_tagged_bt601_limited_range() {
    let frames: Vec<_> = (0..2).map(|i| common::pattern_frame(64, 48, i)).collect();
    let sps = sequence_parameters(&encode(&frames, 24));
    assert_eq!(sps.profile, 66, "Baseline profile");
    assert_eq!(sps.width, 64);
    assert_eq!(sps.full_range, Some(false), "limited range");
    // SMPTE 170M (BT.601 525) primaries, transfer and matrix.
    assert_eq!(sps.colour, Some((6, 6, 6)));
}

/// What a player reads from the SPS in the avcC box.
pub(crate) struct SequenceParameters {
    pub profile: u32,
    pub width: u32,
    /// From the VUI's video signal type, when present.
    pub full_range: Option<bool>,
    /// Primaries, transfer and matrix, when the VUI has a colour description.
    pub colour: Option<(u32, u32, u32)>,
}

pub(crate) fn sequence_parameters(mp4: &[u8]) -> SequenceParameters {
    // The SPS sits in the avcC box: 8 bytes of config, then its 2-byte length.
    let avcc = mp4
        .windows(4)
        .position(|w| w == b"avcC")
        .expect("an avcC box")
        + 4;
    let sps_len = u16::from_be_bytes([mp4[avcc + 6], mp4[avcc + 7]]) as usize;
    let nal = &mp4[avcc + 8..avcc + 8 + sps_len];
    assert_eq!(nal[0] & 0x1F, 7, "first parameter set is an SPS");
    // Drop emulation-prevention bytes (00 00 03 -> 00 00).
    let mut rbsp = Vec::new();
    for &b in &nal[1..] {
        if b == 3 && rbsp.ends_with(&[0, 0]) {
            continue;
        }
        rbsp.push(b);
    }
    let mut r = Bits {
        data: &rbsp,
        pos: 0,
    };
    let profile = r.bits(8);
    r.bits(16); // constraint flags, level
    r.ue(); // seq_parameter_set_id
    if [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135].contains(&profile) {
        assert_eq!(r.ue(), 1, "chroma_format_idc: 4:2:0");
        assert_eq!((r.ue(), r.ue()), (0, 0), "8-bit luma and chroma");
        r.bit(); // qpprime_y_zero_transform_bypass_flag
        assert_eq!(r.bit(), 0, "no scaling matrices expected");
    }
    r.ue(); // log2_max_frame_num_minus4
    match r.ue() {
        0 => {
            r.ue();
        }
        1 => panic!("pic_order_cnt_type 1 is not expected"),
        _ => {}
    }
    r.ue(); // max_num_ref_frames
    r.bit(); // gaps_in_frame_num_value_allowed_flag
    let width = (r.ue() + 1) * 16;
    r.ue(); // height in map units
    if r.bit() == 0 {
        r.bit(); // mb_adaptive_frame_field_flag
    }
    r.bit(); // direct_8x8_inference_flag
    if r.bit() == 1 {
        (0..4).for_each(|_| {
            r.ue();
        });
    }
    let mut sps = SequenceParameters {
        profile,
        width,
        full_range: None,
        colour: None,
    };
    if r.bit() == 0 {
        return sps; // no VUI
    }
    // aspect_ratio_info: an idc, and a 32-bit sample aspect when the idc is 255.
    if r.bit() == 1 && r.bits(8) == 255 {
        r.bits(32);
    }
    if r.bit() == 1 {
        r.bit();
    }
    if r.bit() == 1 {
        r.bits(3); // video_format
        sps.full_range = Some(r.bit() == 1);
        if r.bit() == 1 {
            sps.colour = Some((r.bits(8), r.bits(8), r.bits(8)));
        }
    }
    sps
}

#[test]
fn encoder_and_results_move_between_threads() {
    // Workers encode on a blocking thread; this fails to compile if that stops being possible.
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Mp4Encoder>();
    assert_send::<gallop_media::DecodedVideo>();
    assert_send::<gallop_media::Watermark>();
    let handle = std::thread::spawn(|| {
        let mut encoder = Mp4Encoder::new(32, 32, 24).unwrap();
        encoder.push(&common::pattern_frame(32, 32, 0)).unwrap();
        encoder
    });
    let encoder = handle.join().unwrap();
    assert_eq!(encoder.frame_count(), 1);
    assert_eq!(
        decode_mp4(&encoder.finish().unwrap()).unwrap().frames.len(),
        1
    );
}

#[test]
fn keyframes_every_two_seconds_are_marked_for_seeking() {
    let frames: Vec<_> = (0..100).map(|i| common::pattern_frame(96, 64, i)).collect();
    let mp4 = encode(&frames, 24);
    // Read the sample table with the mp4 crate, independently of decode_mp4.
    let mut reader =
        mp4::Mp4Reader::read_header(std::io::Cursor::new(&mp4), mp4.len() as u64).unwrap();
    let track_id = *reader.tracks().keys().next().unwrap();
    assert_eq!(reader.sample_count(track_id).unwrap(), 100);
    let mut sync = Vec::new();
    for id in 1..=100 {
        let sample = reader.read_sample(track_id, id).unwrap().unwrap();
        // 24 fps in a 90 kHz clock: every frame lasts 3750 ticks and starts on its own tick.
        assert_eq!(sample.duration, 3750, "sample {id}");
        assert_eq!(sample.start_time, (id as u64 - 1) * 3750, "sample {id}");
        if sample.is_sync {
            sync.push(id);
        }
    }
    assert_eq!(sync, [1, 49, 97]);
}

#[test]
fn moving_saturated_edges_and_texture_keep_clean_blocks() {
    assert_clean_blocks(&VideoEncoder::OpenH264);
}

/// The middle of the benchmark's 720P camera clips (BENCHMARKS.md, "Encoder quality"):
/// saturated tiles, hard edges, thin lines and fine texture under a pan and an orbit. Frames
/// are compared with what YUV 4:2:0 can hold of them, so this measures the encoder, not the
/// chroma subsampling every 4:2:0 stream shares. Ghost trails beside moving edges showed here
/// as 16x16 blocks at 15-20 dB.
pub(crate) fn assert_clean_blocks(encoder: &VideoEncoder) {
    for camera in [common::CameraMove::Pan, common::CameraMove::Orbit] {
        let frames: Vec<_> = (0..12)
            .map(|i| common::camera_frame(camera, 384, 256, i))
            .collect();
        let decoded = decode_mp4(&encode_with(encoder, &frames, 24))
            .unwrap()
            .frames;
        assert_eq!(decoded.len(), frames.len(), "every frame decodes");
        let mut worst = f64::INFINITY;
        let mut mean = 0.0;
        for (got, frame) in decoded.iter().zip(&frames) {
            let held = yuv420_to_rgb(&rgb_to_yuv420(frame), 384, 256);
            worst = worst.min(worst_block_psnr(got, &held, 16));
            mean += psnr(got, &held) / frames.len() as f64;
        }
        println!(
            "{}: mean {mean:.2} dB, worst 16x16 block {worst:.2} dB",
            camera.name()
        );
        assert!(
            worst >= 27.0,
            "{}: worst 16x16 block {worst:.2} dB < 27 dB",
            camera.name()
        );
        assert!(
            mean >= 39.0,
            "{}: mean PSNR {mean:.2} dB < 39 dB",
            camera.name()
        );
    }
}

/// Found by the mp4_reader fuzz target: a 64-bit box size near 2^64 once wrapped the bound.
#[test]
fn a_box_size_near_u64_max_ends_the_box_walk() {
    let mut mp4 = vec![0, 0, 0, 16];
    mp4.extend_from_slice(b"free");
    mp4.extend_from_slice(&[0; 8]);
    mp4.extend_from_slice(&[0, 0, 0, 1]);
    mp4.extend_from_slice(b"mdat");
    mp4.extend_from_slice(&(u64::MAX - 8).to_be_bytes());
    mp4.extend_from_slice(&[0xff; 32]);
    assert_eq!(top_level_boxes(&mp4), vec!["free".to_string()]);
    let fuzzed = include_bytes!("../../../../fuzz/seeds/mp4_reader/crash-largesize-overflow");
    let _ = top_level_boxes(fuzzed);
}

/// Found by the mp4_reader fuzz target: a box of size 0 inside `moov` made the reader seek back
/// to its own header forever. It must end in an error (the thread is given a minute, far more
/// than the microseconds it needs, so only a hang fails here).
#[test]
fn a_zero_sized_box_inside_moov_is_an_error_not_a_hang() {
    let looping = include_bytes!("../../../../fuzz/seeds/mp4_reader/timeout-zero-sized-child-box");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(gallop_media::decode_mp4(looping).is_err()));
    let refused = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("decode_mp4 returns on a zero-sized child box");
    assert!(refused);
}
