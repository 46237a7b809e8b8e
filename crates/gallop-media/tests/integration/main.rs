//! Every integration test of this crate, in one binary: each test binary links the whole
//! dependency tree, so a binary per file cost CI gigabytes of disk and minutes of linking.

mod common;

mod decode_bombs;
mod decode_image;
mod ffmpeg_encoder;
mod interpolate;
mod mp4_roundtrip;
mod resize;
mod watermark;
