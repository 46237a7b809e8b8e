//! Causal 3D convolution over frames-major activations, and the per-layer feature cache that lets
//! the VAE run a video chunk by chunk.
//!
//! Activations inside the VAE are laid out `[B, T, C, H, W]` (frames-major) so that a run of frames
//! is a batch of images with no copy, and cutting or joining along time is cheap.

use candle_core::{DType, Device, Module, Result, Storage, Tensor};
use candle_nn::VarBuilder;

/// Frames of history a causal conv keeps between chunks (its kernel is at most 3 deep).
const CACHE_T: usize = 2;

/// Input elements one conv2d call may see; larger runs of frames are split into several calls so
/// candle's im2col buffers stay bounded at 720P/1080P.
const CONV_CALL_ELEMENTS: usize = 1 << 24;

/// A 2D convolution with bias; `weight` `[out, in, kh, kw]`.
pub(crate) struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    padding: usize,
    stride: usize,
}

impl Conv2d {
    pub(crate) fn load(
        vb: VarBuilder,
        in_dim: usize,
        out_dim: usize,
        kernel: usize,
        padding: usize,
        stride: usize,
    ) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim, kernel, kernel), "weight")?;
        let bias = vb.get(out_dim, "bias")?.reshape((1, out_dim, 1, 1))?;
        Ok(Self {
            weight,
            bias,
            padding,
            stride,
        })
    }
}

impl Module for Conv2d {
    /// `x`: `[N, C, H, W]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?
            .broadcast_add(&self.bias)
    }
}

/// Causal Conv3d: time is padded only in front (`2 * padding_t` frames, or the cached frames of the
/// previous chunk), height and width symmetrically.
///
/// It runs as Conv2d: the `kt` time taps of each output frame are interleaved into the channels
/// (`[C * kt, H, W]`, channel `c * kt + dt`), which is exactly the kernel's own layout viewed as
/// `[out, in * kt, kh, kw]`; so one conv2d call covers all taps and a run of frames as a batch of
/// images, and the weights are used as loaded (no copy).
pub(crate) struct CausalConv3d {
    /// `[out, in, kt, kh, kw]`.
    weight: Tensor,
    bias: Tensor,
    kt: usize,
    stride_t: usize,
    /// Frames of front padding in time (`2 * padding_t`).
    pad_t: usize,
    pad_s: usize,
}

impl CausalConv3d {
    /// Kernel `(kt, ks, ks)`, `padding` `(pt, ps, ps)`, time stride `stride_t`, spatial stride 1.
    pub(crate) fn load(
        vb: VarBuilder,
        in_dim: usize,
        out_dim: usize,
        (kt, ks): (usize, usize),
        (pt, ps): (usize, usize),
        stride_t: usize,
    ) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim, kt, ks, ks), "weight")?;
        let bias = vb.get(out_dim, "bias")?.reshape((1, out_dim, 1, 1))?;
        Ok(Self {
            weight,
            bias,
            kt,
            stride_t,
            pad_t: 2 * pt,
            pad_s: ps,
        })
    }

    /// `x`: `[B, T, C, H, W]`. `history`: frames that precede `x` (at most `2 * padding_t`); they
    /// replace that much of the zero padding.
    pub(crate) fn forward(&self, x: &Tensor, history: Option<&Tensor>) -> Result<Tensor> {
        let (b, _t, c, h, w) = x.dims5()?;
        let mut pad = self.pad_t;
        let mut parts = Vec::with_capacity(3);
        if pad > 0 {
            if let Some(history) = history {
                pad -= history.dim(1)?;
                parts.push(history.clone());
            }
        }
        if pad > 0 {
            parts.insert(0, Tensor::zeros((b, pad, c, h, w), x.dtype(), x.device())?);
        }
        parts.push(x.clone());
        let xs = if parts.len() == 1 {
            x.clone()
        } else {
            Tensor::cat(&parts, 1)?
        };

        let padded_t = xs.dim(1)?;
        if padded_t < self.kt {
            candle_core::bail!(
                "causal conv: {padded_t} frames for a kernel {} deep",
                self.kt
            );
        }
        let t_out = (padded_t - self.kt) / self.stride_t + 1;
        if xs.device().is_cpu() && xs.dtype() == DType::F32 && self.weight.dtype() == DType::F32 {
            return self.forward_cpu_f32(&xs, t_out);
        }
        let per_call = (CONV_CALL_ELEMENTS / (b * self.kt * c * h * w).max(1)).max(1);
        let mut outputs = Vec::with_capacity(t_out.div_ceil(per_call));
        let mut start = 0;
        while start < t_out {
            let n = per_call.min(t_out - start);
            outputs.push(self.conv_frames(&xs, start, n)?);
            start += n;
        }
        if outputs.len() == 1 {
            Ok(outputs.remove(0))
        } else {
            Tensor::cat(&outputs, 1)
        }
    }

    /// Output frames `start..start + n` of the padded input `xs`.
    fn conv_frames(&self, xs: &Tensor, start: usize, n: usize) -> Result<Tensor> {
        let (b, _, c, h, w) = xs.dims5()?;
        let taps = (0..self.kt)
            .map(|dt| frames(xs, start * self.stride_t + dt, self.stride_t, n))
            .collect::<Result<Vec<_>>>()?;
        let stacked = if taps.len() == 1 {
            taps[0].contiguous()?
        } else {
            Tensor::stack(&taps, 3)?
        };
        let images = stacked.reshape((b * n, c * self.kt, h, w))?;
        let (o, i, kt, kh, kw) = self.weight.dims5()?;
        let kernel = self.weight.reshape((o, i * kt, kh, kw))?;
        let out = images
            .conv2d(&kernel, self.pad_s, 1, 1, 1)?
            .broadcast_add(&self.bias)?;
        let (_, o, oh, ow) = out.dims4()?;
        out.reshape((b, n, o, oh, ow))
    }
}

impl CausalConv3d {
    /// The CPU f32 path: an implicit GEMM with no im2col buffer. Per output frame, the `kt` time
    /// taps are gathered into one zero-bordered stack `[C * kt, H + 2p, W + 2p]`; each of the
    /// `kh * kw` spatial taps is then one GEMM, weight `[out, C * kt]` (a strided view of the
    /// kernel) times the stack shifted by that tap (a strided view too), accumulated into an
    /// output whose rows keep the padded width (the extra columns are dropped at the end).
    fn forward_cpu_f32(&self, xs: &Tensor, t_out: usize) -> Result<Tensor> {
        let (b, tp, c, h, w) = xs.dims5()?;
        let (o, i, kt, kh, kw) = self.weight.dims5()?;
        if i != c {
            candle_core::bail!("causal conv: input has {c} channels, the kernel takes {i}");
        }
        let p = self.pad_s;
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        let (ho, wo) = (hp + 1 - kh, wp + 1 - kw);
        let plane = hp * wp;
        let k = c * kt;
        // Flat output positions y * wp + x that cover every valid (y, x < wo).
        let n = (ho - 1) * wp + wo;

        let xs = xs.contiguous()?;
        let weight = self.weight.contiguous()?;
        let bias = self.bias.flatten_all()?.to_vec1::<f32>()?;
        let (x_storage, x_layout) = xs.storage_and_layout();
        let x = cpu_f32(&x_storage)?;
        let x = &x[x_layout.start_offset()..];
        let (w_storage, w_layout) = weight.storage_and_layout();
        let wt = cpu_f32(&w_storage)?;
        let wt = &wt[w_layout.start_offset()..];

        let threads = candle_core::utils::get_num_threads();
        let parallelism = if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        let mut out = vec![0f32; b * t_out * o * ho * wo];
        let mut stack = vec![0f32; k * plane];
        let mut acc = vec![0f32; o * ho * wp];
        for bi in 0..b {
            for to in 0..t_out {
                for ci in 0..c {
                    for dt in 0..kt {
                        let frame = bi * tp + to * self.stride_t + dt;
                        let src = &x[(frame * c + ci) * h * w..][..h * w];
                        let dst = &mut stack[(ci * kt + dt) * plane..][..plane];
                        for y in 0..h {
                            dst[(y + p) * wp + p..][..w].copy_from_slice(&src[y * w..][..w]);
                        }
                    }
                }
                for (oi, row) in acc.chunks_mut(ho * wp).enumerate() {
                    row.fill(bias[oi]);
                }
                for dy in 0..kh {
                    for dx in 0..kw {
                        // SAFETY: every index the GEMM touches is in bounds: lhs rows are kernel
                        // rows (o < out, k < in * kt), rhs reads stop at the stack's last element
                        // (n - 1 + (kh - 1) * wp + kw - 1 = plane - 1), dst is `acc`.
                        unsafe {
                            gemm::gemm(
                                o,
                                n,
                                k,
                                acc.as_mut_ptr(),
                                1,
                                (ho * wp) as isize,
                                true,
                                wt.as_ptr().add(dy * kw + dx),
                                (kh * kw) as isize,
                                (i * kt * kh * kw) as isize,
                                stack.as_ptr().add(dy * wp + dx),
                                1,
                                plane as isize,
                                1f32,
                                1f32,
                                false,
                                false,
                                false,
                                parallelism,
                            );
                        }
                    }
                }
                let frame_out = &mut out[(bi * t_out + to) * o * ho * wo..][..o * ho * wo];
                for oi in 0..o {
                    for y in 0..ho {
                        frame_out[(oi * ho + y) * wo..][..wo]
                            .copy_from_slice(&acc[oi * ho * wp + y * wp..][..wo]);
                    }
                }
            }
        }
        Tensor::from_vec(out, (b, t_out, o, ho, wo), &Device::Cpu)
    }
}

fn cpu_f32(storage: &Storage) -> Result<&[f32]> {
    match storage {
        Storage::Cpu(cpu) => cpu.as_slice::<f32>(),
        _ => candle_core::bail!("expected a CPU tensor"),
    }
}

/// Frames `first, first + step, ...` (`n` of them) of `[B, T, ...]`.
fn frames(xs: &Tensor, first: usize, step: usize, n: usize) -> Result<Tensor> {
    if step == 1 {
        return xs.narrow(1, first, n);
    }
    let picked = (0..n)
        .map(|i| xs.narrow(1, first + i * step, 1))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&picked, 1)
}

/// What one cache slot holds between chunks.
pub(crate) enum Slot {
    /// Not yet run.
    Empty,
    /// The temporal upsampler has seen its first chunk (which it does not upsample in time).
    Repeat,
    /// The last input frames of the layer, `[B, t<=2, C, H, W]`.
    Frames(Tensor),
}

/// One slot per cached layer, visited in the same order every chunk.
pub(crate) struct FeatCache {
    slots: Vec<Slot>,
    next: usize,
}

impl FeatCache {
    pub(crate) fn new() -> Self {
        Self {
            slots: Vec::new(),
            next: 0,
        }
    }

    /// Call before each chunk: the layers take their slots again from the first.
    pub(crate) fn start_chunk(&mut self) {
        self.next = 0;
    }

    /// The next layer's slot.
    pub(crate) fn slot(&mut self) -> &mut Slot {
        if self.next == self.slots.len() {
            self.slots.push(Slot::Empty);
        }
        self.next += 1;
        &mut self.slots[self.next - 1]
    }
}

/// The history to keep after a chunk: the last two frames of `x`, or, when `x` has only one, that
/// frame after the last frame of the previous history. Always a fresh copy, so the cache does not
/// pin the whole activation.
pub(crate) fn history_after(x: &Tensor, previous: Option<&Tensor>) -> Result<Tensor> {
    let t = x.dim(1)?;
    let tail = x.narrow(1, t.saturating_sub(CACHE_T), t.min(CACHE_T))?;
    match previous {
        Some(prev) if t < CACHE_T => {
            let last = prev.narrow(1, prev.dim(1)? - 1, 1)?;
            Tensor::cat(&[&last, &tail], 1)
        }
        _ => tail.force_contiguous(),
    }
}

/// The usual cached step: run `conv` on `x` after the slot's history, then store the new history.
pub(crate) fn cached_conv(
    conv: &CausalConv3d,
    x: &Tensor,
    cache: &mut FeatCache,
) -> Result<Tensor> {
    let slot = cache.slot();
    let previous = match slot {
        Slot::Frames(t) => Some(t.clone()),
        _ => None,
    };
    let history = history_after(x, previous.as_ref())?;
    let y = conv.forward(x, previous.as_ref())?;
    *slot = Slot::Frames(history);
    Ok(y)
}

/// Channels of `[.., C, H, W]` as a dimension index (third from last).
pub(crate) fn channel_dim(x: &Tensor) -> Result<usize> {
    match x.rank() {
        r if r >= 3 => Ok(r - 3),
        r => candle_core::bail!("expected [.., C, H, W], got rank {r}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU f32 implicit-GEMM path equals the conv2d path (taken for f64) on odd sizes,
    /// batch 2, a cache, a time stride and a 1x1 kernel.
    #[test]
    fn implicit_gemm_matches_conv2d_path() {
        let dev = Device::Cpu;
        let cases = [
            // (in, out, kt, ks, pad_t, pad_s, stride_t, frames, history)
            (3, 5, 3, 3, 1, 1, 1, 4, 1),
            (4, 6, 3, 3, 1, 1, 1, 1, 2),
            (4, 4, 3, 1, 0, 0, 2, 5, 0),
            (5, 3, 1, 1, 0, 0, 1, 3, 0),
        ];
        for (ci, co, kt, ks, pt, ps, st, frames, hist) in cases {
            let weight = Tensor::randn(0f32, 1f32, (co, ci, kt, ks, ks), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1f32, (1, co, 1, 1), &dev).unwrap();
            let conv = |dtype| CausalConv3d {
                weight: weight.to_dtype(dtype).unwrap(),
                bias: bias.to_dtype(dtype).unwrap(),
                kt,
                stride_t: st,
                pad_t: 2 * pt,
                pad_s: ps,
            };
            let x = Tensor::randn(0f32, 1f32, (2, frames, ci, 6, 7), &dev).unwrap();
            let history =
                (hist > 0).then(|| Tensor::randn(0f32, 1f32, (2, hist, ci, 6, 7), &dev).unwrap());
            let fast = conv(DType::F32).forward(&x, history.as_ref()).unwrap();
            let reference = conv(DType::F64)
                .forward(
                    &x.to_dtype(DType::F64).unwrap(),
                    history.map(|h| h.to_dtype(DType::F64).unwrap()).as_ref(),
                )
                .unwrap();
            assert_eq!(fast.dims(), reference.dims());
            let err = crate::testing::relative_error(&fast, &reference).unwrap();
            assert!(
                err < 1e-5,
                "case {ci}->{co} k{kt}x{ks}: relative error {err:e}"
            );
        }
    }
}
