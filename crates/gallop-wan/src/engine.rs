//! `WanEngine`: the Wan pipelines behind `gallop_engine::Engine`, read as a recipe: [`plan`]
//! maps a request onto the checkpoint (size, frames, windows, guidance, noise), then for each
//! window the pipeline denoises and [`emit`] decodes the latents and streams frames at the
//! output's size and rate.
//!
//! Frames come from the duration at the family's native fps (as 4n + 1). A duration beyond the
//! window the checkpoint was trained on is made as overlapping windows ([`crate::windows`]),
//! each continuing the end of the one before. Frames are interpolated to the output's 24 fps
//! ([`crate::output`]); the size is the geometry table's, scaled down to the family's native
//! area and rounded to the checkpoint's multiples, then resized/cropped to the exact output
//! size after decoding; the seed drives the initial noise of every window.
//!
//! [`plan`]: WanEngine::plan
//! [`emit`]: WanEngine::emit

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use gallop_api::Geometry;
use gallop_engine::{Engine, EngineError, EngineInfo, EngineInput, RunContext, Task, WindowPlan};
use image::RgbImage;

use crate::error::{Context, Error, ensure};
use crate::model_dir::{ModelIndex, PipelineClass};
use crate::output::Output;
use crate::pipeline::{
    DEFAULT_NEGATIVE_PROMPT, GenerateArgs, WanPipeline, gaussian_noise, image_to_tensor,
};
use crate::settings::{ComputeDevice, WanDebug, WanSettings, takes_guidance_2};
use crate::windows::{Windows, window_seed};

/// What a checkpoint family was trained for: its native frame rate and largest native frame
/// area, and its published sampling recipe. Read from the checkpoint's own configs:
///
/// | the configs say | family | fps | native size | recipe |
/// |---|---|---|---|---|
/// | VAE `z_dim` 48, or `expand_timesteps` in model_index.json | Wan2.2-TI2V-5B | 24 | 1280x704 | 50 steps, guidance 5.0 |
/// | `boundary_ratio` and a `transformer_2` in model_index.json | Wan2.2-A14B | 16 | 1280x720 | 40 steps, guidance 3.5 for both experts |
/// | otherwise, transformer width (heads x head dim) 1536 | Wan2.1 1.3B | 16 | 832x480 | 50 steps, guidance 5.0 |
/// | otherwise | Wan2.1 14B | 16 | 1280x720 | 50 steps, guidance 5.0 |
///
/// Wan2.1's configs name no resolution, so there (and only there) the transformer's width
/// tells the 480P 1.3B models from the 720P 14B ones. The A14B recipe is Wan-AI's i2v_A14B
/// config (`sample_guide_scale = (3.5, 3.5)`, `sample_steps = 40`); the others are diffusers'
/// examples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Family {
    pub fps: u32,
    pub max_area: usize,
    pub steps: usize,
    pub guidance: f64,
    /// The low-noise expert's scale, for two-expert checkpoints only.
    pub guidance_2: Option<f64>,
}

impl Family {
    /// Frames of the window the family was trained on: 5 s at its native rate (81 at 16 fps,
    /// 121 for TI2V-5B at 24 fps). Longer videos are made as chained windows.
    pub fn trained_frames(&self) -> usize {
        5 * self.fps as usize + 1
    }

    pub fn of(pipeline: &WanPipeline) -> Self {
        let index = pipeline.index();
        let recipe = |max_area, fps| Self {
            fps,
            max_area,
            steps: 50,
            guidance: 5.0,
            guidance_2: None,
        };
        if pipeline.vae().config().z_dim == 48 || index.expand_timesteps {
            recipe(1280 * 704, 24)
        } else if takes_guidance_2(index) {
            Self {
                steps: 40,
                guidance: 3.5,
                guidance_2: Some(3.5),
                ..recipe(1280 * 720, 16)
            }
        } else if pipeline.transformer().config().inner_dim() <= 1536 {
            recipe(832 * 480, 16)
        } else {
            recipe(1280 * 720, 16)
        }
    }
}

/// The task a pipeline class does: image-to-video from `WanImageToVideoPipeline`,
/// reference-to-video from `WanVACEPipeline`; a text-only `WanPipeline` does neither (both
/// tasks take images).
pub fn task_of(class: PipelineClass) -> Option<Task> {
    match class {
        PipelineClass::ImageToVideo => Some(Task::ImageToVideo),
        PipelineClass::Vace => Some(Task::ReferenceToVideo),
        PipelineClass::TextToVideo => None,
    }
}

/// The pipeline class that does a task.
pub fn class_for(task: Task) -> PipelineClass {
    match task {
        Task::ImageToVideo => PipelineClass::ImageToVideo,
        Task::ReferenceToVideo => PipelineClass::Vace,
    }
}

/// `model_index.json`'s `_class_name` of a pipeline class, for messages.
pub fn class_name(class: PipelineClass) -> &'static str {
    match class {
        PipelineClass::TextToVideo => "WanPipeline",
        PipelineClass::ImageToVideo => "WanImageToVideoPipeline",
        PipelineClass::Vace => "WanVACEPipeline",
    }
}

/// Settings checked against their checkpoint's `model_index.json`, with the device opened: what
/// an engine is built from. Only [`WanSettings::checked`] makes one, so each setting is checked
/// once, before any weights load.
#[derive(Debug, Clone)]
pub struct CheckedSettings {
    pub settings: WanSettings,
    pub index: ModelIndex,
    pub device: Device,
}

impl WanSettings {
    /// Reads the checkpoint's `model_index.json`, checks every setting against it and opens the
    /// device. Errors name the setting ([`Error::Setting`]) or the checkpoint.
    pub fn checked(self) -> crate::Result<CheckedSettings> {
        let dir = self
            .model_dir
            .as_deref()
            .context("model_dir: no checkpoint given")?;
        let index = ModelIndex::read(dir)?;
        self.check(&index)?;
        let device = self.open_device()?;
        Ok(CheckedSettings {
            settings: self,
            index,
            device,
        })
    }
}

impl CheckedSettings {
    /// Loads the checkpoint's pipeline on the device, in the settings' dtype.
    pub fn load_pipeline(&self) -> crate::Result<Arc<WanPipeline>> {
        let dtype = self.settings.dtype.dtype();
        Ok(Arc::new(WanPipeline::load_with(
            &self.index.dir,
            dtype,
            &self.settings.changes(),
            &self.device,
        )?))
    }
}

pub struct WanEngine {
    pipeline: Arc<WanPipeline>,
    checkpoint: String,
    settings: WanSettings,
    debug: WanDebug,
    family: Family,
}

/// Frames consecutive windows share: two latent frames' worth plus the first, so a VACE window
/// keeps its first two latent frames whole under diffusers' nearest-exact mask, and the
/// cross-fade spans over half a second at 16 fps.
fn window_overlap(temporal: usize) -> usize {
    2 * temporal + 1
}

/// One run's mapping of a request onto the checkpoint.
struct Plan {
    width: usize,
    height: usize,
    windows: Windows,
    /// The rate frames are generated at (the output's when the debug frame count is exact).
    native_fps: u32,
    /// The first window's arguments; later windows change the noise and the conditioning.
    args: GenerateArgs,
}

impl WanEngine {
    /// Checks the settings, then loads their checkpoint on their device, in their dtype.
    pub fn load(settings: WanSettings) -> crate::Result<Self> {
        let checked = settings.checked()?;
        Self::new(checked.load_pipeline()?, checked)
    }

    /// An engine over an already loaded pipeline, so several settings can share one
    /// checkpoint's weights. The pipeline must be the one `checked` names, on its device.
    pub fn new(pipeline: Arc<WanPipeline>, checked: CheckedSettings) -> crate::Result<Self> {
        let settings = checked.settings;
        let on_device = match settings.device {
            ComputeDevice::Cpu => pipeline.device().is_cpu(),
            ComputeDevice::Cuda(n) => {
                pipeline.device().location() == candle_core::DeviceLocation::Cuda { gpu_id: n }
            }
        };
        ensure!(
            on_device,
            "device: the pipeline was loaded on {:?}, the settings ask for {}",
            pipeline.device().location(),
            settings.device
        );
        Ok(Self {
            checkpoint: pipeline.index().dir.display().to_string(),
            family: Family::of(&pipeline),
            pipeline,
            settings,
            debug: WanDebug::default(),
        })
    }

    /// The same engine with debug overrides (exact size and frames, initial noise, dumps).
    pub fn with_debug(self, debug: WanDebug) -> Self {
        Self { debug, ..self }
    }

    /// Where and in which float type the pipeline computes, for reports: `cpu, f32`,
    /// `cpu, bf16 weights (f32 compute)` ([`WanSettings::compute`]).
    pub fn compute(&self) -> String {
        self.settings.compute()
    }

    /// The task this checkpoint does, if any.
    pub fn task(&self) -> Option<Task> {
        task_of(self.pipeline.index().class)
    }

    pub fn family(&self) -> Family {
        self.family
    }

    /// The guidance scales a run uses: (guidance, the low-noise expert's for two-expert
    /// checkpoints). A given `guidance_2` wins; else a given `guidance` applies to both experts
    /// (diffusers' rule); else the family's recipe.
    pub fn guidance_scales(&self) -> (f64, Option<f64>) {
        let guidance = self
            .settings
            .guidance_setting()
            .unwrap_or(self.family.guidance);
        let guidance_2 = self.family.guidance_2.map(|recipe| {
            self.settings
                .guidance_2
                .or(self.settings.guidance_setting())
                .unwrap_or(recipe)
        });
        (guidance, guidance_2)
    }

    /// Denoising steps a run takes.
    pub fn steps(&self) -> usize {
        self.settings.steps_setting().unwrap_or(self.family.steps)
    }

    /// How runs sample, for reports: `sampling: 4 steps, guidance 1 (no CFG), euler, shift 5,
    /// timesteps 1000/750/500/250`, then one line per LoRA merged at load.
    pub fn summary(&self) -> Vec<String> {
        let (guidance, guidance_2) = self.guidance_scales();
        let mut line = format!("sampling: {} steps, guidance {guidance}", self.steps());
        if let Some(g2) = guidance_2 {
            line.push_str(&format!("/{g2}"));
        }
        if guidance <= 1.0 {
            line.push_str(" (no CFG)");
        }
        let scheduler = self.pipeline.scheduler();
        line.push_str(&format!(
            ", {}, shift {}",
            scheduler.kind(),
            scheduler.shift()
        ));
        if let Some(timesteps) = &self.settings.schedule().timesteps {
            let list: Vec<String> = timesteps.iter().map(f64::to_string).collect();
            line.push_str(&format!(", timesteps {}", list.join("/")));
        }
        let mut lines = vec![line];
        lines.extend(self.pipeline.lora_summaries());
        lines
    }

    pub fn pipeline(&self) -> &WanPipeline {
        &self.pipeline
    }

    /// The model size a run generates at, for an output of `width` x `height`.
    pub fn generation_size(&self, width: u32, height: u32) -> (usize, usize) {
        if let Some(size) = self.debug.size() {
            return size;
        }
        let (mh, mw) = self.pipeline.size_multiple();
        let area = (width as f64) * (height as f64);
        let scale = (self.family.max_area as f64 / area).sqrt().min(1.0);
        let round = |v: f64, m: usize| ((v / m as f64).round() as usize).max(1) * m;
        (
            round(width as f64 * scale, mw),
            round(height as f64 * scale, mh),
        )
    }

    /// Frames generated for `out_frames` at `out_fps`: enough native-fps frames to cover the
    /// same time, as 4n + 1.
    pub fn generation_frames(&self, out_frames: u32, out_fps: u32) -> usize {
        if let Some(n) = self.debug.num_frames {
            return n as usize;
        }
        let t = self.pipeline.temporal_factor();
        let native = (out_frames as f64 * self.family.fps as f64 / out_fps as f64).ceil() as usize;
        native.saturating_sub(1).div_ceil(t) * t + 1
    }

    /// The windows a video of `geometry` is made in: one when it fits the trained window, else
    /// equal windows sharing [`window_overlap`] frames. What a run does, for reports and tests.
    pub fn windows(&self, geometry: Geometry) -> Windows {
        let t = self.pipeline.temporal_factor();
        let needed = self.generation_frames(geometry.frames, geometry.fps);
        Windows::plan(needed, self.family.trained_frames(), window_overlap(t), t)
    }

    /// The whole run: plan, then per window denoise (one progress unit a step) and emit (one
    /// unit for decoding).
    fn run(&self, input: &EngineInput<'_>, ctx: &mut RunContext<'_>) -> Result<(), EngineError> {
        let plan = self.plan(input)?;
        let windows = plan.windows;
        ctx.plan(windows.count as u32 * (plan.args.steps as u32 + 1));
        let mut output =
            Output::new(windows, plan.native_fps, input.geometry).map_err(engine_error)?;
        let mut dump = Vec::new();
        for k in 0..windows.count {
            let args = self
                .window_args(&plan, k, output.tail(), input.seed)
                .map_err(engine_error)?;
            let latents = self.pipeline.denoise(&args, ctx).map_err(engine_error)?;
            self.emit(&latents, &mut output, &mut dump, ctx)
                .map_err(engine_error)?;
            ctx.advance();
        }
        output.finish().map_err(engine_error)?;
        self.dump_frames(dump).map_err(engine_error)
    }

    /// Maps the request onto the checkpoint. Inputs the checkpoint cannot take are
    /// [`EngineError::BadInput`], naming the field; the rest fail as the engine's own fault.
    fn plan(&self, input: &EngineInput<'_>) -> Result<Plan, EngineError> {
        let task = Task::of(input.request.model);
        if self.task() != Some(task) {
            let class = self.pipeline.index().class;
            return Err(EngineError::bad_input(
                "/model",
                format!(
                    "checkpoint {} is a {} ({class:?}) and cannot serve {}",
                    self.checkpoint,
                    class_name(class),
                    input.request.model
                ),
            ));
        }
        let (image, references) = self.conditioning_images(task, input)?;
        self.plan_args(input, image, references)
            .map_err(engine_error)
    }

    /// i2v: the first frame (cropped to the generation size later); r2v: the references as
    /// given (the pipeline fits each on a white canvas).
    fn conditioning_images<'a>(
        &self,
        task: Task,
        input: &EngineInput<'a>,
    ) -> Result<(Option<&'a RgbImage>, &'a [RgbImage]), EngineError> {
        match task {
            Task::ReferenceToVideo if input.images.is_empty() => Err(EngineError::bad_input(
                "/input/images",
                "reference-to-video needs at least one reference image",
            )),
            Task::ReferenceToVideo => Ok((None, input.images)),
            Task::ImageToVideo => match input.images.first() {
                Some(first) => Ok((Some(first), &[])),
                None => Err(EngineError::bad_input(
                    "/input/image",
                    "image-to-video needs the first frame",
                )),
            },
        }
    }

    fn plan_args(
        &self,
        input: &EngineInput<'_>,
        image: Option<&RgbImage>,
        references: &[RgbImage],
    ) -> crate::Result<Plan> {
        let geometry = input.geometry;
        let (width, height) = self.generation_size(geometry.width, geometry.height);
        let windows = self.windows(geometry);
        let num_frames = windows.length;
        let native_fps = match self.debug.num_frames {
            Some(n) => {
                ensure!(
                    n == geometry.frames,
                    "--num-frames {n} must equal the output's {} frames",
                    geometry.frames
                );
                geometry.fps
            }
            None => self.family.fps,
        };
        ensure!(
            windows.count == 1 || self.debug.init_noise.is_none(),
            "--init-noise holds one window's noise, but {} frames take {} windows",
            geometry.frames,
            windows.count
        );
        self.pipeline.check_size(height, width, num_frames)?;
        let device = self.pipeline.device();
        let image = image
            .map(|first| gallop_media::fit_and_crop(first, width as u32, height as u32))
            .map(|first| image_to_tensor(&first, device))
            .transpose()?;
        let reference_images = references
            .iter()
            .map(|img| image_to_tensor(img, device))
            .collect::<crate::Result<Vec<_>>>()?;
        let shape = self
            .pipeline
            .latent_shape(height, width, num_frames, references.len());
        let latents = match &self.debug.init_noise {
            Some(path) => read_noise(path, &shape)?.to_device(device)?,
            None => gaussian_noise(&shape, input.seed as u64, device)?,
        };
        let (guidance, guidance_2) = self.guidance_scales();
        let args = GenerateArgs {
            prompt_embeds: self.pipeline.encode_prompt(&input.request.prompt)?,
            negative_prompt_embeds: self.negative_embeds(input, guidance)?,
            image,
            height,
            width,
            num_frames,
            steps: self.steps(),
            guidance_scale: guidance,
            guidance_scale_2: guidance_2,
            latents,
            image_embeds: self.image_embeds(input)?,
            reference_images,
            conditioning_scale: self.settings.conditioning_scale.unwrap_or(1.0),
            leading_frames: None,
        };
        Ok(Plan {
            width,
            height,
            windows,
            native_fps,
            args,
        })
    }

    /// Window `k`'s arguments: its own noise, and for windows after the first the end of the
    /// one before (`tail`) as the strongest condition the checkpoint takes. VACE continues the
    /// tail's frames as its video input (video extension); image-to-video checkpoints start
    /// from the tail's first frame, where this window's frames begin. Wan2.1-I2V's CLIP tokens
    /// stay the run's first frame, holding the subject to it.
    fn window_args(
        &self,
        plan: &Plan,
        k: usize,
        tail: &[RgbImage],
        seed: u32,
    ) -> crate::Result<GenerateArgs> {
        if k == 0 {
            return Ok(plan.args.clone());
        }
        let device = self.pipeline.device();
        let mut args = plan.args.clone();
        let shape = self.pipeline.latent_shape(
            plan.height,
            plan.width,
            plan.windows.length,
            args.reference_images.len(),
        );
        args.latents = gaussian_noise(&shape, window_seed(seed, k), device)?;
        ensure!(
            tail.len() == plan.windows.overlap,
            "window {k} needs the {} frames the window before ends with, got {}",
            plan.windows.overlap,
            tail.len()
        );
        if self.pipeline.index().class == PipelineClass::Vace {
            let frames = tail
                .iter()
                .map(|frame| Ok(image_to_tensor(frame, device)?.unsqueeze(2)?))
                .collect::<crate::Result<Vec<_>>>()?;
            args.leading_frames = Some(Tensor::cat(&frames, 2)?);
        } else if args.image.is_some() {
            args.image = Some(image_to_tensor(&tail[0], device)?);
        }
        Ok(args)
    }

    /// The negative prompt's embeddings when guidance is on: the request's, else the family's.
    fn negative_embeds(
        &self,
        input: &EngineInput<'_>,
        guidance: f64,
    ) -> crate::Result<Option<Tensor>> {
        if guidance <= 1.0 {
            return Ok(None);
        }
        let negative = input.request.negative_prompt.as_deref();
        let negative = negative.unwrap_or(DEFAULT_NEGATIVE_PROMPT);
        Ok(Some(self.pipeline.encode_prompt(negative)?))
    }

    /// Wan2.1-I2V: the first frame's CLIP tokens (other checkpoints have no image encoder).
    fn image_embeds(&self, input: &EngineInput<'_>) -> crate::Result<Option<Tensor>> {
        match input.images.first() {
            Some(first) if self.pipeline.index().class == PipelineClass::ImageToVideo => {
                self.pipeline.encode_image(first)
            }
            _ => Ok(None),
        }
    }

    /// Decodes one latent frame at a time and sends each output frame as soon as the frames it
    /// is made from are decoded (joined, interpolated to the output's rate, fitted to its size).
    fn emit(
        &self,
        latents: &Tensor,
        output: &mut Output,
        dump: &mut Vec<Tensor>,
        ctx: &mut RunContext<'_>,
    ) -> crate::Result<()> {
        let mut sink = |frames: Tensor| -> crate::Result<()> {
            ctx.check_cancel()?;
            // The encoder takes 8-bit frames from host memory (no-ops for CPU f32).
            let frames = frames.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
            if self.debug.dump_frames.is_some() {
                dump.push(frames.clone());
            }
            for i in 0..frames.dim(0)? {
                for frame in output.push(to_rgb(&frames.get(i)?)?)? {
                    ctx.emit(frame)?;
                }
            }
            Ok(())
        };
        self.pipeline.decode_streaming(latents, &mut sink)?;
        output.end_window()
    }

    /// `--dump-frames`: every window's decoded frames, before joining.
    fn dump_frames(&self, dump: Vec<Tensor>) -> crate::Result<()> {
        let Some(path) = &self.debug.dump_frames else {
            return Ok(());
        };
        let frames = Tensor::cat(&dump, 0)?;
        candle_core::safetensors::save(&[("frames", frames)].into_iter().collect(), path)
            .with_context(|| format!("--dump-frames: cannot write {}", path.display()))
    }
}

/// A failure of the pipeline as the caller acts on it: a cancel or a sink failure is the
/// caller's own; running out of device memory will happen again; the rest is the engine's fault.
fn engine_error(e: Error) -> EngineError {
    match e.root() {
        Error::Cancelled => EngineError::Cancelled,
        Error::Sink(message) => EngineError::Sink(message.clone()),
        Error::Tensor(t) if t.to_string().to_lowercase().contains("out of memory") => {
            EngineError::ResourceExhausted(e.to_string())
        }
        _ => EngineError::Internal(e.to_string()),
    }
}

impl Engine for WanEngine {
    fn info(&self) -> EngineInfo {
        EngineInfo {
            engine: "wan".to_string(),
            checkpoint: Some(self.checkpoint.clone()),
            compute: Some(self.compute()),
            windows: None,
        }
    }

    fn run_info(&self, geometry: Geometry) -> EngineInfo {
        let Windows {
            length,
            overlap,
            count,
        } = self.windows(geometry);
        EngineInfo {
            windows: Some(WindowPlan {
                count,
                frames: length,
                overlap,
            }),
            ..self.info()
        }
    }

    fn generate(
        &self,
        input: &EngineInput<'_>,
        ctx: &mut RunContext<'_>,
    ) -> Result<(), EngineError> {
        let result = self.run(input, ctx);
        // The heap keeps freed buffers for reuse during a run (`memory::reuse_freed_memory`);
        // hand them back once the job is done.
        crate::memory::release_freed_memory();
        result
    }
}

/// `[H, W, 3]` in [0, 1] -> 8-bit RGB, rounded as diffusers' `numpy_to_pil` does.
fn to_rgb(frame: &Tensor) -> crate::Result<RgbImage> {
    let (h, w, _) = frame.dims3()?;
    let data: Vec<u8> = frame
        .flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
        .collect();
    RgbImage::from_raw(w as u32, h as u32, data).context("frame buffer size")
}

/// The initial noise from `--init-noise`: tensor `latents`, the shape `prepare_latents` makes.
fn read_noise(path: &Path, shape: &[usize; 5]) -> crate::Result<Tensor> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("--init-noise: cannot read {}", path.display()))?;
    let latents = tensors
        .get("latents")
        .with_context(|| format!("--init-noise: {} has no tensor `latents`", path.display()))?;
    ensure!(
        latents.dims() == shape,
        "--init-noise: `latents` must be shaped {shape:?} for this size and frame count, got {:?}",
        latents.dims()
    );
    Ok(latents.to_dtype(DType::F32)?)
}
