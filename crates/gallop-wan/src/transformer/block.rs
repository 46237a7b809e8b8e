//! One transformer block (self-attention with RoPE, cross-attention to text and optionally image
//! tokens, GELU-tanh FFN, each modulated by the timestep) and the VACE control block around it.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::attention::{AttentionTiling, attention};
use super::layers::{FeedForward, LayerNorm, Linear, RmsNorm};
use super::rope;

/// Text tokens sit at the end of the cross-attention context when a checkpoint has added image
/// K/V; everything before them is image tokens (the text encoder's fixed length).
pub const TEXT_CONTEXT_LEN: usize = 512;

/// `WanAttention`: q/k/v projections with RMSNorm over all heads on q and k.
#[derive(Debug, Clone)]
struct Attention {
    heads: usize,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    norm_q: RmsNorm,
    norm_k: RmsNorm,
    /// Wan2.1 I2V: a second K/V over the image tokens, whose attention output is added.
    added_kv: Option<(Linear, Linear, RmsNorm)>,
}

impl Attention {
    fn load(
        dim: usize,
        heads: usize,
        eps: f64,
        added_kv_dim: Option<usize>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let added_kv = match added_kv_dim {
            Some(kv_dim) => Some((
                Linear::load(kv_dim, dim, vb.pp("add_k_proj"))?,
                Linear::load(kv_dim, dim, vb.pp("add_v_proj"))?,
                RmsNorm::load(dim, eps, vb.pp("norm_added_k"))?,
            )),
            None => None,
        };
        Ok(Self {
            heads,
            to_q: Linear::load(dim, dim, vb.pp("to_q"))?,
            to_k: Linear::load(dim, dim, vb.pp("to_k"))?,
            to_v: Linear::load(dim, dim, vb.pp("to_v"))?,
            to_out: Linear::load(dim, dim, vb.pp("to_out.0"))?,
            norm_q: RmsNorm::load(dim, eps, vb.pp("norm_q"))?,
            norm_k: RmsNorm::load(dim, eps, vb.pp("norm_k"))?,
            added_kv,
        })
    }

    /// [b, s, heads*d] -> [b, heads, s, d]
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, s, dim) = x.dims3()?;
        x.reshape((b, s, self.heads, dim / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn merge_heads(x: &Tensor) -> Result<Tensor> {
        let (b, h, s, d) = x.dims4()?;
        x.transpose(1, 2)?.reshape((b, s, h * d))
    }

    fn self_attention(
        &self,
        x: &Tensor,
        rope_tables: &(Tensor, Tensor),
        tiling: AttentionTiling,
    ) -> Result<Tensor> {
        let (cos, sin) = rope_tables;
        let q = rope::apply(
            &self.split_heads(&self.norm_q.forward(&self.to_q.forward(x)?)?)?,
            cos,
            sin,
        )?;
        let k = rope::apply(
            &self.split_heads(&self.norm_k.forward(&self.to_k.forward(x)?)?)?,
            cos,
            sin,
        )?;
        let v = self.split_heads(&self.to_v.forward(x)?)?;
        let out = attention(&q, &k, &v, tiling)?;
        self.to_out.forward(&Self::merge_heads(&out)?)
    }

    fn cross_attention(
        &self,
        x: &Tensor,
        context: &Tensor,
        tiling: AttentionTiling,
    ) -> Result<Tensor> {
        let q = self.split_heads(&self.norm_q.forward(&self.to_q.forward(x)?)?)?;
        let (text, image) = match &self.added_kv {
            Some(_) => {
                let n = context.dim(1)?;
                let n_image = n.saturating_sub(TEXT_CONTEXT_LEN);
                (
                    context.narrow(1, n_image, n - n_image)?,
                    Some(context.narrow(1, 0, n_image)?),
                )
            }
            None => (context.clone(), None),
        };
        let k = self.split_heads(&self.norm_k.forward(&self.to_k.forward(&text)?)?)?;
        let v = self.split_heads(&self.to_v.forward(&text)?)?;
        let mut out = attention(&q, &k, &v, tiling)?;
        if let (Some((add_k, add_v, norm_added_k)), Some(image)) = (&self.added_kv, image) {
            let k = self.split_heads(&norm_added_k.forward(&add_k.forward(&image)?)?)?;
            let v = self.split_heads(&add_v.forward(&image)?)?;
            out = (out + attention(&q, &k, &v, tiling)?)?;
        }
        self.to_out.forward(&Self::merge_heads(&out)?)
    }
}

/// The six modulation vectors of one block, each [b, 1 or tokens, dim] in f32.
struct Modulation {
    shift: Tensor,
    scale_plus_one: Tensor,
    gate: Tensor,
    c_shift: Tensor,
    c_scale_plus_one: Tensor,
    c_gate: Tensor,
}

impl Modulation {
    /// `table` [1, 6, dim] + `timestep_proj` [b, t, 6, dim].
    fn new(table: &Tensor, timestep_proj: &Tensor) -> Result<Self> {
        let m = timestep_proj.broadcast_add(&table.unsqueeze(0)?)?;
        let part = |i: usize| m.narrow(2, i, 1)?.squeeze(2);
        Ok(Self {
            shift: part(0)?,
            scale_plus_one: (part(1)? + 1.0)?,
            gate: part(2)?,
            c_shift: part(3)?,
            c_scale_plus_one: (part(4)? + 1.0)?,
            c_gate: part(5)?,
        })
    }
}

/// norm(x) * (1 + scale) + shift, in f32, back to x's dtype.
fn modulate(
    norm: &LayerNorm,
    x: &Tensor,
    scale_plus_one: &Tensor,
    shift: &Tensor,
) -> Result<Tensor> {
    if let Some(eps) = norm.plain_eps()
        && let Some(y) = super::fused::modulated_layer_norm(x, scale_plus_one, shift, eps)?
    {
        return Ok(y);
    }
    norm.forward(&x.to_dtype(DType::F32)?)?
        .broadcast_mul(scale_plus_one)?
        .broadcast_add(shift)?
        .to_dtype(x.dtype())
}

/// x + y * gate, in f32, back to x's dtype.
fn gated_residual(x: &Tensor, y: Tensor, gate: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    super::fused::gated_add(&x.to_dtype(DType::F32)?, y.to_dtype(DType::F32)?, gate)?
        .to_dtype(dtype)
}

/// `WanTransformerBlock`.
#[derive(Debug, Clone)]
pub struct Block {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: Option<LayerNorm>,
    attn2: Attention,
    norm3: LayerNorm,
    ffn: FeedForward,
    /// [1, 6, dim], f32
    scale_shift_table: Tensor,
}

/// What every block of one forward shares.
pub struct BlockContext<'a> {
    /// Cross-attention context: image tokens (if any) then text tokens.
    pub context: &'a Tensor,
    /// [b, 1 or tokens, 6, dim], f32
    pub timestep_proj: &'a Tensor,
    pub rope: &'a (Tensor, Tensor),
    pub tiling: AttentionTiling,
    /// Most tokens per FFN pass: its hidden layer is ffn_dim wide, the largest activation.
    pub ffn_rows: usize,
}

/// The FFN over [b, s, dim] a bounded number of token rows at a time (rows are independent).
fn ffn_in_row_chunks(ffn: &FeedForward, x: &Tensor, max_rows: usize) -> Result<Tensor> {
    let (b, s, dim) = x.dims3()?;
    let rows = b * s;
    let max_rows = max_rows.max(1);
    if rows <= max_rows {
        return ffn.forward(x);
    }
    let flat = x.reshape((rows, dim))?;
    let chunks = (0..rows)
        .step_by(max_rows)
        .map(|r0| ffn.forward(&flat.narrow(0, r0, max_rows.min(rows - r0))?))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&chunks, 0)?.reshape((b, s, ()))
}

impl Block {
    pub fn load(config: &super::TransformerConfig, vb: VarBuilder) -> Result<Self> {
        let dim = config.inner_dim();
        let heads = config.num_attention_heads;
        let eps = config.eps;
        Ok(Self {
            norm1: LayerNorm::plain(dim, eps, &vb)?,
            attn1: Attention::load(dim, heads, eps, None, vb.pp("attn1"))?,
            norm2: if config.cross_attn_norm {
                Some(LayerNorm::affine(dim, eps, vb.pp("norm2"))?)
            } else {
                None
            },
            attn2: Attention::load(dim, heads, eps, config.added_kv_proj_dim, vb.pp("attn2"))?,
            norm3: LayerNorm::plain(dim, eps, &vb)?,
            ffn: FeedForward::load(dim, config.ffn_dim, dim, true, vb.pp("ffn"))?,
            scale_shift_table: vb
                .to_dtype(DType::F32)
                .get((1, 6, dim), "scale_shift_table")?,
        })
    }

    pub fn forward(&self, x: &Tensor, ctx: &BlockContext) -> Result<Tensor> {
        let m = Modulation::new(&self.scale_shift_table, ctx.timestep_proj)?;

        let h = modulate(&self.norm1, x, &m.scale_plus_one, &m.shift)?;
        let h = self.attn1.self_attention(&h, ctx.rope, ctx.tiling)?;
        let x = gated_residual(x, h, &m.gate)?;

        let h = match &self.norm2 {
            Some(norm) => norm.forward(&x)?,
            None => x.clone(),
        };
        let x = (&x + self.attn2.cross_attention(&h, ctx.context, ctx.tiling)?)?;

        let h = modulate(&self.norm3, &x, &m.c_scale_plus_one, &m.c_shift)?;
        let h = ffn_in_row_chunks(&self.ffn, &h, ctx.ffn_rows)?;
        gated_residual(&x, h, &m.c_gate)
    }
}

/// `WanVACETransformerBlock`: a block over the control stream that emits a hint for the main one.
#[derive(Debug, Clone)]
pub struct VaceBlock {
    /// Only the first VACE block: projects the control tokens and adds the main tokens.
    proj_in: Option<Linear>,
    block: Block,
    proj_out: Linear,
}

impl VaceBlock {
    pub fn load(config: &super::TransformerConfig, first: bool, vb: VarBuilder) -> Result<Self> {
        let dim = config.inner_dim();
        Ok(Self {
            proj_in: if first {
                Some(Linear::load(dim, dim, vb.pp("proj_in"))?)
            } else {
                None
            },
            block: Block::load(config, vb.clone())?,
            proj_out: Linear::load(dim, dim, vb.pp("proj_out"))?,
        })
    }

    /// Returns (hint, next control state).
    pub fn forward(
        &self,
        x: &Tensor,
        control: &Tensor,
        ctx: &BlockContext,
    ) -> Result<(Tensor, Tensor)> {
        let control = match &self.proj_in {
            Some(proj_in) => (proj_in.forward(control)? + x)?,
            None => control.clone(),
        };
        let control = self.block.forward(&control, ctx)?;
        Ok((self.proj_out.forward(&control)?, control))
    }
}
