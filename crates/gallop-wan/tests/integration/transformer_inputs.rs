//! Bad inputs get errors naming the input and the rule; the tiled attention equals the plain one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{D, DType, Device, Tensor};
use gallop_wan::testing::assert_close;
use gallop_wan::transformer::{
    AttentionTiling, TransformerInputs, WanTransformer, attention, inputs_from_tensors,
};

fn case_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/transformer")
        .join(case)
}

fn model_and_inputs(case: &str) -> (WanTransformer, TransformerInputs) {
    let dir = case_dir(case);
    let model = WanTransformer::load(&dir, DType::F32, &Device::Cpu).unwrap();
    let tensors =
        candle_core::safetensors::load(dir.join("inputs.safetensors"), &Device::Cpu).unwrap();
    (model, inputs_from_tensors(tensors).unwrap())
}

fn error_of(model: &WanTransformer, inputs: &TransformerInputs) -> String {
    format!(
        "{:#}",
        model
            .forward(inputs)
            .expect_err("bad input must be rejected")
    )
}

#[test]
fn wrong_latent_channels_name_in_channels() {
    let (model, mut inputs) = model_and_inputs("t2v");
    inputs.hidden_states = Tensor::zeros((2, 5, 3, 8, 8), DType::F32, &Device::Cpu).unwrap();
    let err = error_of(&model, &inputs);
    assert!(err.contains("in_channels = 4"), "{err}");
}

#[test]
fn odd_latent_size_names_patch_size() {
    let (model, mut inputs) = model_and_inputs("t2v");
    inputs.hidden_states = Tensor::zeros((2, 4, 3, 7, 8), DType::F32, &Device::Cpu).unwrap();
    let err = error_of(&model, &inputs);
    assert!(err.contains("patch_size"), "{err}");
}

#[test]
fn per_token_timestep_of_wrong_length_is_rejected() {
    let (model, mut inputs) = model_and_inputs("ti2v_per_token");
    inputs.timestep = Tensor::zeros((1, 47), DType::F32, &Device::Cpu).unwrap();
    let err = error_of(&model, &inputs);
    assert!(
        err.contains("per-token timestep") && err.contains("48 tokens"),
        "{err}"
    );
}

#[test]
fn text_width_names_text_dim() {
    let (model, mut inputs) = model_and_inputs("t2v");
    inputs.encoder_hidden_states = Tensor::zeros((2, 7, 25), DType::F32, &Device::Cpu).unwrap();
    let err = error_of(&model, &inputs);
    assert!(err.contains("text_dim = 24"), "{err}");
}

#[test]
fn added_kv_checkpoint_requires_image_tokens_and_512_text_tokens() {
    let (model, mut inputs) = model_and_inputs("i2v_added_kv");
    let image = inputs.encoder_hidden_states_image.take();
    let err = error_of(&model, &inputs);
    assert!(
        err.contains("encoder_hidden_states_image is required"),
        "{err}"
    );
    inputs.encoder_hidden_states_image = image;
    inputs.encoder_hidden_states = inputs.encoder_hidden_states.narrow(1, 0, 500).unwrap();
    let err = error_of(&model, &inputs);
    assert!(err.contains("exactly 512 tokens"), "{err}");
}

#[test]
fn vace_requires_control_and_one_scale_per_layer() {
    let (model, mut inputs) = model_and_inputs("vace");
    inputs.control_hidden_states_scale = Some(Tensor::ones(3, DType::F32, &Device::Cpu).unwrap());
    let err = error_of(&model, &inputs);
    assert!(
        err.contains("control_hidden_states_scale must be [2]"),
        "{err}"
    );
    inputs.control_hidden_states = None;
    let err = error_of(&model, &inputs);
    assert!(err.contains("control_hidden_states is required"), "{err}");
}

#[test]
fn unknown_and_missing_inputs_are_named() {
    let t = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
    let err = inputs_from_tensors(HashMap::from([("latents".to_string(), t.clone())])).unwrap_err();
    assert!(format!("{err}").contains("\"latents\""), "{err}");
    let err = inputs_from_tensors(HashMap::from([("timestep".to_string(), t)])).unwrap_err();
    assert!(
        format!("{err}").contains("\"hidden_states\" is missing"),
        "{err}"
    );
}

#[test]
fn bad_config_names_the_field() {
    let dir = std::env::temp_dir().join(format!("gallop-dit-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = std::fs::read_to_string(case_dir("t2v").join("config.json")).unwrap();
    let config = config.replace("\"WanTransformer3DModel\"", "\"WanTransformer2DModel\"");
    std::fs::write(dir.join("config.json"), config).unwrap();
    std::fs::copy(
        case_dir("t2v").join("diffusion_pytorch_model.safetensors"),
        dir.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let err = format!(
        "{:#}",
        WanTransformer::load(&dir, DType::F32, &Device::Cpu).unwrap_err()
    );
    assert!(err.contains("_class_name"), "{err}");
}

/// Deterministic values in [-1.7, 1.7] (uniform, unit variance) from a fixed-seed LCG.
fn pseudo_random(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let values: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * 3f32.sqrt()
        })
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

/// Plain softmax attention, the definition.
fn naive(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
    let d = q.dim(D::Minus1).unwrap() as f64;
    let s = (q.matmul(&k.t().unwrap()).unwrap() / d.sqrt()).unwrap();
    candle_nn::ops::softmax_last_dim(&s)
        .unwrap()
        .matmul(v)
        .unwrap()
}

#[test]
fn tiled_attention_equals_plain_softmax_with_sharp_scores() {
    // Large logits (x8) make a wrong running max or rescale show at once.
    let q = (pseudo_random((2, 3, 257, 16), 1) * 8.0).unwrap();
    let k = (pseudo_random((2, 3, 301, 16), 2) * 8.0).unwrap();
    let v = pseudo_random((2, 3, 301, 16), 3);
    let expected = naive(&q, &k, &v);
    for tiling in [
        AttentionTiling {
            key_tile: 64,
            query_tile: 50,
            max_scores: 64 * 50,
        },
        AttentionTiling {
            key_tile: 1,
            query_tile: 1000,
            max_scores: 1 << 20,
        },
        AttentionTiling {
            key_tile: 300,
            query_tile: 256,
            max_scores: 300 * 256 * 4,
        },
        AttentionTiling::default(),
    ] {
        let out = attention(&q, &k, &v, tiling).unwrap();
        assert_close(&format!("{tiling:?}"), &out, &expected, 1e-4);
    }
}
