//! The encoders' loaders against the real checkpoints' tensor lists (manifests made on the meta
//! device from the published configs by scripts/fixtures/encoders.py, which says where each
//! config comes from): every tensor read has the
//! manifest's shape, and every manifest tensor is read (or, for CLIP, is one the penultimate-layer
//! encoder deliberately skips).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use gallop_wan::clip::{ClipVisionConfig, ClipVisionEncoder};
use gallop_wan::t5::{T5Config, T5Encoder};
use gallop_wan::weights::TrackedWeights;

fn manifest(checkpoint: &str, component: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests")
        .join(checkpoint)
        .join(format!("{component}.json"))
}

#[test]
fn umt5_xxl_loader_reads_every_encoder_tensor() {
    for checkpoint in ["Wan2.1-T2V-14B", "Wan2.2-TI2V-5B"] {
        let (config, weights) =
            TrackedWeights::from_manifest(&manifest(checkpoint, "text_encoder")).unwrap();
        let config: T5Config = serde_json::from_value(config).unwrap();
        // google/umt5-xxl's published values (see the manifests' "source").
        assert_eq!(
            (config.d_model, config.num_layers, config.num_heads),
            (4096, 24, 64)
        );
        assert_eq!((config.d_ff, config.d_kv), (10240, 64));
        assert_eq!(
            (
                config.relative_attention_num_buckets,
                config.relative_attention_max_distance
            ),
            (32, 128)
        );
        assert_eq!(config.feed_forward_proj, "gated-gelu");
        assert_eq!(config.model_type, "umt5");
        let encoder =
            T5Encoder::new(config, weights.var_builder(DType::F32, &Device::Cpu)).unwrap();
        assert_eq!(encoder.config().vocab_size, 256384);
        assert_eq!(
            weights.unread(),
            Vec::<String>::new(),
            "{checkpoint}: unread tensors"
        );
        // 24 layers each with their own relative bias table: UMT5, not T5.
        let biases = weights
            .read_names()
            .iter()
            .filter(|n| n.contains("relative_attention_bias"))
            .count();
        assert_eq!(biases, 24);
    }
}

#[test]
fn clip_vit_h_14_loader_reads_every_tensor_up_to_the_penultimate_layer() {
    let (config, weights) =
        TrackedWeights::from_manifest(&manifest("Wan2.1-I2V-14B-720P", "image_encoder")).unwrap();
    let config: ClipVisionConfig = serde_json::from_value(config).unwrap();
    assert_eq!(
        (
            config.hidden_size,
            config.num_hidden_layers,
            config.patch_size
        ),
        (1280, 32, 14)
    );
    // laion/CLIP-ViT-H-14-laion2B-s32B-b79K's vision config (see the manifest's "source").
    assert_eq!(
        (
            config.num_attention_heads,
            config.intermediate_size,
            config.image_size
        ),
        (16, 5120, 224)
    );
    assert_eq!(config.hidden_act, "gelu");
    let skipped = ClipVisionEncoder::unused_tensor_prefixes(&config);
    ClipVisionEncoder::new(config, weights.var_builder(DType::F32, &Device::Cpu)).unwrap();
    let unread = weights.unread();
    let unexpected: Vec<&String> = unread
        .iter()
        .filter(|n| !skipped.iter().any(|p| n.starts_with(p.as_str())))
        .collect();
    assert!(unexpected.is_empty(), "unread tensors: {unexpected:?}");
    // The skipped part is exactly the last layer (16 tensors), the post-layernorm and projection.
    assert_eq!(unread.len(), 16 + 2 + 1, "{unread:?}");
    assert!(
        weights
            .read_names()
            .iter()
            .any(|n| n.starts_with("vision_model.encoder.layers.30."))
    );
}
