//! `WanTransformer3DModel` and `WanVACETransformer3DModel`: one type, dispatching on the config's
//! `_class_name`.

use std::path::Path;

use crate::error::{Context, ensure};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use super::attention::AttentionTiling;
use super::block::{Block, BlockContext, TEXT_CONTEXT_LEN, VaceBlock};
use super::config::{TransformerClass, TransformerConfig};
use super::embeddings::{ConditionEmbedder, PatchEmbedding, unpatchify};
use super::layers::{LayerNorm, Linear};
use super::rope::Rope;

/// 8192 tokens x ffn 13824 (14B) is 450 MB of FFN hidden layer per pass, where a 720P video's
/// 75600 tokens at once would be 4.2 GB; matmuls of 8192 rows lose nothing in speed.
const DEFAULT_FFN_ROWS: usize = 8192;

/// The forward arguments, named as diffusers names them.
#[derive(Debug, Clone)]
pub struct TransformerInputs {
    /// [b, in_channels, frames, height, width] latents.
    pub hidden_states: Tensor,
    /// [b] (one timestep per sample) or [b, tokens] (one per token, as TI2V-5B uses).
    pub timestep: Tensor,
    /// [b, text tokens, text_dim]
    pub encoder_hidden_states: Tensor,
    /// [b, image tokens, image_dim] CLIP tokens (Wan2.1 I2V; FLF2V: [2b, ...]).
    pub encoder_hidden_states_image: Option<Tensor>,
    /// VACE: [b, vace_in_channels, frames', height, width] with at most as many tokens as the latents.
    pub control_hidden_states: Option<Tensor>,
    /// VACE: one scale per VACE layer; ones if absent.
    pub control_hidden_states_scale: Option<Tensor>,
}

impl TransformerInputs {
    pub fn new(hidden_states: Tensor, timestep: Tensor, encoder_hidden_states: Tensor) -> Self {
        Self {
            hidden_states,
            timestep,
            encoder_hidden_states,
            encoder_hidden_states_image: None,
            control_hidden_states: None,
            control_hidden_states_scale: None,
        }
    }
}

#[derive(Debug, Clone)]
struct Vace {
    patch_embedding: PatchEmbedding,
    blocks: Vec<VaceBlock>,
    layers: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct WanTransformer {
    config: TransformerConfig,
    rope: Rope,
    patch_embedding: PatchEmbedding,
    condition_embedder: ConditionEmbedder,
    blocks: Vec<Block>,
    vace: Option<Vace>,
    norm_out: LayerNorm,
    proj_out: Linear,
    /// [1, 2, dim], f32
    scale_shift_table: Tensor,
    tiling: AttentionTiling,
    ffn_rows: usize,
    dtype: DType,
    lora_summaries: Vec<String>,
}

/// How a transformer's weights change as they load (`--lora`, `--quantize`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WeightChanges {
    /// Merged in order, each scaled by its strength.
    pub loras: Vec<crate::lora::LoraSpec>,
    /// Hold every `Linear` matrix as int8 or fp8 with per-output-channel scales.
    pub quantize: Option<crate::quant::Quantize>,
}

impl WanTransformer {
    /// Load from a component folder (`config.json` + safetensors, one file or sharded); any float
    /// weight dtype is converted to `dtype`. On the CPU `dtype` is the dtype the Linear weights are
    /// held in and the model computes in f32 ([`crate::weights::compute_dtype`]).
    pub fn load(model_dir: &Path, dtype: DType, device: &Device) -> crate::Result<Self> {
        Self::load_with(model_dir, dtype, &WeightChanges::default(), device)
    }

    /// As [`Self::load`], with LoRAs merged into the weights and the matrices held quantized
    /// as `changes` says. Every LoRA is checked against the checkpoint's tensors before any
    /// weight is read.
    pub fn load_with(
        model_dir: &Path,
        dtype: DType,
        changes: &WeightChanges,
        device: &Device,
    ) -> crate::Result<Self> {
        let config: TransformerConfig = crate::weights::read_config(model_dir)?;
        let tensors = crate::weights::ComponentTensors::open(model_dir)?;
        let component = format!("transformer in {}", model_dir.display());
        let adapters =
            crate::lora::Adapters::resolve(&changes.loras, &component, &|n| tensors.shape(n))?;
        let lora_summaries = adapters.summaries().to_vec();
        let vb = tensors
            .with_adapters(adapters)
            .with_quantize(changes.quantize)
            .into_var_builder(dtype, device);
        let mut model = Self::new(config, vb)
            .with_context(|| format!("loading transformer from {}", model_dir.display()))?;
        model.lora_summaries = lora_summaries;
        Ok(model)
    }

    /// One line per LoRA merged at load: file, key format, strength, modules touched.
    pub fn lora_summaries(&self) -> &[String] {
        &self.lora_summaries
    }

    pub fn new(config: TransformerConfig, vb: VarBuilder) -> crate::Result<Self> {
        config.validate()?;
        let dim = config.inner_dim();
        let patch = config.patch();
        let blocks = (0..config.num_layers)
            .map(|i| Block::load(&config, vb.pp(format!("blocks.{i}"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let vace = match config.class()? {
            TransformerClass::Plain => None,
            TransformerClass::Vace => Some(Vace {
                patch_embedding: PatchEmbedding::load(
                    config.vace_in_channels,
                    dim,
                    patch,
                    vb.pp("vace_patch_embedding"),
                )?,
                blocks: (0..config.vace_layers.len())
                    .map(|i| VaceBlock::load(&config, i == 0, vb.pp(format!("vace_blocks.{i}"))))
                    .collect::<candle_core::Result<Vec<_>>>()?,
                layers: config.vace_layers.clone(),
            }),
        };
        let out_dim = config.out_channels() * patch.0 * patch.1 * patch.2;
        Ok(Self {
            rope: Rope::new(config.attention_head_dim, config.rope_max_seq_len),
            patch_embedding: PatchEmbedding::load(
                config.in_channels,
                dim,
                patch,
                vb.pp("patch_embedding"),
            )?,
            condition_embedder: ConditionEmbedder::load(&config, vb.pp("condition_embedder"))?,
            blocks,
            vace,
            norm_out: LayerNorm::plain(dim, config.eps, &vb)?,
            proj_out: Linear::load(dim, out_dim, vb.pp("proj_out"))?,
            scale_shift_table: vb
                .to_dtype(DType::F32)
                .get((1, 2, dim), "scale_shift_table")?,
            tiling: AttentionTiling::default(),
            ffn_rows: DEFAULT_FFN_ROWS,
            dtype: crate::weights::compute_dtype(&vb),
            lora_summaries: Vec::new(),
            config,
        })
    }

    pub fn config(&self) -> &TransformerConfig {
        &self.config
    }

    /// The dtype the blocks' matrices are held in (the VarBuilder's; f32 compute on the CPU).
    pub fn weight_dtype(&self) -> DType {
        self.proj_out.dtype()
    }

    /// Attention tile bounds (memory vs matmul size); the result does not depend on them.
    pub fn with_tiling(mut self, tiling: AttentionTiling) -> Self {
        self.tiling = tiling;
        self
    }

    /// Most tokens per FFN pass (memory vs matmul size); the result does not depend on it.
    pub fn with_ffn_rows(mut self, rows: usize) -> Self {
        self.ffn_rows = rows.max(1);
        self
    }

    /// The denoiser's prediction `sample`, shaped [b, out_channels, frames, height, width].
    pub fn forward(&self, inputs: &TransformerInputs) -> crate::Result<Tensor> {
        let cfg = &self.config;
        let x = &inputs.hidden_states;
        let (b, c, f, h, w) = x
            .dims5()
            .context("hidden_states must be [batch, channels, frames, height, width]")?;
        let (pt, ph, pw) = cfg.patch();
        ensure!(
            c == cfg.in_channels,
            "hidden_states has {c} channels, the checkpoint takes in_channels = {}",
            cfg.in_channels
        );
        ensure!(
            f % pt == 0 && h % ph == 0 && w % pw == 0 && f > 0 && h > 0 && w > 0,
            "hidden_states frames/height/width {f}x{h}x{w} must be positive multiples of patch_size {:?}",
            cfg.patch_size
        );
        let grid = (f / pt, h / ph, w / pw);
        let tokens = grid.0 * grid.1 * grid.2;
        self.check_conditioning(inputs, b, tokens)?;

        let rope = self.rope.tables(grid, x.device())?;
        let mut x = self.patch_embedding.forward(&x.to_dtype(self.dtype)?)?;

        let cond = self.condition_embedder.forward(
            &inputs.timestep,
            &inputs.encoder_hidden_states,
            inputs.encoder_hidden_states_image.as_ref(),
        )?;
        let context = match &cond.image {
            Some(image) => Tensor::cat(&[image, &cond.text], 1)?,
            None => cond.text.clone(),
        };
        let ctx = BlockContext {
            context: &context,
            timestep_proj: &cond.timestep_proj,
            rope: &rope,
            tiling: self.tiling,
            ffn_rows: self.ffn_rows,
        };

        let mut hints = match &self.vace {
            Some(vace) => self.vace_hints(vace, &x, inputs, &ctx)?,
            None => Vec::new(),
        }
        .into_iter();
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x, &ctx)?;
            if let Some(vace) = &self.vace
                && vace.layers.contains(&i)
            {
                let hint = hints.next().context("fewer VACE hints than vace_layers")?;
                x = (x + hint)?;
            }
        }

        // Output head: shift and scale from temb (not the 6-way projection).
        let m = cond
            .temb
            .unsqueeze(2)?
            .broadcast_add(&self.scale_shift_table.unsqueeze(0)?)?;
        let shift = m.narrow(2, 0, 1)?.squeeze(2)?;
        let scale_plus_one = (m.narrow(2, 1, 1)?.squeeze(2)? + 1.0)?;
        let x = self
            .norm_out
            .forward(&x.to_dtype(DType::F32)?)?
            .broadcast_mul(&scale_plus_one)?
            .broadcast_add(&shift)?
            .to_dtype(self.dtype)?;
        let x = self.proj_out.forward(&x)?;
        Ok(unpatchify(&x, grid, cfg.patch(), cfg.out_channels())?)
    }

    /// Shapes of everything besides hidden_states, with errors that name the input and the rule.
    fn check_conditioning(
        &self,
        inputs: &TransformerInputs,
        batch: usize,
        tokens: usize,
    ) -> crate::Result<()> {
        let cfg = &self.config;
        match inputs.timestep.dims() {
            [b] => ensure!(*b == batch, "timestep has {b} entries for batch {batch}"),
            [b, t] => {
                ensure!(*b == batch, "timestep has batch {b}, hidden_states {batch}");
                ensure!(
                    *t == tokens,
                    "per-token timestep has {t} entries per sample, the latents make {tokens} tokens"
                );
                ensure!(
                    self.vace.is_none(),
                    "per-token timesteps are not supported by WanVACETransformer3DModel; pass timestep as [batch]"
                );
            }
            other => {
                crate::error::bail!("timestep must be [batch] or [batch, tokens], got {other:?}")
            }
        }
        let (tb, tn, td) = inputs
            .encoder_hidden_states
            .dims3()
            .context("encoder_hidden_states must be [batch, tokens, text_dim]")?;
        ensure!(
            tb == batch,
            "encoder_hidden_states has batch {tb}, hidden_states {batch}"
        );
        ensure!(
            td == cfg.text_dim,
            "encoder_hidden_states has width {td}, the checkpoint takes text_dim = {}",
            cfg.text_dim
        );
        ensure!(tn > 0, "encoder_hidden_states has no tokens");
        match (&inputs.encoder_hidden_states_image, cfg.image_dim) {
            (Some(img), Some(image_dim)) => {
                let (ib, _, id) = img
                    .dims3()
                    .context("encoder_hidden_states_image must be [batch, tokens, image_dim]")?;
                ensure!(
                    id == image_dim,
                    "encoder_hidden_states_image has width {id}, the checkpoint takes image_dim = {image_dim}"
                );
                let expected = if cfg.pos_embed_seq_len.is_some() {
                    2 * batch
                } else {
                    batch
                };
                ensure!(
                    ib == expected,
                    "encoder_hidden_states_image has batch {ib}, expected {expected}"
                );
            }
            (Some(_), None) => crate::error::bail!(
                "encoder_hidden_states_image was given but the checkpoint has no image_dim (no image branch)"
            ),
            (None, _) => {
                ensure!(
                    cfg.added_kv_proj_dim.is_none(),
                    "encoder_hidden_states_image is required: the checkpoint has added_kv_proj_dim (Wan2.1 I2V)"
                );
            }
        }
        if cfg.added_kv_proj_dim.is_some() {
            ensure!(
                tn == TEXT_CONTEXT_LEN,
                "encoder_hidden_states must have exactly {TEXT_CONTEXT_LEN} tokens for a checkpoint with \
                 added_kv_proj_dim (image and text are split at the last {TEXT_CONTEXT_LEN}), got {tn}"
            );
        }
        match (&self.vace, &inputs.control_hidden_states) {
            (Some(vace), Some(control)) => {
                let (cb, cc, cf, ch, cw) = control.dims5().context(
                    "control_hidden_states must be [batch, vace_in_channels, frames, height, width]",
                )?;
                let (pt, ph, pw) = cfg.patch();
                ensure!(
                    cb == batch,
                    "control_hidden_states has batch {cb}, hidden_states {batch}"
                );
                ensure!(
                    cc == cfg.vace_in_channels,
                    "control_hidden_states has {cc} channels, the checkpoint takes vace_in_channels = {}",
                    cfg.vace_in_channels
                );
                ensure!(
                    cf % pt == 0 && ch % ph == 0 && cw % pw == 0,
                    "control_hidden_states frames/height/width {cf}x{ch}x{cw} must be multiples of patch_size {:?}",
                    cfg.patch_size
                );
                let control_tokens = (cf / pt) * (ch / ph) * (cw / pw);
                ensure!(
                    control_tokens <= tokens,
                    "control_hidden_states makes {control_tokens} tokens, more than the latents' {tokens}"
                );
                if let Some(scale) = &inputs.control_hidden_states_scale {
                    ensure!(
                        scale.dims() == [vace.layers.len()],
                        "control_hidden_states_scale must be [{}] (one per VACE layer), got {:?}",
                        vace.layers.len(),
                        scale.dims()
                    );
                }
            }
            (Some(_), None) => {
                crate::error::bail!(
                    "control_hidden_states is required by WanVACETransformer3DModel"
                )
            }
            (None, Some(_)) => crate::error::bail!(
                "control_hidden_states was given but the checkpoint is not WanVACETransformer3DModel"
            ),
            (None, None) => {}
        }
        Ok(())
    }

    /// Run the VACE blocks over the control tokens; one scaled hint per VACE layer, in order.
    fn vace_hints(
        &self,
        vace: &Vace,
        x: &Tensor,
        inputs: &TransformerInputs,
        ctx: &BlockContext,
    ) -> crate::Result<Vec<Tensor>> {
        let control = inputs
            .control_hidden_states
            .as_ref()
            .context("control_hidden_states is required by WanVACETransformer3DModel")?;
        let mut control = vace
            .patch_embedding
            .forward(&control.to_dtype(self.dtype)?)?;
        let (b, n, dim) = control.dims3()?;
        let tokens = x.dim(1)?;
        if n < tokens {
            // Fewer control frames than latent frames: the rest is zeros.
            let pad = Tensor::zeros((b, tokens - n, dim), control.dtype(), control.device())?;
            control = Tensor::cat(&[&control, &pad], 1)?;
        }
        let scales: Vec<f32> = match &inputs.control_hidden_states_scale {
            Some(s) => s.to_dtype(DType::F32)?.to_vec1()?,
            None => vec![1.0; vace.blocks.len()],
        };
        let mut hints = Vec::with_capacity(vace.blocks.len());
        for (block, scale) in vace.blocks.iter().zip(scales) {
            let (hint, next) = block.forward(x, &control, ctx)?;
            hints.push((hint * scale as f64)?);
            control = next;
        }
        // Hints join the main blocks in ascending layer order, whatever order vace_layers lists.
        Ok(hints)
    }
}
