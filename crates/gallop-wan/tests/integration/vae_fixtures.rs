//! The Wan VAEs against diffusers' golden fixtures (scripts/fixtures/vae.py): encode at 1, 5, 9
//! and 13 frames, decode at 1-4 latent frames (one case batch 2), streaming decode, tiled encode
//! and decode, latent normalisation, and the `gallop debug forward` path. f32, relative error < 1e-4.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use gallop_wan::testing::assert_close;
use gallop_wan::vae::{AutoencoderKLWan, TileConfig};

const TOL: f32 = 1e-4;

fn case_dir(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vae")
        .join(case)
}

struct Case {
    vae: AutoencoderKLWan,
    inputs: HashMap<String, Tensor>,
    outputs: HashMap<String, Tensor>,
    tiles: TileConfig,
}

impl Case {
    fn load(case: &str) -> Case {
        let dir = case_dir(case);
        let vae = AutoencoderKLWan::load(&dir, DType::F32, &Device::Cpu).unwrap();
        let read = |f: &str| candle_core::safetensors::load(dir.join(f), &Device::Cpu).unwrap();
        let tiling: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("tiling.json")).unwrap())
                .unwrap();
        let px = |k: &str| tiling[k].as_u64().unwrap() as usize;
        Case {
            vae,
            inputs: read("inputs.safetensors"),
            outputs: read("outputs.safetensors"),
            tiles: TileConfig {
                min_height: px("tile_sample_min_height"),
                min_width: px("tile_sample_min_width"),
                stride_height: px("tile_sample_stride_height"),
                stride_width: px("tile_sample_stride_width"),
            },
        }
    }

    fn input(&self, key: &str) -> &Tensor {
        self.inputs
            .get(key)
            .unwrap_or_else(|| panic!("fixture input {key}"))
    }

    fn output(&self, key: &str) -> &Tensor {
        self.outputs
            .get(key)
            .unwrap_or_else(|| panic!("fixture output {key}"))
    }
}

fn check_encode(case: &str) {
    let c = Case::load(case);
    for frames in [1, 5, 9, 13] {
        let x = c.input(&format!("encode_f{frames}_sample"));
        let latents = c.vae.encode_with(x, None).unwrap();
        assert_close(
            &format!("{case} encode {frames} frames"),
            &latents,
            c.output(&format!("encode_f{frames}_latents")),
            TOL,
        );
    }
}

fn check_decode(case: &str) {
    let c = Case::load(case);
    for t in [1, 2, 3, 4] {
        let z = c.input(&format!("decode_t{t}_latents"));
        let sample = c.vae.decode_with(z, None).unwrap();
        assert_close(
            &format!("{case} decode {t} latent frames"),
            &sample,
            c.output(&format!("decode_t{t}_sample")),
            TOL,
        );
    }
}

/// Pushing latent frames one by one gives 1 then 4 frames each, and together the whole decode.
fn check_stream(case: &str) {
    let c = Case::load(case);
    let z = c.input("decode_t4_latents");
    let mut stream = c.vae.decode_stream();
    let mut parts = Vec::new();
    for i in 0..4 {
        let frames = stream.push(&z.narrow(2, i, 1).unwrap()).unwrap();
        assert_eq!(
            frames.dim(2).unwrap(),
            if i == 0 { 1 } else { 4 },
            "frames from latent {i}"
        );
        parts.push(frames);
    }
    let streamed = Tensor::cat(&parts, 2).unwrap();
    let whole = c.vae.decode(z).unwrap();
    assert_close(
        &format!("{case} streamed vs whole"),
        &streamed,
        &whole,
        1e-6,
    );
    assert_close(
        &format!("{case} streamed vs diffusers"),
        &streamed,
        c.output("decode_t4_sample"),
        TOL,
    );
}

fn check_tiled(case: &str) {
    let c = Case::load(case);
    let x = c.input("tiled_encode_sample");
    let latents = c.vae.encode_with(x, Some(&c.tiles)).unwrap();
    assert_close(
        &format!("{case} tiled encode"),
        &latents,
        c.output("tiled_encode_latents"),
        TOL,
    );
    let z = c.input("tiled_decode_latents");
    let expected = c.output("tiled_decode_sample");
    let sample = c.vae.decode_with(z, Some(&c.tiles)).unwrap();
    assert_close(&format!("{case} tiled decode"), &sample, expected, TOL);
    // The tiles really changed the result: untiled decode differs from diffusers' tiled one.
    let untiled = c.vae.decode_with(z, None).unwrap();
    let differs = gallop_wan::testing::relative_error(&untiled, expected).unwrap();
    assert!(
        differs > 1e-2,
        "{case}: untiled decode equals tiled ({differs:e}); tiles never ran"
    );
}

fn check_normalisation(case: &str) {
    let c = Case::load(case);
    let z = c.input("norm_latents");
    assert_close(
        "normalise",
        &c.vae.normalize_latents(z).unwrap(),
        c.output("norm_normalised"),
        1e-6,
    );
    assert_close(
        "denormalise",
        &c.vae.denormalize_latents(z).unwrap(),
        c.output("norm_denormalised"),
        1e-6,
    );
}

#[test]
fn wan21_encode_matches_diffusers() {
    check_encode("wan21");
}

#[test]
fn wan21_decode_matches_diffusers() {
    check_decode("wan21");
}

#[test]
fn wan21_streaming_decode_equals_whole_decode() {
    check_stream("wan21");
}

#[test]
fn wan21_tiled_encode_and_decode_match_diffusers() {
    check_tiled("wan21");
}

#[test]
fn wan21_latent_normalisation_matches_pipeline() {
    check_normalisation("wan21");
}

#[test]
fn wan22_encode_matches_diffusers() {
    check_encode("wan22");
}

#[test]
fn wan22_decode_matches_diffusers() {
    check_decode("wan22");
}

#[test]
fn wan22_streaming_decode_equals_whole_decode() {
    check_stream("wan22");
}

#[test]
fn wan22_tiled_encode_and_decode_match_diffusers() {
    check_tiled("wan22");
}

#[test]
fn wan22_latent_normalisation_matches_pipeline() {
    check_normalisation("wan22");
}

/// The same function `gallop debug forward --component vae-encode|vae-decode` calls.
#[test]
fn debug_forward_encode_and_decode() {
    let c = Case::load("wan21");
    let dir = std::env::temp_dir().join(format!("gallop-vae-debug-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |component: &str, name: &str, input: &Tensor| -> Tensor {
        let inputs = dir.join(format!("{component}-in.safetensors"));
        let output = dir.join(format!("{component}-out.safetensors"));
        candle_core::safetensors::save(&[(name, input.clone())].into_iter().collect(), &inputs)
            .unwrap();
        gallop_wan::debug::forward(component, &case_dir("wan21"), &inputs, &output).unwrap();
        let out = candle_core::safetensors::load(&output, &Device::Cpu).unwrap();
        let key = if component == "vae-encode" {
            "latents"
        } else {
            "sample"
        };
        out.get(key)
            .unwrap_or_else(|| panic!("{component} output has no {key}"))
            .clone()
    };
    let latents = run("vae-encode", "sample", c.input("encode_f5_sample"));
    assert_close(
        "debug vae-encode",
        &latents,
        c.output("encode_f5_latents"),
        TOL,
    );
    let sample = run("vae-decode", "latents", c.input("decode_t3_latents"));
    assert_close(
        "debug vae-decode",
        &sample,
        c.output("decode_t3_sample"),
        TOL,
    );

    // A wrongly named input is a clear error naming what is missing.
    let err = gallop_wan::debug::forward(
        "vae-decode",
        &case_dir("wan21"),
        &dir.join("vae-encode-in.safetensors"),
        &dir.join("x.safetensors"),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("\"latents\""), "{err:#}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_inputs_name_the_rule() {
    let c = Case::load("wan21");
    let z = Tensor::zeros((1, 5, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
    let err = c.vae.decode(&z).unwrap_err().to_string();
    assert!(
        err.contains("5 channels") && err.contains("z_dim is 4"),
        "{err}"
    );
    let x = Tensor::zeros((1, 3, 1, 12, 16), DType::F32, &Device::Cpu).unwrap();
    let err = c.vae.encode(&x).unwrap_err().to_string();
    assert!(err.contains("multiples of 8"), "{err}");
    let mut stream = c.vae.decode_stream();
    let two = Tensor::zeros((1, 4, 2, 2, 2), DType::F32, &Device::Cpu).unwrap();
    let err = stream.push(&two).unwrap_err().to_string();
    assert!(err.contains("one latent frame at a time"), "{err}");
}
