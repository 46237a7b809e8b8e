//! `gallop generate --guidance-2` on the tiny A14B-style (two experts) checkpoint: the real
//! binary with diffusers' two guidance scales reproduces diffusers' frames, so the second scale
//! reaches the low-noise expert; a one-transformer checkpoint refuses the flag.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::Device;

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../gallop-wan/tests/fixtures/pipelines")
        .join(case)
}

/// `gallop generate` on `case`'s model, image, call and noise, with `guidance` flags.
fn generate(case: &Path, guidance: &[&str], frames: &Path) -> Output {
    let call: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case.join("case.json")).unwrap()).unwrap();
    Command::new(env!("CARGO_BIN_EXE_gallop"))
        .args(["generate", "--model", "alibaba/hh1-i2v", "--model-dir"])
        .arg(case.join("model"))
        .arg("--image")
        .arg(case.join("image.png"))
        .args(["--prompt", call["prompt"].as_str().unwrap()])
        .args([
            "--negative-prompt",
            call["negative_prompt"].as_str().unwrap(),
        ])
        .args(["--width", "48", "--height", "32", "--num-frames", "5"])
        .args(["--steps", &call["num_inference_steps"].to_string()])
        .args(guidance)
        .arg("--init-noise")
        .arg(case.join("inputs.safetensors"))
        .arg("--dump-frames")
        .arg(frames)
        .arg("-o")
        .arg(frames.with_extension("mp4"))
        .output()
        .unwrap()
}

fn max_diff(frames: &Path, case: &Path) -> f32 {
    let dumped = candle_core::safetensors::load(frames, &Device::Cpu).unwrap();
    let expected =
        candle_core::safetensors::load(case.join("outputs.safetensors"), &Device::Cpu).unwrap();
    gallop_wan::testing::max_abs_diff(&dumped["frames"], &expected["frames"]).unwrap()
}

#[test]
fn guidance_2_reproduces_diffusers_two_scale_frames() {
    let case = fixture("a14b");
    let call: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case.join("case.json")).unwrap()).unwrap();
    let (g, g2) = (
        call["guidance_scale"].to_string(),
        call["guidance_scale_2"].to_string(),
    );
    assert_ne!(g, g2, "the fixture must use two different scales");
    let out = tempfile::tempdir().unwrap();

    let frames = out.path().join("two.safetensors");
    let output = generate(&case, &["--guidance", &g, "--guidance-2", &g2], &frames);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let diff = max_diff(&frames, &case);
    assert!(diff < 1e-3, "frames differ from diffusers by {diff}");

    // One scale for both experts is another video.
    let frames = out.path().join("one.safetensors");
    let output = generate(&case, &["--guidance", &g], &frames);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let diff = max_diff(&frames, &case);
    assert!(diff > 1e-2, "--guidance-2 must matter, got {diff}");
}

#[test]
fn guidance_2_is_refused_for_one_transformer() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_gallop"))
        .args(["generate", "--model", "alibaba/hh1-i2v", "--model-dir"])
        .arg(fixture("ti2v").join("model"))
        .arg("--image")
        .arg(fixture("ti2v").join("image.png"))
        .args(["--prompt", "x", "--guidance-2", "2", "--width", "64"])
        .args(["--height", "32", "--num-frames", "5", "-o"])
        .arg(out.path().join("o.mp4"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("guidance_2 needs a checkpoint with two experts")
            && stderr.contains("has one transformer"),
        "{stderr}"
    );
}
