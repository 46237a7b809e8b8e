//! RGB frames -> YUV 4:2:0 -> H.264 -> MP4 with moov before mdat: built in (openh264, Baseline,
//! muxed by muxide), or through the operator's `ffmpeg` with libx264 ([`VideoEncoder`]).

use image::RgbImage;
use muxide::api::{Muxer, MuxerBuilder, VideoCodec};
use openh264::OpenH264API;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, QpRange,
    RateControlMode, UsageType, VuiConfig,
};
use openh264::formats::YUVSlices;

use crate::MediaError;
use crate::ffmpeg::{Ffmpeg, FfmpegStream};

/// Which encoder makes the H.264: an operator's choice (`--encoder`), the same for every video.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum VideoEncoder {
    /// openh264, built into gallop: always there.
    #[default]
    OpenH264,
    /// The operator's ffmpeg with libx264, probed at startup.
    Ffmpeg(Ffmpeg),
}

impl VideoEncoder {
    /// For startup lines: `openh264 (built in, QP 22)`, `ffmpeg /usr/bin/ffmpeg (libx264 ...)`.
    pub fn describe(&self) -> String {
        match self {
            VideoEncoder::OpenH264 => format!("openh264 (built in, QP {QP})"),
            VideoEncoder::Ffmpeg(f) => {
                format!(
                    "ffmpeg {} ({}; {})",
                    f.program().display(),
                    f.describe(),
                    f.version()
                )
            }
        }
    }
}

/// Every macroblock is coded at this quantiser, whatever the picture: rate control by quality,
/// not by a bitrate target. openh264's bitrate mode starved moving detail (36.9 dB, worst 16x16
/// block 20.5 dB: green trails beside moving saturated edges); at 22 its files are about twice
/// the bytes x264 needs at CRF 20 (BENCHMARKS.md, "Encoder quality").
const QP: u8 = 22;
/// openh264 still wants a bitrate for its buffer model; with the quantiser fixed it only sizes
/// buffers, so give it room: 1 bit per pixel per frame.
const BITS_PER_PIXEL: f64 = 1.0;
/// Small test videos still get room.
const MIN_BITRATE: u32 = 500_000;
const MAX_BITRATE: u32 = 200_000_000;
/// A keyframe every this many seconds, so players can seek.
const KEYFRAME_SECONDS: u32 = 2;
/// openh264 supports up to level 5.2: 3840x2160 in either orientation.
const MAX_LONG_SIDE: u32 = 3840;
const MAX_SHORT_SIDE: u32 = 2160;

/// Streams frames into an in-memory MP4. Same frames in, byte-identical file out (with ffmpeg:
/// on the same machine and ffmpeg build).
pub struct Mp4Encoder {
    backend: Backend,
    /// The frame being encoded as Y, U and V planes.
    yuv: Vec<u8>,
    width: u32,
    height: u32,
    fps: u32,
    frames: usize,
}

enum Backend {
    OpenH264 {
        encoder: Box<Encoder>,
        muxer: Box<Muxer<Vec<u8>>>,
    },
    Ffmpeg(FfmpegStream),
}

impl Mp4Encoder {
    /// Opens the built-in encoder for `width` x `height` px (both even) at `fps` frames per
    /// second.
    pub fn new(width: u32, height: u32, fps: u32) -> Result<Self, MediaError> {
        Self::with_encoder(&VideoEncoder::OpenH264, width, height, fps)
    }

    /// Opens `encoder` for `width` x `height` px (both even) at `fps` frames per second.
    pub fn with_encoder(
        encoder: &VideoEncoder,
        width: u32,
        height: u32,
        fps: u32,
    ) -> Result<Self, MediaError> {
        check_geometry(width, height, fps)?;
        let backend = match encoder {
            VideoEncoder::OpenH264 => open_openh264(width, height, fps)?,
            VideoEncoder::Ffmpeg(ffmpeg) => {
                Backend::Ffmpeg(FfmpegStream::start(ffmpeg, width, height, fps)?)
            }
        };
        Ok(Self {
            backend,
            yuv: vec![0; width as usize * height as usize * 3 / 2],
            width,
            height,
            fps,
            frames: 0,
        })
    }

    /// Encodes the next frame; it must have the size given to `new`.
    pub fn push(&mut self, frame: &RgbImage) -> Result<(), MediaError> {
        if frame.dimensions() != (self.width, self.height) {
            return Err(MediaError::FrameSizeMismatch {
                index: self.frames,
                width: frame.width(),
                height: frame.height(),
                expected_width: self.width,
                expected_height: self.height,
            });
        }
        crate::yuv::rgb_to_yuv420_into(frame, &mut self.yuv);
        match &mut self.backend {
            Backend::OpenH264 { encoder, muxer } => {
                let size = (self.width as usize, self.height as usize);
                encode_openh264(encoder, muxer, &self.yuv, size, self.frames, self.fps)?
            }
            Backend::Ffmpeg(stream) => stream.push(&self.yuv)?,
        }
        self.frames += 1;
        Ok(())
    }

    /// Frames pushed so far.
    pub fn frame_count(&self) -> usize {
        self.frames
    }

    /// Writes the index and returns the whole file: ftyp, moov, mdat.
    pub fn finish(self) -> Result<Vec<u8>, MediaError> {
        if self.frames == 0 {
            return Err(MediaError::NoFrames);
        }
        match self.backend {
            Backend::OpenH264 { mut muxer, .. } => {
                muxer
                    .finish_in_place()
                    .map_err(|e| MediaError::Muxer(e.to_string()))?;
                Ok(muxer.into_writer())
            }
            Backend::Ffmpeg(stream) => stream.finish(),
        }
    }
}

/// Sizes and rates every encoder here takes: even sides up to openh264's level 5.2.
fn check_geometry(width: u32, height: u32, fps: u32) -> Result<(), MediaError> {
    let bad_size = |rule| MediaError::BadVideoSize {
        width,
        height,
        rule,
    };
    if width == 0 || height == 0 {
        return Err(bad_size("both sides must be non-zero"));
    }
    if !width.is_multiple_of(2) || !height.is_multiple_of(2) {
        return Err(bad_size("width and height must be even (YUV 4:2:0)"));
    }
    if width.max(height) > MAX_LONG_SIDE || width.min(height) > MAX_SHORT_SIDE {
        return Err(bad_size(
            "the largest supported size is 3840x2160 or 2160x3840",
        ));
    }
    if !(1..=240).contains(&fps) {
        return Err(MediaError::BadFrameRate(fps));
    }
    Ok(())
}

fn open_openh264(width: u32, height: u32, fps: u32) -> Result<Backend, MediaError> {
    let bitrate = (width as f64 * height as f64 * fps as f64 * BITS_PER_PIXEL)
        .clamp(MIN_BITRATE as f64, MAX_BITRATE as f64) as u32;
    let config = EncoderConfig::new()
        .bitrate(BitRate::from_bps(bitrate))
        .max_frame_rate(FrameRate::from_hz(fps as f32))
        .rate_control_mode(RateControlMode::Quality)
        .qp(QpRange::new(QP, QP))
        // Adaptive quantisation raises the quantiser where motion and texture are (exactly
        // where the trails showed), and background detection skips blocks it thinks are
        // still: both cost the worst blocks 4-8 dB at the same size.
        .adaptive_quantization(false)
        .background_detection(false)
        // The defaults drop frames to hold the bitrate; every generated frame must survive.
        .skip_frames(false)
        // CameraVideoNonRealTime fails to initialise in openh264 0.9.
        .usage_type(UsageType::CameraVideoRealTime)
        .intra_frame_period(IntraFramePeriod::from_num_frames(fps * KEYFRAME_SECONDS))
        // The planes are BT.601 limited range (yuv.rs); say so, or players shift the colours.
        .vui(VuiConfig::bt601());
    let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
        .map_err(|e| MediaError::Encoder(e.to_string()))?;
    crate::trace::route_encoder_messages(&mut encoder);
    let muxer = MuxerBuilder::new(Vec::new())
        .video(VideoCodec::H264, width, height, fps as f64)
        .with_fast_start(true)
        .build()
        .map_err(|e| MediaError::Muxer(e.to_string()))?;
    Ok(Backend::OpenH264 {
        encoder: Box::new(encoder),
        muxer: Box::new(muxer),
    })
}

/// Encodes frame `index` (its planes) with openh264 and hands the access unit to the muxer.
fn encode_openh264(
    encoder: &mut Encoder,
    muxer: &mut Muxer<Vec<u8>>,
    yuv: &[u8],
    (width, height): (usize, usize),
    index: usize,
    fps: u32,
) -> Result<(), MediaError> {
    let (luma, chroma) = yuv.split_at(width * height);
    let (u, v) = chroma.split_at(width * height / 4);
    let planes = YUVSlices::new((luma, u, v), (width, height), (width, width / 2, width / 2));
    let stream = encoder
        .encode(&planes)
        .map_err(|e| MediaError::Encoder(e.to_string()))?;
    let frame_type = stream.frame_type();
    let annex_b = stream.to_vec();
    if annex_b.is_empty() || matches!(frame_type, FrameType::Skip | FrameType::Invalid) {
        return Err(MediaError::Encoder(format!(
            "frame {index} produced no picture ({frame_type:?})"
        )));
    }
    // Exact in the muxer's 90 kHz clock for every common rate (24 fps: 3750 ticks).
    let pts = index as f64 / fps as f64;
    muxer
        .write_video(pts, &annex_b, frame_type == FrameType::IDR)
        .map_err(|e| MediaError::Muxer(e.to_string()))
}
