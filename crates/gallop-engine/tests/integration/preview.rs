//! The motion-preview engine on real images: frame count and size, determinism, seed and camera
//! words changing the motion, smooth sub-pixel movement, r2v shot order, cancel.

use std::sync::atomic::{AtomicBool, Ordering};

use gallop_api::{GenerationRequest, Geometry, ModelId, Resolution};
use gallop_engine::{Engine, EngineError, EngineInput, PreviewEngine, Progress, RunContext};
use image::{Rgb, RgbImage};

/// Small frames keep the tests quick; the engine takes any geometry.
const SMALL: Geometry = Geometry {
    width: 320,
    height: 180,
    fps: 24,
    frames: 72,
};

fn request(model: ModelId, prompt: &str, images: usize) -> GenerationRequest {
    GenerationRequest {
        model,
        prompt: prompt.to_string(),
        negative_prompt: None,
        images: (0..images).map(|i| format!("file:///img{i}.png")).collect(),
        resolution: Resolution::P720,
        ratio: None,
        duration: 3,
        seed: None,
        watermark: false,
    }
}

/// A dark, gently textured scene with one bright soft blob off-centre: the blob's centroid is a
/// feature that can be tracked to a fraction of a pixel.
fn blob_scene(width: u32, height: u32, blob: (f32, f32)) -> RgbImage {
    let (bx, by) = (blob.0 * width as f32, blob.1 * height as f32);
    let sigma = width as f32 / 60.0;
    RgbImage::from_fn(width, height, |x, y| {
        let texture = ((x as f32 * 0.21).sin() * (y as f32 * 0.17).cos() * 12.0 + 30.0) as u8;
        let d2 = (x as f32 - bx).powi(2) + (y as f32 - by).powi(2);
        let glow = 225.0 * (-d2 / (2.0 * sigma * sigma)).exp();
        let v = (texture as f32 + glow).min(255.0) as u8;
        Rgb([v, v, texture])
    })
}

/// A photo-like image of one hue: stripes and a gradient so each has structure.
fn tinted(width: u32, height: u32, tint: [u8; 3]) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let shade = 0.6 + 0.4 * (((x / 24 + y / 24) % 2) as f32);
        Rgb(tint.map(|c| (c as f32 * shade) as u8))
    })
}

fn run(
    model: ModelId,
    prompt: &str,
    images: &[RgbImage],
    seed: u32,
    geometry: Geometry,
) -> Vec<RgbImage> {
    let req = request(model, prompt, images.len());
    let input = EngineInput {
        request: &req,
        images,
        geometry,
        seed,
    };
    let mut frames = Vec::new();
    let cancel = AtomicBool::new(false);
    let mut progress = |_: Progress| {};
    let mut sink = |f: RgbImage| {
        frames.push(f);
        Ok(())
    };
    let mut ctx = RunContext::new(&mut progress, &cancel, &mut sink);
    PreviewEngine.generate(&input, &mut ctx).unwrap();
    frames
}

/// Centroid of the bright blob (pixels well above the background), and its total weight.
fn blob(frame: &RgbImage) -> (f32, f32, f32) {
    let (mut sx, mut sy, mut sw) = (0.0, 0.0, 0.0);
    for (x, y, p) in frame.enumerate_pixels() {
        let w = (p[0] as f32 - 80.0).max(0.0);
        sx += w * x as f32;
        sy += w * y as f32;
        sw += w;
    }
    assert!(sw > 0.0, "blob is out of frame");
    (sx / sw, sy / sw, sw)
}

fn i2v_blob(prompt: &str, seed: u32) -> Vec<(f32, f32, f32)> {
    let scene = blob_scene(800, 450, (0.38, 0.42));
    run(ModelId::HhI2v, prompt, &[scene], seed, SMALL)
        .iter()
        .map(blob)
        .collect()
}

fn mean_rgb(frame: &RgbImage) -> [f32; 3] {
    let mut sum = [0.0f32; 3];
    for p in frame.pixels() {
        for c in 0..3 {
            sum[c] += p[c] as f32;
        }
    }
    sum.map(|s| s / (frame.width() * frame.height()) as f32)
}

#[test]
fn makes_exactly_the_frames_of_the_geometry() {
    let scene = blob_scene(640, 480, (0.5, 0.5));
    for geometry in [
        SMALL,
        Geometry {
            width: 240,
            height: 320,
            fps: 24,
            frames: 75,
        },
    ] {
        let frames = run(
            ModelId::HhI2v,
            "",
            std::slice::from_ref(&scene),
            3,
            geometry,
        );
        assert_eq!(frames.len() as u32, geometry.frames);
        for f in &frames {
            assert_eq!(f.dimensions(), (geometry.width, geometry.height));
        }
    }
    let refs = [
        tinted(500, 400, [200, 40, 40]),
        tinted(400, 600, [40, 200, 40]),
    ];
    let frames = run(ModelId::HhR2v, "two friends", &refs, 3, SMALL);
    assert_eq!(frames.len(), 72);
}

#[test]
fn reports_itself_as_the_preview() {
    let info = PreviewEngine.info();
    assert_eq!(info.engine, "preview");
    assert_eq!(info.checkpoint, None);
}

#[test]
fn same_seed_same_frames_other_seed_other_frames() {
    let scene = blob_scene(800, 450, (0.38, 0.42));
    let a = run(ModelId::HhI2v, "", std::slice::from_ref(&scene), 11, SMALL);
    let b = run(ModelId::HhI2v, "", std::slice::from_ref(&scene), 11, SMALL);
    let c = run(ModelId::HhI2v, "", &[scene], 12, SMALL);
    assert!(a == b, "same seed gave different frames");
    assert!(a.last() != c.last(), "another seed gave the same motion");
}

#[test]
fn default_is_a_gentle_push_in() {
    let track = i2v_blob("a quiet afternoon", 5);
    let (first, last) = (track[0], track[track.len() - 1]);
    // Zooming in: the blob grows and moves away from the centre (160, 90).
    assert!(
        last.2 > first.2 * 1.15,
        "blob did not grow: {first:?} -> {last:?}"
    );
    let dist = |p: (f32, f32, f32)| ((p.0 - 160.0).powi(2) + (p.1 - 90.0).powi(2)).sqrt();
    assert!(dist(last) > dist(first) + 3.0, "{first:?} -> {last:?}");
}

#[test]
fn camera_words_choose_the_motion() {
    let shift = |prompt: &str| {
        let t = i2v_blob(prompt, 9);
        let (a, b) = (t[0], t[t.len() - 1]);
        (b.0 - a.0, b.1 - a.1, b.2 / a.2)
    };
    // Film convention: panning left turns the camera left, so the scene slides right.
    let (dx, dy, _) = shift("The camera pans left across the room");
    assert!(dx > 20.0 && dy.abs() < 8.0, "pan left: {dx} {dy}");
    let (dx, dy, _) = shift("slow pan right");
    assert!(dx < -20.0 && dy.abs() < 8.0, "pan right: {dx} {dy}");
    let (dx, dy, _) = shift("tilt up to the sky");
    assert!(dy > 10.0 && dx.abs() < 8.0, "tilt up: {dx} {dy}");
    let (dx, dy, _) = shift("tilt down to the floor");
    assert!(dy < -10.0 && dx.abs() < 8.0, "tilt down: {dx} {dy}");
    let (_, _, grow) = shift("zoom out to reveal the street");
    assert!(grow < 0.87, "pull out: blob grew by {grow}");
    let (_, _, grow) = shift("dolly in on the face");
    assert!(grow > 1.15, "push in: blob grew by {grow}");
    let (dx, _, _) = shift("Camera orbits slowly around the subject");
    assert!(dx.abs() > 15.0, "orbit did not travel: {dx}");

    let scene = blob_scene(800, 450, (0.38, 0.42));
    let still = run(ModelId::HhI2v, "static shot", &[scene], 9, SMALL);
    assert!(still.iter().all(|f| f == &still[0]), "static camera moved");
}

#[test]
fn motion_is_smooth_and_sub_pixel() {
    for prompt in ["pan left", "push in", "orbit"] {
        let track = i2v_blob(prompt, 21);
        let steps: Vec<f32> = track
            .windows(2)
            .map(|w| ((w[1].0 - w[0].0).powi(2) + (w[1].1 - w[0].1).powi(2)).sqrt())
            .collect();
        let dx: Vec<f32> = track.windows(2).map(|w| w[1].0 - w[0].0).collect();
        // One direction only: no back-and-forth jitter along the travel.
        let sign = dx.iter().sum::<f32>().signum();
        assert!(
            dx.iter().all(|d| d * sign > -0.05),
            "{prompt}: moved backwards: {dx:?}"
        );
        // Speed changes gradually: integer-pixel stepping would jump by up to a whole pixel.
        let max_change = steps
            .windows(2)
            .map(|w| (w[1] - w[0]).abs())
            .fold(0.0, f32::max);
        assert!(
            max_change < 0.2,
            "{prompt}: speed jumps by {max_change} px/frame"
        );
        // Eased: starts and ends slowly, fastest in the middle.
        let peak = steps.iter().cloned().fold(0.0, f32::max);
        assert!(
            steps[0] < 0.25 * peak && steps[steps.len() - 1] < 0.25 * peak,
            "{prompt}: not eased: {steps:?}"
        );
        // Sub-pixel: most frames move by less than a pixel, yet the blob does move.
        assert!(peak > 0.2 && peak < 3.0, "{prompt}: peak step {peak}");
    }
}

#[test]
fn r2v_shots_follow_the_order_the_prompt_names() {
    let colors = [[220, 30, 30], [30, 220, 30], [30, 30, 220]];
    let refs: Vec<RgbImage> = colors.iter().map(|&c| tinted(600, 450, c)).collect();
    let dominant = |f: &RgbImage| {
        let m = mean_rgb(f);
        (0..3).max_by(|&a, &b| m[a].total_cmp(&m[b])).unwrap()
    };

    // Two shots named: image 3, then image 1.
    let frames = run(
        ModelId::HhR2v,
        "The person in [Image 3] walks up to the person in image 1.",
        &refs,
        4,
        SMALL,
    );
    assert_eq!(frames.len(), 72);
    assert_eq!(dominant(&frames[15]), 2, "first shot should show image 3");
    assert_eq!(dominant(&frames[57]), 0, "second shot should show image 1");

    // None named: all three in order.
    let frames = run(ModelId::HhR2v, "three friends at a cafe", &refs, 4, SMALL);
    for (frame, want) in [(8, 0), (36, 1), (64, 2)] {
        assert_eq!(dominant(&frames[frame]), want, "frame {frame}");
    }

    // The dissolve blends: a frame inside it shows both images.
    let frames = run(ModelId::HhR2v, "image 1 then image 2", &refs, 4, SMALL);
    let m = mean_rgb(&frames[36]);
    assert!(m[0] > 50.0 && m[1] > 50.0, "frame 36 is not a mix: {m:?}");
}

/// Runs a small i2v preview with the caller's progress, cancel flag and sink.
fn run_with(
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
    sink: &mut dyn FnMut(RgbImage) -> Result<(), String>,
) -> Result<(), EngineError> {
    let req = request(ModelId::HhI2v, "", 1);
    let images = [blob_scene(640, 360, (0.5, 0.5))];
    let input = EngineInput {
        request: &req,
        images: &images,
        geometry: SMALL,
        seed: 1,
    };
    let mut ctx = RunContext::new(progress, cancel, sink);
    PreviewEngine.generate(&input, &mut ctx)
}

#[test]
fn cancel_stops_the_run() {
    let cancel = AtomicBool::new(false);
    let mut seen = 0u32;
    let mut last_progress = None;
    let result = run_with(&cancel, &mut |p| last_progress = Some(p), &mut |_| {
        seen += 1;
        if seen == 5 {
            cancel.store(true, Ordering::Relaxed);
        }
        Ok(())
    });
    assert!(matches!(result, Err(EngineError::Cancelled)), "{result:?}");
    assert_eq!(seen, 5);
    assert_eq!(last_progress, Some(Progress { step: 5, total: 72 }));
}

#[test]
fn progress_counts_every_frame() {
    let cancel = AtomicBool::new(false);
    let mut steps = Vec::new();
    run_with(&cancel, &mut |p| steps.push(p), &mut |_| Ok(())).unwrap();
    assert_eq!(steps.len(), 72);
    assert!(
        steps
            .iter()
            .enumerate()
            .all(|(i, p)| p.step == i as u32 + 1 && p.total == 72)
    );
}

#[test]
fn a_failing_sink_stops_the_run() {
    let cancel = AtomicBool::new(false);
    let result = run_with(&cancel, &mut |_| {}, &mut |_| Err("disk full".to_string()));
    assert!(
        matches!(&result, Err(EngineError::Sink(m)) if m == "disk full"),
        "{result:?}"
    );
}
