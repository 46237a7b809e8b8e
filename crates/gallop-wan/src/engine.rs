//! `WanEngine`: the Wan pipelines behind `gallop_engine::Engine`. Maps the seeds' parameters onto
//! a checkpoint: frames from the duration at the model's native fps (as 4n + 1), resampled to the
//! output's 24 fps; size from the geometry table scaled to the model's native area and rounded to
//! its multiples, then resized/cropped to the exact output size after decoding; the seed drives
//! the initial noise.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{Context, ensure};
use candle_core::{DType, Device, Tensor};
use gallop_api::ModelId;
use gallop_engine::{Engine, EngineError, EngineInfo, EngineInput, Progress, RunContext};
use image::RgbImage;

use crate::model_dir::{ModelIndex, PipelineClass};
use crate::pipeline::{
    Cancelled, DEFAULT_NEGATIVE_PROMPT, GenerateArgs, StepHooks, WanPipeline, gaussian_noise,
    image_to_tensor,
};

/// Debug and test overrides (`gallop generate --steps/--guidance/--width/...`); `steps`,
/// `guidance` and `guidance_2` are also per-model settings of `gallop serve --config`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WanSettings {
    pub steps: Option<usize>,
    pub guidance: Option<f64>,
    /// Two-expert (A14B) checkpoints: the low-noise expert's guidance scale. Defaults to
    /// `guidance` when that is given (diffusers' rule), else to the family's recipe.
    pub guidance_2: Option<f64>,
    /// Generate at exactly (width, height) instead of the geometry table's size.
    pub size: Option<(usize, usize)>,
    /// Generate exactly this many frames (4n + 1) and send them 1:1, no fps resampling.
    pub num_frames: Option<usize>,
    /// A safetensors file whose tensor `latents` is the initial noise.
    pub init_noise: Option<PathBuf>,
    /// Write the decoded frames (tensor `frames`, f32 [F, H, W, 3] in [0, 1]) here.
    pub dump_frames: Option<PathBuf>,
    /// VACE: the control hints' weight instead of 1.0 (diffusers' default).
    pub conditioning_scale: Option<f64>,
    /// Where the pipeline computes (`--device`, the config's `device`).
    pub device: ComputeDevice,
    /// The float type of the transformer and text/image encoder weights (`--dtype`, `dtype`):
    /// on CUDA the dtype they compute in; on the CPU the dtype their matrices are held in (they
    /// compute in f32, each matrix widened for its matmul: bf16 halves their memory).
    pub dtype: ComputeDtype,
}

impl WanSettings {
    /// Where and in which float type the pipeline computes, for reports: `cpu, f32`,
    /// `cpu, bf16 weights (f32 compute)`, `cuda:0, bf16`.
    pub fn compute(&self) -> String {
        match (self.device, self.dtype) {
            (ComputeDevice::Cpu, ComputeDtype::Bf16 | ComputeDtype::F16) => {
                format!("{}, {} weights (f32 compute)", self.device, self.dtype)
            }
            (device, dtype) => format!("{device}, {dtype}"),
        }
    }
}

/// The device a pipeline runs on: `cpu`, `cuda` (GPU 0) or `cuda:N`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ComputeDevice {
    #[default]
    Cpu,
    Cuda(usize),
}

impl FromStr for ComputeDevice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let gpu = match s.split_once(':') {
            None if s == "cpu" => return Ok(Self::Cpu),
            None if s == "cuda" => Some(0),
            Some(("cuda", n)) => n.parse().ok(),
            _ => None,
        };
        gpu.map(Self::Cuda).ok_or_else(|| {
            format!("must be cpu, cuda or cuda:N (N the GPU index, from 0), got {s:?}")
        })
    }
}

impl fmt::Display for ComputeDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// The float type of the transformer and text/image encoders: the compute dtype on CUDA, the
/// dtype the big matrices are held in on the CPU (which computes in f32). The latents, the
/// scheduler and the VAE stay f32, as diffusers keeps them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ComputeDtype {
    #[default]
    F32,
    Bf16,
    F16,
}

impl ComputeDtype {
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::Bf16 => DType::BF16,
            Self::F16 => DType::F16,
        }
    }
}

impl FromStr for ComputeDtype {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            "f16" => Ok(Self::F16),
            _ => Err(format!("must be f32, bf16 or f16, got {s:?}")),
        }
    }
}

impl fmt::Display for ComputeDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        })
    }
}

/// Refuses a device this build cannot compute with, without touching any device; the message
/// begins with the setting's name (`device: ...`). Every dtype runs on every device (on the CPU
/// bf16/f16 is the dtype the weights are held in).
fn check_compute_rules(settings: &WanSettings) -> anyhow::Result<()> {
    if let ComputeDevice::Cuda(_) = settings.device {
        ensure!(
            candle_core::utils::cuda_is_available(),
            "device: {} needs CUDA, but this gallop was built without CUDA: rebuild with \
             `cargo build --release --features cuda`",
            settings.device
        );
    }
    Ok(())
}

/// Checks the device and dtype before any weights load: the build's rules, then whether the
/// CUDA device opens on this machine. Messages begin with the setting's name.
pub fn check_compute(settings: &WanSettings) -> anyhow::Result<()> {
    check_compute_rules(settings)?;
    open_device(settings.device).map(drop)
}

/// Opens the device, with candle's error named by the setting when it is not available.
pub fn open_device(device: ComputeDevice) -> anyhow::Result<Device> {
    match device {
        ComputeDevice::Cpu => Ok(Device::Cpu),
        ComputeDevice::Cuda(n) => Device::new_cuda(n)
            .map_err(|e| anyhow::anyhow!("device: {device} is not available: {e}")),
    }
}

/// The family traits the parameter mapping needs, read from the checkpoint.
#[derive(Debug, Clone, Copy)]
struct Family {
    /// Frames per second the checkpoint was trained at: 24 for Wan2.2-5B (z 48 VAE), else 16.
    fps: u32,
    /// The largest frame area it generates natively; larger outputs are upscaled after decoding.
    max_area: usize,
    steps: usize,
    guidance: f64,
    /// The low-noise expert's scale, for two-expert checkpoints only.
    guidance_2: Option<f64>,
}

impl Family {
    fn of(pipeline: &WanPipeline) -> Self {
        let index = pipeline.index();
        let two_experts = takes_guidance_2(index);
        let wan22_vae = pipeline.vae().config().z_dim == 48 || index.expand_timesteps;
        // 1.3B checkpoints (inner dim 1536) are 480P models; 14B ones (and A14B) 720P.
        let small =
            pipeline.transformer().config().inner_dim() <= 1536 && index.boundary_ratio.is_none();
        let max_area = match (wan22_vae, small) {
            (true, _) => 1280 * 704,
            (false, true) => 832 * 480,
            (false, false) => 1280 * 720,
        };
        Self {
            fps: if wan22_vae { 24 } else { 16 },
            max_area,
            // The published recipes: Wan2.2-I2V-A14B samples 40 steps at 3.5 for both experts
            // (Wan-AI's i2v_A14B config: sample_guide_scale = (3.5, 3.5), sample_steps = 40);
            // the others 50 at 5.0 (diffusers' examples).
            steps: if two_experts { 40 } else { 50 },
            guidance: if two_experts { 3.5 } else { 5.0 },
            guidance_2: two_experts.then_some(3.5),
        }
    }
}

/// Whether the checkpoint has two experts (Wan2.2 A14B), so takes a second guidance scale.
pub fn takes_guidance_2(index: &ModelIndex) -> bool {
    index.boundary_ratio.is_some() && index.has("transformer_2")
}

/// The seed model id a pipeline class serves: i2v from `WanImageToVideoPipeline`, r2v from
/// `WanVACEPipeline`; a text-only `WanPipeline` serves neither (both ids take images).
pub fn model_served_by(class: PipelineClass) -> Option<ModelId> {
    match class {
        PipelineClass::ImageToVideo => Some(ModelId::HhI2v),
        PipelineClass::Vace => Some(ModelId::HhR2v),
        PipelineClass::TextToVideo => None,
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

/// Refuses settings the checkpoint cannot honour, naming the setting and the rule.
pub fn check_settings(index: &ModelIndex, settings: &WanSettings) -> anyhow::Result<()> {
    check_compute_rules(settings)?;
    if settings.steps == Some(0) {
        anyhow::bail!("steps must be >= 1");
    }
    for (name, value) in [
        ("guidance", settings.guidance),
        ("guidance_2", settings.guidance_2),
    ] {
        if let Some(v) = value {
            ensure!(
                v.is_finite() && v >= 0.0,
                "{name} must be a finite number >= 0, got {v}"
            );
        }
    }
    if let Some(g2) = settings.guidance_2 {
        ensure!(
            takes_guidance_2(index),
            "guidance_2 needs a checkpoint with two experts (Wan2.2 A14B: transformer_2 and \
             boundary_ratio in model_index.json); {} has one transformer",
            index.dir.display()
        );
        // diffusers turns classifier-free guidance on or off for both experts by `guidance`.
        if let Some(g) = settings.guidance {
            ensure!(
                g > 1.0 || g2 <= 1.0,
                "guidance_2 {g2} would have no effect: guidance {g} <= 1 turns classifier-free \
                 guidance off for both experts; set guidance above 1"
            );
        }
    }
    if let Some(scale) = settings.conditioning_scale {
        ensure!(
            index.class == PipelineClass::Vace,
            "conditioning_scale weighs VACE reference hints; {} is a {:?} pipeline",
            index.dir.display(),
            index.class
        );
        ensure!(
            scale.is_finite(),
            "conditioning_scale must be a finite number, got {scale}"
        );
    }
    Ok(())
}

pub struct WanEngine {
    pipeline: Arc<WanPipeline>,
    checkpoint: String,
    settings: WanSettings,
    family: Family,
}

impl WanEngine {
    /// Load a diffusers model directory on the settings' device, in their dtype.
    pub fn load(model_dir: &Path, settings: WanSettings) -> anyhow::Result<Self> {
        check_settings(&ModelIndex::read(model_dir)?, &settings)?;
        Self::from_pipeline(Self::load_pipeline(model_dir, &settings)?, settings)
    }

    /// Load a checkpoint's pipeline as engines with these settings' device and dtype run it,
    /// to share among such engines.
    pub fn load_pipeline(
        model_dir: &Path,
        settings: &WanSettings,
    ) -> anyhow::Result<Arc<WanPipeline>> {
        check_compute_rules(settings)?;
        let device = open_device(settings.device)?;
        Ok(Arc::new(WanPipeline::load(
            model_dir,
            settings.dtype.dtype(),
            &device,
        )?))
    }

    /// An engine over an already loaded pipeline, so several settings can share one
    /// checkpoint's weights. The pipeline must come from [`Self::load_pipeline`] with the same
    /// device and dtype.
    pub fn from_pipeline(
        pipeline: Arc<WanPipeline>,
        settings: WanSettings,
    ) -> anyhow::Result<Self> {
        check_settings(pipeline.index(), &settings)?;
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
        let family = Family::of(&pipeline);
        Ok(Self {
            checkpoint: pipeline.index().dir.display().to_string(),
            pipeline,
            settings,
            family,
        })
    }

    /// Where and in which float type the pipeline computes, for reports: `cpu, f32`,
    /// `cpu, bf16 weights (f32 compute)` ([`WanSettings::compute`]).
    pub fn compute(&self) -> String {
        self.settings.compute()
    }

    /// The seed model id this checkpoint serves, if any.
    pub fn served_model(&self) -> Option<ModelId> {
        model_served_by(self.pipeline.index().class)
    }

    /// The guidance scales a run uses: (guidance, the low-noise expert's for two-expert
    /// checkpoints). A given `guidance_2` wins; else a given `guidance` applies to both experts
    /// (diffusers' rule); else the family's recipe.
    pub fn guidance_scales(&self) -> (f64, Option<f64>) {
        let guidance = self.settings.guidance.unwrap_or(self.family.guidance);
        let guidance_2 = self.family.guidance_2.map(|recipe| {
            self.settings
                .guidance_2
                .or(self.settings.guidance)
                .unwrap_or(recipe)
        });
        (guidance, guidance_2)
    }

    /// Denoising steps a run takes.
    pub fn steps(&self) -> usize {
        self.settings.steps.unwrap_or(self.family.steps)
    }

    pub fn pipeline(&self) -> &WanPipeline {
        &self.pipeline
    }

    /// The model size a run generates at, for an output of `width` x `height`.
    pub fn generation_size(&self, width: u32, height: u32) -> (usize, usize) {
        if let Some(size) = self.settings.size {
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
        if let Some(n) = self.settings.num_frames {
            return n;
        }
        let t = self.pipeline.temporal_factor();
        let native = (out_frames as f64 * self.family.fps as f64 / out_fps as f64).ceil() as usize;
        native.saturating_sub(1).div_ceil(t) * t + 1
    }

    /// Which generated frame shows output frame `i`.
    fn source_frame(&self, i: u32, out_fps: u32, generated: usize) -> usize {
        if self.settings.num_frames.is_some() {
            return (i as usize).min(generated - 1);
        }
        let j = (i as f64 * self.family.fps as f64 / out_fps as f64).round() as usize;
        j.min(generated - 1)
    }

    fn run(&self, input: &EngineInput<'_>, ctx: &mut RunContext<'_>) -> anyhow::Result<()> {
        let class = self.pipeline.index().class;
        let model = input.request.model;
        ensure!(
            self.served_model() == Some(model),
            "checkpoint {} is a {} ({class:?}) and cannot serve {model}",
            self.checkpoint,
            class_name(class)
        );
        let geometry = input.geometry;
        let (width, height) = self.generation_size(geometry.width, geometry.height);
        let num_frames = self.generation_frames(geometry.frames, geometry.fps);
        if self.settings.num_frames.is_some() {
            ensure!(
                num_frames == geometry.frames as usize,
                "--num-frames {num_frames} must equal the output's {} frames",
                geometry.frames
            );
        }
        self.pipeline.check_size(height, width, num_frames)?;
        let device = self.pipeline.device().clone();

        // i2v: the first frame cropped to the generation size; r2v: the references as given
        // (the pipeline fits each on a white canvas).
        let (image, references) = match class {
            PipelineClass::Vace => {
                ensure!(
                    !input.images.is_empty(),
                    "/input/images: reference-to-video needs at least one reference image"
                );
                let refs = input
                    .images
                    .iter()
                    .map(|img| image_to_tensor(img, &device))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                (None, refs)
            }
            _ => {
                let first = input
                    .images
                    .first()
                    .context("/input/image: image-to-video needs the first frame")?;
                let first = gallop_media::fit_and_crop(first, width as u32, height as u32);
                (Some(image_to_tensor(&first, &device)?), Vec::new())
            }
        };

        let shape = self
            .pipeline
            .latent_shape(height, width, num_frames, references.len());
        let latents = match &self.settings.init_noise {
            Some(path) => read_noise(path, &shape)?.to_device(&device)?,
            None => gaussian_noise(&shape, input.seed as u64, &device)?,
        };
        let negative = input
            .request
            .negative_prompt
            .as_deref()
            .unwrap_or(DEFAULT_NEGATIVE_PROMPT);
        let (guidance, guidance_2) = self.guidance_scales();
        let steps = self.steps();
        let args = GenerateArgs {
            prompt_embeds: self.pipeline.encode_prompt(&input.request.prompt)?,
            negative_prompt_embeds: match guidance > 1.0 {
                true => Some(self.pipeline.encode_prompt(negative)?),
                false => None,
            },
            image,
            height,
            width,
            num_frames,
            steps,
            guidance_scale: guidance,
            guidance_scale_2: guidance_2,
            latents,
            image_embeds: match input.images.first() {
                Some(first) if class == PipelineClass::ImageToVideo => {
                    self.pipeline.encode_image(first)?
                }
                _ => None,
            },
            reference_images: references,
            conditioning_scale: self.settings.conditioning_scale.unwrap_or(1.0),
        };
        // One unit per step, one for decoding.
        let total = steps as u32 + 1;
        let report = &mut *ctx.progress;
        let mut on_step = |done: usize, _: usize| {
            report(Progress {
                step: done as u32,
                total,
            })
        };
        let hooks = StepHooks {
            progress: &mut on_step,
            cancel: ctx.cancel,
        };
        let latents = self.pipeline.denoise(&args, hooks)?;

        // Decode one latent frame at a time and send each output frame as soon as its source
        // frame is decoded.
        let mut decoded: Vec<RgbImage> = Vec::new();
        let mut dump: Vec<Tensor> = Vec::new();
        let mut next = 0u32;
        let (out_w, out_h) = (geometry.width, geometry.height);
        let mut sink = |frames: Tensor| -> anyhow::Result<()> {
            if ctx.cancel.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(Cancelled.into());
            }
            // The encoder takes 8-bit frames from host memory (no-ops for CPU f32).
            let frames = frames.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
            if self.settings.dump_frames.is_some() {
                dump.push(frames.clone());
            }
            for i in 0..frames.dim(0)? {
                decoded.push(to_rgb(&frames.get(i)?)?);
            }
            while next < geometry.frames {
                let j = self.source_frame(next, geometry.fps, num_frames);
                if j >= decoded.len() {
                    break;
                }
                let frame = &decoded[j];
                let frame = if frame.dimensions() == (out_w, out_h) {
                    frame.clone()
                } else {
                    gallop_media::fit_and_crop(frame, out_w, out_h)
                };
                (ctx.sink)(frame).map_err(EngineError::Sink)?;
                next += 1;
            }
            Ok(())
        };
        self.pipeline.decode_streaming(&latents, &mut sink)?;
        ensure!(
            next == geometry.frames,
            "decoded {} frames but the video needs {}",
            decoded.len(),
            geometry.frames
        );
        if let Some(path) = &self.settings.dump_frames {
            let frames = Tensor::cat(&dump, 0)?;
            candle_core::safetensors::save(&[("frames", frames)].into_iter().collect(), path)
                .with_context(|| format!("--dump-frames: cannot write {}", path.display()))?;
        }
        (ctx.progress)(Progress { step: total, total });
        Ok(())
    }
}

impl Engine for WanEngine {
    fn info(&self) -> EngineInfo {
        EngineInfo {
            engine: "wan".to_string(),
            checkpoint: Some(self.checkpoint.clone()),
            compute: Some(self.compute()),
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
        result.map_err(|e| {
            if e.is::<Cancelled>() {
                EngineError::Cancelled
            } else {
                match e.downcast::<EngineError>() {
                    Ok(engine) => engine,
                    Err(e) => EngineError::Failed(format!("{e:#}")),
                }
            }
        })
    }
}

/// `[H, W, 3]` in [0, 1] -> 8-bit RGB, rounded as diffusers' `numpy_to_pil` does.
fn to_rgb(frame: &Tensor) -> anyhow::Result<RgbImage> {
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
fn read_noise(path: &Path, shape: &[usize; 5]) -> anyhow::Result<Tensor> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_dtypes_parse_and_print_as_written() {
        assert_eq!("cpu".parse(), Ok(ComputeDevice::Cpu));
        assert_eq!("cuda".parse(), Ok(ComputeDevice::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(ComputeDevice::Cuda(3)));
        assert_eq!(ComputeDevice::Cuda(3).to_string(), "cuda:3");
        for bad in ["gpu", "cuda:", "cuda:-1", "cpu:0", "CUDA", ""] {
            let err = bad.parse::<ComputeDevice>().unwrap_err();
            assert!(
                err.starts_with("must be cpu, cuda or cuda:N"),
                "{bad}: {err}"
            );
        }
        for (text, dtype, candle) in [
            ("f32", ComputeDtype::F32, DType::F32),
            ("bf16", ComputeDtype::Bf16, DType::BF16),
            ("f16", ComputeDtype::F16, DType::F16),
        ] {
            assert_eq!(text.parse(), Ok(dtype));
            assert_eq!(dtype.to_string(), text);
            assert_eq!(dtype.dtype(), candle);
        }
        let err = "float32".parse::<ComputeDtype>().unwrap_err();
        assert_eq!(err, "must be f32, bf16 or f16, got \"float32\"");
    }

    #[test]
    fn half_precision_on_the_cpu_holds_weights_and_says_so() {
        let on = |device, dtype| WanSettings {
            device,
            dtype,
            ..Default::default()
        };
        let cpu = ComputeDevice::Cpu;
        for (dtype, report) in [
            (ComputeDtype::F32, "cpu, f32"),
            (ComputeDtype::Bf16, "cpu, bf16 weights (f32 compute)"),
            (ComputeDtype::F16, "cpu, f16 weights (f32 compute)"),
        ] {
            check_compute(&on(cpu, dtype)).unwrap();
            assert_eq!(on(cpu, dtype).compute(), report);
        }
        // On CUDA the dtype is the compute dtype, reported as before.
        assert_eq!(
            on(ComputeDevice::Cuda(1), ComputeDtype::Bf16).compute(),
            "cuda:1, bf16"
        );
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_in_a_cpu_build_names_the_rebuild() {
        let settings = WanSettings {
            device: ComputeDevice::Cuda(0),
            dtype: ComputeDtype::Bf16,
            ..Default::default()
        };
        let err = check_compute(&settings).unwrap_err().to_string();
        assert_eq!(
            err,
            "device: cuda:0 needs CUDA, but this gallop was built without CUDA: rebuild with \
             `cargo build --release --features cuda`"
        );
        // A device that does not open: candle's reason, behind the setting's name.
        let err = open_device(ComputeDevice::Cuda(2)).unwrap_err().to_string();
        let reason = err.strip_prefix("device: cuda:2 is not available: ");
        assert!(reason.is_some_and(|r| !r.is_empty()), "{err}");
    }
}
