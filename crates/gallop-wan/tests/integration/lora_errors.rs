//! LoRA files that cannot apply are refused at load, naming the file and the key: a key that
//! matches no module, a shape that does not fit, a file that is not a LoRA, half a pair; and a
//! `--lora-2` on a checkpoint with one transformer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use gallop_wan::lora::LoraSpec;
use gallop_wan::pipeline::{PipelineChanges, WanPipeline};
use gallop_wan::transformer::{WanTransformer, WeightChanges};

fn t2v_transformer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipelines/t2v/model/transformer")
}

fn write(dir: &Path, name: &str, tensors: &[(&str, &[usize])]) -> PathBuf {
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, shape)| {
            let t = Tensor::ones(*shape, DType::F32, &Device::Cpu).unwrap();
            (k.to_string(), t)
        })
        .collect();
    let path = dir.join(name);
    candle_core::safetensors::save(&map, &path).unwrap();
    path
}

fn load_error(path: &Path) -> String {
    let changes = WeightChanges {
        loras: vec![LoraSpec {
            path: path.to_path_buf(),
            strength: 1.0,
        }],
        quantize: None,
    };
    match WanTransformer::load_with(&t2v_transformer(), DType::F32, &changes, &Device::Cpu) {
        Ok(_) => panic!("{} was accepted", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn a_key_matching_no_module_is_refused_naming_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    // The fixture transformer has 2 blocks: block 7 does not exist.
    let path = write(
        dir.path(),
        "extra_block.safetensors",
        &[
            (
                "diffusion_model.blocks.7.self_attn.q.lora_down.weight",
                &[4, 32],
            ),
            (
                "diffusion_model.blocks.7.self_attn.q.lora_up.weight",
                &[32, 4],
            ),
        ],
    );
    let err = load_error(&path);
    assert!(err.contains("extra_block.safetensors"), "{err}");
    assert!(
        err.contains("diffusion_model.blocks.7.self_attn.q.lora_down.weight"),
        "{err}"
    );
    assert!(err.contains("matches no module"), "{err}");
}

#[test]
fn an_unknown_key_form_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "odd.safetensors",
        &[
            ("transformer.blocks.0.attn1.to_q.lora_A.weight", &[4, 32]),
            ("transformer.blocks.0.attn1.to_q.lora_B.weight", &[32, 4]),
            ("transformer.blocks.0.attn1.to_q.hada_w1_a", &[4, 32]),
        ],
    );
    let err = load_error(&path);
    assert!(
        err.contains("odd.safetensors") && err.contains("hada_w1_a"),
        "{err}"
    );
}

#[test]
fn a_shape_that_does_not_fit_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    // to_q is [32, 32]; a down matrix over 48 inputs does not fit.
    let path = write(
        dir.path(),
        "wrong_shape.safetensors",
        &[
            ("transformer.blocks.0.attn1.to_q.lora_A.weight", &[4, 48]),
            ("transformer.blocks.0.attn1.to_q.lora_B.weight", &[32, 4]),
        ],
    );
    let err = load_error(&path);
    assert!(err.contains("wrong_shape.safetensors"), "{err}");
    assert!(
        err.contains("transformer.blocks.0.attn1.to_q.lora_A.weight"),
        "{err}"
    );
    assert!(err.contains("[32, 32]"), "{err}");
}

#[test]
fn a_file_that_is_not_a_lora_is_refused() {
    // The transformer's own weights.
    let path = t2v_transformer().join("diffusion_pytorch_model.safetensors");
    let err = load_error(&path);
    assert!(err.contains("is not a LoRA"), "{err}");
    assert!(err.contains("diffusion_pytorch_model.safetensors"), "{err}");
    let missing = load_error(Path::new("/nonexistent/lora.safetensors"));
    assert!(
        missing.contains("/nonexistent/lora.safetensors"),
        "{missing}"
    );
}

#[test]
fn half_a_pair_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "half.safetensors",
        &[("lora_unet_blocks_0_ffn_0.lora_down.weight", &[4, 32])],
    );
    let err = load_error(&path);
    assert!(
        err.contains("half.safetensors") && err.contains("lora_up"),
        "{err}"
    );
}

#[test]
fn a_nonzero_whole_tensor_delta_changes_a_norm() {
    // ComfyUI adds `.diff` to any tensor, norms included (diffusers drops norm deltas, which
    // lightx2v files only carry as zeros): the merged norm weight is base + strength * diff.
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "norm.safetensors",
        &[("diffusion_model.blocks.0.norm3.diff", &[32])],
    );
    let changes = |strength| WeightChanges {
        loras: vec![LoraSpec {
            path: path.clone(),
            strength,
        }],
        quantize: None,
    };
    let load = |c: &WeightChanges| {
        WanTransformer::load_with(&t2v_transformer(), DType::F32, c, &Device::Cpu).unwrap()
    };
    let plain = load(&WeightChanges::default());
    let changed = load(&changes(0.5));
    assert_eq!(changed.lora_summaries().len(), 1);
    assert!(
        changed.lora_summaries()[0].contains("1 modules"),
        "{:?}",
        changed.lora_summaries()
    );
    let g = candle_core::Tensor::randn(0f32, 1.0, (1, 4, 2, 4, 6), &Device::Cpu).unwrap();
    let inputs = gallop_wan::transformer::TransformerInputs::new(
        g,
        Tensor::new(&[500f32], &Device::Cpu).unwrap(),
        Tensor::randn(0f32, 1.0, (1, 7, 32), &Device::Cpu).unwrap(),
    );
    let a = plain.forward(&inputs).unwrap();
    let b = changed.forward(&inputs).unwrap();
    assert!(gallop_wan::testing::max_abs_diff(&a, &b).unwrap() > 1e-3);
}

#[test]
fn loras_2_on_a_one_transformer_checkpoint_is_refused() {
    let model = t2v_transformer().parent().unwrap().to_path_buf();
    let changes = PipelineChanges {
        loras_2: vec![LoraSpec {
            path: PathBuf::from("x.safetensors"),
            strength: 1.0,
        }],
        ..Default::default()
    };
    let err = match WanPipeline::load_with(&model, DType::F32, &changes, &Device::Cpu) {
        Ok(_) => panic!("accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("loras_2 (--lora-2)"), "{err}");
}
