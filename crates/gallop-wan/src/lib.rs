//! Wan-family video diffusion in candle: transformer, VAE, text and image encoders, schedulers,
//! pipelines, and checkpoint loading from the diffusers layout. No HTTP, no jobs.

pub mod clip;
pub mod debug;
pub mod engine;
pub mod error;
pub mod fast_math;
pub mod lora;
pub mod memory;
pub mod model_dir;
pub mod output;
pub mod pipeline;
pub mod quant;
pub mod scheduler;
pub mod settings;
pub mod t5;
pub mod testing;
pub mod transformer;
pub mod vae;
pub mod weights;
pub mod windows;

pub use engine::WanEngine;
pub use error::{Error, Result};
pub use settings::{WanDebug, WanSettings};
