//! The text encoder's tokenizer from `tokenizer/tokenizer.json` (the `tokenizers` crate), used as
//! the Wan pipelines call it: add `</s>`, truncate and pad to a fixed length, return the mask.

use std::path::Path;

use crate::error::{Context, ensure};
use candle_core::{Device, Tensor};
use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

/// Token ids and attention masks of a batch, each `(batch, max_length)` u32.
pub struct TokenizedPrompts {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    /// Real tokens (including `</s>`) per prompt: the rows past this are padding.
    pub lengths: Vec<usize>,
}

pub struct PromptTokenizer {
    tokenizer: Tokenizer,
    max_length: usize,
}

impl PromptTokenizer {
    /// Load `tokenizer.json` from a `tokenizer/` folder (or the file itself); every prompt is
    /// truncated and padded to `max_length` tokens (Wan: 512) with the `<pad>` token.
    pub fn from_path(path: &Path, max_length: usize) -> crate::Result<Self> {
        let file = if path.is_dir() {
            path.join("tokenizer.json")
        } else {
            path.to_path_buf()
        };
        let tokenizer = Tokenizer::from_file(&file).map_err(|e| {
            crate::Error::Invalid(format!("reading tokenizer {}: {e}", file.display()))
        })?;
        Self::new(tokenizer, max_length)
    }

    pub fn new(mut tokenizer: Tokenizer, max_length: usize) -> crate::Result<Self> {
        ensure!(max_length > 0, "tokenizer: max_length must be positive");
        let pad_id = tokenizer
            .token_to_id("<pad>")
            .context("tokenizer: the vocabulary has no `<pad>` token")?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: "<pad>".into(),
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| crate::Error::Invalid(format!("tokenizer: {e}")))?;
        Ok(Self {
            tokenizer,
            max_length,
        })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Tokenize already-cleaned prompts with the special tokens (`</s>` at the end; kept when
    /// truncating, as transformers does).
    pub fn tokenize(&self, prompts: &[String], device: &Device) -> crate::Result<TokenizedPrompts> {
        let encodings = self
            .tokenizer
            .encode_batch(prompts.to_vec(), true)
            .map_err(|e| crate::Error::Invalid(format!("tokenizing prompts: {e}")))?;
        let b = encodings.len();
        let mut ids = Vec::with_capacity(b * self.max_length);
        let mut mask = Vec::with_capacity(b * self.max_length);
        let mut lengths = Vec::with_capacity(b);
        for e in &encodings {
            ensure!(
                e.get_ids().len() == self.max_length,
                "tokenizer produced {} tokens, expected {}",
                e.get_ids().len(),
                self.max_length
            );
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
            lengths.push(e.get_attention_mask().iter().filter(|&&m| m != 0).count());
        }
        Ok(TokenizedPrompts {
            input_ids: Tensor::from_vec(ids, (b, self.max_length), device)?,
            attention_mask: Tensor::from_vec(mask, (b, self.max_length), device)?,
            lengths,
        })
    }
}
