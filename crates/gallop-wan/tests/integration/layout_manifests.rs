//! Real checkpoint shapes in the layouts users have beside diffusers' (manifests made by
//! scripts/fixtures/layouts.py and checked there against diffusers' single-file conversion):
//! single-file transformers in the original Wan / ComfyUI layout (bare `blocks.N.self_attn...`
//! keys) and ComfyUI-style fp8 files (`diffusion_model.` prefix, fp8 weights with a
//! `scale_weight` beside each). The loader reads every tensor of each.

use std::path::Path;

use candle_core::{DType, Device};
use gallop_wan::transformer::{TransformerConfig, WanTransformer};
use gallop_wan::weights::TrackedWeights;

const CHECKPOINTS: [(&str, &str); 9] = [
    ("Wan2.1-T2V-1.3B", "transformer"),
    ("Wan2.1-T2V-14B", "transformer"),
    ("Wan2.1-I2V-14B-720P", "transformer"),
    ("Wan2.1-FLF2V-14B-720P", "transformer"),
    ("Wan2.1-VACE-1.3B", "transformer"),
    ("Wan2.1-VACE-14B", "transformer"),
    ("Wan2.2-TI2V-5B", "transformer"),
    ("Wan2.2-I2V-A14B", "transformer"),
    ("Wan2.2-I2V-A14B", "transformer_2"),
];

/// Load `checkpoint/component.layout.json` over the manifest; every tensor must be read.
/// Returns the bytes held.
fn load(checkpoint: &str, component: &str, layout: &str) -> u64 {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests")
        .join(checkpoint)
        .join(format!("{component}{layout}.json"));
    let (config, weights) = TrackedWeights::from_manifest(&path).unwrap();
    let config: TransformerConfig = serde_json::from_value(config).unwrap();
    let model = WanTransformer::new(config, weights.var_builder(DType::F32, &Device::Cpu))
        .unwrap_or_else(|e| panic!("{checkpoint}/{component}{layout}: {e:#}"));
    assert!(
        weights.unread().is_empty(),
        "{checkpoint}/{component}{layout}: the loader never read {:?}",
        weights.unread()
    );
    drop(model);
    weights.held_bytes()
}

#[test]
fn single_file_original_layouts_of_every_checkpoint_load_every_tensor() {
    for (checkpoint, component) in CHECKPOINTS {
        let single = load(checkpoint, component, ".single_file");
        // Same tensors under other names: the same bytes as the diffusers layout.
        assert_eq!(single, load(checkpoint, component, ""), "{checkpoint}");
    }
}

#[test]
fn fp8_scaled_files_of_every_checkpoint_load_every_tensor_held_in_fp8() {
    for (checkpoint, component) in CHECKPOINTS {
        let fp8 = load(checkpoint, component, ".fp8_scaled");
        let f32 = load(checkpoint, component, "");
        // The blocks' matrices (nearly all the weights) stay one byte each, with their scales.
        let ratio = fp8 as f64 / f32 as f64;
        eprintln!("{checkpoint}/{component}: fp8 file held {ratio:.3}x of f32");
        assert!(ratio > 0.25 && ratio < 0.30, "{checkpoint}: {ratio}");
    }
}
