//! `--device` and `--dtype` (and the serve config's `device`/`dtype` keys) with the real binary
//! on a tiny checkpoint: refusals exit 2 before any weights load, naming the flag or key and the
//! rule, and write nothing; `--device cpu --dtype f32` is exactly the default run; bf16/f16 on
//! the CPU run (weights held in that dtype, f32 compute) and say so where the engine is reported.

use crate::support;

use support::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../gallop-wan/tests/fixtures/pipelines")
        .join(case)
}

/// `gallop generate` on the TI2V fixture at its test size (one step, guidance off), writing
/// `out` (and the decoded frames to `frames`), with `extra` flags.
fn generate(out: &Path, frames: &Path, extra: &[&str]) -> Output {
    let case = fixture("ti2v");
    Command::new(GALLOP)
        .args(["generate", "--model", "alibaba/hh1-i2v", "--model-dir"])
        .arg(case.join("model"))
        .arg("--image")
        .arg(case.join("image.png"))
        .args(["--prompt", "a horse", "--seed", "3", "--steps", "1"])
        .args(["--guidance", "1", "--width", "64", "--height", "32"])
        .args(["--num-frames", "5", "--dump-frames"])
        .arg(frames)
        .args(extra)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap()
}

/// Runs a refused `gallop generate` and checks it exits 2 and writes no file; returns stderr.
fn refused(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (mp4, frames) = (dir.path().join("o.mp4"), dir.path().join("f.safetensors"));
    let output = generate(&mp4, &frames, extra);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{extra:?}: {stderr}");
    assert!(!mp4.exists() && !frames.exists(), "{extra:?} wrote a file");
    stderr
}

#[cfg(not(feature = "cuda"))]
#[test]
fn device_cuda_in_a_cpu_build_is_refused_with_the_rebuild_hint() {
    for device in ["cuda", "cuda:1"] {
        let stderr = refused(&["--device", device]);
        assert!(
            stderr.contains("--device: cuda:")
                && stderr.contains("built without CUDA")
                && stderr.contains("cargo build --release --features cuda"),
            "{stderr}"
        );
    }
}

#[test]
fn half_precision_on_the_cpu_runs_and_reports_held_weights() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in ["bf16", "f16"] {
        let mp4 = dir.path().join(format!("{dtype}.mp4"));
        let frames = dir.path().join(format!("{dtype}.safetensors"));
        let output = generate(&mp4, &frames, &["--dtype", dtype]);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{dtype}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains(&format!(") on cpu, {dtype} weights (f32 compute)\n")),
            "{stdout}"
        );
        assert!(mp4.exists() && frames.exists(), "{dtype} wrote no video");
    }
}

#[test]
fn unknown_device_and_dtype_values_are_refused_naming_the_flag() {
    let stderr = refused(&["--device", "gpu"]);
    assert!(
        stderr.contains("'--device <DEVICE>'") && stderr.contains("must be cpu, cuda or cuda:N"),
        "{stderr}"
    );
    let stderr = refused(&["--dtype", "f64"]);
    assert!(
        stderr.contains("'--dtype <DTYPE>'") && stderr.contains("must be f32, bf16 or f16"),
        "{stderr}"
    );
}

#[test]
fn cpu_f32_flags_give_the_default_runs_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[&str]| {
        let mp4 = dir.path().join(format!("{name}.mp4"));
        let frames = dir.path().join(format!("{name}.safetensors"));
        let output = generate(&mp4, &frames, extra);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains(") on cpu, f32\n"), "{stdout}");
        (std::fs::read(mp4).unwrap(), std::fs::read(frames).unwrap())
    };
    let (default_mp4, default_frames) = run("default", &[]);
    let (flagged_mp4, flagged_frames) = run("flagged", &["--device", "cpu", "--dtype", "f32"]);
    assert!(default_frames == flagged_frames, "decoded frames differ");
    assert!(default_mp4 == flagged_mp4, "MP4 bytes differ");
}

/// `gallop serve` with `args`; it must exit with code 2 within a minute. Returns stderr.
fn serve_refuses(args: &[&str]) -> String {
    let (code, stderr) = serve_exit(args);
    assert_eq!(code, Some(2), "{args:?}: {stderr}");
    stderr
}

/// `gallop serve --config` over one i2v entry with `keys` added; must be refused.
fn config_refused(keys: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gallop.toml");
    std::fs::write(
        &config,
        format!(
            "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"{}\"\n{keys}",
            fixture("ti2v").join("model").display()
        ),
    )
    .unwrap();
    serve_refuses(&["--config", config.to_str().unwrap()])
}

#[test]
fn serve_config_refuses_unknown_dtype_and_device_values_naming_the_key() {
    let stderr = config_refused("dtype = \"float16\"\n");
    assert!(
        stderr.contains("models.\"alibaba/hh1-i2v\".dtype: must be f32, bf16 or f16"),
        "{stderr}"
    );
    let stderr = config_refused("device = \"gpu0\"\n");
    assert!(
        stderr.contains("models.\"alibaba/hh1-i2v\".device: must be cpu, cuda or cuda:N"),
        "{stderr}"
    );
}

#[cfg(not(feature = "cuda"))]
#[test]
fn serve_refuses_cuda_in_a_cpu_build_naming_the_key_or_flag() {
    let stderr = config_refused("device = \"cuda:0\"\ndtype = \"bf16\"\n");
    assert!(
        stderr.contains("models.\"alibaba/hh1-i2v\".device: cuda:0 needs CUDA")
            && stderr.contains("cargo build --release --features cuda"),
        "{stderr}"
    );
    let model = fixture("ti2v").join("model");
    let stderr = serve_refuses(&["--model-dir", model.to_str().unwrap(), "--device", "cuda"]);
    assert!(
        stderr.contains("--device: cuda:0 needs CUDA")
            && stderr.contains("cargo build --release --features cuda"),
        "{stderr}"
    );
}

#[test]
fn serve_reports_the_device_and_dtype_at_startup() {
    let model = fixture("ti2v").join("model");
    for (dtype, report) in [
        ("f32", ", on cpu, f32"),
        ("bf16", ", on cpu, bf16 weights (f32 compute)"),
    ] {
        let data = tempfile::tempdir().unwrap();
        let server = Server::start(
            &data.path().join("data"),
            &free_addr(),
            &[
                "--model-dir",
                model.to_str().unwrap(),
                "--device",
                "cpu",
                "--dtype",
                dtype,
            ],
        );
        let lines = server.startup_lines();
        let line = lines
            .iter()
            .find(|l| l.starts_with("alibaba/hh1-i2v:"))
            .unwrap_or_else(|| panic!("no engine line: {lines:?}"));
        assert!(
            line.contains("wan engine") && line.ends_with(report),
            "{dtype}: {line}"
        );
    }
}
