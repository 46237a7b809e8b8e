//! Initial noise from a seed: the same seed always gives the same latents, on every platform.

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Standard normal noise of `shape` (Box-Muller over a ChaCha8 stream seeded with `seed`).
pub fn gaussian_noise(shape: &[usize], seed: u64, device: &Device) -> candle_core::Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(n + 1);
    while values.len() < n {
        // u1 in (0, 1] so the log is finite.
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        values.push((r * theta.cos()) as f32);
        values.push((r * theta.sin()) as f32);
    }
    values.truncate(n);
    Tensor::from_vec(values, shape, device)
}
