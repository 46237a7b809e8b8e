//! The small layers the transformer is built from, loaded by their diffusers names.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// `nn.Linear` over the last dim; inputs of any rank run as one 2-D matmul. The one Linear of
/// the crate: the transformer's, the T5 encoder's (no bias) and CLIP's.
///
/// The weight is held in the VarBuilder's dtype, the bias in the compute dtype
/// ([`crate::weights::compute_dtype`]). On the CPU with `--dtype bf16` the weight is held in bf16
/// and widened to the input's f32 for each call: bf16 -> f32 is exact, so a bf16 checkpoint gives
/// the same outputs as when held in f32.
///
/// A weight the VarBuilder holds quantized (it has a `weight_scale`: `--quantize int8|fp8`, or
/// a published fp8 file) is kept in its 8-bit type with one f32 scale per output channel and
/// widened to f32 (`q * scale`) for each call.
#[derive(Debug, Clone)]
pub struct Linear {
    /// The checkpoint's `[out, in]` weight stored transposed, `[in, out]` contiguous: the matmul
    /// then packs it with straight copies instead of a strided gather on every call, and a
    /// held-narrower weight widens in one straight pass.
    weight_t: Tensor,
    /// Quantized weights: the `[1, out]` f32 scale of each output channel.
    scale: Option<Tensor>,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn load(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        let bias = crate::weights::compute_vb(&vb).get(out_dim, "bias")?;
        Self::load_weight(in_dim, out_dim, Some(bias), vb)
    }

    /// A Linear without bias (T5's).
    pub fn load_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        Self::load_weight(in_dim, out_dim, None, vb)
    }

    fn load_weight(
        in_dim: usize,
        out_dim: usize,
        bias: Option<Tensor>,
        vb: VarBuilder,
    ) -> Result<Self> {
        // Asking for the scale first is what tells the weight source to hold it quantized.
        let quantized = vb.contains_tensor("weight_scale");
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let scale = match quantized {
            true => Some(
                // One scale per output channel; a published file's single scale is spread.
                vb.get_unchecked_dtype("weight_scale", DType::F32)?
                    .flatten_all()?
                    .broadcast_as(out_dim)?
                    .contiguous()?
                    .reshape((1, out_dim))?,
            ),
            false => None,
        };
        // A weight that is not laid out in memory (the manifest checker's zero-stride stand-ins
        // at 14B shapes) stays a transposed view rather than being materialised.
        let weight_t = if weight.is_contiguous() {
            weight.t()?.contiguous()?
        } else {
            weight.t()?
        };
        Ok(Self {
            weight_t,
            scale,
            bias,
        })
    }

    /// The dtype the weight is held in (`u8` for int8).
    pub fn dtype(&self) -> DType {
        self.weight_t.dtype()
    }

    /// The `[in, out]` weight in `dtype` for one call.
    fn widened(&self, dtype: DType) -> Result<std::borrow::Cow<'_, Tensor>> {
        use std::borrow::Cow;
        Ok(match &self.scale {
            Some(scale) => {
                Cow::Owned(crate::quant::dequantize(&self.weight_t, scale)?.to_dtype(dtype)?)
            }
            None if self.weight_t.dtype() == dtype => Cow::Borrowed(&self.weight_t),
            None => Cow::Owned(self.weight_t.to_dtype(dtype)?),
        })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, |y, bias| match bias {
            Some(bias) => super::fused::add_bias(y, bias),
            None => Ok(y),
        })
    }
}

impl Linear {
    /// gelu_tanh(x W^T + b), the bias and activation applied in place where possible.
    pub fn forward_gelu_tanh(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, |y, bias| match bias {
            Some(bias) => super::fused::add_bias_gelu(y, bias),
            None => y.gelu(),
        })
    }

    /// `finish(x W^T, bias)` with `x` of any rank flattened to one 2-D matmul and reshaped back.
    /// A weight held in another dtype than `x` is converted for this call only.
    fn apply(
        &self,
        x: &Tensor,
        finish: impl FnOnce(Tensor, Option<&Tensor>) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let dims = x.dims();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim.max(1);
        let x2 = x.reshape((rows, in_dim))?;
        let y = x2.matmul(self.widened(x.dtype())?.as_ref())?;
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().unwrap() = self.weight_t.dim(1)?;
        finish(y, self.bias.as_ref())?.reshape(out_dims)
    }
}

/// LayerNorm over the last dim computed in f32 (diffusers' `FP32LayerNorm`), with or without affine.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
    /// Read from the checkpoint (else unit weight, zero bias).
    affine: bool,
}

impl LayerNorm {
    /// `elementwise_affine=False`: unit weight, zero bias, nothing read from the checkpoint.
    pub fn plain(dim: usize, eps: f64, vb: &VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: Tensor::ones(dim, DType::F32, vb.device())?,
            bias: Tensor::zeros(dim, DType::F32, vb.device())?,
            eps: eps as f32,
            affine: false,
        })
    }

    pub fn affine(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let vb = vb.to_dtype(DType::F32);
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps: eps as f32,
            affine: true,
        })
    }

    /// The epsilon of a norm without affine parameters (the ones the modulation follows).
    pub fn plain_eps(&self) -> Option<f32> {
        (!self.affine).then_some(self.eps)
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        candle_nn::ops::layer_norm(&x, &self.weight, &self.bias, self.eps)?.to_dtype(dtype)
    }
}

/// `torch.nn.RMSNorm` over the last dim with a learned weight.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub fn load(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: crate::weights::compute_vb(&vb).get(dim, "weight")?,
            eps: eps as f32,
        })
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)
    }
}

/// diffusers' `FeedForward`: `net.0.proj` -> activation -> `net.2`.
#[derive(Debug, Clone)]
pub struct FeedForward {
    proj_in: Linear,
    proj_out: Linear,
    /// GELU with the tanh approximation (the blocks) or exact (the image embedder).
    tanh_gelu: bool,
}

impl FeedForward {
    pub fn load(
        dim: usize,
        inner: usize,
        out: usize,
        tanh_gelu: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            proj_in: Linear::load(dim, inner, vb.pp("net.0.proj"))?,
            proj_out: Linear::load(inner, out, vb.pp("net.2"))?,
            tanh_gelu,
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = if self.tanh_gelu {
            self.proj_in.forward_gelu_tanh(x)?
        } else {
            self.proj_in.forward(x)?.gelu_erf()?
        };
        self.proj_out.forward(&h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn bits(t: &Tensor) -> Vec<u32> {
        crate::testing::f32_bits(t).unwrap()
    }

    #[test]
    fn a_linear_held_in_half_precision_equals_its_rounded_weights_held_in_f32() {
        let dev = Device::Cpu;
        let weight = Tensor::randn(0f32, 0.2, (48, 40), &dev).unwrap();
        let bias = Tensor::randn(0f32, 0.2, 48, &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 5, 40), &dev).unwrap();
        for held in [DType::BF16, DType::F16] {
            let load = |w: &Tensor, dtype, with_bias: bool| {
                let mut tensors = std::collections::HashMap::from([("weight".into(), w.clone())]);
                tensors.insert("bias".to_string(), bias.clone());
                let vb = VarBuilder::from_tensors(tensors, dtype, &dev);
                match with_bias {
                    true => Linear::load(40, 48, vb).unwrap(),
                    false => Linear::load_no_bias(40, 48, vb).unwrap(),
                }
            };
            let rounded = weight.to_dtype(held).unwrap().to_dtype(DType::F32).unwrap();
            for with_bias in [true, false] {
                let half = load(&weight, held, with_bias);
                let reference = load(&rounded, DType::F32, with_bias);
                // Held narrow, the bias (compute dtype on the CPU) and the outputs f32.
                assert_eq!(half.dtype(), held);
                assert_eq!(
                    half.bias.as_ref().map(|b| b.dtype()),
                    with_bias.then_some(DType::F32)
                );
                let y = half.forward(&x).unwrap();
                assert_eq!((y.dtype(), y.dims()), (DType::F32, &[2, 5, 48][..]));
                assert_eq!(bits(&y), bits(&reference.forward(&x).unwrap()));
                assert_eq!(
                    bits(&half.forward_gelu_tanh(&x).unwrap()),
                    bits(&reference.forward_gelu_tanh(&x).unwrap()),
                    "{held:?} bias {with_bias}"
                );
            }
        }
    }
}
