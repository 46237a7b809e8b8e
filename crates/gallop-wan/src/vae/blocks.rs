//! The VAE's building blocks on frames-major activations `[B, T, C, H, W]`: RMS norm over
//! channels, residual blocks, per-frame mid attention, spatial/temporal resampling and the Wan2.2
//! parameter-free shortcuts.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::fast_math::{fast_exp, with_widest_simd};

use super::conv::{
    CausalConv3d, Conv2d, FeatCache, PARALLEL_MIN, Slot, cached_conv, channel_dim, history_after,
};

/// Query rows per attention step: bounds the score matrix at large latents (no tiling).
const ATTENTION_QUERY_CHUNK: usize = 4096;

/// `x / max(||x||_channels, 1e-12) * sqrt(C) * gamma`.
pub(crate) struct RmsNorm {
    /// `gamma * sqrt(C)`, shaped `[C, 1, 1]`.
    scale: Tensor,
}

impl RmsNorm {
    /// `images`: the gamma is stored `[C, 1, 1]` (attention) rather than `[C, 1, 1, 1]`.
    pub(crate) fn load(vb: VarBuilder, dim: usize, images: bool) -> Result<Self> {
        let gamma = if images {
            vb.get((dim, 1, 1), "gamma")?
        } else {
            vb.get((dim, 1, 1, 1), "gamma")?
        };
        let scale = (gamma.reshape((dim, 1, 1))? * (dim as f64).sqrt())?;
        Ok(Self { scale })
    }
}

impl RmsNorm {
    /// `silu(norm(x))`; on CPU f32 one fused pass instead of seven tensor ops.
    pub(crate) fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 && self.scale.dtype() == DType::F32 {
            return self.fused_cpu_f32(x);
        }
        self.forward(x)?.silu()
    }

    fn fused_cpu_f32(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        let dims = x.dims().to_vec();
        let cd = channel_dim(&x)?;
        let c = dims[cd];
        let hw: usize = dims[cd + 1..].iter().product();
        let scale = self.scale.flatten_all()?.to_vec1::<f32>()?;
        let (storage, layout) = x.storage_and_layout();
        let data = match &*storage {
            candle_core::Storage::Cpu(cpu) => &cpu.as_slice::<f32>()?[layout.start_offset()..],
            _ => candle_core::bail!("expected a CPU tensor"),
        };
        let data = &data[..x.elem_count()];
        let threads = if data.len() >= PARALLEL_MIN {
            candle_core::utils::get_num_threads().max(1)
        } else {
            1
        };
        let mut out = vec![0f32; data.len()];
        let mut inv = vec![0f32; hw];
        for (block, out_block) in data.chunks(c * hw).zip(out.chunks_mut(c * hw)) {
            // 1 / max(||x||, 1e-12) per pixel, pixel ranges split across threads.
            let per = hw.div_ceil(threads);
            std::thread::scope(|s| {
                for (t, inv_part) in inv.chunks_mut(per).enumerate() {
                    s.spawn(move || {
                        with_widest_simd(
                            #[inline(always)]
                            || {
                                let start = t * per;
                                inv_part.fill(0.0);
                                for ci in 0..c {
                                    let row = &block[ci * hw + start..][..inv_part.len()];
                                    for (acc, v) in inv_part.iter_mut().zip(row) {
                                        *acc += v * v;
                                    }
                                }
                                for acc in inv_part.iter_mut() {
                                    *acc = 1.0 / acc.sqrt().max(1e-12);
                                }
                            },
                        )
                    });
                }
            });
            // Normalise, scale and SiLU, channel rows split across threads.
            let rows = c.div_ceil(threads);
            let (inv, scale) = (&inv, &scale);
            std::thread::scope(|s| {
                for (t, out_part) in out_block.chunks_mut(rows * hw).enumerate() {
                    s.spawn(move || {
                        with_widest_simd(
                            #[inline(always)]
                            || {
                                for (r, out_row) in out_part.chunks_mut(hw).enumerate() {
                                    let ci = t * rows + r;
                                    let g = scale[ci];
                                    let row = &block[ci * hw..][..hw];
                                    for ((o, v), n) in out_row.iter_mut().zip(row).zip(inv) {
                                        let y = v * n * g;
                                        *o = y / (1.0 + fast_exp(-y));
                                    }
                                }
                            },
                        )
                    });
                }
            });
        }
        Tensor::from_vec(out, dims, &candle_core::Device::Cpu)
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let norm = x
            .sqr()?
            .sum_keepdim(channel_dim(x)?)?
            .sqrt()?
            .maximum(1e-12)?;
        x.broadcast_div(&norm)?.broadcast_mul(&self.scale)
    }
}

/// Frames `[B, T, C, H, W]` as images `[B*T, C, H, W]`, run through `f`, and back.
fn per_frame(x: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let (b, t, c, h, w) = x.dims5()?;
    let y = f(&x.reshape((b * t, c, h, w))?)?;
    let (_, c2, h2, w2) = y.dims4()?;
    y.reshape((b, t, c2, h2, w2))
}

pub(crate) struct ResidualBlock {
    norm1: RmsNorm,
    conv1: CausalConv3d,
    norm2: RmsNorm,
    conv2: CausalConv3d,
    shortcut: Option<CausalConv3d>,
}

impl ResidualBlock {
    pub(crate) fn load(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        let shortcut = if in_dim != out_dim {
            Some(CausalConv3d::load(
                vb.pp("conv_shortcut"),
                in_dim,
                out_dim,
                (1, 1),
                (0, 0),
                1,
            )?)
        } else {
            None
        };
        Ok(Self {
            norm1: RmsNorm::load(vb.pp("norm1"), in_dim, false)?,
            conv1: CausalConv3d::load(vb.pp("conv1"), in_dim, out_dim, (3, 3), (1, 1), 1)?,
            norm2: RmsNorm::load(vb.pp("norm2"), out_dim, false)?,
            conv2: CausalConv3d::load(vb.pp("conv2"), out_dim, out_dim, (3, 3), (1, 1), 1)?,
            shortcut,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, cache: &mut FeatCache) -> Result<Tensor> {
        let h = match &self.shortcut {
            Some(conv) => conv.forward(x, None)?,
            None => x.clone(),
        };
        let y = self.norm1.forward_silu(x)?;
        let y = cached_conv(&self.conv1, &y, cache)?;
        let y = self.norm2.forward_silu(&y)?;
        let y = cached_conv(&self.conv2, &y, cache)?;
        y + h
    }
}

/// Single-head self-attention within each frame.
pub(crate) struct AttentionBlock {
    norm: RmsNorm,
    to_qkv: Conv2d,
    proj: Conv2d,
}

impl AttentionBlock {
    pub(crate) fn load(vb: VarBuilder, dim: usize) -> Result<Self> {
        Ok(Self {
            norm: RmsNorm::load(vb.pp("norm"), dim, true)?,
            to_qkv: Conv2d::load(vb.pp("to_qkv"), dim, dim * 3, 1, 0, 1)?,
            proj: Conv2d::load(vb.pp("proj"), dim, dim, 1, 0, 1)?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let attended = per_frame(x, |images| {
            let (n, c, h, w) = images.dims4()?;
            let qkv = self.to_qkv.forward(&self.norm.forward(images)?)?;
            // [N, 3C, HW] -> [N, HW, 3C]: one token per pixel.
            let qkv = qkv.reshape((n, 3 * c, h * w))?.transpose(1, 2)?;
            let q = (qkv.narrow(2, 0, c)? * (1.0 / (c as f64).sqrt()))?;
            let k = qkv.narrow(2, c, c)?.contiguous()?;
            let v = qkv.narrow(2, 2 * c, c)?.contiguous()?;
            let kt = k.transpose(1, 2)?.contiguous()?;
            let tokens = h * w;
            let mut rows = Vec::with_capacity(tokens.div_ceil(ATTENTION_QUERY_CHUNK));
            let mut start = 0;
            while start < tokens {
                let len = ATTENTION_QUERY_CHUNK.min(tokens - start);
                let scores = q.narrow(1, start, len)?.contiguous()?.matmul(&kt)?;
                let weights = candle_nn::ops::softmax_last_dim(&scores)?;
                rows.push(weights.matmul(&v)?);
                start += len;
            }
            let out = if rows.len() == 1 {
                rows.remove(0)
            } else {
                Tensor::cat(&rows, 1)?
            };
            let out = out.transpose(1, 2)?.reshape((n, c, h, w))?;
            self.proj.forward(&out)
        })?;
        attended + x
    }
}

/// Residual block, attention, residual block.
pub(crate) struct MidBlock {
    first: ResidualBlock,
    attention: AttentionBlock,
    second: ResidualBlock,
}

impl MidBlock {
    pub(crate) fn load(vb: VarBuilder, dim: usize) -> Result<Self> {
        Ok(Self {
            first: ResidualBlock::load(vb.pp("resnets.0"), dim, dim)?,
            attention: AttentionBlock::load(vb.pp("attentions.0"), dim)?,
            second: ResidualBlock::load(vb.pp("resnets.1"), dim, dim)?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, cache: &mut FeatCache) -> Result<Tensor> {
        let x = self.first.forward(x, cache)?;
        let x = self.attention.forward(&x)?;
        self.second.forward(&x, cache)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResampleMode {
    Upsample2d,
    Upsample3d,
    Downsample2d,
    Downsample3d,
}

/// Spatial 2x resampling per frame, plus 2x in time for the `3d` modes.
pub(crate) struct Resample {
    mode: ResampleMode,
    conv: Conv2d,
    time_conv: Option<CausalConv3d>,
}

impl Resample {
    /// `up_out_dim`: channels after an upsampler's conv (Wan2.1 halves them, Wan2.2 keeps them).
    pub(crate) fn load(
        vb: VarBuilder,
        dim: usize,
        mode: ResampleMode,
        up_out_dim: usize,
    ) -> Result<Self> {
        let conv_vb = vb.pp("resample.1");
        let (conv, time_conv) = match mode {
            ResampleMode::Upsample2d | ResampleMode::Upsample3d => {
                let conv = Conv2d::load(conv_vb, dim, up_out_dim, 3, 1, 1)?;
                let time_conv = (mode == ResampleMode::Upsample3d)
                    .then(|| {
                        CausalConv3d::load(vb.pp("time_conv"), dim, dim * 2, (3, 1), (1, 0), 1)
                    })
                    .transpose()?;
                (conv, time_conv)
            }
            ResampleMode::Downsample2d | ResampleMode::Downsample3d => {
                let conv = Conv2d::load(conv_vb, dim, dim, 3, 0, 2)?;
                let time_conv = (mode == ResampleMode::Downsample3d)
                    .then(|| CausalConv3d::load(vb.pp("time_conv"), dim, dim, (3, 1), (0, 0), 2))
                    .transpose()?;
                (conv, time_conv)
            }
        };
        Ok(Self {
            mode,
            conv,
            time_conv,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, cache: &mut FeatCache) -> Result<Tensor> {
        let mut x = x.clone();
        if let (ResampleMode::Upsample3d, Some(time_conv)) = (self.mode, &self.time_conv) {
            x = upsample_time(time_conv, &x, cache)?;
        }
        let x = per_frame(&x, |images| match self.mode {
            ResampleMode::Upsample2d | ResampleMode::Upsample3d => {
                let (_, _, h, w) = images.dims4()?;
                self.conv.forward(&images.upsample_nearest2d(2 * h, 2 * w)?)
            }
            ResampleMode::Downsample2d | ResampleMode::Downsample3d => {
                // Zero-pad right and bottom by one, then a stride-2 3x3 conv.
                let padded = images.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?;
                self.conv.forward(&padded)
            }
        })?;
        match (self.mode, &self.time_conv) {
            (ResampleMode::Downsample3d, Some(time_conv)) => downsample_time(time_conv, &x, cache),
            _ => Ok(x),
        }
    }
}

/// Doubles the frames (each frame becomes two from a 2C-channel causal conv), except on the first
/// chunk, which passes through and only marks the slot.
fn upsample_time(time_conv: &CausalConv3d, x: &Tensor, cache: &mut FeatCache) -> Result<Tensor> {
    let slot = cache.slot();
    let out = match slot {
        Slot::Empty => {
            *slot = Slot::Repeat;
            return Ok(x.clone());
        }
        Slot::Repeat => {
            // History starts with a zero frame: the first chunk is not part of this conv's past.
            let history = if x.dim(1)? < 2 {
                Tensor::cat(&[&x.zeros_like()?, x], 1)?
            } else {
                history_after(x, None)?
            };
            let out = time_conv.forward(x, None)?;
            *slot = Slot::Frames(history);
            out
        }
        Slot::Frames(previous) => {
            let previous = previous.clone();
            let history = history_after(x, Some(&previous))?;
            let out = time_conv.forward(x, Some(&previous))?;
            *slot = Slot::Frames(history);
            out
        }
    };
    // [B, T, 2C, H, W]: channel halves are consecutive frames.
    let (b, t, c2, h, w) = out.dims5()?;
    out.reshape((b, t * 2, c2 / 2, h, w))
}

/// Halves the frames with a stride-2 causal conv over the previous chunk's last frame and this
/// chunk; the first chunk passes through and is remembered.
fn downsample_time(time_conv: &CausalConv3d, x: &Tensor, cache: &mut FeatCache) -> Result<Tensor> {
    let t = x.dim(1)?;
    let last = x.narrow(1, t - 1, 1)?.force_contiguous()?;
    let slot = cache.slot();
    match slot {
        Slot::Empty => {
            *slot = Slot::Frames(last);
            Ok(x.clone())
        }
        Slot::Frames(previous) => {
            let joined = Tensor::cat(&[&*previous, x], 1)?;
            *slot = Slot::Frames(last);
            time_conv.forward(&joined, None)
        }
        Slot::Repeat => candle_core::bail!("VAE cache slot order broken at a temporal downsampler"),
    }
}

/// Wan2.2's parameter-free down shortcut: average groups of space-time-to-channel rearranged
/// values down to `out_dim` channels (time padded in front to a multiple of `factor_t`).
pub(crate) struct AvgDown3d {
    out_dim: usize,
    factor_t: usize,
    factor_s: usize,
    group: usize,
}

impl AvgDown3d {
    pub(crate) fn new(in_dim: usize, out_dim: usize, factor_t: usize, factor_s: usize) -> Self {
        let factor = factor_t * factor_s * factor_s;
        Self {
            out_dim,
            factor_t,
            factor_s,
            group: in_dim * factor / out_dim,
        }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (ft, fs) = (self.factor_t, self.factor_s);
        let t = x.dim(1)?;
        let pad_t = (ft - t % ft) % ft;
        let x = if pad_t > 0 {
            x.pad_with_zeros(1, pad_t, 0)?
        } else {
            x.clone()
        };
        let (b, t, c, h, w) = x.dims5()?;
        let (t2, h2, w2) = (t / ft, h / fs, w / fs);
        // Channel c*factor + (it*fs + ih)*fs + iw of the rearranged tensor, then mean per group.
        let x = x
            .reshape(vec![b, t2, ft, c, h2, fs, w2, fs])?
            .permute([0, 1, 3, 2, 5, 7, 4, 6])?
            .contiguous()?
            .reshape((b * t2, self.out_dim, self.group, h2, w2))?
            .mean(2)?;
        x.reshape((b, t2, self.out_dim, h2, w2))
    }
}

/// Wan2.2's parameter-free up shortcut: repeat channels and unfold them into space and time.
pub(crate) struct DupUp3d {
    out_dim: usize,
    factor_t: usize,
    factor_s: usize,
    repeats: usize,
}

impl DupUp3d {
    pub(crate) fn new(in_dim: usize, out_dim: usize, factor_t: usize, factor_s: usize) -> Self {
        let factor = factor_t * factor_s * factor_s;
        Self {
            out_dim,
            factor_t,
            factor_s,
            repeats: out_dim * factor / in_dim,
        }
    }

    /// On the first chunk the leading `factor_t - 1` frames are dropped (causal start).
    pub(crate) fn forward(&self, x: &Tensor, first_chunk: bool) -> Result<Tensor> {
        let (ft, fs) = (self.factor_t, self.factor_s);
        let (b, t, c, h, w) = x.dims5()?;
        let repeated = x
            .unsqueeze(3)?
            .broadcast_as((b, t, c, self.repeats, h, w))?
            .reshape(vec![b, t, self.out_dim, ft, fs, fs, h, w])?;
        let y = repeated
            .permute([0, 1, 3, 2, 6, 4, 7, 5])?
            .contiguous()?
            .reshape((b, t * ft, self.out_dim, h * fs, w * fs))?;
        if first_chunk && ft > 1 {
            y.narrow(1, ft - 1, t * ft - (ft - 1))
        } else {
            Ok(y)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The fused CPU norm+SiLU equals the tensor-op path (taken for f64).
    #[test]
    fn fused_norm_silu_matches_tensor_ops() {
        let dev = Device::Cpu;
        let gamma = Tensor::randn(1f32, 0.2, (7, 1, 1), &dev).unwrap();
        let norm = |dtype| RmsNorm {
            scale: (gamma.to_dtype(dtype).unwrap() * 7f64.sqrt()).unwrap(),
        };
        for shape in [(2, 3, 7, 5, 9), (1, 2, 7, 100, 101)] {
            // The second is large enough for the threaded passes.
            let x = (Tensor::randn(0f32, 1f32, shape, &dev).unwrap() * 3.0).unwrap();
            let fused = norm(DType::F32).forward_silu(&x).unwrap();
            let reference = norm(DType::F64)
                .forward_silu(&x.to_dtype(DType::F64).unwrap())
                .unwrap();
            let err = crate::testing::relative_error(&fused, &reference).unwrap();
            assert!(err < 1e-6, "{shape:?}: relative error {err:e}");
        }
    }
}
