//! The `Engine` trait every generator implements, and the motion-preview engine that needs no
//! weights. An engine turns a validated request plus decoded images into frames;
//! [`render::render_video`] wraps any engine into the whole run (watermark, H.264 MP4) that the
//! CLI and the server's worker share.

pub mod camera;
pub mod preview;
pub mod render;
mod warp;

pub use preview::PreviewEngine;
pub use render::{RenderOptions, RenderOutput, render_video};

use std::sync::atomic::{AtomicBool, Ordering};

use gallop_api::{GenerationRequest, Geometry, ModelId};
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
    /// How a run is made in time, for engines that generate in windows (see
    /// [`Engine::run_info`]); None where the engine makes every frame in one pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub windows: Option<WindowPlan>,
}

/// The windows a video is generated in, one after another: `count` windows of `frames` frames
/// at the checkpoint's own rate, each sharing `overlap` frames with the one before. One window
/// (overlap 0) when the video fits the length the checkpoint was trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WindowPlan {
    pub count: usize,
    pub frames: usize,
    pub overlap: usize,
}

/// What an engine makes: the job a model id names, which is all an engine needs to know of ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Task {
    /// One image as the first frame, and a prompt.
    ImageToVideo,
    /// 1-9 reference images of characters and scenes, and a prompt that choreographs them.
    ReferenceToVideo,
}

impl Task {
    /// The task a served model id does.
    pub fn of(model: ModelId) -> Self {
        match model {
            ModelId::HhI2v => Self::ImageToVideo,
            ModelId::HhR2v => Self::ReferenceToVideo,
        }
    }
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

/// Receives frames in order, exactly `geometry.frames` of `geometry` size. Streaming them out
/// lets the encoder run while the engine works and keeps 1080P x 15 s out of memory.
pub type FrameSink<'a> = &'a mut dyn FnMut(RgbImage) -> Result<(), String>;

/// A frame sink for runs whose frames nobody looks at (the encoding happens elsewhere).
pub fn discard_frames(_: RgbImage) -> Result<(), String> {
    Ok(())
}

/// The caller's side of a run, from the engine trait down to a pipeline's step loop: progress
/// reports, a cancel flag read between units of work, and where frames go.
///
/// Progress is counted in units the engine plans ([`RunContext::plan`]); whoever does a unit
/// (a denoising step deep in a pipeline, a decoded frame) calls [`RunContext::advance`], so the
/// code doing the work need not know the whole run's total.
pub struct RunContext<'a> {
    progress: &'a mut dyn FnMut(Progress),
    cancel: &'a AtomicBool,
    sink: FrameSink<'a>,
    done: u32,
    total: u32,
}

impl<'a> RunContext<'a> {
    pub fn new(
        progress: &'a mut dyn FnMut(Progress),
        cancel: &'a AtomicBool,
        sink: FrameSink<'a>,
    ) -> Self {
        Self {
            progress,
            cancel,
            sink,
            done: 0,
            total: 0,
        }
    }

    /// The run will take `total` units of work; none is done yet. Reports nothing: the first
    /// report is the first unit done.
    pub fn plan(&mut self, total: u32) {
        self.done = 0;
        self.total = total;
    }

    /// One unit of work is done.
    pub fn advance(&mut self) {
        self.done += 1;
        let total = self.total.max(self.done);
        (self.progress)(Progress {
            step: self.done,
            total,
        });
    }

    /// Every planned unit is done (units a run skipped included).
    pub fn finish(&mut self) {
        self.done = self.total;
        (self.progress)(Progress {
            step: self.total,
            total: self.total,
        });
    }

    /// [`EngineError::Cancelled`] once the caller has asked the run to stop.
    pub fn check_cancel(&self) -> Result<(), EngineError> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(EngineError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Sends the next frame to the caller.
    pub fn emit(&mut self, frame: RgbImage) -> Result<(), EngineError> {
        (self.sink)(frame).map_err(EngineError::Sink)
    }
}

/// What went wrong in a run, by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The input breaks a rule of this engine: final, never retried. `field` is the request
    /// field at fault (`/input/images/0`), or the setting.
    #[error("{field}: {message}")]
    BadInput { field: String, message: String },
    /// The caller's cancel flag was set.
    #[error("cancelled")]
    Cancelled,
    /// The caller's frame sink refused a frame (a full disk, a failed encoder).
    #[error("frame sink failed: {0}")]
    Sink(String),
    /// Memory or another resource ran out; the same run on the same machine would again.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// A failure that may pass (a device reset, a dropped connection): worth retrying.
    #[error("{0}")]
    Transient(String),
    /// A fault in the engine or the machine.
    #[error("{0}")]
    Internal(String),
}

impl EngineError {
    pub fn bad_input(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadInput {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A generator of frames. Implementations must send exactly `input.geometry.frames` frames of
/// `input.geometry` size to `ctx.sink`, report progress, and return [`EngineError::Cancelled`]
/// soon after `ctx.cancel` is set. The same input and seed must give the same frames.
pub trait Engine: Send + Sync {
    /// Which engine this is, reported with every result.
    fn info(&self) -> EngineInfo;
    /// What [`Engine::info`] says plus how a run of `geometry` will be made (the windows of a
    /// long video), reported with that run's result.
    fn run_info(&self, geometry: Geometry) -> EngineInfo {
        let _ = geometry;
        self.info()
    }
    fn generate(
        &self,
        input: &EngineInput<'_>,
        ctx: &mut RunContext<'_>,
    ) -> Result<(), EngineError>;
}
