//! `WanEngine` through the `gallop_engine::Engine` trait on the tiny checkpoints: the test path
//! (exact size, frames, noise from a file) reproduces diffusers' frames (TI2V-5B-style, A14B-style
//! with a guidance scale per expert, VACE); the default path maps the seeds' geometry onto the
//! checkpoint.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use candle_core::Device;
use gallop_api::{GenerationRequest, Geometry, ModelId, Resolution};
use gallop_engine::{Engine, EngineError, EngineInput, Progress, RunContext};
use gallop_wan::{WanDebug, WanEngine, WanSettings};
use image::RgbImage;

fn case_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pipelines")
        .join(name)
}

/// Loads the checkpoint in `dir` with `settings` and the debug overrides `debug`.
fn load(dir: &Path, settings: WanSettings, debug: WanDebug) -> gallop_wan::Result<WanEngine> {
    let settings = WanSettings {
        model_dir: Some(dir.to_path_buf()),
        ..settings
    };
    Ok(WanEngine::load(settings)?.with_debug(debug))
}

fn request(negative: &str) -> GenerationRequest {
    let call: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case_dir("ti2v").join("case.json")).unwrap())
            .unwrap();
    GenerationRequest {
        model: ModelId::HhI2v,
        prompt: call["prompt"].as_str().unwrap().to_string(),
        negative_prompt: Some(negative.to_string()),
        images: vec!["file:///image.png".into()],
        resolution: Resolution::P720,
        ratio: None,
        duration: 3,
        seed: Some(7),
        watermark: false,
    }
}

/// Runs the engine, collecting frames and progress.
fn run(
    engine: &WanEngine,
    request: &GenerationRequest,
    image: &RgbImage,
    geometry: Geometry,
    cancel: bool,
) -> (Result<(), EngineError>, Vec<RgbImage>, Vec<Progress>) {
    let mut frames = Vec::new();
    let mut progress = Vec::new();
    let cancel = AtomicBool::new(cancel);
    let images = [image.clone()];
    let input = EngineInput {
        request,
        images: &images,
        geometry,
        seed: 7,
    };
    let result = {
        let mut on_progress = |p: Progress| progress.push(p);
        let mut sink = |f: RgbImage| -> Result<(), String> {
            frames.push(f);
            Ok(())
        };
        let mut ctx = RunContext::new(&mut on_progress, &cancel, &mut sink);
        engine.generate(&input, &mut ctx)
    };
    (result, frames, progress)
}

#[test]
fn test_path_reproduces_diffusers_frames() {
    let dir = case_dir("ti2v");
    let dump = tempfile::tempdir().unwrap();
    let dump_path = dump.path().join("frames.safetensors");
    let settings = WanSettings {
        steps: Some(3),
        guidance: Some(5.0),
        ..Default::default()
    };
    let debug = WanDebug {
        width: Some(64),
        height: Some(32),
        num_frames: Some(5),
        init_noise: Some(dir.join("inputs.safetensors")),
        dump_frames: Some(dump_path.clone()),
        ..Default::default()
    };
    let engine = load(&dir.join("model"), settings, debug).unwrap();
    let info = engine.info();
    assert_eq!(info.engine, "wan");
    assert_eq!(
        info.checkpoint.as_deref(),
        Some(dir.join("model").display().to_string().as_str())
    );

    let image = image::open(dir.join("image.png")).unwrap().to_rgb8();
    let geometry = Geometry {
        width: 64,
        height: 32,
        fps: 24,
        frames: 5,
    };
    let (result, frames, progress) = run(
        &engine,
        &request("blurry, static, low quality"),
        &image,
        geometry,
        false,
    );
    result.unwrap();
    assert_eq!(frames.len(), 5);
    assert!(frames.iter().all(|f| f.dimensions() == (64, 32)));
    let steps: Vec<u32> = progress.iter().map(|p| p.step).collect();
    assert_eq!(steps, vec![1, 2, 3, 4]);
    assert!(progress.iter().all(|p| p.total == 4));

    let dumped = candle_core::safetensors::load(&dump_path, &Device::Cpu).unwrap();
    let expected = candle_core::safetensors::load(dir.join("outputs.safetensors"), &Device::Cpu)
        .unwrap()["frames"]
        .clone();
    let got = &dumped["frames"];
    let diff = (got - &expected)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap();
    let diff = diff.to_scalar::<f32>().unwrap();
    assert!(diff < 1e-3, "dumped frames differ from diffusers by {diff}");
    // The 8-bit frames are the dumped ones rounded.
    let first: Vec<f32> = got
        .get(0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let bytes = frames[0].as_raw();
    assert!(
        first
            .iter()
            .zip(bytes)
            .all(|(f, &b)| ((f * 255.0).round() as i32 - b as i32).abs() <= 0)
    );
}

#[test]
fn seed_drives_the_noise_and_output_is_resized_to_the_geometry() {
    let dir = case_dir("ti2v");
    let settings = WanSettings {
        steps: Some(2),
        guidance: Some(1.0),
        ..Default::default()
    };
    let debug = WanDebug {
        width: Some(64),
        height: Some(32),
        ..Default::default()
    };
    let engine = load(&dir.join("model"), settings, debug).unwrap();
    let image = image::open(dir.join("image.png")).unwrap().to_rgb8();
    // 12 output frames at 24 fps from 13 generated at the 5B family's native 24 fps,
    // resized from 64x32 to 80x40.
    let geometry = Geometry {
        width: 80,
        height: 40,
        fps: 24,
        frames: 12,
    };
    let req = request("");
    let (a, frames_a, _) = run(&engine, &req, &image, geometry, false);
    a.unwrap();
    assert_eq!(frames_a.len(), 12);
    assert!(frames_a.iter().all(|f| f.dimensions() == (80, 40)));
    let (b, frames_b, _) = run(&engine, &req, &image, geometry, false);
    b.unwrap();
    assert_eq!(
        frames_a, frames_b,
        "the same seed must give the same frames"
    );
    assert_ne!(frames_a[0], frames_a[11], "the video must move");
}

#[test]
fn cancel_is_reported_as_cancelled() {
    let dir = case_dir("ti2v");
    let settings = WanSettings {
        steps: Some(2),
        ..Default::default()
    };
    let debug = WanDebug {
        width: Some(64),
        height: Some(32),
        num_frames: Some(5),
        ..Default::default()
    };
    let engine = load(&dir.join("model"), settings, debug).unwrap();
    let image = image::open(dir.join("image.png")).unwrap().to_rgb8();
    let geometry = Geometry {
        width: 64,
        height: 32,
        fps: 24,
        frames: 5,
    };
    let (result, frames, _) = run(&engine, &request("x"), &image, geometry, true);
    assert!(matches!(result, Err(EngineError::Cancelled)), "{result:?}");
    assert!(frames.is_empty());
}

#[test]
fn seeds_geometry_maps_to_native_size_and_frames() {
    let dir = case_dir("ti2v");
    let engine = load(
        &dir.join("model"),
        WanSettings::default(),
        WanDebug::default(),
    )
    .unwrap();
    // 720P 16:9 on a Wan2.2-5B-style checkpoint: 1280x704 (multiples of 32), 73 frames at 24 fps
    // for 3 s.
    assert_eq!(engine.generation_size(1280, 720), (1280, 704));
    assert_eq!(engine.generation_frames(72, 24), 73);
    // 1080P is generated at the native area and upscaled after decoding.
    let (w, h) = engine.generation_size(1920, 1080);
    assert!(w * h <= 1280 * 704 && w % 32 == 0 && h % 32 == 0, "{w}x{h}");
    // A 16 fps family (Wan2.1 VAE): 3 s -> 49 frames.
    let a14b = load(
        &case_dir("a14b").join("model"),
        WanSettings::default(),
        WanDebug::default(),
    )
    .unwrap();
    assert_eq!(a14b.generation_frames(72, 24), 49);
    assert_eq!(a14b.generation_size(1280, 720), (1280, 720));
}

#[test]
fn wrong_model_for_checkpoint_is_refused() {
    let dir = case_dir("t2v");
    let engine = load(
        &dir.join("model"),
        WanSettings::default(),
        WanDebug::default(),
    )
    .unwrap();
    let image = RgbImage::new(48, 32);
    let geometry = Geometry {
        width: 48,
        height: 32,
        fps: 24,
        frames: 5,
    };
    let (result, _, _) = run(&engine, &request("x"), &image, geometry, false);
    let msg = result.unwrap_err().to_string();
    assert!(
        msg.contains("TextToVideo") && msg.contains("alibaba/hh1-i2v"),
        "{msg}"
    );
}

/// r2v through the engine on the tiny VACE checkpoint: two references, the fixture's noise,
/// frames within 1e-3 of diffusers'.
#[test]
fn r2v_references_reproduce_diffusers_frames() {
    let dir = case_dir("vace/refs2");
    let call: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let dump = tempfile::tempdir().unwrap();
    let dump_path = dump.path().join("frames.safetensors");
    let settings = WanSettings {
        steps: Some(3),
        guidance: Some(4.0),
        conditioning_scale: call["conditioning_scale"].as_f64(),
        ..Default::default()
    };
    let debug = WanDebug {
        width: Some(48),
        height: Some(32),
        num_frames: Some(9),
        init_noise: Some(dir.join("inputs.safetensors")),
        dump_frames: Some(dump_path.clone()),
        ..Default::default()
    };
    let engine = load(&case_dir("vace").join("model"), settings, debug).unwrap();
    let refs = [
        image::open(dir.join("ref0.png")).unwrap().to_rgb8(),
        image::open(dir.join("ref1.png")).unwrap().to_rgb8(),
    ];
    let mut request = request(call["negative_prompt"].as_str().unwrap());
    request.model = ModelId::HhR2v;
    request.prompt = call["prompt"].as_str().unwrap().to_string();
    let geometry = Geometry {
        width: 48,
        height: 32,
        fps: 24,
        frames: 9,
    };
    let mut frames = Vec::new();
    let cancel = AtomicBool::new(false);
    let input = EngineInput {
        request: &request,
        images: &refs,
        geometry,
        seed: 7,
    };
    {
        let mut on_progress = |_: Progress| {};
        let mut sink = |f: RgbImage| -> Result<(), String> {
            frames.push(f);
            Ok(())
        };
        let mut ctx = RunContext::new(&mut on_progress, &cancel, &mut sink);
        engine.generate(&input, &mut ctx).unwrap();
    }
    assert_eq!(frames.len(), 9);
    let dumped = candle_core::safetensors::load(&dump_path, &Device::Cpu).unwrap();
    let expected = candle_core::safetensors::load(dir.join("outputs.safetensors"), &Device::Cpu)
        .unwrap()["frames"]
        .clone();
    let diff = (&dumped["frames"] - &expected)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap();
    let diff = diff.max(0).unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-3, "r2v frames differ from diffusers by {diff}");
}

/// Max abs difference between the frames dumped to `path` and a fixture's diffusers frames.
fn max_diff_from_diffusers(path: &Path, case: &Path) -> f32 {
    let dumped = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let expected = candle_core::safetensors::load(case.join("outputs.safetensors"), &Device::Cpu)
        .unwrap()["frames"]
        .clone();
    gallop_wan::testing::max_abs_diff(&dumped["frames"], &expected).unwrap()
}

/// Runs the A14B-style fixture's call through the engine with `guidance_2`; returns the max
/// abs difference from diffusers' frames (made with guidance_scale 3.5, guidance_scale_2 2.0).
fn a14b_run(guidance_2: Option<f64>) -> f32 {
    let dir = case_dir("a14b");
    let call: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let dump = tempfile::tempdir().unwrap();
    let dump_path = dump.path().join("frames.safetensors");
    let settings = WanSettings {
        steps: Some(call["num_inference_steps"].as_u64().unwrap() as usize),
        guidance: call["guidance_scale"].as_f64(),
        guidance_2,
        ..Default::default()
    };
    let debug = WanDebug {
        width: Some(48),
        height: Some(32),
        num_frames: Some(5),
        init_noise: Some(dir.join("inputs.safetensors")),
        dump_frames: Some(dump_path.clone()),
        ..Default::default()
    };
    let engine = load(&dir.join("model"), settings, debug).unwrap();
    let image = image::open(dir.join("image.png")).unwrap().to_rgb8();
    let mut request = request(call["negative_prompt"].as_str().unwrap());
    request.prompt = call["prompt"].as_str().unwrap().to_string();
    let geometry = Geometry {
        width: 48,
        height: 32,
        fps: 24,
        frames: 5,
    };
    let (result, frames, _) = run(&engine, &request, &image, geometry, false);
    result.unwrap();
    assert_eq!(frames.len(), 5);
    max_diff_from_diffusers(&dump_path, &dir)
}

/// `guidance_2` reaches the low-noise expert: with the fixture's two scales the engine matches
/// diffusers; with `guidance` for both experts it does not.
#[test]
fn a14b_guidance_2_reaches_the_second_expert() {
    let call: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case_dir("a14b").join("case.json")).unwrap())
            .unwrap();
    let guidance_2 = call["guidance_scale_2"].as_f64().unwrap();
    assert_ne!(Some(guidance_2), call["guidance_scale"].as_f64());
    let diff = a14b_run(Some(guidance_2));
    assert!(diff < 1e-3, "A14B frames differ from diffusers by {diff}");
    let diff = a14b_run(None);
    assert!(
        diff > 1e-2,
        "without guidance_2 the frames must differ from diffusers' two-scale run, got {diff}"
    );
}

/// Without settings, an A14B checkpoint runs the published Wan2.2-I2V-A14B recipe (40 steps,
/// 3.5 for both experts); a given `guidance` applies to both experts unless `guidance_2` is
/// given; one-transformer checkpoints have no second scale.
#[test]
fn guidance_defaults_follow_the_recipes() {
    let a14b = case_dir("a14b").join("model");
    let engine = load(&a14b, WanSettings::default(), WanDebug::default()).unwrap();
    assert_eq!(engine.guidance_scales(), (3.5, Some(3.5)));
    assert_eq!(engine.steps(), 40);
    let with = |guidance, guidance_2| {
        let settings = WanSettings {
            guidance,
            guidance_2,
            ..Default::default()
        };
        let debug = WanDebug::default();
        load(&a14b, settings, debug).unwrap().guidance_scales()
    };
    assert_eq!(with(Some(5.0), None), (5.0, Some(5.0)));
    assert_eq!(with(None, Some(2.0)), (3.5, Some(2.0)));
    assert_eq!(with(Some(4.0), Some(2.0)), (4.0, Some(2.0)));

    let ti2v = load(
        &case_dir("ti2v").join("model"),
        WanSettings::default(),
        WanDebug::default(),
    )
    .unwrap();
    assert_eq!(ti2v.guidance_scales(), (5.0, None));
    assert_eq!(ti2v.steps(), 50);
}

#[test]
fn guidance_2_is_refused_where_it_cannot_apply() {
    let settings = WanSettings {
        guidance_2: Some(2.0),
        ..Default::default()
    };
    let debug = WanDebug::default();
    let err = load(&case_dir("ti2v").join("model"), settings, debug)
        .err()
        .expect("a one-transformer checkpoint refuses guidance_2")
        .to_string();
    assert!(
        err.contains("guidance_2") && err.contains("one transformer"),
        "{err}"
    );

    // Guidance off (<= 1) turns classifier-free guidance off for both experts, as in diffusers.
    let settings = WanSettings {
        guidance: Some(1.0),
        guidance_2: Some(3.0),
        ..Default::default()
    };
    let debug = WanDebug::default();
    let err = load(&case_dir("a14b").join("model"), settings, debug)
        .err()
        .expect("guidance_2 without guidance is refused")
        .to_string();
    assert!(
        err.contains("guidance_2 3") && err.contains("guidance 1 <= 1"),
        "{err}"
    );
}
