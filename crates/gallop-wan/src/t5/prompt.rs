//! The prompt path of diffusers' Wan pipelines: clean the text, tokenize to a fixed length,
//! encode, and zero the rows past each prompt's tokens.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::{PromptTokenizer, T5Encoder};

/// diffusers' `prompt_clean`: ftfy's character fixes (see [`ftfy_characters`]), HTML-unescape
/// twice, strip, collapse every whitespace run to one space, strip again.
pub fn clean_prompt(text: &str) -> String {
    let text = ftfy_characters(text);
    let once = htmlize::unescape(text.as_ref());
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

/// The character-level fixes of `ftfy.fix_text`, which diffusers applies when ftfy is installed
/// (Wan's own requirements install it): full-width ASCII and the ideographic space to standard
/// width (Wan's default negative prompt is full of full-width commas), curly quotes straightened,
/// Latin ligatures spelled out. Not ported: mojibake repair, NFC, half-width katakana/hangul.
fn ftfy_characters(text: &str) -> std::borrow::Cow<'_, str> {
    let fixed = |c: char| -> Option<&'static str> {
        Some(match c {
            '\u{3000}' => " ",
            '\u{2018}'..='\u{201b}' | '\u{02bc}' => "'",
            '\u{201c}'..='\u{201f}' => "\"",
            '\u{ff5f}' => "\u{2985}",
            '\u{ff60}' => "\u{2986}",
            '\u{ffe0}' => "\u{a2}",
            '\u{ffe1}' => "\u{a3}",
            '\u{ffe2}' => "\u{ac}",
            '\u{ffe3}' => "\u{af}",
            '\u{ffe4}' => "\u{a6}",
            '\u{ffe5}' => "\u{a5}",
            '\u{ffe6}' => "\u{20a9}",
            '\u{fb00}' => "ff",
            '\u{fb01}' => "fi",
            '\u{fb02}' => "fl",
            '\u{fb03}' => "ffi",
            '\u{fb04}' => "ffl",
            '\u{fb05}' | '\u{fb06}' => "st",
            '\u{132}' => "IJ",
            '\u{133}' => "ij",
            _ => return None,
        })
    };
    // U+FF01..U+FF5E are ASCII U+0021..U+007E shifted by 0xFEE0.
    let full_width_ascii = |c: char| ('\u{ff01}'..='\u{ff5e}').contains(&c);
    if !text
        .chars()
        .any(|c| full_width_ascii(c) || fixed(c).is_some())
    {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if full_width_ascii(c) {
            out.push(char::from_u32(c as u32 - 0xfee0).expect("ASCII"));
        } else if let Some(s) = fixed(c) {
            out.push_str(s);
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
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
    ) -> crate::Result<Self> {
        Self::from_model_dir_quantized(model_dir, max_length, dtype, None, device)
    }

    /// As [`Self::from_model_dir`], the encoder's matrices held quantized when `quantize` says so.
    pub fn from_model_dir_quantized(
        model_dir: &Path,
        max_length: usize,
        dtype: DType,
        quantize: Option<crate::quant::Quantize>,
        device: &Device,
    ) -> crate::Result<Self> {
        Ok(Self {
            tokenizer: PromptTokenizer::from_path(&model_dir.join("tokenizer"), max_length)?,
            encoder: T5Encoder::from_dir_quantized(
                &model_dir.join("text_encoder"),
                dtype,
                quantize,
                device,
            )?,
        })
    }

    /// Clean, tokenize, encode; rows past each prompt's length are set to zero, as the pipelines
    /// do, so padding contributes nothing to cross-attention.
    pub fn encode_prompts(&self, prompts: &[&str]) -> crate::Result<Tensor> {
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
pub fn zero_padding_rows(hidden: &Tensor, lengths: &[usize]) -> crate::Result<Tensor> {
    let (b, len, _) = hidden.dims3()?;
    crate::error::ensure!(
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

#[cfg(test)]
mod tests {
    use super::clean_prompt;

    /// Expected strings are what `ftfy.fix_text` (6.x) returns for the same inputs.
    #[test]
    fn character_fixes_match_ftfy() {
        for (input, ftfy) in [
            ("色调艳丽，过曝（静态）！", "色调艳丽,过曝(静态)!"),
            ("ＡＢＣ\u{3000}１２３～", "ABC 123~"),
            ("‘single’ “double” „low‟", "'single' \"double\" \"low\""),
            ("ﬁne ﬂow ﬀ ﬃ ﬄ ﬆ", "fine flow ff ffi ffl st"),
            ("￥５ ｟x｠ ￡", "¥5 ⦅x⦆ £"),
        ] {
            assert_eq!(clean_prompt(input), ftfy, "{input:?}");
        }
    }
}
