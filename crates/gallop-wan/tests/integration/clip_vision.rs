//! CLIP vision encoder and preprocessing against transformers (fixtures from
//! scripts/fixtures/encoders.py): penultimate hidden states for exact and quick GELU, Wan's
//! CLIPImageProcessor on real images, and image-to-embeddings end to end.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use gallop_wan::clip::{ClipImageProcessor, ClipVisionEncoder};
use gallop_wan::testing::assert_close;

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/clip")
        .join(case)
}

fn load(path: PathBuf) -> std::collections::HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn check(case: &str) {
    let dir = fixture(case);
    let pixels = &load(dir.join("inputs.safetensors"))["pixel_values"];
    let expected = &load(dir.join("outputs.safetensors"))["image_embeds"];
    let encoder = ClipVisionEncoder::from_dir(&dir, DType::F32, &Device::Cpu).unwrap();
    let out = encoder.forward(pixels).unwrap();
    assert_eq!(out.dims(), &[2, 17, 32]);
    assert_close(case, &out, expected, 1e-4);
}

#[test]
fn exact_gelu_penultimate_states_match_transformers() {
    check("gelu");
}

#[test]
fn quick_gelu_at_large_weight_scale_matches_transformers() {
    check("quick_gelu_large");
}

#[test]
fn wan_preprocessing_matches_clip_image_processor_exactly() {
    let dir = fixture("preprocess");
    let expected = load(dir.join("outputs.safetensors"));
    let processor = ClipImageProcessor::from_path(&dir.join("wan")).unwrap();
    for name in ["landscape", "portrait"] {
        let image = image::open(dir.join(format!("{name}.png"))).unwrap();
        let got = processor.preprocess(&[image], &Device::Cpu).unwrap();
        assert_eq!(got.dims(), &[1, 3, 224, 224]);
        // Bit-exact resize and float32 arithmetic: the difference must be zero, not merely small.
        let diff = (got - &expected[&format!("{name}.pixel_values")]).unwrap();
        let max = diff
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(max, 0.0, "{name}: pixel_values differ by up to {max}");
    }
}

#[test]
fn image_to_embeddings_end_to_end() {
    let dir = fixture("preprocess");
    let expected = load(dir.join("outputs.safetensors"));
    let processor = ClipImageProcessor::from_path(&dir.join("tiny")).unwrap();
    let image = image::open(dir.join("landscape.png")).unwrap();
    let pixels = processor.preprocess(&[image], &Device::Cpu).unwrap();
    assert_close(
        "tiny pixel_values",
        &pixels,
        &expected["tiny.pixel_values"],
        1e-6,
    );
    let encoder = ClipVisionEncoder::from_dir(&fixture("gelu"), DType::F32, &Device::Cpu).unwrap();
    let embeds = encoder.forward(&pixels).unwrap();
    assert_close(
        "tiny image_embeds",
        &embeds,
        &expected["tiny.image_embeds"],
        1e-4,
    );
}

#[test]
fn debug_forward_image_encoder_writes_image_embeds() {
    let dir = fixture("quick_gelu_large");
    let out = tempfile::tempdir().unwrap();
    let out_file = out.path().join("out.safetensors");
    gallop_wan::debug::forward(
        "image-encoder",
        &dir,
        &dir.join("inputs.safetensors"),
        &out_file,
    )
    .unwrap();
    let got = &load(out_file)["image_embeds"];
    assert_close(
        "debug forward",
        got,
        &load(dir.join("outputs.safetensors"))["image_embeds"],
        1e-4,
    );
}

#[test]
fn wrong_pixel_shape_is_refused_naming_the_input() {
    let encoder = ClipVisionEncoder::from_dir(&fixture("gelu"), DType::F32, &Device::Cpu).unwrap();
    let pixels = candle_core::Tensor::zeros((1, 3, 28, 28), DType::F32, &Device::Cpu).unwrap();
    let err = encoder.forward(&pixels).unwrap_err().to_string();
    assert!(err.contains("pixel_values") && err.contains("56"), "{err}");
}

#[test]
fn an_image_encoder_saved_without_the_vision_model_prefix_loads_the_same() {
    // transformers 5 saves CLIPVisionModel's weights bare (`embeddings.patch_embedding.weight`);
    // the published Wan2.1-I2V checkpoints have `vision_model.` in front.
    let source = fixture("gelu");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(source.join("config.json"), dir.path().join("config.json")).unwrap();
    let bare: std::collections::HashMap<String, candle_core::Tensor> =
        load(source.join("model.safetensors"))
            .into_iter()
            .map(|(k, v)| (k.trim_start_matches("vision_model.").to_string(), v))
            .collect();
    assert!(bare.keys().all(|k| !k.starts_with("vision_model.")));
    candle_core::safetensors::save(&bare, dir.path().join("model.safetensors")).unwrap();
    let pixels = &load(source.join("inputs.safetensors"))["pixel_values"];
    let expected = &load(source.join("outputs.safetensors"))["image_embeds"];
    let encoder = ClipVisionEncoder::from_dir(dir.path(), DType::F32, &Device::Cpu).unwrap();
    assert_close(
        "bare keys",
        &encoder.forward(pixels).unwrap(),
        expected,
        1e-4,
    );
}
