//! Scaled dot-product attention that never holds a full score matrix for long sequences: keys are
//! processed in tiles with an online (running max and sum) softmax, queries and heads in chunks,
//! so memory stays linear in sequence length.

use candle_core::{Result, Tensor};

/// Bounds on one tile of attention scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionTiling {
    /// Most keys scored at once; longer key sequences use the online softmax.
    pub key_tile: usize,
    /// Most query rows per tile.
    pub query_tile: usize,
    /// Most score elements (heads x queries x keys) alive at once.
    pub max_scores: usize,
}

impl Default for AttentionTiling {
    fn default() -> Self {
        // 8 M f32 scores = 32 MiB per tile; keys up to 4096 per tile keep matmuls large.
        Self {
            key_tile: 4096,
            query_tile: 4096,
            max_scores: 1 << 23,
        }
    }
}

/// softmax(q k^T / sqrt(d)) v for q [b, h, sq, d], k and v [b, h, sk, d]; returns [b, h, sq, d].
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, tiling: AttentionTiling) -> Result<Tensor> {
    let (b, h, sq, d) = q.dims4()?;
    let sk = k.dim(2)?;
    if sk == 0 {
        candle_core::bail!("attention needs at least one key token");
    }
    let bh = b * h;
    let q = (q.reshape((bh, sq, d))? * (1.0 / (d as f64).sqrt()))?;
    let k = k.reshape((bh, sk, d))?;
    let v = v.reshape((bh, sk, d))?;

    let tk = sk.min(tiling.key_tile.max(1));
    let tq = sq
        .min(tiling.query_tile.max(1))
        .min((tiling.max_scores / tk).max(1));
    let heads_per_chunk = (tiling.max_scores / (tq * tk)).clamp(1, bh);

    let mut head_chunks = Vec::new();
    for h0 in (0..bh).step_by(heads_per_chunk) {
        let hn = heads_per_chunk.min(bh - h0);
        let (qh, kh, vh) = (
            q.narrow(0, h0, hn)?,
            k.narrow(0, h0, hn)?,
            v.narrow(0, h0, hn)?,
        );
        let mut query_tiles = Vec::new();
        for q0 in (0..sq).step_by(tq) {
            let qt = qh.narrow(1, q0, tq.min(sq - q0))?;
            query_tiles.push(attend_tile(&qt, &kh, &vh, tk)?);
        }
        head_chunks.push(Tensor::cat(&query_tiles, 1)?);
    }
    Tensor::cat(&head_chunks, 0)?.reshape((b, h, sq, d))
}

/// One query tile (already scaled) against all keys, `tk` keys at a time.
fn attend_tile(q: &Tensor, k: &Tensor, v: &Tensor, tk: usize) -> Result<Tensor> {
    let sk = k.dim(1)?;
    if sk <= tk {
        let scores = q.matmul(&k.t()?)?;
        return super::fused::softmax_last_dim(scores)?.matmul(v);
    }
    // Online softmax: keep the running row max m, the running sum l of exp(s - m), and the
    // running exp-weighted sum of values; rescale them whenever the max grows.
    let mut state: Option<(Tensor, Tensor, Tensor)> = None;
    for k0 in (0..sk).step_by(tk) {
        let n = tk.min(sk - k0);
        let kt = k.narrow(1, k0, n)?.contiguous()?;
        let vt = v.narrow(1, k0, n)?.contiguous()?;
        let scores = q.matmul(&kt.t()?)?;
        state = Some(match state {
            None => {
                let (p, m, _, l) = super::fused::online_softmax_tile(scores, None)?;
                (m, l, p.matmul(&vt)?)
            }
            Some((m, l, acc)) => {
                let (p, m_new, rescale, sums) =
                    super::fused::online_softmax_tile(scores, Some(&m))?;
                let rescale = rescale.expect("a rescale after the first tile");
                let l = ((l * &rescale)? + sums)?;
                let acc = (acc.broadcast_mul(&rescale)? + p.matmul(&vt)?)?;
                (m_new, l, acc)
            }
        });
    }
    let (_, l, acc) = state.expect("at least one key tile");
    acc.broadcast_div(&l)
}
