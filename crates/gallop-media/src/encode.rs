//! RGB frames -> H.264 (openh264, Baseline) -> MP4 with moov before mdat (muxide).

use image::RgbImage;
use muxide::api::{Muxer, MuxerBuilder, VideoCodec};
use openh264::OpenH264API;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, RateControlMode,
    UsageType, VuiConfig,
};
use openh264::formats::{RgbSliceU8, YUVBuffer};

use crate::MediaError;

/// Bits spent per pixel per frame: about 5.5 Mbps at 1280x720 and 12 Mbps at 1920x1080
/// (24 fps), enough for Baseline profile to keep generated detail.
const BITS_PER_PIXEL: f64 = 0.25;
/// Small test videos still get enough bits to be judged by PSNR.
const MIN_BITRATE: u32 = 500_000;
/// A keyframe every this many seconds, so players can seek.
const KEYFRAME_SECONDS: u32 = 2;
/// openh264 supports up to level 5.2: 3840x2160 in either orientation.
const MAX_LONG_SIDE: u32 = 3840;
const MAX_SHORT_SIDE: u32 = 2160;

/// Streams frames into an in-memory MP4. Same frames in, byte-identical file out.
pub struct Mp4Encoder {
    encoder: Encoder,
    muxer: Muxer<Vec<u8>>,
    yuv: YUVBuffer,
    width: u32,
    height: u32,
    fps: u32,
    frames: usize,
}

impl Mp4Encoder {
    /// Opens an encoder for `width` x `height` px (both even) at `fps` frames per second.
    pub fn new(width: u32, height: u32, fps: u32) -> Result<Self, MediaError> {
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

        let bitrate =
            ((width as f64 * height as f64 * fps as f64 * BITS_PER_PIXEL) as u32).max(MIN_BITRATE);
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(bitrate))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .rate_control_mode(RateControlMode::Bitrate)
            // The defaults drop frames to hold the bitrate; every generated frame must survive.
            .skip_frames(false)
            // CameraVideoNonRealTime fails to initialise in openh264 0.9.
            .usage_type(UsageType::CameraVideoRealTime)
            .intra_frame_period(IntraFramePeriod::from_num_frames(fps * KEYFRAME_SECONDS))
            // openh264's RGB->YUV is BT.601 limited range; say so, or players shift the colours.
            .vui(VuiConfig::bt601());
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| MediaError::Encoder(e.to_string()))?;
        let muxer = MuxerBuilder::new(Vec::new())
            .video(VideoCodec::H264, width, height, fps as f64)
            .with_fast_start(true)
            .build()
            .map_err(|e| MediaError::Muxer(e.to_string()))?;
        Ok(Self {
            encoder,
            muxer,
            yuv: YUVBuffer::new(width as usize, height as usize),
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
        let size = (self.width as usize, self.height as usize);
        self.yuv.read_rgb8(RgbSliceU8::new(frame.as_raw(), size));
        let stream = self
            .encoder
            .encode(&self.yuv)
            .map_err(|e| MediaError::Encoder(e.to_string()))?;
        let frame_type = stream.frame_type();
        let annex_b = stream.to_vec();
        if annex_b.is_empty() || matches!(frame_type, FrameType::Skip | FrameType::Invalid) {
            return Err(MediaError::Encoder(format!(
                "frame {} produced no picture ({frame_type:?})",
                self.frames
            )));
        }
        // Exact in the muxer's 90 kHz clock for every common rate (24 fps: 3750 ticks).
        let pts = self.frames as f64 / self.fps as f64;
        self.muxer
            .write_video(pts, &annex_b, frame_type == FrameType::IDR)
            .map_err(|e| MediaError::Muxer(e.to_string()))?;
        self.frames += 1;
        Ok(())
    }

    /// Frames pushed so far.
    pub fn frame_count(&self) -> usize {
        self.frames
    }

    /// Writes the index and returns the whole file: ftyp, moov, mdat.
    pub fn finish(mut self) -> Result<Vec<u8>, MediaError> {
        if self.frames == 0 {
            return Err(MediaError::NoFrames);
        }
        self.muxer
            .finish_in_place()
            .map_err(|e| MediaError::Muxer(e.to_string()))?;
        Ok(self.muxer.into_writer())
    }
}
