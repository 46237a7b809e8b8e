//! The 3D encoder and decoder stacks of `AutoencoderKLWan` (Wan2.1 plain blocks, Wan2.2 residual
//! up/down blocks), one chunk of frames per call with the feature cache carrying the past.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::VaeConfig;
use super::blocks::{AvgDown3d, DupUp3d, MidBlock, Resample, ResampleMode, ResidualBlock, RmsNorm};
use super::conv::{CausalConv3d, FeatCache, cached_conv};

enum DownLayer {
    Residual(ResidualBlock),
    Resample(Resample),
    /// Wan2.2: residual blocks and a downsampler with an averaging shortcut around them.
    ResidualDown {
        resnets: Vec<ResidualBlock>,
        downsampler: Option<Resample>,
        shortcut: AvgDown3d,
    },
}

pub(crate) struct Encoder {
    conv_in: CausalConv3d,
    down: Vec<DownLayer>,
    mid: MidBlock,
    norm_out: RmsNorm,
    conv_out: CausalConv3d,
}

impl Encoder {
    pub(crate) fn load(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        let dim = cfg.base_dim;
        let mults: Vec<usize> = std::iter::once(1)
            .chain(cfg.dim_mult.iter().copied())
            .collect();
        let dims: Vec<usize> = mults.iter().map(|m| dim * m).collect();
        let levels = cfg.dim_mult.len();
        let conv_in = CausalConv3d::load(
            vb.pp("conv_in"),
            cfg.in_channels,
            dims[0],
            (3, 3),
            (1, 1),
            1,
        )?;
        let mut down = Vec::new();
        let blocks = vb.pp("down_blocks");
        for i in 0..levels {
            let (mut in_dim, out_dim) = (dims[i], dims[i + 1]);
            let last = i == levels - 1;
            let temporal = !last && cfg.temperal_downsample[i];
            let mode = if temporal {
                ResampleMode::Downsample3d
            } else {
                ResampleMode::Downsample2d
            };
            if cfg.is_residual {
                let vb = blocks.pp(i);
                let resnets = (0..cfg.num_res_blocks)
                    .map(|j| {
                        ResidualBlock::load(
                            vb.pp(format!("resnets.{j}")),
                            if j == 0 { in_dim } else { out_dim },
                            out_dim,
                        )
                    })
                    .collect::<Result<Vec<_>>>()?;
                let downsampler = (!last)
                    .then(|| Resample::load(vb.pp("downsampler"), out_dim, mode, out_dim))
                    .transpose()?;
                let shortcut = AvgDown3d::new(
                    in_dim,
                    out_dim,
                    if temporal { 2 } else { 1 },
                    if last { 1 } else { 2 },
                );
                down.push(DownLayer::ResidualDown {
                    resnets,
                    downsampler,
                    shortcut,
                });
            } else {
                for _ in 0..cfg.num_res_blocks {
                    down.push(DownLayer::Residual(ResidualBlock::load(
                        blocks.pp(down.len()),
                        in_dim,
                        out_dim,
                    )?));
                    in_dim = out_dim;
                }
                if !last {
                    down.push(DownLayer::Resample(Resample::load(
                        blocks.pp(down.len()),
                        out_dim,
                        mode,
                        out_dim,
                    )?));
                }
            }
        }
        let top = dims[levels];
        Ok(Self {
            conv_in,
            down,
            mid: MidBlock::load(vb.pp("mid_block"), top)?,
            norm_out: RmsNorm::load(vb.pp("norm_out"), top, false)?,
            conv_out: CausalConv3d::load(vb.pp("conv_out"), top, cfg.z_dim * 2, (3, 3), (1, 1), 1)?,
        })
    }

    /// One chunk `[B, T, C, H, W]` (patchified for Wan2.2) -> `[B, T', 2z, h, w]`.
    pub(crate) fn forward(&self, x: &Tensor, cache: &mut FeatCache) -> Result<Tensor> {
        cache.start_chunk();
        let mut x = cached_conv(&self.conv_in, x, cache)?;
        for layer in &self.down {
            x = match layer {
                DownLayer::Residual(block) => block.forward(&x, cache)?,
                DownLayer::Resample(resample) => resample.forward(&x, cache)?,
                DownLayer::ResidualDown {
                    resnets,
                    downsampler,
                    shortcut,
                } => {
                    let mut y = x.clone();
                    for block in resnets {
                        y = block.forward(&y, cache)?;
                    }
                    if let Some(resample) = downsampler {
                        y = resample.forward(&y, cache)?;
                    }
                    (y + shortcut.forward(&x)?)?
                }
            };
        }
        let x = self.mid.forward(&x, cache)?;
        let x = self.norm_out.forward_silu(&x)?;
        cached_conv(&self.conv_out, &x, cache)
    }
}

struct UpBlock {
    resnets: Vec<ResidualBlock>,
    upsampler: Option<Resample>,
    /// Wan2.2 only: the duplicating shortcut around the whole block.
    shortcut: Option<DupUp3d>,
}

pub(crate) struct Decoder {
    conv_in: CausalConv3d,
    mid: MidBlock,
    up: Vec<UpBlock>,
    norm_out: RmsNorm,
    conv_out: CausalConv3d,
}

impl Decoder {
    pub(crate) fn load(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        let dim = cfg.decoder_base_dim.unwrap_or(cfg.base_dim);
        let levels = cfg.dim_mult.len();
        let mults: Vec<usize> = std::iter::once(cfg.dim_mult[levels - 1])
            .chain(cfg.dim_mult.iter().rev().copied())
            .collect();
        let dims: Vec<usize> = mults.iter().map(|m| dim * m).collect();
        let temporal_up: Vec<bool> = cfg.temperal_downsample.iter().rev().copied().collect();
        let mut up = Vec::with_capacity(levels);
        for i in 0..levels {
            let (mut in_dim, out_dim) = (dims[i], dims[i + 1]);
            // Wan2.1's upsamplers halve the channels, so later blocks take half.
            if i > 0 && !cfg.is_residual {
                in_dim /= 2;
            }
            let up_flag = i != levels - 1;
            let temporal = up_flag && temporal_up[i];
            let mode = if temporal {
                ResampleMode::Upsample3d
            } else {
                ResampleMode::Upsample2d
            };
            let vb = vb.pp("up_blocks").pp(i);
            let resnets = (0..=cfg.num_res_blocks)
                .map(|j| {
                    ResidualBlock::load(
                        vb.pp(format!("resnets.{j}")),
                        if j == 0 { in_dim } else { out_dim },
                        out_dim,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let (upsampler, shortcut) = match (up_flag, cfg.is_residual) {
                (false, _) => (None, None),
                (true, false) => (
                    Some(Resample::load(
                        vb.pp("upsamplers.0"),
                        out_dim,
                        mode,
                        out_dim / 2,
                    )?),
                    None,
                ),
                (true, true) => (
                    Some(Resample::load(vb.pp("upsampler"), out_dim, mode, out_dim)?),
                    Some(DupUp3d::new(
                        in_dim,
                        out_dim,
                        if temporal { 2 } else { 1 },
                        2,
                    )),
                ),
            };
            up.push(UpBlock {
                resnets,
                upsampler,
                shortcut,
            });
        }
        let top = dims[0];
        let bottom = dims[levels];
        Ok(Self {
            conv_in: CausalConv3d::load(vb.pp("conv_in"), cfg.z_dim, top, (3, 3), (1, 1), 1)?,
            mid: MidBlock::load(vb.pp("mid_block"), top)?,
            up,
            norm_out: RmsNorm::load(vb.pp("norm_out"), bottom, false)?,
            conv_out: CausalConv3d::load(
                vb.pp("conv_out"),
                bottom,
                cfg.out_channels,
                (3, 3),
                (1, 1),
                1,
            )?,
        })
    }

    /// One latent chunk `[B, T, z, h, w]` (after `post_quant_conv`) -> frames `[B, T', C, H, W]`.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        cache: &mut FeatCache,
        first_chunk: bool,
    ) -> Result<Tensor> {
        cache.start_chunk();
        let mut x = cached_conv(&self.conv_in, x, cache)?;
        x = self.mid.forward(&x, cache)?;
        for block in &self.up {
            let input = x.clone();
            for resnet in &block.resnets {
                x = resnet.forward(&x, cache)?;
            }
            if let Some(upsampler) = &block.upsampler {
                x = upsampler.forward(&x, cache)?;
            }
            if let Some(shortcut) = &block.shortcut {
                x = (x + shortcut.forward(&input, first_chunk)?)?;
            }
        }
        let x = self.norm_out.forward_silu(&x)?;
        cached_conv(&self.conv_out, &x, cache)
    }
}
