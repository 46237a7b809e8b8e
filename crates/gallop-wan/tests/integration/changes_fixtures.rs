//! What a run can change about a checkpoint, against diffusers (scripts/fixtures/changes.py):
//! LoRAs in every key format merged at load (diffusers' `load_lora_weights` + `fuse_lora`),
//! 4-step guidance-1 recipes with each scheduler and a timestep list, and int8 / fp8 weights
//! (diffusers running the same dequantized weights).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use gallop_wan::lora::LoraSpec;
use gallop_wan::pipeline::{PipelineChanges, WanPipeline};
use gallop_wan::scheduler::ScheduleSettings;
use gallop_wan::testing::{assert_close, max_abs_diff, relative_error};
use gallop_wan::transformer::{WanTransformer, WeightChanges, inputs_from_tensors};

use super::pipeline_fixtures::{check_loaded_case, load_case_at};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `[{path, strength}]` with paths relative to the fixtures folder.
fn specs(value: &serde_json::Value) -> Vec<LoraSpec> {
    let list = value.as_array().cloned().unwrap_or_default();
    list.iter()
        .map(|l| LoraSpec {
            path: fixtures().join(l["path"].as_str().unwrap()),
            strength: l["strength"].as_f64().unwrap(),
        })
        .collect()
}

/// One transformer forward with the case's LoRAs merged, against diffusers' fused model; and
/// far from the same forward without them (the LoRA did change the output).
fn check_transformer(case: &str) {
    let dir = fixtures().join("changes/transformer").join(case);
    let call = read_json(&dir.join("case.json"));
    let model_dir = fixtures()
        .join(call["model"].as_str().unwrap())
        .join("transformer");
    let changes = WeightChanges {
        loras: specs(&call["loras"]),
        quantize: None,
    };
    let inputs = inputs_from_tensors(load(&dir.join("inputs.safetensors"))).unwrap();
    let model = WanTransformer::load_with(&model_dir, DType::F32, &changes, &Device::Cpu).unwrap();
    assert_eq!(model.lora_summaries().len(), changes.loras.len());
    let sample = model.forward(&inputs).unwrap();
    let expected = load(&dir.join("outputs.safetensors"))
        .remove("sample")
        .unwrap();
    assert_close(case, &sample, &expected, 1e-4);
    let plain = WanTransformer::load(&model_dir, DType::F32, &Device::Cpu).unwrap();
    let unchanged = relative_error(&plain.forward(&inputs).unwrap(), &expected).unwrap();
    assert!(
        unchanged > 1e-2,
        "{case}: the LoRA barely changes the output ({unchanged:e})"
    );
}

#[test]
fn lora_diffusers_peft_keys_match_diffusers() {
    check_transformer("diffusers");
}

#[test]
fn lora_diffusers_keys_with_adapter_metadata_alpha_match_diffusers() {
    check_transformer("diffusers_alpha");
}

#[test]
fn lora_lightx2v_keys_with_alpha_diff_and_diff_b_match_diffusers() {
    check_transformer("lightx2v");
}

#[test]
fn lora_at_strength_half_matches_diffusers() {
    check_transformer("lightx2v_half");
}

#[test]
fn lora_comfyui_keys_match_diffusers() {
    check_transformer("comfyui");
}

#[test]
fn lora_musubi_kohya_keys_match_diffusers() {
    check_transformer("musubi");
}

#[test]
fn two_stacked_loras_match_diffusers() {
    check_transformer("stacked");
}

#[test]
fn lora_on_the_image_branch_matches_diffusers() {
    check_transformer("image_branch");
}

#[test]
fn lora_on_vace_blocks_matches_diffusers() {
    check_transformer("vace_blocks");
}

/// The pipeline case's changes as its case.json names them.
fn pipeline_changes(call: &serde_json::Value) -> PipelineChanges {
    PipelineChanges {
        loras: specs(&call["loras"]),
        loras_2: specs(&call["loras_2"]),
        quantize: call["quantize"].as_str().map(|q| q.parse().unwrap()),
        schedule: ScheduleSettings {
            scheduler: call["scheduler"].as_str().map(|s| s.parse().unwrap()),
            shift: call["shift"].as_f64(),
            timesteps: call["timesteps"]
                .as_array()
                .map(|t| t.iter().map(|v| v.as_f64().unwrap()).collect()),
        },
        // The quantized runs also release the text encoder after each prompt (read back for
        // the negative prompt), as a machine short of memory runs them.
        release_text_encoder: call["quantize"].is_string(),
    }
}

/// A whole run with the case's changes: latents within 1e-4 and frames within 1e-3 of
/// diffusers'; returns (frames, max abs distance from the unchanged checkpoint's frames).
fn check_pipeline(case: &str) -> (Tensor, f32) {
    let dir = fixtures().join("changes/pipelines").join(case);
    let call = read_json(&dir.join("case.json"));
    let model = fixtures().join(call["model"].as_str().unwrap());
    let changes = pipeline_changes(&call);
    let pipeline = WanPipeline::load_with(&model, DType::F32, &changes, &Device::Cpu).unwrap();
    assert_eq!(
        pipeline.lora_summaries().len(),
        changes.loras.len() + changes.loras_2.len()
    );
    let frames = check_loaded_case(case, &load_case_at(&dir, pipeline));
    let unchanged = load(&model.parent().unwrap().join("outputs.safetensors"))
        .remove("frames")
        .unwrap();
    let distance = max_abs_diff(&frames, &unchanged).unwrap();
    let mean = (&frames - &unchanged)
        .and_then(|d| d.abs()?.mean_all()?.to_scalar::<f32>())
        .unwrap();
    eprintln!(
        "{case}: frames' distance from the unchanged checkpoint's: max abs {distance:e}, mean abs {mean:e}"
    );
    (frames, distance)
}

#[test]
fn two_loras_at_half_and_full_strength_give_diffusers_frames() {
    let (_, distance) = check_pipeline("t2v_two_loras");
    assert!(distance > 1e-2);
}

#[test]
fn per_expert_loras_on_a14b_give_diffusers_frames() {
    let (_, distance) = check_pipeline("a14b_per_expert");
    assert!(distance > 1e-2);
}

#[test]
fn four_step_guidance_1_runs_match_diffusers_with_each_scheduler_and_a_timestep_list() {
    for case in [
        "t2v_4step_unipc",
        "t2v_4step_euler",
        "t2v_4step_euler_list",
        "t2v_4step_unipc_list",
    ] {
        check_pipeline(case);
    }
}

#[test]
fn lightning_style_a14b_run_matches_diffusers() {
    // Per-expert LoRAs, 4 steps, guidance 1 on both experts, Euler, shift 5, 1000/750/500/250.
    check_pipeline("a14b_4step_lightning");
}

#[test]
fn int8_and_fp8_weights_match_diffusers_on_the_same_dequantized_weights() {
    for case in ["t2v_int8", "t2v_fp8", "ti2v_int8", "ti2v_fp8"] {
        let (_, distance) = check_pipeline(case);
        // Quantized, the frames do move from the unquantized run's (recorded in BENCHMARKS.md).
        assert!(distance > 1e-3, "{case}: {distance:e}");
    }
}

#[test]
fn loras_merge_into_quantized_weights_as_diffusers_fuses_then_quantizes() {
    for case in ["t2v_int8_lora", "t2v_fp8_lora"] {
        check_pipeline(case);
    }
}

#[test]
fn quantized_pipelines_hold_their_matrices_in_eight_bits() {
    let model = fixtures().join("pipelines/t2v/model");
    for (quantize, dtype) in [("int8", DType::U8), ("fp8", DType::F8E4M3)] {
        let changes = PipelineChanges {
            quantize: Some(quantize.parse().unwrap()),
            ..Default::default()
        };
        let pipeline = WanPipeline::load_with(&model, DType::F32, &changes, &Device::Cpu).unwrap();
        assert_eq!(pipeline.transformer().weight_dtype(), dtype, "{quantize}");
    }
}

/// A transformer folder holding one file in a single-file layout beside its config.json.
fn single_file_sample(case: &str) -> (Tensor, Tensor) {
    let dir = fixtures().join("changes/single_file").join(case);
    let model = WanTransformer::load(&dir, DType::F32, &Device::Cpu).unwrap();
    let inputs = inputs_from_tensors(load(&dir.join("inputs.safetensors"))).unwrap();
    let expected = load(&dir.join("outputs.safetensors"))
        .remove("sample")
        .unwrap();
    (model.forward(&inputs).unwrap(), expected)
}

#[test]
fn a_single_file_transformer_in_the_original_layout_matches_diffusers() {
    let (sample, expected) = single_file_sample("bare");
    assert_close("bare original keys", &sample, &expected, 1e-4);
}

#[test]
fn a_comfyui_fp8_scaled_file_loads_as_published_and_matches_its_dequantized_weights() {
    let (sample, expected) = single_file_sample("fp8_scaled");
    assert_close("fp8 scaled", &sample, &expected, 1e-4);
    // The fp8 values are what ran: the unquantized model's output is far from it.
    let (f32_sample, _) = single_file_sample("bare");
    assert!(relative_error(&f32_sample, &expected).unwrap() > 1e-3);
}

#[test]
fn a_released_text_encoder_is_read_back_for_new_prompts_and_gives_the_held_encoders_embeddings() {
    let model = fixtures().join("pipelines/t2v/model");
    let held = WanPipeline::load(&model, DType::F32, &Device::Cpu).unwrap();
    let changes = PipelineChanges {
        release_text_encoder: true,
        ..Default::default()
    };
    let released = WanPipeline::load_with(&model, DType::F32, &changes, &Device::Cpu).unwrap();
    assert!(released.text_encoder().is_none(), "not held after load");
    let bits = |t: &Tensor| gallop_wan::testing::f32_bits(t).unwrap();
    for prompt in ["a white horse", "waves splash", "a white horse"] {
        let expected = held.encode_prompt(prompt).unwrap();
        assert_eq!(
            bits(&released.encode_prompt(prompt).unwrap()),
            bits(&expected)
        );
        assert!(
            released.text_encoder().is_none(),
            "released after {prompt:?}"
        );
    }
    // The held pipeline keeps its encoder; a cached prompt gives the same tensor again.
    assert!(held.text_encoder().is_some());
    let again = held.encode_prompt("a white horse").unwrap();
    assert_eq!(
        bits(&again),
        bits(&held.encode_prompt("a white horse").unwrap())
    );
}
