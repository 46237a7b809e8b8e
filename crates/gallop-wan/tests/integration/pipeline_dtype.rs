//! The pipeline with `--dtype bf16/f16` on the CPU: the transformers' and text/image encoders'
//! matrices (and the T5 token table) are held in that dtype, everything computes in f32 beside
//! the f32 latents, scheduler and VAE. The fixtures' weights are f32, so holding them in bf16
//! rounds each matrix once and the frames stay near the f32 run's; a bf16 copy of a fixture (as
//! the published checkpoints are stored) held in bf16 gives the frames of converting it to f32
//! on load, bit for bit.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, Tensor};
use gallop_engine::{RunContext, discard_frames};
use gallop_wan::pipeline::{GenerateArgs, WanPipeline, gaussian_noise, image_to_tensor};

fn model(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pipelines")
        .join(case)
}

/// Frames `[F, H, W, 3]` of a 2-step, guided 64x32x5 run of `case` with weights in `dtype`.
fn frames(case: &str, dtype: DType) -> Tensor {
    frames_of(case, &model(case).join("model"), dtype)
}

/// As [`frames`], with the checkpoint at `model_dir` (the case's image and sizes).
fn frames_of(case: &str, model_dir: &Path, dtype: DType) -> Tensor {
    let device = Device::Cpu;
    let dir = model(case);
    let pipeline = WanPipeline::load(model_dir, dtype, &device).unwrap();
    // The matrices are held in `dtype`; the VAE is f32 whatever the dtype.
    assert_eq!(pipeline.transformer().weight_dtype(), dtype, "{case}");
    assert_eq!(
        pipeline.text_encoder().unwrap().encoder.weight_dtype(),
        dtype
    );
    if let Some(clip) = pipeline.image_encoder() {
        assert_eq!(clip.weight_dtype(), dtype);
    }
    let rgb = image::open(dir.join("image.png")).unwrap().to_rgb8();
    let call: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let num = |k: &str| call[k].as_u64().unwrap() as usize;
    let (height, width, num_frames) = (num("height"), num("width"), num("num_frames"));
    let shape = pipeline.latent_shape(height, width, num_frames, 0);
    let prompt = pipeline.encode_prompt("a horse on the beach").unwrap();
    assert_eq!(
        prompt.dtype(),
        DType::F32,
        "the text encoder computes in f32"
    );
    let args = GenerateArgs {
        prompt_embeds: prompt,
        negative_prompt_embeds: Some(pipeline.encode_prompt("blurry").unwrap()),
        image: Some(image_to_tensor(&rgb, &device).unwrap()),
        height,
        width,
        num_frames,
        steps: 2,
        guidance_scale: 5.0,
        guidance_scale_2: None,
        latents: gaussian_noise(&shape, 11, &device).unwrap(),
        image_embeds: pipeline.encode_image(&rgb).unwrap(),
        reference_images: Vec::new(),
        conditioning_scale: 1.0,
        leading_frames: None,
    };
    let cancel = AtomicBool::new(false);
    let mut progress = |_| {};
    let mut discard = discard_frames;
    let mut ctx = RunContext::new(&mut progress, &cancel, &mut discard);
    let latents = pipeline.denoise(&args, &mut ctx).unwrap();
    assert_eq!(latents.dtype(), DType::F32, "latents stay f32");
    let frames = pipeline.decode(&latents).unwrap();
    assert_eq!(frames.dtype(), DType::F32, "frames come back f32");
    frames
}

/// (mean, max) absolute difference over all frame values (range [0, 1]).
fn abs_diff(a: &Tensor, b: &Tensor) -> (f32, f32) {
    let d = (a - b).unwrap().abs().unwrap();
    let mean = d.mean_all().unwrap().to_scalar::<f32>().unwrap();
    (mean, gallop_wan::testing::max_abs_diff(a, b).unwrap())
}

#[test]
fn weights_held_in_half_precision_run_the_whole_recipe_near_f32() {
    // ti2v: first-frame latent and per-token timesteps; a14b: two experts and mask channels;
    // i2v21: CLIP image tokens (its encoder held in bf16 too: the patch conv stays f32).
    // Measured (mean / max over frame values in [0, 1]): ti2v bf16 2.0e-4 / 4.2e-3, f16
    // 1.2e-5 / 2.4e-4; a14b bf16 4.3e-5 / 1.7e-3, f16 5.4e-6 / 3.3e-4; i2v21 bf16 7.2e-5 /
    // 6.7e-3, f16 9.3e-6 / 7.0e-4. bf16 keeps 8 mantissa bits (a weight moves by up to 2^-9
    // relative), f16 11; the largest change stays under two 8-bit levels (2/255 = 7.8e-3), the
    // mean under a tenth of one. Bounds are ~5x the worst mean and ~2-3x the worst max. For
    // scale: the same run computing in bf16 (what CUDA does) was 0.027 off on ti2v, and the f32
    // run's frames in reverse order differ by 0.23-0.69.
    let cases = ["ti2v", "a14b", "i2v21"];
    for case in cases {
        let reference = frames(case, DType::F32);
        for (dtype, mean_bound, max_bound) in [(DType::BF16, 1e-3, 0.02), (DType::F16, 1e-4, 2e-3)]
        {
            let frames = frames(case, dtype);
            assert_eq!(frames.dims(), reference.dims());
            let (mean, max) = abs_diff(&frames, &reference);
            assert!(
                mean > 0.0 && mean < mean_bound && max < max_bound,
                "{case} {dtype:?}: frames differ from f32 by {mean} on average, {max} at most \
                 (bounds {mean_bound}, {max_bound}; 0 means the weights were not rounded)"
            );
        }
    }
}

/// A copy of `case`'s checkpoint with every float tensor of the transformers and the text
/// encoder stored in bf16, as the published Wan checkpoints store them.
fn bf16_checkpoint(case: &str, into: &Path) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            let target = to.join(path.file_name().unwrap());
            if path.is_dir() {
                copy(&path, &target);
            } else {
                std::fs::copy(&path, &target).unwrap();
            }
        }
    }
    let out = into.join("model");
    copy(&model(case).join("model"), &out);
    for component in ["transformer", "transformer_2", "text_encoder"] {
        let Ok(files) = std::fs::read_dir(out.join(component)) else {
            continue;
        };
        for file in files {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "safetensors") {
                let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
                let tensors: std::collections::HashMap<String, Tensor> = tensors
                    .into_iter()
                    .map(|(name, t)| {
                        let t = match t.dtype() {
                            DType::F32 => t.to_dtype(DType::BF16).unwrap(),
                            _ => t,
                        };
                        (name, t)
                    })
                    .collect();
                candle_core::safetensors::save(&tensors, &path).unwrap();
            }
        }
    }
    out
}

#[test]
fn a_bf16_checkpoint_held_in_bf16_gives_the_f32_runs_frames_bit_for_bit() {
    // bf16 -> f32 is exact: holding a bf16 checkpoint's matrices in bf16 and widening them per
    // matmul computes on the same f32 values as converting them all on load.
    for case in ["ti2v", "a14b"] {
        let dir = tempfile::tempdir().unwrap();
        let model_dir = bf16_checkpoint(case, dir.path());
        let widened_on_load = frames_of(case, &model_dir, DType::F32);
        let held = frames_of(case, &model_dir, DType::BF16);
        let bits = |t: &Tensor| gallop_wan::testing::f32_bits(t).unwrap();
        assert!(
            bits(&held) == bits(&widened_on_load),
            "{case}: frames differ"
        );
        // And the checkpoint is really bf16: its frames are not the f32 fixture's.
        assert!(bits(&held) != bits(&frames(case, DType::F32)), "{case}");
    }
}
