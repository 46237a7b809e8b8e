//! The small layers the transformer is built from, loaded by their diffusers names.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// `nn.Linear` over the last dim; inputs of any rank run as one 2-D matmul.
#[derive(Debug, Clone)]
pub struct Linear {
    /// The checkpoint's `[out, in]` weight stored transposed, `[in, out]` contiguous: the matmul
    /// then packs it with straight copies instead of a strided gather on every call.
    weight_t: Tensor,
    bias: Tensor,
}

impl Linear {
    pub fn load(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        // A weight that is not laid out in memory (the manifest checker's zero-stride stand-ins
        // at 14B shapes) stays a transposed view rather than being materialised.
        let weight_t = if weight.is_contiguous() {
            weight.t()?.contiguous()?
        } else {
            weight.t()?
        };
        Ok(Self {
            weight_t,
            bias: vb.get(out_dim, "bias")?,
        })
    }

    pub fn dtype(&self) -> DType {
        self.weight_t.dtype()
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, super::fused::add_bias)
    }
}

impl Linear {
    /// gelu_tanh(x W^T + b), the bias and activation applied in place where possible.
    pub fn forward_gelu_tanh(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, super::fused::add_bias_gelu)
    }

    /// `finish(x W^T, bias)` with `x` of any rank flattened to one 2-D matmul and reshaped back.
    fn apply(
        &self,
        x: &Tensor,
        finish: impl FnOnce(Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let dims = x.dims();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim.max(1);
        let y = x.reshape((rows, in_dim))?.matmul(&self.weight_t)?;
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().unwrap() = self.weight_t.dim(1)?;
        finish(y, &self.bias)?.reshape(out_dims)
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
            weight: vb.get(dim, "weight")?,
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
