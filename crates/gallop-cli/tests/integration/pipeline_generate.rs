//! `gallop generate --model-dir` with a tiny Wan checkpoint saved by diffusers: the real binary,
//! the test path's flags (exact geometry, steps, guidance, initial noise from a file), frames
//! within 1e-3 of diffusers' and the Wan engine reported.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../gallop-wan/tests/fixtures/pipelines")
        .join(case)
}

#[test]
fn generate_with_model_dir_reproduces_diffusers_frames() {
    let case = fixture("ti2v");
    let call: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case.join("case.json")).unwrap()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mp4 = out.path().join("out.mp4");
    let frames = out.path().join("frames.safetensors");
    let output = Command::new(env!("CARGO_BIN_EXE_gallop"))
        .args(["generate", "--model", "alibaba/hh1-i2v", "--model-dir"])
        .arg(case.join("model"))
        .arg("--image")
        .arg(case.join("image.png"))
        .args(["--prompt", call["prompt"].as_str().unwrap()])
        .args([
            "--negative-prompt",
            call["negative_prompt"].as_str().unwrap(),
        ])
        .args(["--width", "64", "--height", "32", "--num-frames", "5"])
        .args(["--steps", "3", "--guidance", "5", "--seed", "1"])
        .arg("--init-noise")
        .arg(case.join("inputs.safetensors"))
        .arg("--dump-frames")
        .arg(&frames)
        .arg("-o")
        .arg(&mp4)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "gallop generate failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let model_dir = case.join("model").display().to_string();
    assert!(
        stdout.contains(&format!("engine: wan ({model_dir})")),
        "the Wan engine and checkpoint must be reported:\n{stdout}"
    );
    assert!(stdout.contains("video: 5 frames, 64x32"), "{stdout}");

    let dumped = candle_core::safetensors::load(&frames, &Device::Cpu).unwrap();
    let expected =
        candle_core::safetensors::load(case.join("outputs.safetensors"), &Device::Cpu).unwrap();
    let diff = gallop_wan::testing::max_abs_diff(&dumped["frames"], &expected["frames"]).unwrap();
    assert!(
        diff < 1e-3,
        "frames differ from diffusers by {diff} (max abs)"
    );

    let video = gallop_media::decode_mp4(&std::fs::read(&mp4).unwrap()).unwrap();
    assert_eq!(video.frames.len(), 5);
}

#[test]
fn debug_flags_without_model_dir_are_refused() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_gallop"))
        .args([
            "generate",
            "--model",
            "alibaba/hh1-i2v",
            "--prompt",
            "x",
            "--steps",
            "3",
        ])
        .arg("--image")
        .arg(fixture("ti2v").join("image.png"))
        .arg("-o")
        .arg(out.path().join("o.mp4"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("need --model-dir"), "{stderr}");
}

/// Runs one committed tiny-pipeline case through the binary with the case's own call (size,
/// frames, steps, guidance, VACE conditioning scale) and its initial noise; returns the max abs
/// difference of the decoded frames from diffusers'.
fn generate_case(model: &str, checkpoint: &Path, case: &Path, images: &[&str]) -> f32 {
    let call = read_call(case);
    let sampling = [
        "--steps".to_string(),
        call["num_inference_steps"].to_string(),
        "--guidance".to_string(),
        call["guidance_scale"].to_string(),
    ];
    generate_case_with(model, checkpoint, case, images, &sampling).0
}

fn read_call(case: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(case.join("case.json")).unwrap()).unwrap()
}

/// As [`generate_case`], with `settings` as the engine flags; also returns stdout.
fn generate_case_with(
    model: &str,
    checkpoint: &Path,
    case: &Path,
    images: &[&str],
    settings: &[String],
) -> (f32, String) {
    let call = read_call(case);
    let out = tempfile::tempdir().unwrap();
    let frames = out.path().join("frames.safetensors");
    let mut command = Command::new(env!("CARGO_BIN_EXE_gallop"));
    command
        .args(["generate", "--model", model, "--model-dir"])
        .arg(checkpoint)
        .args(["--prompt", call["prompt"].as_str().unwrap()])
        .args(["--width", &call["width"].to_string()])
        .args(["--height", &call["height"].to_string()])
        .args(["--num-frames", &call["num_frames"].to_string()])
        .args(settings)
        .arg("--init-noise")
        .arg(case.join("inputs.safetensors"))
        .arg("--dump-frames")
        .arg(&frames)
        .arg("-o")
        .arg(out.path().join("out.mp4"));
    // r2v has no negative prompt in its schema: its cases were made with Wan's default, which
    // the engine applies.
    if model == "alibaba/hh1-i2v" {
        command.args([
            "--negative-prompt",
            call["negative_prompt"].as_str().unwrap(),
        ]);
    }
    if let Some(scale) = call["conditioning_scale"].as_f64() {
        command.args(["--conditioning-scale", &scale.to_string()]);
    }
    for image in images {
        command.arg("--image").arg(case.join(image));
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}: gallop generate failed: {}",
        case.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let dumped = candle_core::safetensors::load(&frames, &Device::Cpu).unwrap();
    let expected =
        candle_core::safetensors::load(case.join("outputs.safetensors"), &Device::Cpu).unwrap();
    let diff = gallop_wan::testing::max_abs_diff(&dumped["frames"], &expected["frames"]).unwrap();
    (diff, String::from_utf8_lossy(&output.stdout).into_owned())
}

fn changes_case(name: &str) -> PathBuf {
    fixture("../changes/pipelines").join(name)
}

fn lora(name: &str) -> String {
    fixture("../changes/loras").join(name).display().to_string()
}

/// Wan2.2-Lightning as a user runs it: `--recipe lightning-4step` (4 flow-match Euler steps at
/// 1000/750/500/250, shift 5, guidance 1) with one LoRA per A14B expert (`--lora`, `--lora-2`)
/// gives diffusers' frames (load_lora_weights + fuse_lora on both experts, the same schedule),
/// and the report says how it sampled and what each LoRA touched.
#[test]
fn lightning_recipe_with_a_lora_per_expert_reproduces_diffusers_frames() {
    let case = changes_case("a14b_4step_lightning");
    let settings = [
        "--recipe".to_string(),
        "lightning-4step".into(),
        "--lora".into(),
        lora("a14b_high.safetensors"),
        "--lora-2".into(),
        format!("{}:1.0", lora("a14b_low.safetensors")),
    ];
    let (diff, stdout) = generate_case_with(
        "alibaba/hh1-i2v",
        &fixture("a14b/model"),
        &case,
        &["image.png"],
        &settings,
    );
    assert!(diff < 1e-3, "frames differ from diffusers by {diff}");
    assert!(
        stdout.contains(
            "sampling: 4 steps, guidance 1/1 (no CFG), euler, shift 5, timesteps 1000/750/500/250"
        ),
        "{stdout}"
    );
    assert_eq!(stdout.matches("lora ").count(), 2, "{stdout}");
    assert!(stdout.contains("a14b_low.safetensors"), "{stdout}");
    // Without the LoRAs the same recipe is a different video: the flags took effect.
    let (diff, _) = generate_case_with(
        "alibaba/hh1-i2v",
        &fixture("a14b/model"),
        &case,
        &["image.png"],
        &settings[..2],
    );
    assert!(diff > 1e-2, "the LoRAs changed nothing ({diff})");
}

/// `--quantize int8|fp8` through the binary gives diffusers' frames with the same dequantized
/// weights, and the report names the held weights.
#[test]
fn quantized_runs_reproduce_diffusers_frames() {
    for kind in ["int8", "fp8"] {
        let case = changes_case(&format!("ti2v_{kind}"));
        let call = read_call(&case);
        let settings = [
            "--quantize".to_string(),
            kind.into(),
            "--steps".into(),
            call["num_inference_steps"].to_string(),
            "--guidance".into(),
            call["guidance_scale"].to_string(),
        ];
        let (diff, stdout) = generate_case_with(
            "alibaba/hh1-i2v",
            &fixture("ti2v/model"),
            &case,
            &["image.png"],
            &settings,
        );
        assert!(
            diff < 1e-3,
            "{kind}: frames differ from diffusers by {diff}"
        );
        assert!(
            stdout.contains(&format!("on cpu, {kind} weights (f32 compute)")),
            "{stdout}"
        );
    }
}

/// Engine settings that break a rule are refused before any weights load, naming the flag.
#[test]
fn engine_flags_that_break_a_rule_name_the_flag() {
    let ti2v = fixture("ti2v/model");
    let a14b = fixture("a14b/model");
    let missing = fixture("no-such.safetensors").display().to_string();
    let cases: [(&Path, &[&str], &str); 6] = [
        (
            &ti2v,
            &["--lora-2", &missing],
            "--lora-2: loras_2 is for the low-noise expert",
        ),
        (&ti2v, &["--lora", &missing], "--lora: "),
        (
            &a14b,
            &["--timesteps", "1000,750", "--steps", "3"],
            "--timesteps: timesteps lists 2",
        ),
        (
            &a14b,
            &["--timesteps", "250,500"],
            "timesteps must be strictly decreasing",
        ),
        (
            &a14b,
            &["--shift", "0"],
            "--shift: shift must be a finite number > 0",
        ),
        (&a14b, &["--recipe", "turbo"], "unknown recipe \"turbo\""),
    ];
    for (checkpoint, flags, wanted) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_gallop"))
            .args(["generate", "--model", "alibaba/hh1-i2v", "--prompt", "x"])
            .arg("--model-dir")
            .arg(checkpoint)
            .arg("--image")
            .arg(fixture("ti2v").join("image.png"))
            .args(["--width", "64", "--height", "32", "--num-frames", "5"])
            .args(flags)
            .arg("-o")
            .arg(tempfile::tempdir().unwrap().path().join("out.mp4"))
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{flags:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(wanted), "{flags:?}: {stderr}");
    }
}

/// The Wan2.1-style checkpoint with a CLIP image encoder, and VACE with 1, 2 and 3 references
/// (r2v), through the binary.
#[test]
fn clip_i2v_and_vace_reproduce_diffusers_frames() {
    let i2v21 = fixture("i2v21");
    let cases: [(&str, PathBuf, PathBuf, &[&str]); 4] = [
        (
            "alibaba/hh1-i2v",
            i2v21.join("model"),
            i2v21.clone(),
            &["image.png"],
        ),
        (
            "alibaba/hh1.1-r2v",
            fixture("vace/model"),
            fixture("vace/refs1"),
            &["ref0.png"],
        ),
        (
            "alibaba/hh1.1-r2v",
            fixture("vace/model"),
            fixture("vace/refs2"),
            &["ref0.png", "ref1.png"],
        ),
        (
            "alibaba/hh1.1-r2v",
            fixture("vace/model"),
            fixture("vace/refs3"),
            &["ref0.png", "ref1.png", "ref2.png"],
        ),
    ];
    for (model, checkpoint, case, images) in cases {
        let diff = generate_case(model, &checkpoint, &case, images);
        assert!(
            diff < 1e-3,
            "{}: frames differ from diffusers by {diff} (max abs)",
            case.display()
        );
    }
}

#[test]
fn conditioning_scale_is_refused_for_a_checkpoint_without_vace() {
    let case = fixture("ti2v");
    let output = Command::new(env!("CARGO_BIN_EXE_gallop"))
        .args(["generate", "--model", "alibaba/hh1-i2v", "--model-dir"])
        .arg(case.join("model"))
        .arg("--image")
        .arg(case.join("image.png"))
        .args(["--width", "64", "--height", "32", "--num-frames", "5"])
        .args(["--conditioning-scale", "0.5", "-o"])
        .arg(tempfile::tempdir().unwrap().path().join("out.mp4"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("conditioning_scale"), "{stderr}");
}
