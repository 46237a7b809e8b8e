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
