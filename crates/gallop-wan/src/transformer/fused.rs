//! In-place "add bias" and "add bias, then GELU (tanh)" over a freshly computed matmul output,
//! so the biggest activations (the FFN's hidden layer) are not copied twice more. CPU f32 only;
//! callers use plain tensor ops elsewhere.

use candle_core::{CpuStorage, InplaceOp2, Layout, Result, Tensor};

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
#[inline]
fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
    let tanh = 1.0 - 2.0 / ((2.0 * u).exp() + 1.0);
    0.5 * x * (1.0 + tanh)
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
                    row.iter_mut()
                        .zip(b)
                        .for_each(|(v, &bb)| *v = gelu_tanh(*v + bb));
                } else {
                    row.iter_mut().zip(b).for_each(|(v, &bb)| *v += bb);
                }
            }
        });
        Ok(())
    }
}
