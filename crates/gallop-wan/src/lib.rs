//! Wan-family video diffusion in candle: transformer, VAE, encoders, schedulers, pipelines.
