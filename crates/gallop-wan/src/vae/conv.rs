//! Causal 3D convolution over frames-major activations, and the per-layer feature cache that lets
//! the VAE run a video chunk by chunk.
//!
//! Activations inside the VAE are laid out `[B, T, C, H, W]` (frames-major) so that a run of frames
//! is a batch of images with no copy, and cutting or joining along time is cheap.

use candle_core::{DType, Device, Module, Result, Storage, Tensor};
use candle_nn::VarBuilder;

use crate::fast_math::with_widest_simd;

/// Frames of history a causal conv keeps between chunks (its kernel is at most 3 deep).
const CACHE_T: usize = 2;

/// Floats in each Winograd transform buffer (a band of tile rows); bounds its memory at 64 MB.
const WINOGRAD_BAND: usize = 1 << 24;

/// Elements below which a pass runs on the calling thread (spawning would cost more).
pub(crate) const PARALLEL_MIN: usize = 1 << 16;

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
        let (o, i, kh, kw) = self.weight.dims4()?;
        let is_cpu_f32 = x.device().is_cpu() && x.dtype() == DType::F32;
        if is_cpu_f32 && self.weight.dtype() == DType::F32 && self.stride == 1 {
            // The resamplers' 3x3 convs take the Winograd path the causal convs use (the images
            // as frames of one clip, one time tap): candle's conv2d was a quarter of a decode.
            if (kh, kw, self.padding) == (3, 3, 1) {
                let (n, c, h, w) = x.dims4()?;
                let geometry = Winograd {
                    b: 1,
                    c,
                    h,
                    w,
                    o,
                    kt: 1,
                    stride_t: 1,
                    t_out: n,
                    band_floats: WINOGRAD_BAND,
                };
                let clip = x.unsqueeze(0)?;
                return conv_f32_cpu(&clip, None, 0, &self.weight, &self.bias, |x, wt, bias| {
                    Tensor::from_vec(geometry.run(x, wt, bias), (n, o, h, w), &Device::Cpu)
                });
            }
            // 1x1 (the attention projections): a batched matmul.
            if (kh, kw, self.padding) == (1, 1, 0) {
                let (n, c, h, w) = x.dims4()?;
                let y = self
                    .weight
                    .reshape((1, o, i))?
                    .broadcast_matmul(&x.reshape((n, c, h * w))?)?;
                return y.reshape((n, o, h, w))?.broadcast_add(&self.bias);
            }
        }
        x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?
            .broadcast_add(&self.bias)
    }
}

/// Run `f` on the contiguous f32 data of a CPU input's frames and of the weight, with the bias
/// as a vector. `x`: `[B, T, ...]` frames, `history` frames (`[B, Th, ...]`) go before them, and
/// `zeros` zero frames before those; nothing is joined or copied.
fn conv_f32_cpu(
    x: &Tensor,
    history: Option<&Tensor>,
    zeros: usize,
    weight: &Tensor,
    bias: &Tensor,
    f: impl FnOnce(&PaddedInput, &[f32], &[f32]) -> Result<Tensor>,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    let history = history.map(|h| h.contiguous()).transpose()?;
    let weight = weight.contiguous()?;
    let bias = bias.flatten_all()?.to_vec1::<f32>()?;
    let (x_storage, x_layout) = x.storage_and_layout();
    let x_data = &cpu_f32(&x_storage)?[x_layout.start_offset()..];
    let history_frames = history.as_ref().map(|h| h.dim(1)).transpose()?;
    let history_storage = history.as_ref().map(|h| h.storage_and_layout());
    let mut parts = Vec::with_capacity(2);
    if let (Some((storage, layout)), Some(frames)) = (&history_storage, history_frames) {
        parts.push((&cpu_f32(storage)?[layout.start_offset()..], frames));
    }
    parts.push((x_data, x.dim(1)?));
    let input = PaddedInput {
        zeros,
        parts,
        frame_len: x.dims()[2..].iter().product(),
    };
    let (w_storage, w_layout) = weight.storage_and_layout();
    let wt = &cpu_f32(&w_storage)?[w_layout.start_offset()..];
    f(&input, wt, &bias)
}

/// The time-padded input of a causal conv, read in place: `zeros` zero frames, then the frames of
/// each part in order (each part `[B, T_i, frame_len]` contiguous).
struct PaddedInput<'a> {
    zeros: usize,
    parts: Vec<(&'a [f32], usize)>,
    frame_len: usize,
}

impl PaddedInput<'_> {
    /// Frame `t` of batch item `bi`; None for a zero frame.
    fn frame(&self, bi: usize, t: usize) -> Option<&[f32]> {
        let mut t = t.checked_sub(self.zeros)?;
        for &(data, frames) in &self.parts {
            if t < frames {
                return Some(&data[(bi * frames + t) * self.frame_len..][..self.frame_len]);
            }
            t -= frames;
        }
        panic!("causal conv: frame index past the input")
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
        let (b, t, c, h, w) = x.dims5()?;
        // History replaces that much of the zero padding (none when the conv pads nothing).
        let history = history.filter(|_| self.pad_t > 0);
        let history_t = history.map(|h| h.dim(1)).transpose()?.unwrap_or(0);
        let zeros = self.pad_t.saturating_sub(history_t);
        let padded_t = zeros + history_t + t;
        if padded_t < self.kt {
            candle_core::bail!(
                "causal conv: {padded_t} frames for a kernel {} deep",
                self.kt
            );
        }
        let t_out = (padded_t - self.kt) / self.stride_t + 1;
        let cpu_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
        if cpu_f32(x) && cpu_f32(&self.weight) && history.is_none_or(cpu_f32) {
            return self.forward_cpu_f32(x, history, zeros, t_out);
        }

        let mut parts = Vec::with_capacity(3);
        if zeros > 0 {
            parts.push(Tensor::zeros((b, zeros, c, h, w), x.dtype(), x.device())?);
        }
        parts.extend(history.cloned());
        parts.push(x.clone());
        let xs = Tensor::cat(&parts, 1)?;
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
    fn forward_cpu_f32(
        &self,
        x: &Tensor,
        history: Option<&Tensor>,
        zeros: usize,
        t_out: usize,
    ) -> Result<Tensor> {
        let (b, _, c, h, w) = x.dims5()?;
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

        let threads = candle_core::utils::get_num_threads();
        let parallelism = if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        if kh == 3 && kw == 3 && p == 1 {
            let geometry = Winograd {
                b,
                c,
                h,
                w,
                o,
                kt,
                stride_t: self.stride_t,
                t_out,
                band_floats: WINOGRAD_BAND,
            };
            return conv_f32_cpu(
                x,
                history,
                zeros,
                &self.weight,
                &self.bias,
                |x, wt, bias| {
                    Tensor::from_vec(geometry.run(x, wt, bias), (b, t_out, o, h, w), &Device::Cpu)
                },
            );
        }
        conv_f32_cpu(
            x,
            history,
            zeros,
            &self.weight,
            &self.bias,
            |x, wt, bias| {
                let mut out = vec![0f32; b * t_out * o * ho * wo];
                let mut stack = vec![0f32; k * plane];
                let mut acc = vec![0f32; o * ho * wp];
                for bi in 0..b {
                    for to in 0..t_out {
                        for ci in 0..c {
                            for dt in 0..kt {
                                let frame = x.frame(bi, to * self.stride_t + dt);
                                let dst = &mut stack[(ci * kt + dt) * plane..][..plane];
                                let Some(frame) = frame else {
                                    dst.fill(0.0);
                                    continue;
                                };
                                let src = &frame[ci * h * w..][..h * w];
                                for y in 0..h {
                                    dst[(y + p) * wp + p..][..w]
                                        .copy_from_slice(&src[y * w..][..w]);
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
            },
        )
    }
}

/// A 3x3 (pad 1, stride 1) spatial convolution of time-tap stacks by Winograd F(2x2, 3x3): each
/// 2x2 output tile comes from a 4x4 input tile through 16 GEMMs of `[out, C*kt] x [C*kt, tiles]`,
/// 16 multiplies where direct convolution needs 36. The transforms are the standard
/// `Y = A^T [(G g G^T) * (B^T d B)] A`.
struct Winograd {
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kt: usize,
    stride_t: usize,
    t_out: usize,
    /// Floats per transform buffer (see [`WINOGRAD_BAND`]).
    band_floats: usize,
}

/// `G g` of F(2x2, 3x3) element-wise over rows: three taps in, four points out.
fn kernel_points([a, m, z]: [&[f32]; 3], [p0, p1, p2, p3]: [&mut [f32]; 4]) {
    let n = a.len();
    let (m, z) = (&m[..n], &z[..n]);
    let (p0, p1, p2, p3) = (&mut p0[..n], &mut p1[..n], &mut p2[..n], &mut p3[..n]);
    for i in 0..n {
        p0[i] = a[i];
        p1[i] = 0.5 * (a[i] + m[i] + z[i]);
        p2[i] = 0.5 * (a[i] - m[i] + z[i]);
        p3[i] = z[i];
    }
}

impl Winograd {
    fn run(&self, x: &PaddedInput, wt: &[f32], bias: &[f32]) -> Vec<f32> {
        let Winograd {
            band_floats: _,
            b,
            c,
            h,
            w,
            o,
            kt,
            stride_t,
            t_out,
        } = *self;
        let k = c * kt;
        let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
        // Zero-bordered stack, padded to whole tiles: rows 2*th + 2, columns 2*tw + 2.
        let (hp, wp) = (2 * th + 2, 2 * tw + 2);
        let plane = hp * wp;
        let threads = candle_core::utils::get_num_threads().max(1);

        // U[i][o][k] = (G g G^T)[i] for each kernel slice g = weight[o, k]; output channels split
        // across threads.
        let mut u = vec![0f32; 16 * o * k];
        let u_ptr = SendPtr(u.as_mut_ptr());
        par_ranges(o, threads, o * k * 16, |range| {
            // Per output channel, the nine taps of all its input channels are first laid out as
            // nine rows, so both transform steps read and write whole rows (they vectorise;
            // kernel-by-kernel they were a tenth of a decode).
            let mut taps = vec![0f32; 9 * k];
            let mut gg = vec![0f32; 12 * k];
            for oi in range {
                for (ki, g) in wt[oi * k * 9..][..k * 9].chunks_exact(9).enumerate() {
                    for (tap, &value) in g.iter().enumerate() {
                        taps[tap * k + ki] = value;
                    }
                }
                // Rows (r, col) of G g, then (r, c) of (G g) G^T: the same four-point transform.
                for col in 0..3 {
                    let row = |i: usize| &taps[(3 * i + col) * k..][..k];
                    let (dst0, rest) = gg[col * k..].split_at_mut(3 * k);
                    let (dst1, rest) = rest.split_at_mut(3 * k);
                    let (dst2, dst3) = rest.split_at_mut(3 * k);
                    kernel_points(
                        [row(0), row(1), row(2)],
                        [
                            &mut dst0[..k],
                            &mut dst1[..k],
                            &mut dst2[..k],
                            &mut dst3[..k],
                        ],
                    );
                }
                for r in 0..4 {
                    let row = |col: usize| &gg[(r * 3 + col) * k..][..k];
                    // SAFETY: rows (r*4+c, oi) of U belong to this thread's output channels only.
                    let dst = |c: usize| unsafe {
                        std::slice::from_raw_parts_mut(u_ptr.at(((r * 4 + c) * o + oi) * k), k)
                    };
                    kernel_points([row(0), row(1), row(2)], [dst(0), dst(1), dst(2), dst(3)]);
                }
            }
        });

        let mut out = vec![0f32; b * t_out * o * h * w];
        let mut stack = vec![0f32; k * plane];
        let band_rows = (self.band_floats / (16 * k.max(o) * tw).max(1)).clamp(1, th);
        let mut v = vec![0f32; 16 * k * band_rows * tw];
        let mut m = vec![0f32; 16 * o * band_rows * tw];
        for bi in 0..b {
            for to in 0..t_out {
                let stack_ptr = SendPtr(stack.as_mut_ptr());
                par_ranges(c, threads, k * plane, |range| {
                    for ci in range {
                        for dt in 0..kt {
                            // SAFETY: the planes of input channel `ci` belong to this range only.
                            let dst = unsafe {
                                std::slice::from_raw_parts_mut(
                                    stack_ptr.at((ci * kt + dt) * plane),
                                    plane,
                                )
                            };
                            let Some(frame) = x.frame(bi, to * stride_t + dt) else {
                                dst.fill(0.0);
                                continue;
                            };
                            let src = &frame[ci * h * w..][..h * w];
                            for y in 0..h {
                                dst[(y + 1) * wp + 1..][..w].copy_from_slice(&src[y * w..][..w]);
                            }
                        }
                    }
                });
                // Bands of tile rows bound the transformed buffers (V, M) at any frame size.
                for ty0 in (0..th).step_by(band_rows) {
                    let ty1 = (ty0 + band_rows).min(th);
                    let band = (ty1 - ty0) * tw;
                    // V[i][k][tile] = (B^T d B)[i], input channels split across threads. The column
                    // step runs on whole rows of the stack, the row step per tile.
                    let v_ptr = SendPtr(v.as_mut_ptr());
                    par_ranges(k, threads, k * plane, |channels| {
                        with_widest_simd(
                            #[inline(always)]
                            || {
                                let mut t = vec![0f32; 4 * wp];
                                for ki in channels {
                                    let chan = &stack[ki * plane..][..plane];
                                    for ty in ty0..ty1 {
                                        let row = |r: usize| &chan[(2 * ty + r) * wp..][..wp];
                                        let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
                                        let (t0, rest) = t.split_at_mut(wp);
                                        let (t1, rest) = rest.split_at_mut(wp);
                                        let (t2, t3) = rest.split_at_mut(wp);
                                        for j in 0..wp {
                                            t0[j] = r0[j] - r2[j];
                                            t1[j] = r1[j] + r2[j];
                                            t2[j] = r2[j] - r1[j];
                                            t3[j] = r1[j] - r3[j];
                                        }
                                        for (r, tr) in
                                            [&*t0, &*t1, &*t2, &*t3].into_iter().enumerate()
                                        {
                                            // SAFETY: rows (r*4+col, ki) of V belong to this thread's channels
                                            // only, and `tw` entries from `ty * tw` stay inside the row.
                                            let out = |col: usize| unsafe {
                                                std::slice::from_raw_parts_mut(
                                                    v_ptr.at(((r * 4 + col) * k + ki) * band
                                                        + (ty - ty0) * tw),
                                                    tw,
                                                )
                                            };
                                            let (o0, o1, o2, o3) = (out(0), out(1), out(2), out(3));
                                            for tx in 0..tw {
                                                let d = &tr[2 * tx..2 * tx + 4];
                                                o0[tx] = d[0] - d[2];
                                                o1[tx] = d[1] + d[2];
                                                o2[tx] = d[2] - d[1];
                                                o3[tx] = d[1] - d[3];
                                            }
                                        }
                                    }
                                }
                            },
                        )
                    });
                    // The 16 products are independent: each thread takes a share of them and
                    // runs its GEMMs single-threaded (better than splitting each small GEMM).
                    let m_ptr = SendPtr(m.as_mut_ptr());
                    let (u, v) = (&u, &v);
                    par_ranges(16, threads, o * k * band, |range| {
                        for i in range {
                            // SAFETY: M[i] = U[i] x V[i] with row-major operands inside their
                            // buffers; product `i` writes only its own slice of M.
                            unsafe {
                                gemm::gemm(
                                    o,
                                    band,
                                    k,
                                    m_ptr.at(i * o * band),
                                    1,
                                    band as isize,
                                    false,
                                    u.as_ptr().add(i * o * k),
                                    1,
                                    k as isize,
                                    v.as_ptr().add(i * k * band),
                                    1,
                                    band as isize,
                                    0f32,
                                    1f32,
                                    false,
                                    false,
                                    false,
                                    gemm::Parallelism::None,
                                );
                            }
                        }
                    });
                    // Y = A^T M A + bias, output channels split across threads; per tile row the
                    // row step runs across all its tiles, then the column step per tile.
                    let frame_out = &mut out[(bi * t_out + to) * o * h * w..][..o * h * w];
                    let rows = o.div_ceil(threads);
                    let m = &m;
                    let output_transform = |t: usize, part: &mut [f32]| {
                        with_widest_simd(
                            #[inline(always)]
                            || {
                                let mut s_rows = vec![0f32; 8 * tw];
                                for (r, plane_out) in part.chunks_mut(h * w).enumerate() {
                                    let oi = t * rows + r;
                                    let bias = bias[oi];
                                    for ty in ty0..ty1 {
                                        let at = |i: usize| {
                                            &m[(i * o + oi) * band + (ty - ty0) * tw..][..tw]
                                        };
                                        // s_rows[(dy * 4 + cc) * tw + tx]: A^T applied down the columns.
                                        for cc in 0..4 {
                                            let (m0, m1, m2, m3) =
                                                (at(cc), at(4 + cc), at(8 + cc), at(12 + cc));
                                            let (lo, hi) = s_rows.split_at_mut(4 * tw);
                                            let s0 = &mut lo[cc * tw..][..tw];
                                            let s1 = &mut hi[cc * tw..][..tw];
                                            for tx in 0..tw {
                                                s0[tx] = m0[tx] + m1[tx] + m2[tx];
                                                s1[tx] = m1[tx] - m2[tx] - m3[tx];
                                            }
                                        }
                                        for dy in 0..2 {
                                            let y = 2 * ty + dy;
                                            if y >= h {
                                                continue;
                                            }
                                            let sr =
                                                |cc: usize| &s_rows[(dy * 4 + cc) * tw..][..tw];
                                            let (a, bb, cc, d) = (sr(0), sr(1), sr(2), sr(3));
                                            let out_row = &mut plane_out[y * w..][..w];
                                            for tx in 0..tw {
                                                out_row[2 * tx] = a[tx] + bb[tx] + cc[tx] + bias;
                                                if 2 * tx + 1 < w {
                                                    out_row[2 * tx + 1] =
                                                        bb[tx] - cc[tx] - d[tx] + bias;
                                                }
                                            }
                                        }
                                    }
                                }
                            },
                        )
                    };
                    if threads > 1 && o * h * w >= PARALLEL_MIN {
                        std::thread::scope(|s| {
                            for (t, part) in frame_out.chunks_mut(rows * h * w).enumerate() {
                                s.spawn(move || output_transform(t, part));
                            }
                        });
                    } else {
                        for (t, part) in frame_out.chunks_mut(rows * h * w).enumerate() {
                            output_transform(t, part);
                        }
                    }
                }
            }
        }
        out
    }
}

/// Run `f` over `0..n` split into one range per thread, or inline when `work` (elements) is
/// too small to pay for spawning.
fn par_ranges(n: usize, threads: usize, work: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    if threads <= 1 || work < PARALLEL_MIN || n < 2 {
        return f(0..n);
    }
    let per = n.div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        for start in (0..n).step_by(per) {
            s.spawn(move || f(start..(start + per).min(n)));
        }
    });
}

/// A raw pointer the Winograd input transform shares across its scoped threads (disjoint writes).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The element pointer `i` places on (a method, so closures capture the whole `SendPtr`).
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
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

    /// Winograd in bands of one tile row equals one band over the whole frame.
    #[test]
    fn winograd_bands_match_whole_frame() {
        let dev = Device::Cpu;
        let (b, tp, c, h, w, o, kt) = (1, 4, 5, 13, 11, 6, 3);
        let x = Tensor::randn(0f32, 1f32, b * tp * c * h * w, &dev)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let wt = Tensor::randn(0f32, 1f32, o * c * kt * 9, &dev)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let bias = Tensor::randn(0f32, 1f32, o, &dev)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let run = |band_floats| {
            let g = Winograd {
                b,
                c,
                h,
                w,
                o,
                kt,
                stride_t: 1,
                t_out: 2,
                band_floats,
            };
            let input = PaddedInput {
                zeros: 0,
                parts: vec![(&x[..], tp)],
                frame_len: c * h * w,
            };
            g.run(&input, &wt, &bias)
        };
        let (banded, whole) = (run(1), run(usize::MAX / 2));
        let err = banded
            .iter()
            .zip(&whole)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-5, "max abs difference {err:e}");
        assert!(whole.iter().any(|v| v.abs() > 0.1), "all-zero output");
    }

    /// The CPU f32 implicit-GEMM path equals the conv2d path (taken for f64) on odd sizes,
    /// batch 2, a cache, a time stride and a 1x1 kernel.
    #[test]
    /// The 2D convs' fast paths (Winograd 3x3, matmul 1x1) equal candle's conv2d in f64.
    fn conv2d_fast_paths_match_conv2d() {
        let dev = Device::Cpu;
        // (in, out, kernel, padding, stride, h, w)
        for (ci, co, ks, pad, stride, h, w) in [
            (6, 4, 3, 1, 1, 9, 14),
            (32, 48, 3, 1, 1, 33, 20),
            (8, 24, 1, 0, 1, 5, 7),
            (4, 4, 3, 0, 2, 9, 9),
        ] {
            let weight = Tensor::randn(0f32, 1f32, (co, ci, ks, ks), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1f32, (1, co, 1, 1), &dev).unwrap();
            let conv = |dtype| Conv2d {
                weight: weight.to_dtype(dtype).unwrap(),
                bias: bias.to_dtype(dtype).unwrap(),
                padding: pad,
                stride,
            };
            let x = Tensor::randn(0f32, 1f32, (3, ci, h, w), &dev).unwrap();
            let fast = conv(DType::F32).forward(&x).unwrap();
            let reference = conv(DType::F64)
                .forward(&x.to_dtype(DType::F64).unwrap())
                .unwrap();
            assert_eq!(fast.dims(), reference.dims());
            let err = crate::testing::relative_error(&fast, &reference).unwrap();
            assert!(err < 1e-5, "case {ci}->{co} k{ks}: relative error {err:e}");
        }
    }

    #[test]
    fn implicit_gemm_matches_conv2d_path() {
        let dev = Device::Cpu;
        let cases = [
            // (in, out, kt, ks, pad_t, pad_s, stride_t, frames, history)
            (3, 5, 3, 3, 1, 1, 1, 4, 1),
            (4, 6, 3, 3, 1, 1, 1, 1, 2),
            (4, 4, 3, 1, 0, 0, 2, 5, 0),
            (5, 3, 1, 1, 0, 0, 1, 3, 0),
            // Large enough for the threaded transforms (odd 35x41 frame).
            (16, 96, 3, 3, 1, 1, 1, 2, 1),
        ];
        for (ci, co, kt, ks, pt, ps, st, frames, hist) in cases {
            let (h, w) = if ci == 16 { (35, 41) } else { (6, 7) };
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
            let x = Tensor::randn(0f32, 1f32, (2, frames, ci, h, w), &dev).unwrap();
            let history =
                (hist > 0).then(|| Tensor::randn(0f32, 1f32, (2, hist, ci, h, w), &dev).unwrap());
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
