//! The T5-family text encoder: UMT5 (Wan's UMT5-XXL: a relative position bias in every layer)
//! and T5 (one bias in the first layer, shared by all), from transformers' `config.json`, plus the
//! pipelines' prompt path (clean, tokenize, pad to 512, encode, zero the padded rows).

mod prompt;
mod tokenizer;

use std::path::Path;

use crate::error::{Context, bail, ensure};
use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Embedding, VarBuilder, embedding};
use serde::Deserialize;

use crate::transformer::Linear;
use crate::weights::{compute_dtype, compute_vb};

pub use prompt::{TextEncoder, clean_prompt};
pub use tokenizer::{PromptTokenizer, TokenizedPrompts};

/// The transformers `config.json` fields the encoder reads.
#[derive(Debug, Clone, Deserialize)]
pub struct T5Config {
    /// "umt5" (bias in every layer) or "t5" (bias in the first layer, shared).
    pub model_type: String,
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub relative_attention_num_buckets: usize,
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// "relu", "gated-gelu", "gelu", "gated-silu", ...: `[gated-]ACT`.
    #[serde(default = "default_ffn")]
    pub feed_forward_proj: String,
}

fn default_max_distance() -> usize {
    128
}
fn default_eps() -> f64 {
    1e-6
}
fn default_ffn() -> String {
    "relu".into()
}

/// The activation of the feed-forward block, as transformers maps `feed_forward_proj`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Activation {
    Relu,
    /// transformers' `gelu_new`: the tanh approximation ("gated-gelu" maps here).
    GeluTanh,
    Silu,
}

impl T5Config {
    fn validate(&self) -> crate::Result<()> {
        ensure!(
            matches!(self.model_type.as_str(), "t5" | "umt5"),
            "text encoder config: model_type {:?} is not supported: must be \"t5\" or \"umt5\"",
            self.model_type
        );
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_heads", self.num_heads),
        ] {
            ensure!(v > 0, "text encoder config: {name} must be positive");
        }
        ensure!(
            self.relative_attention_num_buckets >= 4,
            "text encoder config: relative_attention_num_buckets must be at least 4, got {}",
            self.relative_attention_num_buckets
        );
        ensure!(
            self.relative_attention_max_distance > self.relative_attention_num_buckets / 4,
            "text encoder config: relative_attention_max_distance must exceed num_buckets / 4"
        );
        self.activation()?;
        Ok(())
    }

    /// Is the FFN gated (`wi_0`, `wi_1`) and which activation; as transformers parses it.
    fn activation(&self) -> crate::Result<(bool, Activation)> {
        let parts: Vec<&str> = self.feed_forward_proj.split('-').collect();
        let (gated, act) = match parts.as_slice() {
            [act] => (false, *act),
            ["gated", act] => (true, *act),
            _ => bail!(
                "text encoder config: feed_forward_proj {:?} must be `ACT` or `gated-ACT`",
                self.feed_forward_proj
            ),
        };
        let act = match act {
            "relu" => Activation::Relu,
            // transformers turns "gated-gelu" into gelu_new (tanh); plain "gelu" stays exact erf,
            // which no T5 checkpoint uses, so it is refused rather than guessed.
            "gelu" if gated => Activation::GeluTanh,
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            "silu" => Activation::Silu,
            other => bail!(
                "text encoder config: feed_forward_proj activation {other:?} is not supported: expected relu, gated-gelu, gelu_new or silu"
            ),
        };
        Ok((gated, act))
    }

    fn per_layer_bias(&self) -> bool {
        self.model_type == "umt5"
    }
}

/// T5's RMS layer norm: scale only, no mean subtraction, no bias.
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(dim: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            weight: compute_vb(&vb).get(dim, "weight")?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let variance = x.sqr()?.mean_keepdim(D::Minus1)?;
        let x = x.broadcast_mul(&(variance + self.eps)?.sqrt()?.recip()?)?;
        x.broadcast_mul(&self.weight)
    }
}

/// Map a relative position (key - query) to its bucket, bidirectionally: half the buckets for
/// each sign, half of those exact, the rest logarithmic up to `max_distance`. The float steps are
/// float32 as in transformers, since a bucket is a truncation and an ulp can move it.
pub fn relative_position_bucket(relative: i64, num_buckets: usize, max_distance: usize) -> usize {
    let half = num_buckets / 2;
    let mut bucket = if relative > 0 { half } else { 0 };
    let n = relative.unsigned_abs() as usize;
    let max_exact = half / 2;
    if n < max_exact {
        bucket += n;
    } else {
        let log_ratio = (n as f32 / max_exact as f32).ln()
            / ((max_distance as f64 / max_exact as f64).ln() as f32)
            * (half - max_exact) as f32;
        bucket += (max_exact + log_ratio as usize).min(half - 1);
    }
    bucket
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    relative_bias: Option<Embedding>,
    heads: usize,
    d_kv: usize,
}

impl Attention {
    fn new(config: &T5Config, has_bias: bool, vb: VarBuilder) -> candle_core::Result<Self> {
        let inner = config.num_heads * config.d_kv;
        let relative_bias = if has_bias {
            Some(embedding(
                config.relative_attention_num_buckets,
                config.num_heads,
                compute_vb(&vb).pp("relative_attention_bias"),
            )?)
        } else {
            None
        };
        Ok(Self {
            q: Linear::load_no_bias(config.d_model, inner, vb.pp("q"))?,
            k: Linear::load_no_bias(config.d_model, inner, vb.pp("k"))?,
            v: Linear::load_no_bias(config.d_model, inner, vb.pp("v"))?,
            o: Linear::load_no_bias(inner, config.d_model, vb.pp("o"))?,
            relative_bias,
            heads: config.num_heads,
            d_kv: config.d_kv,
        })
    }

    /// The bias `(1, heads, len, len)` from this layer's table for a bucket grid `(len, len)`.
    fn position_bias(&self, buckets: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let Some(table) = &self.relative_bias else {
            return Ok(None);
        };
        let len = buckets.dim(0)?;
        let values = table.forward(&buckets.flatten_all()?)?; // (len*len, heads)
        let values = values.reshape((len, len, self.heads))?.permute((2, 0, 1))?;
        Ok(Some(values.unsqueeze(0)?.contiguous()?))
    }

    /// T5 attention: unscaled q·k plus position bias plus key mask, softmax, weighted values.
    fn forward(&self, x: &Tensor, bias_and_mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, len, _) = x.dims3()?;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((b, len, self.heads, self.d_kv))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.q.forward(x)?)?;
        let k = split(self.k.forward(x)?)?;
        let v = split(self.v.forward(x)?)?;
        let scores = q.matmul(&k.transpose(2, 3)?.contiguous()?)?;
        let scores = scores.broadcast_add(bias_and_mask)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, len, ()))?;
        self.o.forward(&out)
    }
}

struct FeedForward {
    wi_0: Linear,
    /// The linear half of a gated FFN.
    wi_1: Option<Linear>,
    wo: Linear,
    act: Activation,
}

impl FeedForward {
    fn new(config: &T5Config, vb: VarBuilder) -> crate::Result<Self> {
        let (gated, act) = config.activation()?;
        let (d, ff) = (config.d_model, config.d_ff);
        let (wi_0, wi_1) = if gated {
            (
                Linear::load_no_bias(d, ff, vb.pp("wi_0"))?,
                Some(Linear::load_no_bias(d, ff, vb.pp("wi_1"))?),
            )
        } else {
            (Linear::load_no_bias(d, ff, vb.pp("wi"))?, None)
        };
        Ok(Self {
            wi_0,
            wi_1,
            wo: Linear::load_no_bias(ff, d, vb.pp("wo"))?,
            act,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.wi_0.forward(x)?;
        let h = match self.act {
            Activation::Relu => h.relu()?,
            Activation::GeluTanh => h.gelu()?,
            Activation::Silu => h.silu()?,
        };
        let h = match &self.wi_1 {
            Some(wi_1) => (h * wi_1.forward(x)?)?,
            None => h,
        };
        self.wo.forward(&h)
    }
}

struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    ff_norm: RmsNorm,
    ff: FeedForward,
}

/// The token table: held in the VarBuilder's dtype (bf16 on the CPU with `--dtype bf16`: UMT5-XXL's
/// is 256384 x 4096, 4.2 GB in f32); the rows a prompt uses are gathered, then widened to the
/// compute dtype.
struct TokenEmbedding {
    table: Tensor,
    dtype: DType,
}

impl TokenEmbedding {
    fn new(vocab: usize, dim: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            table: vb.get((vocab, dim), "weight")?,
            dtype: compute_dtype(&vb),
        })
    }

    /// `ids` of any shape -> `[..ids, dim]` in the compute dtype.
    fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let dim = self.table.dim(1)?;
        let mut shape = ids.dims().to_vec();
        shape.push(dim);
        self.table
            .index_select(&ids.flatten_all()?, 0)?
            .to_dtype(self.dtype)?
            .reshape(shape)
    }
}

/// The encoder stack of `T5EncoderModel` / `UMT5EncoderModel`.
pub struct T5Encoder {
    config: T5Config,
    embed: TokenEmbedding,
    blocks: Vec<Block>,
    final_norm: RmsNorm,
    device: Device,
}

impl T5Encoder {
    /// Build from a `text_encoder/` folder: `config.json` plus safetensors (sharded or not). On
    /// the CPU `dtype` is the dtype the matrices and token table are held in; it computes in f32.
    pub fn from_dir(dir: &Path, dtype: DType, device: &Device) -> crate::Result<Self> {
        Self::from_dir_quantized(dir, dtype, None, device)
    }

    /// As [`Self::from_dir`], the layers' matrices held quantized when `quantize` says so.
    pub fn from_dir_quantized(
        dir: &Path,
        dtype: DType,
        quantize: Option<crate::quant::Quantize>,
        device: &Device,
    ) -> crate::Result<Self> {
        let config: T5Config = crate::weights::read_config(dir)?;
        let vb = crate::weights::ComponentTensors::open(dir)?
            .with_quantize(quantize)
            .into_var_builder(dtype, device);
        Self::new(config, vb)
            .with_context(|| format!("loading text encoder from {}", dir.display()))
    }

    pub fn new(config: T5Config, vb: VarBuilder) -> crate::Result<Self> {
        config.validate()?;
        // The token table is saved as `shared` (tied to `encoder.embed_tokens`); accept either.
        let embed_vb = if vb.contains_tensor("shared.weight")
            || !vb.contains_tensor("encoder.embed_tokens.weight")
        {
            vb.pp("shared")
        } else {
            vb.pp("encoder.embed_tokens")
        };
        let embed = TokenEmbedding::new(config.vocab_size, config.d_model, embed_vb)?;
        let enc = vb.pp("encoder");
        let mut blocks = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let layer = enc.pp(format!("block.{i}.layer"));
            let has_bias = config.per_layer_bias() || i == 0;
            blocks.push(Block {
                attn_norm: RmsNorm::new(
                    config.d_model,
                    config.layer_norm_epsilon,
                    layer.pp("0.layer_norm"),
                )?,
                attn: Attention::new(&config, has_bias, layer.pp("0.SelfAttention"))?,
                ff_norm: RmsNorm::new(
                    config.d_model,
                    config.layer_norm_epsilon,
                    layer.pp("1.layer_norm"),
                )?,
                ff: FeedForward::new(&config, layer.pp("1.DenseReluDense"))?,
            });
        }
        let final_norm = RmsNorm::new(
            config.d_model,
            config.layer_norm_epsilon,
            enc.pp("final_layer_norm"),
        )?;
        Ok(Self {
            device: vb.device().clone(),
            config,
            embed,
            blocks,
            final_norm,
        })
    }

    pub fn config(&self) -> &T5Config {
        &self.config
    }

    /// The dtype the token table and matrices are held in (f32 compute on the CPU).
    pub fn weight_dtype(&self) -> DType {
        self.embed.table.dtype()
    }

    /// The bucket of every (query, key) pair of a sequence of `len` tokens, `(len, len)` u32.
    fn bucket_grid(&self, len: usize) -> candle_core::Result<Tensor> {
        let (nb, md) = (
            self.config.relative_attention_num_buckets,
            self.config.relative_attention_max_distance,
        );
        let grid: Vec<u32> = (0..len as i64)
            .flat_map(|q| {
                (0..len as i64).map(move |k| relative_position_bucket(k - q, nb, md) as u32)
            })
            .collect();
        Tensor::from_vec(grid, (len, len), &self.device)
    }

    /// `last_hidden_state` for `input_ids` `(batch, len)` and `attention_mask` `(batch, len)`
    /// (1 = token, 0 = padding; padded keys are masked out, padded rows are still computed).
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> crate::Result<Tensor> {
        let (b, len) = input_ids
            .dims2()
            .context("input_ids must be (batch, length)")?;
        ensure!(
            attention_mask.dims() == [b, len],
            "attention_mask shape {:?} must equal input_ids shape {:?}",
            attention_mask.dims(),
            input_ids.dims()
        );
        let ids = input_ids.to_dtype(DType::U32)?;
        let max_id = ids.max_all()?.to_scalar::<u32>()? as usize;
        ensure!(
            max_id < self.config.vocab_size,
            "input_ids: token id {max_id} is outside the vocabulary of {}",
            self.config.vocab_size
        );
        let mut x = self.embed.forward(&ids)?;
        let dtype = x.dtype();
        // Additive key mask: 0 where attended, the dtype's lowest value where padded.
        let keep = attention_mask.to_dtype(DType::F32)?.ne(0f32)?;
        let zeros = Tensor::zeros((b, len), dtype, &self.device)?;
        let lowest = Tensor::full(f32::MIN, (b, len), &self.device)?.to_dtype(dtype)?;
        let mask = keep.where_cond(&zeros, &lowest)?.reshape((b, 1, 1, len))?;
        let buckets = self.bucket_grid(len)?;
        let mut shared_bias = None;
        for block in &self.blocks {
            let bias = match block.attn.position_bias(&buckets)? {
                Some(bias) => bias,
                None => shared_bias
                    .clone()
                    .context("a T5 layer without bias needs the first layer's")?,
            };
            if shared_bias.is_none() {
                shared_bias = Some(bias.clone());
            }
            let bias_and_mask = bias.to_dtype(dtype)?.broadcast_add(&mask)?;
            let h = block
                .attn
                .forward(&block.attn_norm.forward(&x)?, &bias_and_mask)?;
            x = (x + h)?;
            let h = block.ff.forward(&block.ff_norm.forward(&x)?)?;
            x = (x + h)?;
        }
        Ok(self.final_norm.forward(&x)?)
    }
}

/// `gallop debug forward --component text-encoder`: `input_ids` and `attention_mask` (optional,
/// all ones if absent) give `last_hidden_state`.
pub fn debug_forward(model_dir: &Path, inputs: &Path, output: &Path) -> crate::Result<()> {
    let device = Device::Cpu;
    let tensors = candle_core::safetensors::load(inputs, &device)
        .with_context(|| format!("reading {}", inputs.display()))?;
    let ids = tensors
        .get("input_ids")
        .with_context(|| format!("{}: tensor `input_ids` is missing", inputs.display()))?;
    let mask = match tensors.get("attention_mask") {
        Some(m) => m.clone(),
        None => Tensor::ones(ids.dims(), DType::U32, &device)?,
    };
    let encoder = T5Encoder::from_dir(model_dir, DType::F32, &device)?;
    let hidden = encoder.forward(ids, &mask)?;
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("last_hidden_state".to_string(), hidden)]),
        output,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_table_held_in_half_precision_gives_the_rounded_f32_tables_rows() {
        let dev = Device::Cpu;
        let table = Tensor::randn(0f32, 1.0, (50, 24), &dev).unwrap();
        let ids = Tensor::new(&[[3u32, 0, 49, 3], [7, 7, 1, 20]], &dev).unwrap();
        for held in [DType::BF16, DType::F16] {
            let load = |t: &Tensor, dtype| {
                let tensors = std::collections::HashMap::from([("weight".to_string(), t.clone())]);
                TokenEmbedding::new(50, 24, VarBuilder::from_tensors(tensors, dtype, &dev)).unwrap()
            };
            let half = load(&table, held);
            assert_eq!(half.table.dtype(), held);
            let rounded = table.to_dtype(held).unwrap().to_dtype(DType::F32).unwrap();
            let reference = load(&rounded, DType::F32);
            let (a, b) = (
                half.forward(&ids).unwrap(),
                reference.forward(&ids).unwrap(),
            );
            assert_eq!((a.dtype(), a.dims()), (DType::F32, &[2, 4, 24][..]));
            let bits = |t: &Tensor| crate::testing::f32_bits(t).unwrap();
            assert_eq!(bits(&a), bits(&b), "{held:?}");
        }
    }
}
