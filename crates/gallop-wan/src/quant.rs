//! Quantized weight matrices: int8 with one scale per output channel, or fp8 e4m3 with one scale
//! per output channel (published fp8 files' single per-tensor scale is spread over the channels).
//! A quantized matrix is widened to f32 for each matmul, as a bf16-held one is.
//!
//! Quantizing a row `w` (one output channel): `scale = max|w| / QMAX` (127 for int8, 448 for
//! e4m3, the largest finite value), `q = w / scale` rounded to nearest (ties to even) in the
//! target type; widening gives `q * scale`. int8 is stored as `u8` with 128 added, as candle has
//! no signed 8-bit type.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Result, Tensor};

/// `--quantize` / `quantize = "..."`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum Quantize {
    Int8,
    Fp8,
}

impl Quantize {
    /// The dtype a quantized matrix is stored in.
    pub fn dtype(self) -> DType {
        match self {
            Self::Int8 => DType::U8,
            Self::Fp8 => DType::F8E4M3,
        }
    }

    /// The largest quantized magnitude a row's largest weight maps to.
    fn qmax(self) -> f64 {
        match self {
            Self::Int8 => 127.0,
            Self::Fp8 => 448.0,
        }
    }
}

impl FromStr for Quantize {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "int8" => Ok(Self::Int8),
            "fp8" => Ok(Self::Fp8),
            _ => Err(format!("must be int8 or fp8, got {s:?}")),
        }
    }
}

impl TryFrom<String> for Quantize {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<Quantize> for String {
    fn from(q: Quantize) -> String {
        q.to_string()
    }
}

impl fmt::Display for Quantize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Int8 => "int8",
            Self::Fp8 => "fp8",
        })
    }
}

/// Offset that stores an int8 value in a `u8`.
const INT8_OFFSET: f64 = 128.0;

/// An `[out, in]` matrix quantized per output channel: (`q` `[out, in]`, `scale` `[out]` f32).
pub fn quantize(weight: &Tensor, kind: Quantize) -> Result<(Tensor, Tensor)> {
    let w = weight.to_dtype(DType::F32)?;
    let absmax = w.abs()?.max_keepdim(1)?; // [out, 1]
    let qmax = Tensor::new(kind.qmax() as f32, w.device())?;
    let scale = absmax.broadcast_div(&qmax)?;
    // An all-zero row keeps scale 1 (its values are 0 whatever the scale).
    let scale = scale
        .eq(0f32)?
        .where_cond(&Tensor::ones_like(&scale)?, &scale)?;
    let scaled = w.broadcast_div(&scale)?;
    let q = match kind {
        Quantize::Int8 => round_ties_even(&scaled)?
            .clamp(-127f32, 127f32)?
            .affine(1.0, INT8_OFFSET)?
            .to_dtype(DType::U8)?,
        Quantize::Fp8 => scaled.to_dtype(DType::F8E4M3)?,
    };
    Ok((q, scale.squeeze(1)?))
}

/// `q * scale` in f32 for `q` `[out, in]` and `scale` `[out]`, or for `q` stored transposed
/// (`[in, out]`, as `Linear` holds it) with `scale` as `[1, out]`.
pub fn dequantize(q: &Tensor, scale: &Tensor) -> Result<Tensor> {
    let wide = q.to_dtype(DType::F32)?;
    let wide = match q.dtype() {
        DType::U8 => wide.affine(1.0, -INT8_OFFSET)?,
        _ => wide,
    };
    let scale = match scale.rank() {
        1 => scale.unsqueeze(1)?,
        _ => scale.clone(),
    };
    wide.broadcast_mul(&scale)
}

/// Round half to even, as torch.round does (candle's `round` rounds half away from zero).
fn round_ties_even(t: &Tensor) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
    let r: Vec<f32> = v.iter().map(|x| x.round_ties_even()).collect();
    Tensor::from_vec(r, dims, t.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn quantized_rows_widen_back_within_their_step() {
        let w = Tensor::randn(0f32, 0.05, (6, 33), &Device::Cpu).unwrap();
        let w = w
            .slice_assign(
                &[2..3, 0..33],
                &Tensor::zeros((1, 33), DType::F32, &Device::Cpu).unwrap(),
            )
            .unwrap();
        for kind in [Quantize::Int8, Quantize::Fp8] {
            let (q, scale) = quantize(&w, kind).unwrap();
            assert_eq!((q.dtype(), scale.dims()), (kind.dtype(), &[6][..]));
            let back = dequantize(&q, &scale).unwrap();
            let err = (&back - &w).unwrap().abs().unwrap().max_keepdim(1).unwrap();
            let absmax = w.abs().unwrap().max_keepdim(1).unwrap();
            let err: Vec<f32> = err.flatten_all().unwrap().to_vec1().unwrap();
            let absmax: Vec<f32> = absmax.flatten_all().unwrap().to_vec1().unwrap();
            for (row, (e, m)) in err.iter().zip(&absmax).enumerate() {
                // Half a step: int8 1/127 of the row's max; e4m3 has 3 mantissa bits (1/16).
                let bound = match kind {
                    Quantize::Int8 => m / 127.0 * 0.5,
                    Quantize::Fp8 => m / 16.0,
                };
                assert!(
                    *e <= bound * 1.0001,
                    "{kind} row {row}: error {e} > {bound}"
                );
            }
            // The largest weight of a row is exact (it maps to QMAX).
            let row0: Vec<f32> = back
                .get(0)
                .unwrap()
                .abs()
                .unwrap()
                .max(0)
                .unwrap()
                .to_vec0::<f32>()
                .map(|v| vec![v])
                .unwrap();
            assert!((row0[0] - absmax[0]).abs() <= absmax[0] * 1e-6, "{kind}");
        }
    }

    #[test]
    fn int8_rounds_ties_to_even_and_stays_in_range() {
        // Row max 127 -> scale 1: values are their own quantized values.
        let w = Tensor::new(&[[127f32, 2.5, -2.5, 3.5, -127.0, 0.4]], &Device::Cpu).unwrap();
        let (q, scale) = quantize(&w, Quantize::Int8).unwrap();
        assert_eq!(scale.to_vec1::<f32>().unwrap(), vec![1.0]);
        let back: Vec<f32> = dequantize(&q, &scale)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(back, vec![127.0, 2.0, -2.0, 4.0, -127.0, 0.0]);
    }
}
