//! Image decoding with limits, EXIF orientation, fit-and-crop, the watermark, H.264 in MP4.
//!
//! `image::RgbImage` is the currency: decoded inputs, engine frames and what the encoder
//! takes are all 8-bit RGB.

mod decode;
mod encode;
mod error;
mod ffmpeg;
mod interpolate;
mod probe;
mod resize;
mod trace;
mod watermark;
mod webp_check;
mod yuv;

pub use decode::{DecodeLimits, decode_image};
pub use encode::{Mp4Encoder, VideoEncoder};
pub use error::MediaError;
pub use ffmpeg::Ffmpeg;
pub use interpolate::{FrameRateConverter, MotionPair, interpolate};
pub use probe::{DecodedVideo, decode_mp4, psnr, top_level_boxes, worst_block_psnr};
pub use resize::{fit_and_crop, fit_on_canvas};
pub use watermark::{DEFAULT_WATERMARK, Watermark};
pub use yuv::{rgb_to_yuv420, yuv420_to_rgb};

/// Re-exported so callers name the same `image` version as this crate.
pub use image;
