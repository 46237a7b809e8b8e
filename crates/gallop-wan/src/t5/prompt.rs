//! The prompt path of diffusers' Wan pipelines: clean the text, tokenize to a fixed length,
//! encode, and zero the rows past each prompt's tokens.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::{PromptTokenizer, T5Encoder};

/// diffusers' `prompt_clean` without ftfy (not a diffusers dependency): HTML-unescape twice,
/// strip, collapse every whitespace run to one space, strip again.
pub fn clean_prompt(text: &str) -> String {
    let once = htmlize::unescape(text);
    let twice = htmlize::unescape(once.as_ref());
    let mut out = String::with_capacity(twice.len());
    for word in twice.split(is_python_space).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Python's `str.isspace` (what `\s` and `strip()` match): Unicode White_Space plus the
/// information separators U+001C..U+001F, which Python counts and Rust does not.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Tokenizer and encoder together: prompts in, `(batch, max_length, d_model)` embeddings out.
pub struct TextEncoder {
    pub tokenizer: PromptTokenizer,
    pub encoder: T5Encoder,
}

impl TextEncoder {
    /// Load `tokenizer/` and `text_encoder/` from a diffusers model folder.
    pub fn from_model_dir(
        model_dir: &Path,
        max_length: usize,
        dtype: DType,
        device: &Device,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            tokenizer: PromptTokenizer::from_path(&model_dir.join("tokenizer"), max_length)?,
            encoder: T5Encoder::from_dir(&model_dir.join("text_encoder"), dtype, device)?,
        })
    }

    /// Clean, tokenize, encode; rows past each prompt's length are set to zero, as the pipelines
    /// do, so padding contributes nothing to cross-attention.
    pub fn encode_prompts(&self, prompts: &[&str]) -> anyhow::Result<Tensor> {
        let cleaned: Vec<String> = prompts.iter().map(|p| clean_prompt(p)).collect();
        let device = self.encoder_device();
        let tokens = self.tokenizer.tokenize(&cleaned, &device)?;
        let hidden = self
            .encoder
            .forward(&tokens.input_ids, &tokens.attention_mask)?;
        zero_padding_rows(&hidden, &tokens.lengths)
    }

    fn encoder_device(&self) -> Device {
        self.encoder.device.clone()
    }
}

/// Keep the first `lengths[b]` rows of batch item `b` and zero the rest.
pub fn zero_padding_rows(hidden: &Tensor, lengths: &[usize]) -> anyhow::Result<Tensor> {
    let (b, len, _) = hidden.dims3()?;
    anyhow::ensure!(
        lengths.len() == b,
        "{} lengths for a batch of {b}",
        lengths.len()
    );
    let keep: Vec<f32> = lengths
        .iter()
        .flat_map(|&n| (0..len).map(move |i| if i < n { 1.0 } else { 0.0 }))
        .collect();
    let keep = Tensor::from_vec(keep, (b, len, 1), hidden.device())?.to_dtype(hidden.dtype())?;
    Ok(hidden.broadcast_mul(&keep)?)
}
