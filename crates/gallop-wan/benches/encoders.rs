//! Encoder and scheduler timings on random weights (no checkpoint needed), to set beside
//! transformers/diffusers on the same shapes (`scripts/fixtures/encoders.py bench`).
//!
//! RAYON_NUM_THREADS=2 cargo bench -p gallop-wan --bench encoders -- [t5|clip|unipc]

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use gallop_wan::clip::{ClipVisionConfig, ClipVisionEncoder};
use gallop_wan::scheduler::Scheduler;
use gallop_wan::t5::{T5Config, T5Encoder};

fn time<T>(label: &str, runs: usize, mut f: impl FnMut() -> T) {
    f(); // warm-up
    let start = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(f());
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0 / runs as f64;
    println!("{label}: {ms:.1} ms/run over {runs} runs");
}

/// UMT5 with umt5-base's shape: 12 layers, d_model 768, 12 heads, 512 tokens.
fn t5() -> anyhow::Result<()> {
    let config: T5Config = serde_json::from_value(serde_json::json!({
        "model_type": "umt5", "vocab_size": 32128, "d_model": 768, "d_kv": 64, "d_ff": 2048,
        "num_layers": 12, "num_heads": 12, "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128, "feed_forward_proj": "gated-gelu"
    }))?;
    let map = VarMap::new();
    let encoder = T5Encoder::new(
        config,
        VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
    )?;
    let ids = Tensor::arange(0u32, 512, &Device::Cpu)?.unsqueeze(0)?;
    let mask = Tensor::ones((1, 512), DType::U32, &Device::Cpu)?;
    time("umt5-base-shape encoder, 1x512 tokens", 5, || {
        encoder.forward(&ids, &mask).unwrap()
    });
    Ok(())
}

/// CLIP vision with ViT-H/14's shape (32 layers, 1280 wide), one 224x224 image.
fn clip() -> anyhow::Result<()> {
    let config: ClipVisionConfig = serde_json::from_value(serde_json::json!({
        "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
        "num_attention_heads": 16, "image_size": 224, "patch_size": 14, "hidden_act": "gelu"
    }))?;
    let map = VarMap::new();
    let encoder = ClipVisionEncoder::new(
        config,
        VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
    )?;
    let pixels = Tensor::randn(0f32, 1.0, (1, 3, 224, 224), &Device::Cpu)?;
    time("ViT-H/14-shape penultimate states, 1 image", 3, || {
        encoder.forward(&pixels).unwrap()
    });
    Ok(())
}

/// 50 UniPC steps on a Wan2.1 480p 81-frame latent (16x21x60x104) with fixed model outputs.
fn unipc() -> anyhow::Result<()> {
    let mut s = Scheduler::from_json(
        r#"{"_class_name": "UniPCMultistepScheduler", "prediction_type": "flow_prediction",
            "use_flow_sigmas": true, "flow_shift": 5.0, "solver_order": 2}"#,
    )?;
    let latent = Tensor::randn(0f32, 1.0, (1, 16, 21, 60, 104), &Device::Cpu)?;
    let v = Tensor::randn(0f32, 1.0, (1, 16, 21, 60, 104), &Device::Cpu)?;
    time("UniPC 50 steps, 1x16x21x60x104", 3, || {
        s.set_timesteps(50).unwrap();
        let mut x = latent.clone();
        for _ in 0..50 {
            x = s.step(&v, &x).unwrap();
        }
        x
    });
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let all = which.is_empty();
    if all || which.iter().any(|w| w == "t5") {
        t5()?;
    }
    if all || which.iter().any(|w| w == "clip") {
        clip()?;
    }
    if all || which.iter().any(|w| w == "unipc") {
        unipc()?;
    }
    Ok(())
}
