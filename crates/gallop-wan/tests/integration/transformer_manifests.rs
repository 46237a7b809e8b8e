//! Real checkpoint shapes: the loader reads every tensor of each published transformer
//! (manifests made on the meta device by scripts/fixtures/transformer.py) and nothing else.

use std::path::Path;

use candle_core::{DType, Device};
use gallop_wan::transformer::{TransformerConfig, WanTransformer};
use gallop_wan::weights::TrackedWeights;

fn check(checkpoint: &str, component: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests")
        .join(checkpoint)
        .join(format!("{component}.json"));
    let (config, weights) = TrackedWeights::from_manifest(&path).unwrap();
    let config: TransformerConfig = serde_json::from_value(config).unwrap();
    // Unknown names or wrong shapes fail here, inside the loader.
    let model = WanTransformer::new(config, weights.var_builder(DType::F32, &Device::Cpu))
        .unwrap_or_else(|e| panic!("{checkpoint}/{component}: {e:#}"));
    assert!(
        weights.unread().is_empty(),
        "{checkpoint}/{component}: the loader never read {:?}",
        weights.unread()
    );
    assert!(!weights.read_names().is_empty());
    drop(model);
}

#[test]
fn wan21_t2v_1_3b() {
    check("Wan2.1-T2V-1.3B", "transformer");
}

#[test]
fn wan21_t2v_14b() {
    check("Wan2.1-T2V-14B", "transformer");
}

#[test]
fn wan21_i2v_14b_720p_image_branch() {
    check("Wan2.1-I2V-14B-720P", "transformer");
}

#[test]
fn wan21_flf2v_14b_720p_pos_embed() {
    check("Wan2.1-FLF2V-14B-720P", "transformer");
}

#[test]
fn wan22_ti2v_5b() {
    check("Wan2.2-TI2V-5B", "transformer");
}

#[test]
fn wan22_i2v_a14b_both_experts() {
    check("Wan2.2-I2V-A14B", "transformer");
    check("Wan2.2-I2V-A14B", "transformer_2");
}

#[test]
fn wan21_vace_1_3b() {
    check("Wan2.1-VACE-1.3B", "transformer");
}

#[test]
fn wan21_vace_14b() {
    check("Wan2.1-VACE-14B", "transformer");
}

/// The manifest backend itself: a name outside the manifest and a wrong shape are errors.
#[test]
fn tracked_weights_reject_unknown_names_and_wrong_shapes() {
    let weights = TrackedWeights::new([("a.weight".to_string(), vec![2, 3])].into());
    let vb = weights.var_builder(DType::F32, &Device::Cpu);
    assert!(vb.get((2, 3), "b.weight").is_err());
    assert!(vb.get((3, 2), "a.weight").is_err());
    assert_eq!(weights.unread(), vec!["a.weight".to_string()]);
    let t = vb.get((2, 3), "a.weight").unwrap();
    assert_eq!(t.dims(), [2, 3]);
    assert!(weights.unread().is_empty());
}
