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
        let ptr = data.as_mut_ptr() as usize;
        candle_core::utils::barrier_pool().execute_chunked(rows, |range| {
            for r in range {
                // SAFETY: each row is visited by exactly one unit; rows do not overlap.
                let row =
                    unsafe { std::slice::from_raw_parts_mut((ptr as *mut f32).add(r * n), n) };
                with_widest_simd(
                    #[inline(always)]
                    || {
                        let max = lanes_reduce(row, f32::NEG_INFINITY, f32::max);
                        row.iter_mut().for_each(|v| *v = fast_exp(*v - max));
                        let scale = 1.0 / lanes_reduce(row, 0.0, |a, b| a + b);
                        row.iter_mut().for_each(|v| *v *= scale);
                    },
                );
            }
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
        let y_ptr = y.as_mut_ptr() as usize;
        let gelu = self.gelu;
        candle_core::utils::barrier_pool().execute_chunked(rows, |range| {
            for r in range {
                // SAFETY: each row is visited by exactly one unit; rows do not overlap.
                let row =
                    unsafe { std::slice::from_raw_parts_mut((y_ptr as *mut f32).add(r * n), n) };
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
}
