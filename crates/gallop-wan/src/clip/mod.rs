//! The CLIP vision encoder Wan2.1 I2V conditions on: ViT with a class token, pre-layernorm,
//! exact or quick GELU by config, returning the penultimate hidden states (all tokens, before the
//! post-layernorm), plus `CLIPImageProcessor`'s preprocessing.

mod preprocess;

use std::path::Path;

use crate::error::{Context, ensure};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2dConfig, LayerNorm, VarBuilder, conv2d_no_bias, layer_norm};
use serde::Deserialize;

use crate::transformer::Linear;
use crate::weights::compute_vb;

pub use preprocess::{ClipImageProcessor, ProcessorConfig, resize_bicubic_like_pil};

/// `config.json` of `CLIPVisionModel(WithProjection)`: the vision fields, at top level or under
/// `vision_config` (a full `CLIPModel` config).
#[derive(Debug, Clone, Deserialize)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_channels() -> usize {
    3
}
fn default_act() -> String {
    "quick_gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}

impl ClipVisionConfig {
    /// Read from a folder's `config.json`, taking `vision_config` when it is nested.
    pub fn from_dir(dir: &Path) -> crate::Result<Self> {
        let value: serde_json::Value = crate::weights::read_config(dir)?;
        let vision = value.get("vision_config").cloned().unwrap_or(value);
        let config: Self = serde_json::from_value(vision)
            .with_context(|| format!("image encoder config in {}", dir.display()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> crate::Result<()> {
        ensure!(
            self.num_attention_heads > 0
                && self.hidden_size.is_multiple_of(self.num_attention_heads),
            "image encoder config: hidden_size {} must be a multiple of num_attention_heads {}",
            self.hidden_size,
            self.num_attention_heads
        );
        ensure!(
            self.patch_size > 0 && self.image_size.is_multiple_of(self.patch_size),
            "image encoder config: image_size {} must be a multiple of patch_size {}",
            self.image_size,
            self.patch_size
        );
        ensure!(
            self.num_hidden_layers >= 2,
            "image encoder config: num_hidden_layers must be at least 2 for a penultimate layer"
        );
        self.activation()?;
        Ok(())
    }

    fn activation(&self) -> crate::Result<Activation> {
        Ok(match self.hidden_act.as_str() {
            "gelu" => Activation::GeluErf,
            "quick_gelu" => Activation::QuickGelu,
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            other => crate::error::bail!(
                "image encoder config: hidden_act {other:?} is not supported: expected gelu, quick_gelu or gelu_new"
            ),
        })
    }

    fn num_positions(&self) -> usize {
        (self.image_size / self.patch_size).pow(2) + 1
    }
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    GeluErf,
    GeluTanh,
    /// `x * sigmoid(1.702 x)`, OpenAI CLIP's.
    QuickGelu,
}

struct EncoderLayer {
    norm1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
    act: Activation,
}

impl EncoderLayer {
    fn new(c: &ClipVisionConfig, vb: VarBuilder) -> crate::Result<Self> {
        let h = c.hidden_size;
        let attn = vb.pp("self_attn");
        // Norms in the compute dtype; the matrices in the VarBuilder's (see `Linear`).
        let norms = compute_vb(&vb);
        Ok(Self {
            norm1: layer_norm(h, c.layer_norm_eps, norms.pp("layer_norm1"))?,
            q: Linear::load(h, h, attn.pp("q_proj"))?,
            k: Linear::load(h, h, attn.pp("k_proj"))?,
            v: Linear::load(h, h, attn.pp("v_proj"))?,
            out: Linear::load(h, h, attn.pp("out_proj"))?,
            norm2: layer_norm(h, c.layer_norm_eps, norms.pp("layer_norm2"))?,
            fc1: Linear::load(h, c.intermediate_size, vb.pp("mlp.fc1"))?,
            fc2: Linear::load(c.intermediate_size, h, vb.pp("mlp.fc2"))?,
            heads: c.num_attention_heads,
            act: c.activation()?,
        })
    }

    fn attention(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n, h) = x.dims3()?;
        let d = h / self.heads;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((b, n, self.heads, d))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split((self.q.forward(x)? * (d as f64).powf(-0.5))?)?;
        let k = split(self.k.forward(x)?)?;
        let v = split(self.v.forward(x)?)?;
        let weights =
            candle_nn::ops::softmax_last_dim(&q.matmul(&k.transpose(2, 3)?.contiguous()?)?)?;
        let o = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, n, h))?;
        self.out.forward(&o)
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = (x + self.attention(&self.norm1.forward(x)?)?)?;
        let h = self.fc1.forward(&self.norm2.forward(&x)?)?;
        let h = match self.act {
            Activation::GeluErf => h.gelu_erf()?,
            Activation::GeluTanh => h.gelu()?,
            Activation::QuickGelu => (&h * candle_nn::ops::sigmoid(&(&h * 1.702)?)?)?,
        };
        x + self.fc2.forward(&h)?
    }
}

/// CLIP's vision tower up to the penultimate layer: the last layer, the post-layernorm and any
/// projection are never needed for Wan's image tokens, so they are not loaded.
pub struct ClipVisionEncoder {
    config: ClipVisionConfig,
    patch_embedding: candle_nn::Conv2d,
    class_embedding: Tensor,
    position_embedding: Tensor,
    pre_layernorm: LayerNorm,
    layers: Vec<EncoderLayer>,
}

impl ClipVisionEncoder {
    /// Build from an `image_encoder/` folder: `config.json` plus safetensors. On the CPU `dtype`
    /// is the dtype the layers' matrices are held in; it computes in f32.
    pub fn from_dir(dir: &Path, dtype: DType, device: &Device) -> crate::Result<Self> {
        let config = ClipVisionConfig::from_dir(dir)?;
        let vb = crate::weights::read_var_builder(dir, dtype, device)?;
        Self::new(config, vb)
            .with_context(|| format!("loading image encoder from {}", dir.display()))
    }

    pub fn new(config: ClipVisionConfig, vb: VarBuilder) -> crate::Result<Self> {
        config.validate()?;
        // transformers before 5 saved the model under `vision_model.`; 5 saves it bare.
        let vm = match vb.contains_tensor("vision_model.embeddings.patch_embedding.weight") {
            true => vb.pp("vision_model"),
            false => vb,
        };
        // Everything but the layers' matrices is held in the compute dtype.
        let emb = compute_vb(&vm).pp("embeddings");
        let h = config.hidden_size;
        let patch_embedding = conv2d_no_bias(
            config.num_channels,
            h,
            config.patch_size,
            Conv2dConfig {
                stride: config.patch_size,
                ..Default::default()
            },
            emb.pp("patch_embedding"),
        )?;
        let layers = (0..config.num_hidden_layers - 1)
            .map(|i| EncoderLayer::new(&config, vm.pp(format!("encoder.layers.{i}"))))
            .collect::<crate::Result<Vec<_>>>()?;
        Ok(Self {
            class_embedding: emb.get(h, "class_embedding")?,
            position_embedding: emb
                .get((config.num_positions(), h), "position_embedding.weight")?,
            pre_layernorm: layer_norm(
                h,
                config.layer_norm_eps,
                compute_vb(&vm).pp("pre_layrnorm"),
            )?,
            patch_embedding,
            layers,
            config,
        })
    }

    pub fn config(&self) -> &ClipVisionConfig {
        &self.config
    }

    /// The dtype the layers' matrices are held in (f32 compute on the CPU).
    pub fn weight_dtype(&self) -> DType {
        self.layers[0].fc1.dtype()
    }

    /// Checkpoint tensors deliberately left unread: the last encoder layer, the post-layernorm
    /// and the projection (absent in `CLIPVisionModel` checkpoints).
    pub fn unused_tensor_prefixes(config: &ClipVisionConfig) -> Vec<String> {
        vec![
            format!(
                "vision_model.encoder.layers.{}.",
                config.num_hidden_layers - 1
            ),
            "vision_model.post_layernorm.".into(),
            "visual_projection.".into(),
        ]
    }

    /// `pixel_values` `(batch, 3, image_size, image_size)` to the penultimate hidden states
    /// `(batch, 1 + patches, hidden)`, transformers' `hidden_states[-2]`.
    pub fn forward(&self, pixel_values: &Tensor) -> crate::Result<Tensor> {
        let c = &self.config;
        let (b, ch, height, width) = pixel_values
            .dims4()
            .context("pixel_values must be (batch, channels, height, width)")?;
        ensure!(
            ch == c.num_channels && height == c.image_size && width == c.image_size,
            "pixel_values: shape {:?} must be (batch, {}, {}, {})",
            pixel_values.dims(),
            c.num_channels,
            c.image_size,
            c.image_size
        );
        let dtype = self.class_embedding.dtype();
        let patches = self
            .patch_embedding
            .forward(&pixel_values.to_dtype(dtype)?)?;
        let patches = patches.flatten_from(2)?.transpose(1, 2)?; // (b, patches, hidden)
        let class = self
            .class_embedding
            .reshape((1, 1, c.hidden_size))?
            .broadcast_as((b, 1, c.hidden_size))?;
        let x = Tensor::cat(&[&class, &patches], 1)?;
        let x = x.broadcast_add(&self.position_embedding.unsqueeze(0)?)?;
        let mut x = self.pre_layernorm.forward(&x)?;
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        Ok(x)
    }
}

/// `gallop debug forward --component image-encoder`: `pixel_values` gives `image_embeds`.
pub fn debug_forward(model_dir: &Path, inputs: &Path, output: &Path) -> crate::Result<()> {
    let device = Device::Cpu;
    let tensors = candle_core::safetensors::load(inputs, &device)
        .with_context(|| format!("reading {}", inputs.display()))?;
    let pixels = tensors
        .get("pixel_values")
        .with_context(|| format!("{}: tensor `pixel_values` is missing", inputs.display()))?;
    let encoder = ClipVisionEncoder::from_dir(model_dir, DType::F32, &device)?;
    let embeds = encoder.forward(pixels)?;
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("image_embeds".to_string(), embeds)]),
        output,
    )?;
    Ok(())
}
