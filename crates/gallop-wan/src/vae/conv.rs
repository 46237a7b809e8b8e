//! Causal 3D convolution over frames-major activations, and the per-layer feature cache that lets
//! the VAE run a video chunk by chunk.
//!
//! Activations inside the VAE are laid out `[B, T, C, H, W]` (frames-major) so that a run of frames
//! is a batch of images with no copy, and cutting or joining along time is cheap.

use candle_core::{Module, Result, Tensor};
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
