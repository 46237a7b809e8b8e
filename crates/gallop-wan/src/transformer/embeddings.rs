//! Everything that turns inputs into tokens: the patch embedding (a Conv3d whose kernel equals its
//! stride, so a matmul over patches), the timestep / text / image condition embedder, and the
//! inverse patching of the output.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{FeedForward, LayerNorm, Linear};

/// Conv3d with kernel = stride = patch: every patch is a token, projected by one matmul.
#[derive(Debug, Clone)]
pub struct PatchEmbedding {
    /// [inner, channels * pt * ph * pw]
    weight: Tensor,
    bias: Tensor,
    channels: usize,
    patch: (usize, usize, usize),
}

impl PatchEmbedding {
    pub fn load(
        channels: usize,
        inner: usize,
        patch: (usize, usize, usize),
        vb: VarBuilder,
    ) -> Result<Self> {
        let (pt, ph, pw) = patch;
        // A conv kernel, small: held in the compute dtype.
        let vb = crate::weights::compute_vb(&vb);
        let weight = vb
            .get((inner, channels, pt, ph, pw), "weight")?
            .reshape((inner, channels * pt * ph * pw))?;
        Ok(Self {
            weight,
            bias: vb.get(inner, "bias")?,
            channels,
            patch,
        })
    }

    /// [b, c, f, h, w] -> [b, (f/pt)*(h/ph)*(w/pw), inner], tokens in (f, h, w) order.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, f, h, w) = x.dims5()?;
        let (pt, ph, pw) = self.patch;
        let (nf, nh, nw) = (f / pt, h / ph, w / pw);
        let patches = x
            .reshape(vec![b, c, nf, pt, nh, ph, nw, pw])?
            .permute(vec![0, 2, 4, 6, 1, 3, 5, 7])?
            .contiguous()?
            .reshape((b * nf * nh * nw, self.channels * pt * ph * pw))?;
        patches
            .to_dtype(self.weight.dtype())?
            .matmul(&self.weight.t()?)?
            .broadcast_add(&self.bias)?
            .reshape((b, nf * nh * nw, ()))
    }
}

/// [b, tokens, pt*ph*pw*c] -> [b, c, f, h, w]; the inverse of the patch order above.
pub fn unpatchify(
    x: &Tensor,
    grid: (usize, usize, usize),
    patch: (usize, usize, usize),
    channels: usize,
) -> Result<Tensor> {
    let b = x.dim(0)?;
    let (nf, nh, nw) = grid;
    let (pt, ph, pw) = patch;
    x.reshape(vec![b, nf, nh, nw, pt, ph, pw, channels])?
        .permute(vec![0, 7, 1, 4, 2, 5, 3, 6])?
        .contiguous()?
        .reshape((b, channels, nf * pt, nh * ph, nw * pw))
}

/// Sinusoidal timestep features, cos half first (diffusers `Timesteps` with flip_sin_to_cos and
/// no frequency shift), computed in f32 in the same order as the reference.
pub fn timestep_features(t: &Tensor, dim: usize) -> Result<Tensor> {
    let half = dim / 2;
    let log_max = -(10000f64.ln() as f32);
    let freqs: Vec<f32> = (0..half)
        .map(|i| (log_max * i as f32 / half as f32).exp())
        .collect();
    let ts = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut out = Vec::with_capacity(ts.len() * dim);
    for &t in &ts {
        out.extend(freqs.iter().map(|&f| (t * f).cos()));
        out.extend(freqs.iter().map(|&f| (t * f).sin()));
    }
    Tensor::from_vec(out, (ts.len(), dim), t.device())
}

/// CLIP image tokens -> model width (`condition_embedder.image_embedder`).
#[derive(Debug, Clone)]
struct ImageEmbedder {
    norm1: LayerNorm,
    ff: FeedForward,
    norm2: LayerNorm,
    /// FLF2V: a learned position per token of the first and last frame's CLIP tokens together.
    pos_embed: Option<Tensor>,
}

impl ImageEmbedder {
    fn load(
        image_dim: usize,
        dim: usize,
        pos_embed_seq_len: Option<usize>,
        vb: VarBuilder,
    ) -> Result<Self> {
        // diffusers builds these LayerNorms with torch's default eps.
        const EPS: f64 = 1e-5;
        Ok(Self {
            norm1: LayerNorm::affine(image_dim, EPS, vb.pp("norm1"))?,
            ff: FeedForward::load(image_dim, image_dim, dim, false, vb.pp("ff"))?,
            norm2: LayerNorm::affine(dim, EPS, vb.pp("norm2"))?,
            pos_embed: match pos_embed_seq_len {
                Some(n) => {
                    Some(crate::weights::compute_vb(&vb).get((1, n, image_dim), "pos_embed")?)
                }
                None => None,
            },
        })
    }

    fn forward(&self, image: &Tensor) -> crate::Result<Tensor> {
        let mut x = image.clone();
        if let Some(pos) = &self.pos_embed {
            // Pairs of images (first, last frame) become one sequence of twice the length.
            let (n, len, dim) = image.dims3()?;
            let positions = pos.dim(1)?;
            crate::error::ensure!(
                n % 2 == 0 && 2 * len == positions,
                "encoder_hidden_states_image must be [2*batch, {}, {dim}] (first and last frame) \
                 for a pos_embed of {positions} positions, got {:?}",
                positions / 2,
                image.dims()
            );
            x = x
                .reshape((n / 2, 2 * len, dim))?
                .broadcast_add(&pos.to_dtype(x.dtype())?)?;
        }
        let x = self.norm1.forward(&x)?;
        let x = self.ff.forward(&x)?;
        Ok(self.norm2.forward(&x)?)
    }
}

/// `condition_embedder`: timestep -> (temb, 6-way projection); text and image -> model width.
#[derive(Debug, Clone)]
pub struct ConditionEmbedder {
    freq_dim: usize,
    time_1: Linear,
    time_2: Linear,
    time_proj: Linear,
    text_1: Linear,
    text_2: Linear,
    image: Option<ImageEmbedder>,
    /// The dtype the text, image and timestep projections compute in.
    dtype: DType,
}

/// Outputs of the condition embedder. `t` is 1 (one timestep per sample) or the token count.
pub struct Conditions {
    /// [b, t, dim], f32
    pub temb: Tensor,
    /// [b, t, 6, dim], f32
    pub timestep_proj: Tensor,
    /// [b, tokens, dim]
    pub text: Tensor,
    /// [b, image tokens, dim]
    pub image: Option<Tensor>,
}

impl ConditionEmbedder {
    pub fn load(config: &super::TransformerConfig, vb: VarBuilder) -> Result<Self> {
        let dim = config.inner_dim();
        let f32_vb = vb.to_dtype(DType::F32);
        Ok(Self {
            freq_dim: config.freq_dim,
            time_1: Linear::load(config.freq_dim, dim, f32_vb.pp("time_embedder.linear_1"))?,
            time_2: Linear::load(dim, dim, f32_vb.pp("time_embedder.linear_2"))?,
            time_proj: Linear::load(dim, 6 * dim, vb.pp("time_proj"))?,
            text_1: Linear::load(config.text_dim, dim, vb.pp("text_embedder.linear_1"))?,
            text_2: Linear::load(dim, dim, vb.pp("text_embedder.linear_2"))?,
            image: match config.image_dim {
                Some(image_dim) => Some(ImageEmbedder::load(
                    image_dim,
                    dim,
                    config.pos_embed_seq_len,
                    vb.pp("image_embedder"),
                )?),
                None => None,
            },
            dtype: crate::weights::compute_dtype(&vb),
        })
    }

    /// `timestep` is [b] or [b, t]; `text` [b, tokens, text_dim]; `image` [b, n, image_dim].
    pub fn forward(
        &self,
        timestep: &Tensor,
        text: &Tensor,
        image: Option<&Tensor>,
    ) -> crate::Result<Conditions> {
        let (b, t) = match timestep.dims() {
            [b] => (*b, 1),
            [b, t] => (*b, *t),
            other => {
                crate::error::bail!("timestep must be [batch] or [batch, tokens], got {other:?}")
            }
        };
        let features = timestep_features(timestep, self.freq_dim)?;
        let temb = self
            .time_2
            .forward(&self.time_1.forward(&features)?.silu()?)?;
        let dtype = self.dtype;
        let proj = self
            .time_proj
            .forward(&temb.to_dtype(dtype)?.silu()?)?
            .to_dtype(DType::F32)?;
        let dim = temb.dim(D::Minus1)?;
        let text = self
            .text_2
            .forward(&self.text_1.forward(&text.to_dtype(dtype)?)?.gelu()?)?;
        let image = match (image, &self.image) {
            (Some(img), Some(embedder)) => Some(embedder.forward(&img.to_dtype(dtype)?)?),
            (Some(_), None) => crate::error::bail!(
                "encoder_hidden_states_image was given but this checkpoint has no image_dim (no image branch)"
            ),
            (None, _) => None,
        };
        Ok(Conditions {
            temb: temb.reshape((b, t, dim))?,
            timestep_proj: proj.reshape((b, t, 6, dim))?,
            text,
            image,
        })
    }
}
