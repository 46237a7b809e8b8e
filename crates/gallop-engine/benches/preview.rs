//! Seconds for a 5 s 720P motion preview: the engine alone (frames discarded) and the whole
//! `render_video` path (engine + watermark + H.264 MP4), as `gallop generate` runs it.
//! Run: `cargo bench -p gallop-engine --bench preview`.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use gallop_api::{GenerationRequest, ModelId, Resolution};
use gallop_engine::render::{RenderOptions, render_video};
use gallop_engine::{Engine, EngineInput, PreviewEngine, Progress, RunContext, discard_frames};
use image::{Rgb, RgbImage};

const RUNS: usize = 3;

fn scene(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
        let wave = 40.0 * ((fx * 23.0).sin() * (fy * 17.0).cos());
        Rgb([
            (90.0 + 120.0 * fy + wave).clamp(0.0, 255.0) as u8,
            (140.0 + 60.0 * fx - wave).clamp(0.0, 255.0) as u8,
            (200.0 - 80.0 * fy).clamp(0.0, 255.0) as u8,
        ])
    })
}

fn request(model: ModelId, prompt: &str, images: usize) -> GenerationRequest {
    GenerationRequest {
        model,
        prompt: prompt.into(),
        negative_prompt: None,
        images: (0..images).map(|i| format!("file:///{i}.png")).collect(),
        resolution: Resolution::P720,
        ratio: None,
        duration: 5,
        seed: Some(42),
        watermark: true,
    }
}

fn median(mut secs: Vec<f64>) -> f64 {
    secs.sort_by(f64::total_cmp);
    secs[secs.len() / 2]
}

fn engine_only(req: &GenerationRequest, images: &[RgbImage]) -> f64 {
    let input = EngineInput {
        request: req,
        images,
        geometry: req.geometry(images.first().map(|i| i.dimensions())),
        seed: 42,
    };
    let cancel = AtomicBool::new(false);
    let mut progress = |_: Progress| {};
    let mut sink = |_: RgbImage| Ok(());
    let mut ctx = RunContext::new(&mut progress, &cancel, &mut sink);
    let start = Instant::now();
    PreviewEngine.generate(&input, &mut ctx).unwrap();
    start.elapsed().as_secs_f64()
}

fn whole_render(req: &GenerationRequest, images: &[RgbImage]) -> f64 {
    let cancel = AtomicBool::new(false);
    let mut progress = |_: Progress| {};
    let mut discard = discard_frames;
    let ctx = RunContext::new(&mut progress, &cancel, &mut discard);
    let start = Instant::now();
    let out = render_video(&PreviewEngine, req, images, &RenderOptions::default(), ctx).unwrap();
    assert_eq!(out.frames, 120);
    start.elapsed().as_secs_f64()
}

fn main() {
    let push_in = request(ModelId::HhI2v, "A gentle camera push-in on the scene", 1);
    let orbit = request(ModelId::HhI2v, "Camera orbits slowly around the subject", 1);
    let one = vec![scene(1920, 1080)];
    let r2v = request(ModelId::HhR2v, "image 1 meets image 2 in image 3", 3);
    let three = vec![scene(1024, 1024), scene(1600, 900), scene(900, 1200)];
    let cases = [
        ("i2v push-in", &push_in, &one),
        ("i2v orbit (rolled view)", &orbit, &one),
        ("r2v 3 shots", &r2v, &three),
    ];
    for (name, req, images) in cases {
        let engine: Vec<f64> = (0..RUNS).map(|_| engine_only(req, images)).collect();
        let whole: Vec<f64> = (0..RUNS).map(|_| whole_render(req, images)).collect();
        println!(
            "{name} 5 s 720P (120 frames 1280x720): engine only {:.2} s, render_video (engine + watermark + H.264 MP4) {:.2} s (median of {RUNS})",
            median(engine),
            median(whole)
        );
    }
}
