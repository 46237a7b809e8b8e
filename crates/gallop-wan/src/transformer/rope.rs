//! 3-axis rotary position embedding: the head dim is split into frame, height and width parts,
//! each rotated by its token's position on that axis (pairs are interleaved: (x0,x1), (x2,x3), ...).

use candle_core::{Device, Result, Tensor};

const THETA: f64 = 10000.0;

#[derive(Debug, Clone)]
pub struct Rope {
    /// Per-axis head-dim parts (t, h, w); h and w get 2*(head_dim/6) each, t the rest.
    axis_dims: [usize; 3],
    max_seq_len: usize,
}

impl Rope {
    pub fn new(head_dim: usize, max_seq_len: usize) -> Self {
        let hw = 2 * (head_dim / 6);
        Self {
            axis_dims: [head_dim - 2 * hw, hw, hw],
            max_seq_len,
        }
    }

    /// cos and sin of shape [frames*height*width, head_dim/2] for tokens in (f, h, w) order,
    /// one angle per interleaved pair. Angles are computed in f64 like the reference.
    pub fn tables(
        &self,
        grid: (usize, usize, usize),
        device: &Device,
    ) -> crate::Result<(Tensor, Tensor)> {
        let (f, h, w) = grid;
        for (axis, n) in [("frames", f), ("height", h), ("width", w)] {
            crate::error::ensure!(
                n <= self.max_seq_len,
                "patched {axis} {n} exceeds rope_max_seq_len {}",
                self.max_seq_len
            );
        }
        // Angles per axis: angle[pos][i] = pos / theta^(2i/dim).
        let inv_freq = |dim: usize| -> Vec<f64> {
            (0..dim / 2)
                .map(|i| 1.0 / THETA.powf((2 * i) as f64 / dim as f64))
                .collect()
        };
        let freqs: Vec<Vec<f64>> = self.axis_dims.iter().map(|&d| inv_freq(d)).collect();
        let half: usize = freqs.iter().map(Vec::len).sum();
        let tokens = f * h * w;
        let mut cos = Vec::with_capacity(tokens * half);
        let mut sin = Vec::with_capacity(tokens * half);
        for fi in 0..f {
            for hi in 0..h {
                for wi in 0..w {
                    for (pos, axis) in [fi, hi, wi].into_iter().zip(&freqs) {
                        for &fr in axis {
                            let angle = pos as f64 * fr;
                            cos.push(angle.cos() as f32);
                            sin.push(angle.sin() as f32);
                        }
                    }
                }
            }
        }
        Ok((
            Tensor::from_vec(cos, (tokens, half), device)?,
            Tensor::from_vec(sin, (tokens, half), device)?,
        ))
    }
}

/// Rotate x of shape [batch, heads, tokens, head_dim] by the interleaved-pair tables.
pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.contiguous()?;
    candle_nn::rotary_emb::rope_i(&x, &cos.to_dtype(dtype)?, &sin.to_dtype(dtype)?)
}
