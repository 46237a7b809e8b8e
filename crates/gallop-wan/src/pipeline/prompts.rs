//! The text side of a pipeline: UMT5 and a cache of prompt embeddings, so a prompt seen again
//! (the negative prompt every run uses, a retried job) is not encoded again. With
//! `release_text_encoder` the encoder is dropped after each encoding and read back from disk
//! only for a prompt the cache does not have: UMT5-XXL is 11 GB held in bf16, as much as the
//! 5B transformer, and idle between prompts.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};

use crate::quant::Quantize;
use crate::t5::TextEncoder;

/// Prompts whose embeddings are kept (each `[1, 512, 4096]` f32 is 8 MB at UMT5-XXL's width).
const CACHED_PROMPTS: usize = 16;

/// How to read the text encoder (again).
struct Source {
    model_dir: PathBuf,
    max_length: usize,
    dtype: DType,
    quantize: Option<Quantize>,
    device: Device,
}

impl Source {
    fn load(&self) -> crate::Result<TextEncoder> {
        TextEncoder::from_model_dir_quantized(
            &self.model_dir,
            self.max_length,
            self.dtype,
            self.quantize,
            &self.device,
        )
    }
}

pub(super) struct Prompts {
    source: Source,
    encoder: Mutex<Option<Arc<TextEncoder>>>,
    release: bool,
    /// Most recent last.
    cache: Mutex<VecDeque<(String, Tensor)>>,
}

impl Prompts {
    /// Reads the encoder now (so a bad checkpoint fails at load), unless it is to be released.
    pub(super) fn load(
        model_dir: PathBuf,
        max_length: usize,
        dtype: DType,
        quantize: Option<Quantize>,
        release: bool,
        device: &Device,
    ) -> crate::Result<Self> {
        let source = Source {
            model_dir,
            max_length,
            dtype,
            quantize,
            device: device.clone(),
        };
        let encoder = source.load()?;
        Ok(Self {
            encoder: Mutex::new((!release).then(|| Arc::new(encoder))),
            source,
            release,
            cache: Mutex::new(VecDeque::new()),
        })
    }

    /// The encoder when it is held (always, unless released after encoding).
    pub(super) fn encoder(&self) -> Option<Arc<TextEncoder>> {
        self.encoder.lock().unwrap().clone()
    }

    /// A prompt's embeddings, from the cache or encoded (the encoder read back if released).
    pub(super) fn encode(&self, prompt: &str) -> crate::Result<Tensor> {
        if let Some(hit) = self.cached(prompt) {
            return Ok(hit);
        }
        let encoder = match self.encoder() {
            Some(encoder) => encoder,
            None => Arc::new(self.source.load()?),
        };
        let embeds = encoder.encode_prompts(&[prompt])?;
        match self.release {
            true => *self.encoder.lock().unwrap() = None,
            false => *self.encoder.lock().unwrap() = Some(encoder),
        }
        let mut cache = self.cache.lock().unwrap();
        cache.push_back((prompt.to_string(), embeds.clone()));
        if cache.len() > CACHED_PROMPTS {
            cache.pop_front();
        }
        Ok(embeds)
    }

    fn cached(&self, prompt: &str) -> Option<Tensor> {
        let mut cache = self.cache.lock().unwrap();
        let at = cache.iter().position(|(p, _)| p == prompt)?;
        let entry = cache.remove(at)?;
        let embeds = entry.1.clone();
        cache.push_back(entry);
        Some(embeds)
    }
}
