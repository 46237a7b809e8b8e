//! The transformer's `config.json`, field for field as diffusers writes it.

use serde::Deserialize;

/// Which diffusers class a checkpoint was saved as; `_class_name` in `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransformerClass {
    /// `WanTransformer3DModel`: T2V, TI2V-5B, I2V (with or without the image branch), FLF2V.
    Plain,
    /// `WanVACETransformer3DModel`: adds VACE control blocks whose hints join the main blocks.
    Vace,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TransformerConfig {
    #[serde(rename = "_class_name", default = "default_class_name")]
    pub class_name: String,
    #[serde(default = "default_patch_size")]
    pub patch_size: Vec<usize>,
    #[serde(default = "default_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default_head_dim")]
    pub attention_head_dim: usize,
    #[serde(default = "default_channels")]
    pub in_channels: usize,
    /// diffusers treats a missing or null `out_channels` as `in_channels`.
    #[serde(default)]
    pub out_channels: Option<usize>,
    #[serde(default = "default_text_dim")]
    pub text_dim: usize,
    #[serde(default = "default_freq_dim")]
    pub freq_dim: usize,
    #[serde(default = "default_ffn_dim")]
    pub ffn_dim: usize,
    #[serde(default = "default_layers")]
    pub num_layers: usize,
    #[serde(default = "default_true")]
    pub cross_attn_norm: bool,
    #[serde(default = "default_qk_norm")]
    pub qk_norm: Option<String>,
    #[serde(default = "default_eps")]
    pub eps: f64,
    #[serde(default)]
    pub image_dim: Option<usize>,
    #[serde(default)]
    pub added_kv_proj_dim: Option<usize>,
    #[serde(default = "default_rope_max_seq_len")]
    pub rope_max_seq_len: usize,
    #[serde(default)]
    pub pos_embed_seq_len: Option<usize>,
    /// VACE only: the main-block indices after which a hint is added, in order.
    #[serde(default = "default_vace_layers")]
    pub vace_layers: Vec<usize>,
    #[serde(default = "default_vace_in_channels")]
    pub vace_in_channels: usize,
}

fn default_class_name() -> String {
    "WanTransformer3DModel".into()
}
fn default_patch_size() -> Vec<usize> {
    vec![1, 2, 2]
}
fn default_heads() -> usize {
    40
}
fn default_head_dim() -> usize {
    128
}
fn default_channels() -> usize {
    16
}
fn default_text_dim() -> usize {
    4096
}
fn default_freq_dim() -> usize {
    256
}
fn default_ffn_dim() -> usize {
    13824
}
fn default_layers() -> usize {
    40
}
fn default_true() -> bool {
    true
}
fn default_qk_norm() -> Option<String> {
    Some("rms_norm_across_heads".into())
}
fn default_eps() -> f64 {
    1e-6
}
fn default_rope_max_seq_len() -> usize {
    1024
}
fn default_vace_layers() -> Vec<usize> {
    vec![0, 5, 10, 15, 20, 25, 30, 35]
}
fn default_vace_in_channels() -> usize {
    96
}

impl TransformerConfig {
    pub fn class(&self) -> crate::Result<TransformerClass> {
        match self.class_name.as_str() {
            "WanTransformer3DModel" => Ok(TransformerClass::Plain),
            "WanVACETransformer3DModel" => Ok(TransformerClass::Vace),
            other => crate::error::bail!(
                "_class_name {other:?} is not supported: expected WanTransformer3DModel or WanVACETransformer3DModel"
            ),
        }
    }

    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    pub fn out_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels)
    }

    /// (t, h, w) patch sizes.
    pub fn patch(&self) -> (usize, usize, usize) {
        (self.patch_size[0], self.patch_size[1], self.patch_size[2])
    }

    /// Reject configs the model cannot be built from, naming the field and the rule.
    pub fn validate(&self) -> crate::Result<()> {
        use crate::error::ensure;
        let class = self.class()?;
        ensure!(
            self.patch_size.len() == 3 && self.patch_size.iter().all(|&p| p > 0),
            "patch_size must be three positive integers (t, h, w), got {:?}",
            self.patch_size
        );
        ensure!(
            self.num_attention_heads > 0,
            "num_attention_heads must be positive"
        );
        ensure!(
            self.attention_head_dim >= 6 && self.attention_head_dim.is_multiple_of(2),
            "attention_head_dim must be even and at least 6 (RoPE splits it over t, h, w), got {}",
            self.attention_head_dim
        );
        ensure!(
            self.freq_dim > 0 && self.freq_dim.is_multiple_of(2),
            "freq_dim must be positive and even, got {}",
            self.freq_dim
        );
        ensure!(
            self.qk_norm.as_deref() == Some("rms_norm_across_heads"),
            "qk_norm must be \"rms_norm_across_heads\" (the only kind Wan checkpoints use), got {:?}",
            self.qk_norm
        );
        if let Some(kv) = self.added_kv_proj_dim {
            ensure!(
                self.image_dim.is_some(),
                "added_kv_proj_dim ({kv}) needs image_dim: the added K/V project image tokens"
            );
        }
        if self.pos_embed_seq_len.is_some() {
            ensure!(
                self.image_dim.is_some(),
                "pos_embed_seq_len needs image_dim: it embeds the image tokens"
            );
        }
        if class == TransformerClass::Vace {
            ensure!(
                self.vace_layers.contains(&0),
                "vace_layers must include layer 0, got {:?}",
                self.vace_layers
            );
            ensure!(
                self.vace_layers.iter().all(|&l| l < self.num_layers),
                "vace_layers {:?} must all be below num_layers {}",
                self.vace_layers,
                self.num_layers
            );
        }
        Ok(())
    }
}
