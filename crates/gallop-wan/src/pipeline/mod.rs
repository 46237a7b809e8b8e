//! The Wan pipelines as diffusers writes them, over the components of one model directory:
//! text to video, TI2V-5B image to video (clean first-frame latent, per-token timesteps),
//! Wan2.1-I2V / I2V-A14B image to video (mask + first-frame latent channels, two experts).
//!
//! The recipe: initial noise -> `steps` scheduler steps, each a transformer pass per guidance
//! branch (classifier-free guidance) -> denormalise -> VAE decode -> frames in [0, 1].

mod conditioning;
mod noise;
mod prompts;
mod vace;

use std::path::Path;
use std::sync::Arc;

use crate::error::{Context, ensure};
use candle_core::{DType, Device, Tensor};
use gallop_engine::RunContext;

use crate::clip::{ClipImageProcessor, ClipVisionEncoder};
use crate::lora::LoraSpec;
use crate::model_dir::{ModelIndex, PipelineClass};
use crate::quant::Quantize;
use crate::scheduler::{ScheduleSettings, Scheduler};
use crate::t5::TextEncoder;
use crate::transformer::{TransformerInputs, WanTransformer, WeightChanges};
use crate::vae::AutoencoderKLWan;

pub use conditioning::image_to_tensor;
pub use noise::gaussian_noise;
pub use vace::fit_on_white;

/// The negative prompt the Wan family samples with (its `sample_neg_prompt`), used when a request
/// gives none. diffusers itself falls back to "", so pass it explicitly to match diffusers.
pub const DEFAULT_NEGATIVE_PROMPT: &str = "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走";

/// Prompts are padded to this many tokens, as diffusers' `max_sequence_length` default.
pub const TEXT_TOKENS: usize = 512;

/// One run's inputs, in the units diffusers' `__call__` takes them.
#[derive(Debug, Clone)]
pub struct GenerateArgs {
    /// [1, tokens, text_dim] text embeddings (padded rows zero), as `encode_prompt` makes.
    pub prompt_embeds: Tensor,
    /// Required when guidance is on (scale > 1).
    pub negative_prompt_embeds: Option<Tensor>,
    /// i2v: the first frame, [1, 3, height, width] in [-1, 1] (see [`image_to_tensor`]).
    pub image: Option<Tensor>,
    pub height: usize,
    pub width: usize,
    /// 4n + 1.
    pub num_frames: usize,
    pub steps: usize,
    pub guidance_scale: f64,
    /// A14B: the low-noise expert's scale; `guidance_scale` when None.
    pub guidance_scale_2: Option<f64>,
    /// The initial noise, shaped as [`WanPipeline::latent_shape`] says.
    pub latents: Tensor,
    /// Wan2.1-I2V: CLIP tokens of the first frame ([`WanPipeline::encode_image`]).
    pub image_embeds: Option<Tensor>,
    /// VACE (r2v): reference images, each `[1, 3, h, w]` in [-1, 1] at its own size.
    pub reference_images: Vec<Tensor>,
    /// VACE: the weight of the control hints, one value for every VACE layer (diffusers: 1.0).
    pub conditioning_scale: f64,
    /// VACE video extension: the video's first frames, `[1, 3, k, height, width]` in [-1, 1],
    /// kept as they are (mask 0) while the rest is generated. Chained windows pass the end of
    /// the previous window here.
    pub leading_frames: Option<Tensor>,
}

/// How a pipeline differs from its checkpoint as published: LoRAs, quantized matrices, the
/// scheduler's settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineChanges {
    /// Merged into `transformer` (for A14B: the high-noise expert).
    pub loras: Vec<LoraSpec>,
    /// A14B: merged into `transformer_2`, the low-noise expert.
    pub loras_2: Vec<LoraSpec>,
    /// The transformers' and the text encoder's matrices held as int8 / fp8.
    pub quantize: Option<Quantize>,
    pub schedule: ScheduleSettings,
    /// Drop the text encoder after each encoding (read back for a prompt not in the cache).
    pub release_text_encoder: bool,
}

impl PipelineChanges {
    fn transformer(&self, loras: &[LoraSpec]) -> WeightChanges {
        WeightChanges {
            loras: loras.to_vec(),
            quantize: self.quantize,
        }
    }
}

pub struct WanPipeline {
    index: ModelIndex,
    transformer: WanTransformer,
    /// A14B: the low-noise expert.
    transformer_2: Option<WanTransformer>,
    vae: AutoencoderKLWan,
    scheduler: Scheduler,
    text: prompts::Prompts,
    /// Wan2.1-I2V: CLIP vision tokens of the first frame.
    image_encoder: Option<(ClipImageProcessor, ClipVisionEncoder)>,
    device: Device,
}

impl WanPipeline {
    /// Load every component of a diffusers model directory, the transformers' and encoders'
    /// weights converted to `dtype` (the VAE's to f32). On the CPU `dtype` is the dtype their
    /// matrices are held in and everything computes in f32 ([`crate::weights::compute_dtype`]).
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> crate::Result<Self> {
        Self::load_with(dir, dtype, &PipelineChanges::default(), device)
    }

    /// As [`Self::load`], with LoRAs merged into the transformers, matrices quantized and the
    /// scheduler changed as `changes` says.
    pub fn load_with(
        dir: &Path,
        dtype: DType,
        changes: &PipelineChanges,
        device: &Device,
    ) -> crate::Result<Self> {
        let index = ModelIndex::read(dir)?;
        ensure!(
            changes.loras_2.is_empty() || index.has("transformer_2"),
            "{}: loras_2 (--lora-2) is for two-expert checkpoints (transformer_2), which this is not",
            dir.display()
        );
        let scheduler = Scheduler::from_dir(&index.component_dir("scheduler"))?
            .with_settings(&changes.schedule)?;
        let transformer = WanTransformer::load_with(
            &index.component_dir("transformer"),
            dtype,
            &changes.transformer(&changes.loras),
            device,
        )?;
        let transformer_2 = match index.has("transformer_2") {
            true => Some(WanTransformer::load_with(
                &index.component_dir("transformer_2"),
                dtype,
                &changes.transformer(&changes.loras_2),
                device,
            )?),
            false => None,
        };
        let vae = AutoencoderKLWan::load(&index.component_dir("vae"), DType::F32, device)?;
        let text = prompts::Prompts::load(
            dir.to_path_buf(),
            TEXT_TOKENS,
            dtype,
            changes.quantize,
            changes.release_text_encoder,
            device,
        )?;
        let image_encoder = match index.has("image_encoder") {
            true => Some((
                ClipImageProcessor::from_path(&index.component_dir("image_processor"))?,
                ClipVisionEncoder::from_dir(&index.component_dir("image_encoder"), dtype, device)?,
            )),
            false => None,
        };
        let pipeline = Self {
            text,
            image_encoder,
            index,
            transformer,
            transformer_2,
            vae,
            scheduler,
            device: device.clone(),
        };
        pipeline.check_components()?;
        Ok(pipeline)
    }

    /// The components must fit together: channel counts follow the recipe.
    fn check_components(&self) -> crate::Result<()> {
        let cfg = self.transformer.config();
        let z = self.vae.config().z_dim;
        let expected = match self.index.class {
            PipelineClass::ImageToVideo if !self.index.expand_timesteps => 2 * z + 4,
            _ => z,
        };
        ensure!(
            cfg.in_channels == expected,
            "{}: transformer in_channels is {} but this {:?} pipeline with a z_dim {z} VAE needs {expected}",
            self.index.dir.display(),
            cfg.in_channels,
            self.index.class
        );
        ensure!(
            cfg.out_channels() == z,
            "{}: transformer out_channels is {} but the VAE's z_dim is {z}",
            self.index.dir.display(),
            cfg.out_channels()
        );
        if let Some(t2) = &self.transformer_2 {
            ensure!(
                t2.config().in_channels == cfg.in_channels,
                "{}: transformer_2 in_channels ({}) differs from transformer's ({})",
                self.index.dir.display(),
                t2.config().in_channels,
                cfg.in_channels
            );
        }
        ensure!(
            cfg.image_dim.is_none() || self.image_encoder.is_some(),
            "{}: the transformer takes CLIP image tokens (image_dim is set) but the checkpoint has \
             no image_encoder",
            self.index.dir.display()
        );
        Ok(())
    }

    pub fn index(&self) -> &ModelIndex {
        &self.index
    }

    pub fn vae(&self) -> &AutoencoderKLWan {
        &self.vae
    }

    pub fn transformer(&self) -> &WanTransformer {
        &self.transformer
    }

    /// A14B: the low-noise expert.
    pub fn transformer_2(&self) -> Option<&WanTransformer> {
        self.transformer_2.as_ref()
    }

    /// One line per LoRA merged at load (both experts'), for the startup report.
    pub fn lora_summaries(&self) -> Vec<String> {
        let mut lines = self.transformer.lora_summaries().to_vec();
        if let Some(t2) = &self.transformer_2 {
            lines.extend(t2.lora_summaries().iter().cloned());
        }
        lines
    }

    /// The scheduler as this pipeline runs it (its settings applied).
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// The text encoder, unless it was released after encoding (`release_text_encoder`).
    pub fn text_encoder(&self) -> Option<Arc<TextEncoder>> {
        self.text.encoder()
    }

    /// Wan2.1-I2V: the CLIP vision encoder.
    pub fn image_encoder(&self) -> Option<&ClipVisionEncoder> {
        self.image_encoder.as_ref().map(|(_, encoder)| encoder)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A prompt's embeddings `[1, 512, text_dim]` as diffusers' `encode_prompt` makes them
    /// (cleaned, tokenized, encoded, padded rows zero).
    /// The last 16 prompts' embeddings are kept and served again without encoding.
    pub fn encode_prompt(&self, prompt: &str) -> crate::Result<Tensor> {
        self.text.encode(prompt)
    }

    /// Wan2.1-I2V: the first frame's CLIP tokens `[1, 257, 1280]` (penultimate hidden states),
    /// from the image as given (CLIP resizes and crops it itself). None for checkpoints without
    /// an image encoder.
    pub fn encode_image(&self, image: &image::RgbImage) -> crate::Result<Option<Tensor>> {
        let Some((processor, encoder)) = &self.image_encoder else {
            return Ok(None);
        };
        let pixels = processor.preprocess(
            &[image::DynamicImage::ImageRgb8(image.clone())],
            &self.device,
        )?;
        Ok(Some(encoder.forward(&pixels)?))
    }

    /// Pixels per latent cell times the transformer's patch: height and width must be multiples.
    pub fn size_multiple(&self) -> (usize, usize) {
        let s = self.vae.config().scale_factor_spatial;
        let (_, ph, pw) = self.transformer.config().patch();
        (s * ph, s * pw)
    }

    /// Frames per latent frame (4): frame counts are `temporal * n + 1`.
    pub fn temporal_factor(&self) -> usize {
        self.vae.config().scale_factor_temporal
    }

    /// Reject sizes the recipe cannot run, naming the field and the rule.
    pub fn check_size(&self, height: usize, width: usize, num_frames: usize) -> crate::Result<()> {
        let (mh, mw) = self.size_multiple();
        ensure!(
            height >= mh && height.is_multiple_of(mh),
            "height {height} must be a positive multiple of {mh} for this checkpoint"
        );
        ensure!(
            width >= mw && width.is_multiple_of(mw),
            "width {width} must be a positive multiple of {mw} for this checkpoint"
        );
        let t = self.temporal_factor();
        ensure!(
            num_frames % t == 1,
            "num_frames {num_frames} must be {t}n + 1 (1, 5, 9, ...)"
        );
        Ok(())
    }

    /// The initial noise's shape, as diffusers' `prepare_latents` makes it; VACE adds one
    /// latent frame per reference image in front.
    pub fn latent_shape(
        &self,
        height: usize,
        width: usize,
        num_frames: usize,
        references: usize,
    ) -> [usize; 5] {
        let s = self.vae.config().scale_factor_spatial;
        let channels = match self.index.class {
            // WanPipeline sizes the noise by the transformer, the others by the VAE.
            PipelineClass::TextToVideo => self.transformer.config().in_channels,
            _ => self.vae.config().z_dim,
        };
        [
            1,
            channels,
            (num_frames - 1) / self.temporal_factor() + 1 + references,
            height / s,
            width / s,
        ]
    }

    /// The whole run: denoise, then decode. Frames `[F, H, W, 3]` f32 in [0, 1].
    pub fn generate(&self, args: &GenerateArgs, ctx: &mut RunContext<'_>) -> crate::Result<Tensor> {
        let latents = self.denoise(args, ctx)?;
        self.decode(&latents)
    }

    /// The denoising loop; returns the final (normalised) latents.
    /// Each step is one unit of `ctx`'s progress; its cancel flag is read before every step.
    pub fn denoise(&self, args: &GenerateArgs, ctx: &mut RunContext<'_>) -> crate::Result<Tensor> {
        self.check_size(args.height, args.width, args.num_frames)?;
        ensure!(args.steps >= 1, "steps must be at least 1");
        let shape = self.latent_shape(
            args.height,
            args.width,
            args.num_frames,
            args.reference_images.len(),
        );
        ensure!(
            args.latents.dims() == shape,
            "initial latents must be shaped {shape:?} for {}x{} and {} frames, got {:?}",
            args.width,
            args.height,
            args.num_frames,
            args.latents.dims()
        );
        let guided = args.guidance_scale > 1.0;
        let negative = match (guided, &args.negative_prompt_embeds) {
            (true, Some(n)) => Some(n.to_dtype(DType::F32)?),
            (true, None) => crate::error::bail!(
                "negative_prompt_embeds are required when guidance_scale > 1 (classifier-free guidance)"
            ),
            (false, _) => None,
        };
        let prompt = args.prompt_embeds.to_dtype(DType::F32)?;
        let condition = conditioning::Condition::prepare(self, args)?;
        let image_embeds = match (&self.transformer.config().image_dim, &args.image_embeds) {
            (Some(_), Some(e)) => Some(e.to_dtype(DType::F32)?),
            (Some(_), None) => crate::error::bail!(
                "image_embeds are required: this checkpoint's transformer takes CLIP image tokens"
            ),
            (None, _) => None,
        };

        let mut scheduler = self.scheduler.clone();
        scheduler.set_timesteps(args.steps)?;
        let timesteps = scheduler.timesteps().to_vec();
        let boundary = self
            .index
            .boundary_ratio
            .map(|r| r * num_train_timesteps(&scheduler) as f64);
        let mut latents = args.latents.to_dtype(DType::F32)?;
        for &t in &timesteps {
            ctx.check_cancel()?;
            // A14B: the high-noise expert while t >= boundary, then the low-noise one.
            let (model, scale) = match (boundary, &self.transformer_2) {
                (Some(b), Some(low)) if (t as f64) < b => {
                    (low, args.guidance_scale_2.unwrap_or(args.guidance_scale))
                }
                _ => (&self.transformer, args.guidance_scale),
            };
            let (hidden_states, timestep) = condition.model_input(&latents, t)?;
            let mut inputs = TransformerInputs::new(hidden_states, timestep, prompt.clone());
            inputs.encoder_hidden_states_image = image_embeds.clone();
            if let Some((control, scale)) = condition.control() {
                inputs.control_hidden_states = Some(control.clone());
                inputs.control_hidden_states_scale = Some(scale.clone());
            }
            let cond = model.forward(&inputs)?;
            let noise_pred = match &negative {
                Some(negative) => {
                    inputs.encoder_hidden_states = negative.clone();
                    let uncond = model.forward(&inputs)?;
                    // uncond + scale * (cond - uncond), in diffusers' order of operations.
                    (&uncond + ((cond - &uncond)? * scale)?)?
                }
                None => cond,
            };
            // bf16/f16 transformers predict in their dtype; the scheduler steps the f32 latents
            // (diffusers' type promotion). A no-op for f32.
            let noise_pred = noise_pred.to_dtype(latents.dtype())?;
            latents = scheduler.step(&noise_pred, &latents)?;
            ctx.advance();
        }
        condition.finish(latents)
    }

    /// Normalised latents -> frames `[F, H, W, 3]` f32 in [0, 1] (diffusers' `output_type="np"`).
    pub fn decode(&self, latents: &Tensor) -> crate::Result<Tensor> {
        let z = self.vae.denormalize_latents(latents)?;
        let video = self.vae.decode(&z)?; // [1, 3, F, H, W] in [-1, 1]
        to_unit_frames(&video)
    }

    /// As [`Self::decode`], one latent frame at a time: `sink` gets `[n, H, W, 3]` frames in
    /// [0, 1] as they are decoded (1 first, then 4 per latent frame), so long videos stream.
    pub fn decode_streaming(
        &self,
        latents: &Tensor,
        sink: &mut dyn FnMut(Tensor) -> crate::Result<()>,
    ) -> crate::Result<()> {
        let z = self.vae.denormalize_latents(latents)?;
        let (_, _, t, h, w) = z.dims5()?;
        let s = self.vae.config().scale_factor_spatial;
        if h * s * w * s > crate::vae::AUTO_TILE_PIXELS {
            // Large frames decode tiled, which needs the whole latent video at once.
            return sink(self.decode(latents)?);
        }
        let mut stream = self.vae.decode_stream();
        for i in 0..t {
            let video = stream.push(&z.narrow(2, i, 1)?)?;
            sink(to_unit_frames(&video)?)?;
        }
        Ok(())
    }
}

/// `[1, 3, F, H, W]` in [-1, 1] -> `[F, H, W, 3]` in [0, 1].
fn to_unit_frames(video: &Tensor) -> crate::Result<Tensor> {
    let frames = video
        .squeeze(0)
        .context("decoded video must have batch 1")?
        .permute((1, 2, 3, 0))?
        .contiguous()?;
    Ok(((frames * 0.5)? + 0.5)?.clamp(0f32, 1f32)?)
}

fn num_train_timesteps(scheduler: &Scheduler) -> usize {
    match scheduler {
        Scheduler::UniPc(s) => s.config().num_train_timesteps,
        Scheduler::FlowMatchEuler(s) => s.config().num_train_timesteps,
    }
}
