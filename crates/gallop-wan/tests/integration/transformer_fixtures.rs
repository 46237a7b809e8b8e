//! The transformer against diffusers' outputs (fixtures from scripts/fixtures/transformer.py).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use gallop_wan::testing::assert_close;
use gallop_wan::transformer::{AttentionTiling, WanTransformer, inputs_from_tensors};

const TOL: f32 = 1e-4;

fn case_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/transformer")
        .join(case)
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn expected(case: &str) -> Tensor {
    load(&case_dir(case).join("outputs.safetensors"))
        .remove("sample")
        .unwrap()
}

/// Run a case through the Rust API with the given attention tiling.
fn run(case: &str, tiling: AttentionTiling) -> Tensor {
    let dir = case_dir(case);
    let model = WanTransformer::load(&dir, DType::F32, &Device::Cpu)
        .unwrap()
        .with_tiling(tiling);
    let inputs = inputs_from_tensors(load(&dir.join("inputs.safetensors"))).unwrap();
    model.forward(&inputs).unwrap()
}

fn check(case: &str) {
    assert_close(
        case,
        &run(case, AttentionTiling::default()),
        &expected(case),
        TOL,
    );
}

#[test]
fn t2v_batch_of_two_matches_diffusers() {
    check("t2v");
}

#[test]
fn t2v_with_weights_x20_matches_diffusers() {
    check("t2v_x20");
}

#[test]
fn ti2v_per_token_timesteps_match_diffusers() {
    check("ti2v_per_token");
}

#[test]
fn i2v_added_kv_image_branch_matches_diffusers() {
    check("i2v_added_kv");
}

#[test]
fn i2v_added_kv_x20_matches_diffusers() {
    check("i2v_added_kv_x20");
}

#[test]
fn i2v_prepended_image_tokens_match_diffusers() {
    check("i2v_prepended");
}

#[test]
fn flf2v_pos_embed_matches_diffusers() {
    check("flf2v");
}

#[test]
fn vace_hints_with_padding_and_scales_match_diffusers() {
    check("vace");
}

#[test]
fn vace_x20_matches_diffusers() {
    check("vace_x20");
}

/// Tiny tiles force every path of the tiled attention: several key tiles with the online
/// softmax (48 self-attention keys in tiles of 5, 512 text keys in tiles of 5), ragged
/// query tiles and one head per chunk.
#[test]
fn tiled_online_softmax_attention_matches_diffusers() {
    let tiny = AttentionTiling {
        key_tile: 5,
        query_tile: 7,
        max_scores: 35,
    };
    for case in ["t2v_x20", "i2v_added_kv_x20", "ti2v_per_token"] {
        assert_close(case, &run(case, tiny), &expected(case), TOL);
    }
}

/// The FFN in chunks of 7 token rows (ragged last chunk, across the batch) changes nothing.
#[test]
fn ffn_in_row_chunks_matches_diffusers() {
    for case in ["t2v", "ti2v_per_token"] {
        let dir = case_dir(case);
        let model = WanTransformer::load(&dir, DType::F32, &Device::Cpu)
            .unwrap()
            .with_ffn_rows(7);
        let inputs = inputs_from_tensors(load(&dir.join("inputs.safetensors"))).unwrap();
        assert_close(case, &model.forward(&inputs).unwrap(), &expected(case), TOL);
    }
}

/// Checkpoints ship bf16 weights: they load converted to f32. The only difference left is the
/// weights' own bf16 rounding (2^-9 relative), so the bound is looser than the f32 cases.
#[test]
fn bf16_weights_load_as_f32() {
    let src = case_dir("t2v");
    let dir = tempdir().join("t2v-bf16");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let weights: HashMap<String, Tensor> = load(&src.join("diffusion_pytorch_model.safetensors"))
        .into_iter()
        .map(|(k, v)| (k, v.to_dtype(DType::BF16).unwrap()))
        .collect();
    candle_core::safetensors::save(&weights, dir.join("diffusion_pytorch_model.safetensors"))
        .unwrap();
    let model = WanTransformer::load(&dir, DType::F32, &Device::Cpu).unwrap();
    let inputs = inputs_from_tensors(load(&src.join("inputs.safetensors"))).unwrap();
    let sample = model.forward(&inputs).unwrap();
    assert_eq!(sample.dtype(), DType::F32);
    let err = gallop_wan::testing::relative_error(&sample, &expected("t2v")).unwrap();
    assert!(
        err > 0.0 && err < 2e-2,
        "bf16 weights: relative error {err:e}"
    );
}

/// The path the CLI takes: `gallop debug forward --component transformer`.
#[test]
fn debug_forward_writes_the_diffusers_sample() {
    let out_dir = tempdir();
    for case in ["t2v", "vace"] {
        let dir = case_dir(case);
        let output = out_dir.join(format!("{case}.safetensors"));
        gallop_wan::debug::forward(
            "transformer",
            &dir,
            &dir.join("inputs.safetensors"),
            &output,
        )
        .unwrap();
        let sample = load(&output).remove("sample").expect("output has `sample`");
        assert_close(case, &sample, &expected(case), TOL);
    }
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gallop-transformer-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
