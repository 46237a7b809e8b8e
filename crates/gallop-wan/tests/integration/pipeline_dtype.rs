//! The pipeline with half-precision weights (what `--dtype bf16/f16` loads on CUDA), run on the
//! CPU: bf16/f16 transformers and text/image encoders beside f32 latents, scheduler and VAE fit
//! together, and the frames stay near the f32 run's. (`gallop` refuses these dtypes on the CPU:
//! candle's CPU matmul widens bf16 to f32 anyway, and its conv2d has no bf16.)

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, Tensor};
use gallop_wan::pipeline::{GenerateArgs, StepHooks, WanPipeline, gaussian_noise, image_to_tensor};

fn model(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pipelines")
        .join(case)
}

/// Frames `[F, H, W, 3]` of a 2-step, guided 64x32x5 run of `case` with weights in `dtype`.
fn frames(case: &str, dtype: DType) -> Tensor {
    let device = Device::Cpu;
    let dir = model(case);
    let pipeline = WanPipeline::load(&dir.join("model"), dtype, &device).unwrap();
    let rgb = image::open(dir.join("image.png")).unwrap().to_rgb8();
    let call: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let num = |k: &str| call[k].as_u64().unwrap() as usize;
    let (height, width, num_frames) = (num("height"), num("width"), num("num_frames"));
    let shape = pipeline.latent_shape(height, width, num_frames, 0);
    let args = GenerateArgs {
        prompt_embeds: pipeline.encode_prompt("a horse on the beach").unwrap(),
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
    };
    let cancel = AtomicBool::new(false);
    let hooks = StepHooks {
        progress: &mut |_, _| {},
        cancel: &cancel,
    };
    let latents = pipeline.denoise(&args, hooks).unwrap();
    assert_eq!(latents.dtype(), DType::F32, "latents stay f32");
    let frames = pipeline.decode(&latents).unwrap();
    assert_eq!(frames.dtype(), DType::F32, "frames come back f32");
    frames
}

/// Mean absolute difference over all frame values (range [0, 1]).
fn mean_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn half_precision_weights_run_the_whole_recipe_near_f32() {
    // ti2v: first-frame latent and per-token timesteps; a14b: two experts and mask channels;
    // i2v21: CLIP image tokens (f16 only: candle's CPU conv2d has no bf16 matmul).
    // Bounds on the mean over frames, measured: ti2v bf16 0.027 / f16 0.0026, a14b bf16 0.0041 /
    // f16 0.0007, i2v21 f16 0.0003; frames of the f32 run in reverse order differ by 0.23-0.69
    // at most. ti2v's bf16 error is 4x torch's bf16 at the transformer (candle's CPU softmax
    // sums bf16 in bf16), amplified by guidance 5.
    let cases = [
        ("ti2v", &[(DType::BF16, 0.05), (DType::F16, 0.005)][..]),
        ("a14b", &[(DType::BF16, 0.01), (DType::F16, 0.002)]),
        ("i2v21", &[(DType::F16, 0.001)]),
    ];
    for (case, runs) in cases {
        let reference = frames(case, DType::F32);
        for &(dtype, bound) in runs {
            let frames = frames(case, dtype);
            assert_eq!(frames.dims(), reference.dims());
            let diff = mean_abs_diff(&frames, &reference);
            assert!(
                diff > 0.0 && diff < bound,
                "{case} {dtype:?}: frames differ from f32 by {diff} on average (bound {bound}; \
                 0 means the weights were not converted)"
            );
        }
    }
}
