//! Whole pipelines against diffusers: tiny checkpoints saved with `save_pretrained`
//! (scripts/fixtures/pipelines.py), the same initial noise and prompt embeddings, frames within
//! 1e-3 (max abs) of diffusers' `output_type="np"` frames.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, Tensor};
use gallop_engine::{Progress, RunContext, discard_frames};
use gallop_wan::pipeline::{GenerateArgs, WanPipeline, image_to_tensor};

fn case_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pipelines")
        .join(name)
}

pub(crate) struct Case {
    pub(crate) pipeline: WanPipeline,
    pub(crate) args: GenerateArgs,
    pub(crate) expected_frames: Tensor,
    pub(crate) expected_latents: Tensor,
}

fn load_case(name: &str) -> Case {
    let dir = case_dir(name);
    // VACE cases share one checkpoint in their parent folder.
    let model = match dir.join("model").exists() {
        true => dir.join("model"),
        false => dir.parent().unwrap().join("model"),
    };
    let pipeline = WanPipeline::load(&model, DType::F32, &Device::Cpu).unwrap();
    load_case_at(&dir, pipeline)
}

/// A case folder (case.json, inputs, outputs, images) run by `pipeline`.
pub(crate) fn load_case_at(dir: &Path, pipeline: WanPipeline) -> Case {
    let device = Device::Cpu;
    let call: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let inputs = candle_core::safetensors::load(dir.join("inputs.safetensors"), &device).unwrap();
    let outputs = candle_core::safetensors::load(dir.join("outputs.safetensors"), &device).unwrap();
    let image = dir.join("image.png");
    let rgb = image
        .exists()
        .then(|| image::open(&image).unwrap().to_rgb8());
    let image_embeds = rgb
        .as_ref()
        .and_then(|img| pipeline.encode_image(img).unwrap());
    let image = rgb.map(|img| image_to_tensor(&img, &device).unwrap());
    let num = |k: &str| call[k].as_u64().unwrap() as usize;
    // Only ti2v keeps diffusers' embeddings (checked against the encoder below); the other cases
    // encode the prompt with the checkpoint's own UMT5, as a real run does.
    let (prompt_embeds, negative_prompt_embeds) = match inputs.get("prompt_embeds") {
        Some(p) => (p.clone(), inputs.get("negative_prompt_embeds").cloned()),
        None => {
            let negative = call
                .get("negative_prompt")
                .and_then(|v| v.as_str())
                .unwrap_or("");
            (
                pipeline
                    .encode_prompt(call["prompt"].as_str().unwrap())
                    .unwrap(),
                Some(pipeline.encode_prompt(negative).unwrap()),
            )
        }
    };
    let args = GenerateArgs {
        prompt_embeds,
        negative_prompt_embeds,
        image,
        height: num("height"),
        width: num("width"),
        num_frames: num("num_frames"),
        steps: num("num_inference_steps"),
        guidance_scale: call["guidance_scale"].as_f64().unwrap(),
        guidance_scale_2: call.get("guidance_scale_2").and_then(|v| v.as_f64()),
        latents: inputs["latents"].clone(),
        image_embeds,
        reference_images: (0..3)
            .map(|i| dir.join(format!("ref{i}.png")))
            .filter(|p| p.exists())
            .map(|p| image_to_tensor(&image::open(p).unwrap().to_rgb8(), &device).unwrap())
            .collect(),
        conditioning_scale: call
            .get("conditioning_scale")
            .and_then(|v| v.as_f64())
            .unwrap_or(1.0),
        leading_frames: None,
    };
    Case {
        pipeline,
        args,
        expected_frames: outputs["frames"].clone(),
        expected_latents: outputs["latents"].clone(),
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    gallop_wan::testing::max_abs_diff(a, b).unwrap()
}

/// Runs a case from the diffusers embeddings and checks latents and frames.
fn check_case(name: &str) {
    check_loaded_case(name, &load_case(name));
}

/// Runs a loaded case and checks latents and frames; returns the frames.
pub(crate) fn check_loaded_case(name: &str, case: &Case) -> Tensor {
    let cancel = AtomicBool::new(false);
    let mut steps_seen = Vec::new();
    let mut progress = |p: Progress| steps_seen.push((p.step as usize, p.total as usize));
    let n = case.args.steps;
    let mut discard = discard_frames;
    let mut ctx = RunContext::new(&mut progress, &cancel, &mut discard);
    ctx.plan(n as u32);
    let latents = case.pipeline.denoise(&case.args, &mut ctx).unwrap();
    assert_eq!(steps_seen, (1..=n).map(|i| (i, n)).collect::<Vec<_>>());
    // diffusers' `output_type="latent"` keeps VACE's reference frames in front; the decoded
    // video does not.
    let refs = case.args.reference_images.len();
    let frames = case.expected_latents.dim(2).unwrap();
    let expected_latents = case
        .expected_latents
        .narrow(2, refs, frames - refs)
        .unwrap();
    gallop_wan::testing::assert_close(
        &format!("{name} final latents"),
        &latents,
        &expected_latents,
        1e-4,
    );
    let frames = case.pipeline.decode(&latents).unwrap();
    let diff = max_abs_diff(&frames, &case.expected_frames);
    eprintln!("{name}: frames max abs diff {diff:e}");
    assert!(
        diff < 1e-3,
        "{name}: frames differ from diffusers by {diff} (max abs)"
    );
    frames
}

#[test]
fn ti2v_5b_style_matches_diffusers() {
    check_case("ti2v");
}

#[test]
fn t2v_matches_diffusers() {
    check_case("t2v");
}

#[test]
fn a14b_two_experts_match_diffusers() {
    check_case("a14b");
}

/// The text path too: the checkpoint's own tokenizer and UMT5 encoder give diffusers'
/// embeddings, and the frames from them match.
#[test]
fn ti2v_from_prompt_text_matches_diffusers() {
    let mut case = load_case("ti2v");
    let call: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case_dir("ti2v").join("case.json")).unwrap())
            .unwrap();
    let prompt = case
        .pipeline
        .encode_prompt(call["prompt"].as_str().unwrap())
        .unwrap();
    let negative = case
        .pipeline
        .encode_prompt(call["negative_prompt"].as_str().unwrap())
        .unwrap();
    gallop_wan::testing::assert_close("prompt_embeds", &prompt, &case.args.prompt_embeds, 1e-4);
    gallop_wan::testing::assert_close(
        "negative_prompt_embeds",
        &negative,
        case.args.negative_prompt_embeds.as_ref().unwrap(),
        1e-4,
    );
    case.args.prompt_embeds = prompt;
    case.args.negative_prompt_embeds = Some(negative);
    let cancel = AtomicBool::new(false);
    let mut progress = |_| {};
    let mut discard = discard_frames;
    let mut ctx = RunContext::new(&mut progress, &cancel, &mut discard);
    let frames = case.pipeline.generate(&case.args, &mut ctx).unwrap();
    let diff = max_abs_diff(&frames, &case.expected_frames);
    assert!(
        diff < 1e-3,
        "frames differ from diffusers by {diff} (max abs)"
    );
}

/// Cancel is honoured between steps: a set flag stops the run before any step completes.
#[test]
fn cancel_stops_between_steps() {
    let case = load_case("t2v");
    let cancel = AtomicBool::new(true);
    let mut steps = 0;
    let mut progress = |_| steps += 1;
    let mut discard = discard_frames;
    let mut ctx = RunContext::new(&mut progress, &cancel, &mut discard);
    let err = case.pipeline.denoise(&case.args, &mut ctx).unwrap_err();
    assert!(matches!(err, gallop_wan::Error::Cancelled), "{err:#}");
    assert_eq!(steps, 0);
}

/// Bad sizes and noise are refused with the field and the rule.
#[test]
fn bad_geometry_and_noise_are_refused() {
    let case = load_case("ti2v");
    let run = |args: &GenerateArgs| {
        let cancel = AtomicBool::new(false);
        let mut progress = |_| {};
        let mut discard = discard_frames;
        let mut ctx = RunContext::new(&mut progress, &cancel, &mut discard);
        format!("{:#}", case.pipeline.denoise(args, &mut ctx).unwrap_err())
    };
    let mut args = case.args.clone();
    args.height = 48;
    assert!(
        run(&args).contains("height 48 must be a positive multiple of 32"),
        "{}",
        run(&args)
    );
    let mut args = case.args.clone();
    args.num_frames = 6;
    assert!(
        run(&args).contains("num_frames 6 must be 4n + 1"),
        "{}",
        run(&args)
    );
    let mut args = case.args.clone();
    args.latents = Tensor::zeros((1, 4, 3, 2, 4), DType::F32, &Device::Cpu).unwrap();
    assert!(
        run(&args).contains("initial latents must be shaped [1, 4, 2, 2, 4]"),
        "{}",
        run(&args)
    );
    let mut args = case.args.clone();
    args.image = None;
    assert!(run(&args).contains("image"), "{}", run(&args));
}

#[test]
fn vace_one_reference_matches_diffusers() {
    check_case("vace/refs1");
}

#[test]
fn vace_two_references_match_diffusers() {
    check_case("vace/refs2");
}

#[test]
fn vace_three_references_match_diffusers() {
    check_case("vace/refs3");
}

/// The references matter: with one reference fewer the frames differ well beyond the tolerance.
#[test]
fn vace_references_change_the_video() {
    let one = load_case("vace/refs1").expected_frames;
    let two = load_case("vace/refs2").expected_frames;
    assert!(max_abs_diff(&one, &two) > 1e-2);
}

#[test]
fn wan21_i2v_with_clip_matches_diffusers() {
    check_case("i2v21");
}
