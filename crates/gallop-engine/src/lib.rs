//! The `Engine` trait every generator implements, and the motion-preview engine that needs no
//! weights. An engine turns a validated request plus decoded images into frames;
//! [`render::render_video`] wraps any engine into the whole run (watermark, H.264 MP4) that the
//! CLI and the server's worker share.

pub mod camera;
pub mod preview;
pub mod render;
mod warp;

pub use preview::PreviewEngine;
pub use render::{RenderHooks, RenderOptions, RenderOutput, render_video};

use std::sync::atomic::{AtomicBool, Ordering};

use gallop_api::{GenerationRequest, Geometry};
use image::RgbImage;
use serde::Serialize;

/// Which engine served a run. Reported everywhere an engine is reported, so the preview is
/// never mistaken for the neural model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EngineInfo {
    /// `preview` or `wan`.
    pub engine: String,
    /// The checkpoint that served (a directory or hub id), None for the preview.
    pub checkpoint: Option<String>,
    /// Where and in what precision the checkpoint computes (`cpu, f32`,
    /// `cpu, bf16 weights (f32 compute)`, `cuda:0, bf16`), None for the preview.
    pub compute: Option<String>,
}

/// What an engine is given for one run.
pub struct EngineInput<'a> {
    pub request: &'a GenerationRequest,
    /// Decoded input images in request order, EXIF orientation applied, not yet resized.
    pub images: &'a [RgbImage],
    /// The exact output size and frame count.
    pub geometry: Geometry,
    /// The seed in force (picked by the caller when the request had none).
    pub seed: u32,
}

/// Progress of a run: `step` of `total` units of work done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub step: u32,
    pub total: u32,
}

/// The caller's side of a run: progress reports, a cancel flag, and where frames go.
pub struct RunContext<'a> {
    pub progress: &'a mut dyn FnMut(Progress),
    pub cancel: &'a AtomicBool,
    /// Receives frames in order, exactly `geometry.frames` of `geometry` size. Streaming them out
    /// lets the encoder run while the engine works and keeps 1080P x 15 s out of memory.
    pub sink: &'a mut dyn FnMut(RgbImage) -> Result<(), String>,
}

impl RunContext<'_> {
    pub fn check_cancel(&self) -> Result<(), EngineError> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(EngineError::Cancelled)
        } else {
            Ok(())
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cancelled")]
    Cancelled,
    #[error("frame sink failed: {0}")]
    Sink(String),
    #[error("{0}")]
    Failed(String),
}

/// A generator of frames. Implementations must send exactly `input.geometry.frames` frames of
/// `input.geometry` size to `ctx.sink`, report progress, and return [`EngineError::Cancelled`]
/// soon after `ctx.cancel` is set. The same input and seed must give the same frames.
pub trait Engine: Send + Sync {
    /// Which engine this is, reported with every result.
    fn info(&self) -> EngineInfo;
    fn generate(
        &self,
        input: &EngineInput<'_>,
        ctx: &mut RunContext<'_>,
    ) -> Result<(), EngineError>;
}
