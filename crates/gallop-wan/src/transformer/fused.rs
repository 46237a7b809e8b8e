//! In-place "add bias", "add bias, then GELU (tanh)" and softmax over a freshly computed matmul
//! output, so the biggest activations (the FFN's hidden layer, attention scores) are not copied
//! again, with an exp that vectorises. CPU f32 only; callers use plain tensor ops elsewhere.

use candle_core::{CpuStorage, InplaceOp1, InplaceOp2, Layout, Result, Tensor};

use crate::fast_math::{fast_exp, with_widest_simd};

/// True when `y` (a fresh, contiguous [rows, n] f32 CPU tensor) can take the in-place ops.
fn fusable(y: &Tensor, bias: &Tensor) -> bool {
    y.device().is_cpu()
        && y.dtype() == candle_core::DType::F32
        && bias.dtype() == candle_core::DType::F32
        && y.is_contiguous()
        && bias.is_contiguous()
        && y.rank() == 2
        && bias.dims() == [y.dims()[1]]
}

/// y + bias (bias over the last dim).
pub fn add_bias(y: Tensor, bias: &Tensor) -> Result<Tensor> {
    if fusable(&y, bias) {
        y.inplace_op2(bias, &RowOp { gelu: false })?;
        Ok(y)
    } else {
        y.broadcast_add(bias)
    }
}

/// gelu_tanh(y + bias).
pub fn add_bias_gelu(y: Tensor, bias: &Tensor) -> Result<Tensor> {
    if fusable(&y, bias) {
        y.inplace_op2(bias, &RowOp { gelu: true })?;
        Ok(y)
    } else {
        y.broadcast_add(bias)?.gelu()
    }
}

struct RowOp {
    gelu: bool,
}

/// GELU with the tanh approximation; tanh(u) = 1 - 2 / (exp(2u) + 1) is exact in real
/// arithmetic and much cheaper than libm's tanhf.
#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
    let tanh = 1.0 - 2.0 / (fast_exp(2.0 * u) + 1.0);
    0.5 * x * (1.0 + tanh)
}

/// Run `f(r, row)` over the `n`-wide rows of `data`, rows split across candle's worker pool.
fn par_rows(data: &mut [f32], n: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let rows = data.len() / n.max(1);
    let ptr = data.as_mut_ptr() as usize;
    candle_core::utils::barrier_pool().execute_chunked(rows, |range| {
        for r in range {
            // SAFETY: each row is visited by exactly one unit; rows do not overlap and lie in `data`.
            let row = unsafe { std::slice::from_raw_parts_mut((ptr as *mut f32).add(r * n), n) };
            f(r, row);
        }
    });
}

/// Fold `values` with `f` in 16 independent lanes, then fold the lanes: a serial fold of floats
/// cannot vectorise (its order is fixed), sixteen running folds can.
#[inline(always)]
fn lanes_reduce(values: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [init; 16];
    let mut chunks = values.chunks_exact(16);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = f(*lane, v);
        }
    }
    let tail = chunks.remainder().iter().fold(init, |a, &v| f(a, v));
    lanes.into_iter().fold(tail, f)
}

/// Σ v² in 16 lanes (see [`lanes_reduce`]; squaring inside it would square the lane sums too).
#[inline(always)]
fn sum_of_squares(values: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = values.chunks_exact(16);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += v * v;
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    lanes.into_iter().sum::<f32>() + tail
}

/// softmax over the last dimension of `scores` (attention scores straight from their matmul).
pub fn softmax_last_dim(scores: Tensor) -> Result<Tensor> {
    if scores.device().is_cpu()
        && scores.dtype() == candle_core::DType::F32
        && scores.is_contiguous()
        && scores.rank() >= 1
    {
        scores.inplace_op1(&SoftmaxLastDim)?;
        Ok(scores)
    } else {
        candle_nn::ops::softmax_last_dim(&scores)
    }
}

struct SoftmaxLastDim;

impl InplaceOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("{}: f32 only", self.name());
        };
        let n = *layout.dims().last().unwrap_or(&1);
        let rows = layout.shape().elem_count() / n.max(1);
        let data = &mut data[layout.start_offset()..layout.start_offset() + rows * n];
        par_rows(data, n, |_, row| {
            with_widest_simd(
                #[inline(always)]
                || {
                    let max = lanes_reduce(row, f32::NEG_INFINITY, f32::max);
                    row.iter_mut().for_each(|v| *v = fast_exp(*v - max));
                    let scale = 1.0 / lanes_reduce(row, 0.0, |a, b| a + b);
                    row.iter_mut().for_each(|v| *v *= scale);
                },
            )
        });
        Ok(())
    }
}

impl InplaceOp2 for RowOp {
    fn name(&self) -> &'static str {
        if self.gelu {
            "add-bias-gelu-tanh"
        } else {
            "add-bias"
        }
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (CpuStorage::F32(y), CpuStorage::F32(b)) = (s1, s2) else {
            candle_core::bail!("{}: f32 only", self.name());
        };
        let n = l2.shape().elem_count();
        let rows = l1.shape().elem_count() / n.max(1);
        let y = &mut y[l1.start_offset()..l1.start_offset() + rows * n];
        let b = &b[l2.start_offset()..l2.start_offset() + n];
        let gelu = self.gelu;
        par_rows(y, n, |_, row| {
            if gelu {
                with_widest_simd(
                    #[inline(always)]
                    || {
                        row.iter_mut()
                            .zip(b)
                            .for_each(|(v, &bb)| *v = gelu_tanh(*v + bb))
                    },
                );
            } else {
                row.iter_mut().zip(b).for_each(|(v, &bb)| *v += bb);
            }
        });
        Ok(())
    }
}

/// The `[b, rows, d]` f32 data of a contiguous CPU tensor, for the modulation kernels.
fn cpu_rows(t: &Tensor) -> Option<(usize, usize, usize)> {
    let is_f32_cpu = t.device().is_cpu() && t.dtype() == candle_core::DType::F32;
    match t.dims3() {
        Ok(dims) if is_f32_cpu && t.is_contiguous() => Some(dims),
        _ => None,
    }
}

/// Per-row modulation vectors `[b, 1 or rows, d]` as a lookup: row `r` of batch `bi`.
fn modulation_row(m: &[f32], rows_in_m: usize, d: usize, bi: usize, r: usize) -> &[f32] {
    let r = if rows_in_m == 1 { 0 } else { r };
    &m[(bi * rows_in_m + r) * d..][..d]
}

/// One key tile of the online softmax over the fresh `scores` `[n, tq, tk]`, with `m` the running
/// row max of the tiles before (`[n, tq, 1]`, None for the first tile). Returns
/// `(p, m_new, rescale, row_sums)`: `p = exp(scores - m_new)` written over the scores,
/// `m_new = max(m, row max)`, `rescale = exp(m - m_new)` (None for the first tile) and the row sums
/// of `p`, all `[n, tq, 1]`. One pass over the tile where separate ops make five; at 720P sequence
/// lengths these exps are most of the attention's non-matmul time.
pub fn online_softmax_tile(
    scores: Tensor,
    m: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Option<Tensor>, Tensor)> {
    let rows_of = |t: &Tensor| cpu_rows(t).map(|(n, r, _)| n * r);
    let fusable = match (rows_of(&scores), m) {
        (Some(rows), Some(m)) => rows_of(m) == Some(rows) && m.dims3()?.2 == 1,
        (Some(_), None) => true,
        _ => false,
    };
    if !fusable {
        let tile_max = scores.max_keepdim(candle_core::D::Minus1)?;
        let (m_new, rescale) = match m {
            Some(m) => {
                let m_new = m.maximum(&tile_max)?;
                let rescale = (m - &m_new)?.exp()?;
                (m_new, Some(rescale))
            }
            None => (tile_max, None),
        };
        let p = scores.broadcast_sub(&m_new)?.exp()?;
        let sums = p.sum_keepdim(candle_core::D::Minus1)?;
        return Ok((p, m_new, rescale, sums));
    }
    let (n, tq, _) = scores.dims3()?;
    let previous = m.map(|m| m.flatten_all()?.to_vec1::<f32>()).transpose()?;
    let op = OnlineTile {
        previous,
        results: std::sync::Mutex::new(vec![0f32; 3 * n * tq]),
    };
    scores.inplace_op1(&op)?;
    let results = op.results.into_inner().expect("no panic while held");
    let rows = n * tq;
    let device = scores.device().clone();
    let column = |i: usize| Tensor::from_slice(&results[i * rows..][..rows], (n, tq, 1), &device);
    let rescale = if m.is_some() { Some(column(1)?) } else { None };
    Ok((scores, column(0)?, rescale, column(2)?))
}

/// [`online_softmax_tile`]'s kernel; `results` holds m_new, rescale and row sums, row-major.
struct OnlineTile {
    previous: Option<Vec<f32>>,
    results: std::sync::Mutex<Vec<f32>>,
}

impl InplaceOp1 for OnlineTile {
    fn name(&self) -> &'static str {
        "online-softmax-tile"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("{}: f32 only", self.name());
        };
        let (n, tq, tk) = layout.shape().dims3()?;
        let rows = n * tq;
        let data = &mut data[layout.start_offset()..][..rows * tk];
        let mut results = self.results.lock().expect("not poisoned");
        let out_ptr = results.as_mut_ptr() as usize;
        let previous = self.previous.as_deref();
        par_rows(data, tk, |r, row| {
            // SAFETY: row `r`'s three result slots are written by the unit that has row `r` only.
            let out = |i: usize| unsafe { &mut *(out_ptr as *mut f32).add(i * rows + r) };
            with_widest_simd(
                #[inline(always)]
                || {
                    let tile_max = lanes_reduce(row, f32::NEG_INFINITY, f32::max);
                    let m_new = previous.map_or(tile_max, |m| m[r].max(tile_max));
                    row.iter_mut().for_each(|v| *v = fast_exp(*v - m_new));
                    *out(0) = m_new;
                    *out(1) = previous.map_or(1.0, |m| fast_exp(m[r] - m_new));
                    *out(2) = lanes_reduce(row, 0.0, |a, b| a + b);
                },
            );
        });
        Ok(())
    }
}

/// layer_norm(x) * scale_plus_one + shift over the last dim (no affine), in one pass over `x`,
/// where separate ops would write three tensors. `x` `[b, s, d]`; the vectors `[b, 1 or s, d]`.
/// None when the inputs are not contiguous f32 on the CPU (the caller composes ops then).
pub fn modulated_layer_norm(
    x: &Tensor,
    scale_plus_one: &Tensor,
    shift: &Tensor,
    eps: f32,
) -> Result<Option<Tensor>> {
    let (Some((b, s, d)), Some((mb, ms, md)), Some(shift_dims)) =
        (cpu_rows(x), cpu_rows(scale_plus_one), cpu_rows(shift))
    else {
        return Ok(None);
    };
    if (mb, md) != (b, d) || !(ms == 1 || ms == s) || shift_dims != (mb, ms, md) {
        return Ok(None);
    }
    let (x_storage, x_layout) = x.storage_and_layout();
    let (m_storage, m_layout) = scale_plus_one.storage_and_layout();
    let (s_storage, s_layout) = shift.storage_and_layout();
    use candle_core::Storage::Cpu;
    let (Cpu(CpuStorage::F32(xs)), Cpu(CpuStorage::F32(scale)), Cpu(CpuStorage::F32(shift))) =
        (&*x_storage, &*m_storage, &*s_storage)
    else {
        return Ok(None);
    };
    let xs = &xs[x_layout.start_offset()..][..b * s * d];
    let scale = &scale[m_layout.start_offset()..][..b * ms * d];
    let shift = &shift[s_layout.start_offset()..][..b * ms * d];
    let mut out = vec![0f32; b * s * d];
    par_rows(&mut out, d, |row, y| {
        let (bi, r) = (row / s, row % s);
        let x = &xs[row * d..][..d];
        let (g, t) = (
            modulation_row(scale, ms, d, bi, r),
            modulation_row(shift, ms, d, bi, r),
        );
        with_widest_simd(
            #[inline(always)]
            || {
                let mean = lanes_reduce(x, 0.0, |a, v| a + v) / d as f32;
                for (yv, &xv) in y.iter_mut().zip(x) {
                    *yv = xv - mean;
                }
                let var = sum_of_squares(y) / d as f32;
                let rstd = 1.0 / (var + eps).sqrt();
                for ((yv, &gv), &tv) in y.iter_mut().zip(g).zip(t) {
                    *yv = *yv * rstd * gv + tv;
                }
            },
        );
    });
    Tensor::from_vec(out, (b, s, d), x.device()).map(Some)
}

/// x + y * gate over the last dim, written into `y` (a fresh output) when all are contiguous f32
/// on the CPU; `x`, `y` `[b, s, d]`, `gate` `[b, 1 or s, d]`.
pub fn gated_add(x: &Tensor, y: Tensor, gate: &Tensor) -> Result<Tensor> {
    let fusable = match (cpu_rows(x), cpu_rows(&y), cpu_rows(gate)) {
        (Some(xd), Some(yd), Some((gb, gs, gd))) => {
            xd == yd && (gb, gd) == (xd.0, xd.2) && (gs == 1 || gs == xd.1)
        }
        _ => false,
    };
    if !fusable {
        return x + y.broadcast_mul(gate)?;
    }
    y.inplace_op3(x, gate, &GatedAdd)?;
    Ok(y)
}

struct GatedAdd;

impl candle_core::InplaceOp3 for GatedAdd {
    fn name(&self) -> &'static str {
        "gated-add"
    }

    fn cpu_fwd(
        &self,
        ys: &mut CpuStorage,
        yl: &Layout,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<()> {
        let (CpuStorage::F32(ys), CpuStorage::F32(xs), CpuStorage::F32(gs)) = (ys, xs, gs) else {
            candle_core::bail!("{}: f32 only", self.name());
        };
        let (b, s, d) = yl.shape().dims3()?;
        let rows_in_gate = gl.shape().dims3()?.1;
        let ys = &mut ys[yl.start_offset()..][..b * s * d];
        let xs = &xs[xl.start_offset()..][..b * s * d];
        let gs = &gs[gl.start_offset()..][..b * rows_in_gate * d];
        par_rows(ys, d, |row, y| {
            let x = &xs[row * d..][..d];
            let g = modulation_row(gs, rows_in_gate, d, row / s, row % s);
            for ((yv, &xv), &gv) in y.iter_mut().zip(x).zip(g) {
                *yv = xv + *yv * gv;
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_matches_candle() {
        let scores = Tensor::randn(0f32, 8f32, (3, 5, 77), &candle_core::Device::Cpu).unwrap();
        let expected = candle_nn::ops::softmax_last_dim(&scores).unwrap();
        let fused = softmax_last_dim(scores.copy().unwrap()).unwrap();
        let err = crate::testing::relative_error(&fused, &expected).unwrap();
        assert!(err < 1e-6, "relative error {err:e}");
    }

    #[test]
    fn modulation_kernels_match_composed_ops() {
        let dev = candle_core::Device::Cpu;
        let x = Tensor::randn(0f32, 3f32, (2, 7, 40), &dev).unwrap();
        for rows in [1, 7] {
            let scale = Tensor::randn(1f32, 0.5f32, (2, rows, 40), &dev).unwrap();
            let shift = Tensor::randn(0f32, 1f32, (2, rows, 40), &dev).unwrap();
            let (ones, zeros) = (
                Tensor::ones(40, candle_core::DType::F32, &dev).unwrap(),
                Tensor::zeros(40, candle_core::DType::F32, &dev).unwrap(),
            );
            let expected = candle_nn::ops::layer_norm(&x, &ones, &zeros, 1e-6)
                .unwrap()
                .broadcast_mul(&scale)
                .unwrap()
                .broadcast_add(&shift)
                .unwrap();
            let fused = modulated_layer_norm(&x, &scale, &shift, 1e-6)
                .unwrap()
                .expect("contiguous f32 takes the fused path");
            let err = crate::testing::relative_error(&fused, &expected).unwrap();
            assert!(err < 1e-6, "modulated layer norm: relative error {err:e}");

            let y = Tensor::randn(0f32, 1f32, (2, 7, 40), &dev).unwrap();
            let expected = (&x + y.broadcast_mul(&scale).unwrap()).unwrap();
            let fused = gated_add(&x, y.copy().unwrap(), &scale).unwrap();
            let err = crate::testing::relative_error(&fused, &expected).unwrap();
            assert!(err < 1e-7, "gated add: relative error {err:e}");
        }
    }
}
