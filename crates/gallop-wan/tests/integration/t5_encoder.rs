//! UMT5 and T5 encoders against transformers (fixtures from scripts/fixtures/encoders.py):
//! random weights, both FFN kinds, a padded second prompt, and one case through the CLI's
//! `debug forward` path.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use gallop_wan::t5::{T5Encoder, relative_position_bucket};
use gallop_wan::testing::assert_close;

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/t5")
        .join(case)
}

fn load(path: PathBuf) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn check(case: &str) {
    let dir = fixture(case);
    let inputs = load(dir.join("inputs.safetensors"));
    let expected = &load(dir.join("outputs.safetensors"))["last_hidden_state"];
    let encoder = T5Encoder::from_dir(&dir, DType::F32, &Device::Cpu).unwrap();
    let out = encoder
        .forward(&inputs["input_ids"], &inputs["attention_mask"])
        .unwrap();
    assert_close(case, &out, expected, 1e-4);
}

#[test]
fn umt5_gated_gelu_matches_transformers() {
    check("umt5_gated");
}

#[test]
fn umt5_at_large_weight_scale_matches_transformers() {
    check("umt5_gated_large");
}

#[test]
fn t5_relu_with_shared_first_layer_bias_matches_transformers() {
    check("t5_relu");
}

#[test]
fn t5_gated_gelu_matches_transformers() {
    check("t5_gated");
}

#[test]
fn padding_changes_nothing_in_the_real_tokens() {
    // The padded prompt's real rows must not depend on what sits in the padded positions.
    let dir = fixture("umt5_gated");
    let inputs = load(dir.join("inputs.safetensors"));
    let encoder = T5Encoder::from_dir(&dir, DType::F32, &Device::Cpu).unwrap();
    let (ids, mask) = (&inputs["input_ids"], &inputs["attention_mask"]);
    let a = encoder.forward(ids, mask).unwrap();
    let other = Tensor::full(5i64, ids.dims(), &Device::Cpu).unwrap();
    let ids2 = mask.ne(0i64).unwrap().where_cond(ids, &other).unwrap();
    let b = encoder.forward(&ids2, mask).unwrap();
    let real = |t: &Tensor| t.narrow(0, 1, 1).unwrap().narrow(1, 0, 23).unwrap();
    assert_close("real rows", &real(&b), &real(&a), 1e-6);
    // ... and the unmasked rows do change when the mask changes.
    let ones = Tensor::ones(mask.dims(), DType::I64, &Device::Cpu).unwrap();
    let c = encoder.forward(ids, &ones).unwrap();
    assert!(gallop_wan::testing::relative_error(&real(&c), &real(&a)).unwrap() > 1e-3);
}

#[test]
fn relative_position_buckets_match_transformers_over_600_positions() {
    let tables = load(fixture("buckets.safetensors"));
    let rel: Vec<i64> = tables["relative_positions"].to_vec1().unwrap();
    for (nb, md) in [(32, 128), (8, 20), (16, 64)] {
        let expected: Vec<i64> = tables[&format!("buckets_{nb}_{md}")].to_vec1().unwrap();
        for (r, e) in rel.iter().zip(&expected) {
            assert_eq!(
                relative_position_bucket(*r, nb, md) as i64,
                *e,
                "position {r}, buckets {nb}, max distance {md}"
            );
        }
    }
}

#[test]
fn debug_forward_text_encoder_writes_last_hidden_state() {
    let dir = fixture("t5_relu");
    let out = tempfile::tempdir().unwrap();
    let out_file = out.path().join("out.safetensors");
    gallop_wan::debug::forward(
        "text-encoder",
        &dir,
        &dir.join("inputs.safetensors"),
        &out_file,
    )
    .unwrap();
    let got = &load(out_file)["last_hidden_state"];
    let expected = &load(dir.join("outputs.safetensors"))["last_hidden_state"];
    assert_close("debug forward", got, expected, 1e-4);
}

#[test]
fn bad_inputs_get_clear_errors() {
    let dir = fixture("umt5_gated");
    let encoder = T5Encoder::from_dir(&dir, DType::F32, &Device::Cpu).unwrap();
    let ids = Tensor::new(&[[1u32, 2, 500]], &Device::Cpu).unwrap();
    let mask = Tensor::ones((1, 3), DType::U32, &Device::Cpu).unwrap();
    let err = encoder.forward(&ids, &mask).unwrap_err().to_string();
    assert!(err.contains("input_ids") && err.contains("500"), "{err}");
    let short = Tensor::ones((1, 2), DType::U32, &Device::Cpu).unwrap();
    let err = encoder
        .forward(
            &ids.narrow(1, 0, 2).unwrap().broadcast_as((2, 2)).unwrap(),
            &short,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("attention_mask"), "{err}");
}
