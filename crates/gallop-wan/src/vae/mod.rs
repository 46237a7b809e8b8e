//! `AutoencoderKLWan`: the Wan2.1 (z 16, 4x8x8) and Wan2.2 (z 48, 4x16x16, 2x2 patchify) video
//! VAEs, from diffusers' `config.json` and safetensors.
//!
//! Encode runs the video in chunks of 1, 4, 4, ... frames and decode one latent frame at a time,
//! each layer carrying its last frames across chunks, exactly as diffusers does; so a decode can
//! also be streamed ([`DecodeStream`]). Above [`AUTO_TILE_PIXELS`] the public `encode`/`decode`
//! switch to spatial tiles ([`TileConfig`], diffusers' defaults) so memory stays bounded.

mod blocks;
mod coder;
mod conv;
mod tiling;

use std::path::Path;

use crate::error::Context;
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use coder::{Decoder, Encoder};
use conv::{CausalConv3d, FeatCache};
pub use tiling::TileConfig;

/// Frame areas (height x width, in pixels) above which [`AutoencoderKLWan::encode`] and
/// [`AutoencoderKLWan::decode`] tile: above 480P (832x480) every size is tiled, so 720P and 1080P
/// decode in 256 px tiles instead of holding whole-frame activations.
pub const AUTO_TILE_PIXELS: usize = 832 * 480;

/// diffusers' `AutoencoderKLWan` config (`vae/config.json`); defaults are diffusers' (Wan2.1).
#[derive(Debug, Clone, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "default_base_dim")]
    pub base_dim: usize,
    #[serde(default)]
    pub decoder_base_dim: Option<usize>,
    #[serde(default = "default_z_dim")]
    pub z_dim: usize,
    #[serde(default = "default_dim_mult")]
    pub dim_mult: Vec<usize>,
    #[serde(default = "default_num_res_blocks")]
    pub num_res_blocks: usize,
    #[serde(default)]
    pub attn_scales: Vec<f64>,
    #[serde(default = "default_temperal_downsample")]
    pub temperal_downsample: Vec<bool>,
    #[serde(default = "default_latents_mean")]
    pub latents_mean: Vec<f64>,
    #[serde(default = "default_latents_std")]
    pub latents_std: Vec<f64>,
    #[serde(default)]
    pub is_residual: bool,
    #[serde(default = "default_channels")]
    pub in_channels: usize,
    #[serde(default = "default_channels")]
    pub out_channels: usize,
    #[serde(default)]
    pub patch_size: Option<usize>,
    #[serde(default = "default_scale_factor_temporal")]
    pub scale_factor_temporal: usize,
    #[serde(default = "default_scale_factor_spatial")]
    pub scale_factor_spatial: usize,
}

fn default_base_dim() -> usize {
    96
}
fn default_z_dim() -> usize {
    16
}
fn default_dim_mult() -> Vec<usize> {
    vec![1, 2, 4, 4]
}
fn default_num_res_blocks() -> usize {
    2
}
fn default_temperal_downsample() -> Vec<bool> {
    vec![false, true, true]
}
fn default_channels() -> usize {
    3
}
fn default_scale_factor_temporal() -> usize {
    4
}
fn default_scale_factor_spatial() -> usize {
    8
}
fn default_latents_mean() -> Vec<f64> {
    vec![
        -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715,
        0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
    ]
}
fn default_latents_std() -> Vec<f64> {
    vec![
        2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652,
        1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
    ]
}

impl VaeConfig {
    /// Reject configs this port does not build, naming the field and the rule.
    pub fn validate(&self) -> crate::Result<()> {
        crate::error::ensure!(
            !self.dim_mult.is_empty(),
            "vae config: dim_mult must not be empty"
        );
        crate::error::ensure!(
            self.temperal_downsample.len() + 1 >= self.dim_mult.len(),
            "vae config: temperal_downsample needs {} entries (len(dim_mult) - 1), has {}",
            self.dim_mult.len() - 1,
            self.temperal_downsample.len()
        );
        crate::error::ensure!(
            self.attn_scales.is_empty(),
            "vae config: attn_scales must be [] (no encoder attention in Wan VAEs), got {:?}",
            self.attn_scales
        );
        crate::error::ensure!(
            self.latents_mean.len() == self.z_dim && self.latents_std.len() == self.z_dim,
            "vae config: latents_mean and latents_std must have z_dim = {} entries, have {} and {}",
            self.z_dim,
            self.latents_mean.len(),
            self.latents_std.len()
        );
        let patch = self.patch();
        crate::error::ensure!(
            patch >= 1 && self.scale_factor_spatial.is_multiple_of(patch),
            "vae config: scale_factor_spatial ({}) must be a multiple of patch_size ({patch})",
            self.scale_factor_spatial
        );
        Ok(())
    }

    /// The patchify factor (1 when `patch_size` is null).
    pub fn patch(&self) -> usize {
        self.patch_size.unwrap_or(1)
    }
}

pub struct AutoencoderKLWan {
    config: VaeConfig,
    encoder: Encoder,
    quant_conv: CausalConv3d,
    post_quant_conv: CausalConv3d,
    decoder: Decoder,
    /// Tiles for `encode`/`decode` above [`AUTO_TILE_PIXELS`].
    pub auto_tiles: TileConfig,
}

impl AutoencoderKLWan {
    pub fn new(config: VaeConfig, vb: VarBuilder) -> crate::Result<Self> {
        config.validate()?;
        let z = config.z_dim;
        Ok(Self {
            encoder: Encoder::load(vb.pp("encoder"), &config)?,
            quant_conv: CausalConv3d::load(vb.pp("quant_conv"), z * 2, z * 2, (1, 1), (0, 0), 1)?,
            post_quant_conv: CausalConv3d::load(vb.pp("post_quant_conv"), z, z, (1, 1), (0, 0), 1)?,
            decoder: Decoder::load(vb.pp("decoder"), &config)?,
            auto_tiles: TileConfig::default(),
            config,
        })
    }

    /// Load from a diffusers component folder (`config.json` + safetensors).
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> crate::Result<Self> {
        let config: VaeConfig = crate::weights::read_config(dir)?;
        let vb = crate::weights::read_var_builder(dir, dtype, device)?;
        Self::new(config, vb).with_context(|| format!("loading the VAE from {}", dir.display()))
    }

    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// `sample` `[B, 3, F, H, W]` in [-1, 1] -> latents `[B, z, 1 + (F-1)/4, H/s, W/s]`, the
    /// posterior mode (not normalised). Tiled above [`AUTO_TILE_PIXELS`].
    pub fn encode(&self, sample: &Tensor) -> crate::Result<Tensor> {
        let (_, _, _, h, w) = sample.dims5()?;
        let tiles = (h * w > AUTO_TILE_PIXELS).then_some(&self.auto_tiles);
        self.encode_with(sample, tiles)
    }

    /// As [`Self::encode`], with tiling as diffusers' `enable_tiling(..)` (`Some`) or off (`None`):
    /// tiles are used only when the frame is larger than one tile, as there.
    pub fn encode_with(
        &self,
        sample: &Tensor,
        tiles: Option<&TileConfig>,
    ) -> crate::Result<Tensor> {
        let (_, c, frames, h, w) = sample
            .dims5()
            .context("vae encode: sample must be [B, C, F, H, W]")?;
        let cfg = &self.config;
        let patch = cfg.patch();
        crate::error::ensure!(
            c * patch * patch == cfg.in_channels,
            "vae encode: sample has {c} channels, the VAE takes {}",
            cfg.in_channels / (patch * patch)
        );
        crate::error::ensure!(
            frames >= 1,
            "vae encode: sample must have at least one frame"
        );
        crate::error::ensure!(
            h % cfg.scale_factor_spatial == 0 && w % cfg.scale_factor_spatial == 0,
            "vae encode: height and width ({h}x{w}) must be multiples of {}",
            cfg.scale_factor_spatial
        );
        let x = frames_major(&patchify(sample, patch)?)?;
        let moments = match tiles {
            Some(tiles) if w > tiles.min_width || h > tiles.min_height => {
                tiling::encode(self, &x, tiles)?
            }
            _ => self.encode_frames(&x)?,
        };
        // Posterior mode: the mean half of the moments.
        Ok(channels_major(&moments.narrow(2, 0, cfg.z_dim)?)?)
    }

    /// Frames-major input `[B, F, C, H, W]` -> frames-major moments `[B, T, 2z, h, w]`.
    fn encode_frames(&self, x: &Tensor) -> Result<Tensor> {
        let frames = x.dim(1)?;
        let mut cache = FeatCache::new();
        let mut chunks = Vec::new();
        let mut start = 0;
        while start < frames {
            let len = if start == 0 { 1 } else { 4.min(frames - start) };
            let chunk = self
                .encoder
                .forward(&x.narrow(1, start, len)?, &mut cache)?;
            chunks.push(self.quant_conv.forward(&chunk, None)?);
            start += len;
        }
        Tensor::cat(&chunks, 1)
    }

    /// `latents` `[B, z, T, h, w]` (not normalised) -> `sample` `[B, 3, 1 + 4(T-1), H, W]` clamped
    /// to [-1, 1]. Tiled above [`AUTO_TILE_PIXELS`].
    pub fn decode(&self, latents: &Tensor) -> crate::Result<Tensor> {
        let (_, _, _, h, w) = latents.dims5()?;
        let s = self.config.scale_factor_spatial;
        let tiles = (h * s * w * s > AUTO_TILE_PIXELS).then_some(&self.auto_tiles);
        self.decode_with(latents, tiles)
    }

    /// As [`Self::decode`], with tiling as diffusers' `enable_tiling(..)` (`Some`) or off (`None`).
    pub fn decode_with(
        &self,
        latents: &Tensor,
        tiles: Option<&TileConfig>,
    ) -> crate::Result<Tensor> {
        let (_, z, t, h, w) = latents
            .dims5()
            .context("vae decode: latents must be [B, z, T, h, w]")?;
        crate::error::ensure!(
            z == self.config.z_dim,
            "vae decode: latents have {z} channels, z_dim is {}",
            self.config.z_dim
        );
        crate::error::ensure!(t >= 1, "vae decode: latents must have at least one frame");
        let s = self.config.scale_factor_spatial;
        if let Some(tiles) = tiles
            && (w > tiles.min_width / s || h > tiles.min_height / s)
        {
            return tiling::decode(self, latents, tiles);
        }
        let mut stream = self.decode_stream();
        let mut frames = Vec::with_capacity(t);
        for i in 0..t {
            frames.push(stream.push(&latents.narrow(2, i, 1)?)?);
        }
        Ok(Tensor::cat(&frames, 2)?)
    }

    /// Decode one latent frame at a time: the first gives 1 frame, each later one 4.
    pub fn decode_stream(&self) -> DecodeStream<'_> {
        DecodeStream {
            vae: self,
            cache: FeatCache::new(),
            first: true,
        }
    }

    /// Frames-major latent chunk (before `post_quant_conv`) -> frames-major decoder output, not
    /// unpatchified or clamped.
    fn decode_chunk(&self, z: &Tensor, cache: &mut FeatCache, first: bool) -> Result<Tensor> {
        let x = self.post_quant_conv.forward(z, None)?;
        self.decoder.forward(&x, cache, first)
    }

    /// `(latents - mean) / std` per channel, as the pipelines write it (`* (1 / std)`).
    pub fn normalize_latents(&self, latents: &Tensor) -> Result<Tensor> {
        let (mean, inv_std) = self.latent_stats(latents)?;
        latents.broadcast_sub(&mean)?.broadcast_mul(&inv_std)
    }

    /// The inverse, `latents * std + mean` (as `/ (1 / std)`), before decoding.
    pub fn denormalize_latents(&self, latents: &Tensor) -> Result<Tensor> {
        let (mean, inv_std) = self.latent_stats(latents)?;
        latents.broadcast_div(&inv_std)?.broadcast_add(&mean)
    }

    /// `latents_mean` and `1 / latents_std` as `[1, z, 1, 1, 1]` (the reciprocal taken in f32).
    fn latent_stats(&self, like: &Tensor) -> Result<(Tensor, Tensor)> {
        let z = self.config.z_dim;
        let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let mean = Tensor::from_vec(
            f32s(&self.config.latents_mean),
            (1, z, 1, 1, 1),
            like.device(),
        )?;
        let std = Tensor::from_vec(
            f32s(&self.config.latents_std),
            (1, z, 1, 1, 1),
            like.device(),
        )?;
        let inv_std = std.recip()?;
        Ok((
            mean.to_dtype(like.dtype())?,
            inv_std.to_dtype(like.dtype())?,
        ))
    }
}

/// A decode in progress, one latent frame per [`DecodeStream::push`].
pub struct DecodeStream<'a> {
    vae: &'a AutoencoderKLWan,
    cache: FeatCache,
    first: bool,
}

impl DecodeStream<'_> {
    /// `latent` `[B, z, 1, h, w]` -> the frames it completes, `[B, 3, n, H, W]` in [-1, 1]
    /// (n = 1 for the first latent frame, 4 after).
    pub fn push(&mut self, latent: &Tensor) -> crate::Result<Tensor> {
        let (_, z, t, _, _) = latent
            .dims5()
            .context("vae decode: latent must be [B, z, 1, h, w]")?;
        crate::error::ensure!(
            t == 1,
            "vae decode stream: push one latent frame at a time, got {t}"
        );
        crate::error::ensure!(
            z == self.vae.config.z_dim,
            "vae decode: latents have {z} channels, z_dim is {}",
            self.vae.config.z_dim
        );
        let out = self
            .vae
            .decode_chunk(&frames_major(latent)?, &mut self.cache, self.first)?;
        self.first = false;
        let out = unpatchify(&channels_major(&out)?, self.vae.config.patch())?;
        Ok(out.clamp(-1f32, 1f32)?)
    }
}

/// `[B, C, T, H, W]` -> `[B, T, C, H, W]`, contiguous.
fn frames_major(x: &Tensor) -> Result<Tensor> {
    x.permute((0, 2, 1, 3, 4))?.contiguous()
}

/// `[B, T, C, H, W]` -> `[B, C, T, H, W]`, contiguous.
fn channels_major(x: &Tensor) -> Result<Tensor> {
    x.permute((0, 2, 1, 3, 4))?.contiguous()
}

/// `[B, C, F, H, W]` -> `[B, C*p*p, F, H/p, W/p]`, channel `c*p*p + pw*p + ph` (diffusers' order).
fn patchify(x: &Tensor, p: usize) -> Result<Tensor> {
    if p == 1 {
        return Ok(x.clone());
    }
    let (b, c, f, h, w) = x.dims5()?;
    x.reshape(vec![b, c, f, h / p, p, w / p, p])?
        .permute([0, 1, 6, 4, 2, 3, 5])?
        .contiguous()?
        .reshape((b, c * p * p, f, h / p, w / p))
}

/// The inverse of [`patchify`].
fn unpatchify(x: &Tensor, p: usize) -> Result<Tensor> {
    if p == 1 {
        return Ok(x.clone());
    }
    let (b, cp, f, h, w) = x.dims5()?;
    x.reshape(vec![b, cp / (p * p), p, p, f, h, w])?
        .permute([0, 1, 4, 5, 3, 6, 2])?
        .contiguous()?
        .reshape((b, cp / (p * p), f, h * p, w * p))
}

/// `gallop debug forward --component vae-encode`: `sample` -> `latents` (mode, not normalised).
pub fn debug_forward_encode(model_dir: &Path, inputs: &Path, output: &Path) -> crate::Result<()> {
    debug_run(model_dir, inputs, output, "sample", "latents", |vae, x| {
        vae.encode(x)
    })
}

/// `gallop debug forward --component vae-decode`: `latents` -> `sample`.
pub fn debug_forward_decode(model_dir: &Path, inputs: &Path, output: &Path) -> crate::Result<()> {
    debug_run(model_dir, inputs, output, "latents", "sample", |vae, z| {
        vae.decode(z)
    })
}

fn debug_run(
    model_dir: &Path,
    inputs: &Path,
    output: &Path,
    input_name: &str,
    output_name: &str,
    run: impl Fn(&AutoencoderKLWan, &Tensor) -> crate::Result<Tensor>,
) -> crate::Result<()> {
    let device = Device::Cpu;
    let vae = AutoencoderKLWan::load(model_dir, DType::F32, &device)?;
    let tensors = candle_core::safetensors::load(inputs, &device)
        .with_context(|| format!("reading {}", inputs.display()))?;
    let input = tensors
        .get(input_name)
        .with_context(|| format!("{} has no tensor named {input_name:?}", inputs.display()))?
        .to_dtype(DType::F32)?;
    let result = run(&vae, &input)?;
    candle_core::safetensors::save(&[(output_name, result)].into_iter().collect(), output)
        .with_context(|| format!("writing {}", output.display()))
}
