//! The video as users see it, through `WanEngine` on the tiny checkpoints: 15 s is made as
//! chained windows (their count and overlap as the engine reports them) that join without a
//! jump, with exactly 360 frames and the same bytes for the same seed; a 16 fps checkpoint's
//! 24 fps output repeats no frame; and the engine's output stage puts a moving square where its
//! motion puts it in the interpolated frames, across a window seam too.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use gallop_api::{GenerationRequest, Geometry, ModelId, Resolution};
use gallop_engine::{Engine, EngineInput, Progress, RunContext};
use gallop_wan::output::Output;
use gallop_wan::windows::Windows;
use gallop_wan::{WanDebug, WanEngine, WanSettings};
use image::{Rgb, RgbImage};

fn case_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pipelines")
        .join(name)
}

const STEPS: usize = 2;

/// The tiny checkpoint `name` at `width` x `height`, two steps without guidance (CI stays fast).
fn engine(name: &str, width: u32, height: u32, dump: Option<PathBuf>) -> WanEngine {
    let settings = WanSettings {
        model_dir: Some(case_dir(name).join("model")),
        steps: Some(STEPS),
        guidance: Some(1.0),
        ..Default::default()
    };
    let debug = WanDebug {
        width: Some(width),
        height: Some(height),
        dump_frames: dump,
        ..Default::default()
    };
    WanEngine::load(settings).unwrap().with_debug(debug)
}

fn request(model: ModelId, seconds: u32) -> GenerationRequest {
    GenerationRequest {
        model,
        prompt: "A white horse gallops along the beach at sunset".into(),
        negative_prompt: None,
        images: vec!["file:///image.png".into()],
        resolution: Resolution::P720,
        ratio: None,
        duration: seconds,
        seed: Some(11),
        watermark: false,
    }
}

/// One run: its frames and progress reports.
fn run(
    engine: &WanEngine,
    request: &GenerationRequest,
    images: &[RgbImage],
    geometry: Geometry,
) -> (Vec<RgbImage>, Vec<Progress>) {
    let mut frames = Vec::new();
    let mut progress = Vec::new();
    let cancel = AtomicBool::new(false);
    let input = EngineInput {
        request,
        images,
        geometry,
        seed: 11,
    };
    {
        let mut on_progress = |p: Progress| progress.push(p);
        let mut sink = |f: RgbImage| -> Result<(), String> {
            frames.push(f);
            Ok(())
        };
        let mut ctx = RunContext::new(&mut on_progress, &cancel, &mut sink);
        engine.generate(&input, &mut ctx).unwrap();
    }
    (frames, progress)
}

/// Mean absolute difference of two frames, in 8-bit levels.
fn difference(a: &RgbImage, b: &RgbImage) -> f64 {
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (x as i32 - y as i32).unsigned_abs() as u64)
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

/// The largest step a hard cut between windows would make, in levels: from the middle of the
/// overlap in one window's decoded frames (as dumped) to the next frame in the next window's.
fn cut_step(dump: &Path, windows: Windows) -> f32 {
    let frames = candle_core::safetensors::load(dump, &candle_core::Device::Cpu).unwrap();
    let frames = (&frames["frames"] * 255.0).unwrap();
    let Windows {
        length, overlap, ..
    } = windows;
    (1..windows.count)
        .map(|k| {
            let before = frames
                .get((k - 1) * length + length - overlap + overlap / 2)
                .unwrap();
            let after = frames.get(k * length + overlap / 2 + 1).unwrap();
            let step = (before - after).unwrap().abs().unwrap().mean_all().unwrap();
            step.to_scalar::<f32>().unwrap()
        })
        .fold(0.0, f32::max)
}

/// Frame-to-frame differences of `frames` split into those across a seam (output steps whose
/// source times touch a window's shared frames or the frame before them) and the rest.
fn seam_and_typical(
    frames: &[RgbImage],
    windows: Windows,
    native_fps: u32,
) -> (Vec<f64>, Vec<f64>) {
    let (mut seam, mut typical) = (Vec::new(), Vec::new());
    let step = native_fps as f64 / 24.0;
    for (i, pair) in frames.windows(2).enumerate() {
        let (from, to) = (i as f64 * step, (i + 1) as f64 * step);
        let at_seam = (1..windows.count).any(|k| {
            let start = windows.start(k) as f64;
            to >= start - 1.0 && from <= start + windows.overlap as f64
        });
        let d = difference(&pair[0], &pair[1]);
        match at_seam {
            true => seam.push(d),
            false => typical.push(d),
        }
    }
    (seam, typical)
}

/// The first frame every i2v case starts from.
fn first_frame() -> RgbImage {
    image::open(case_dir("ti2v").join("image.png"))
        .unwrap()
        .to_rgb8()
}

/// Wan2.1-I2V (16 fps): each window starts from the frame of the last where the overlap
/// begins; the CLIP tokens stay the run's first frame's.
#[test]
fn fifteen_seconds_of_i2v_are_chained_windows_that_join_without_a_jump() {
    fifteen_seconds("i2v21", ModelId::HhI2v, (48, 32), 16, (4, 69, 9));
}

/// VACE (16 fps): each window extends the last one's final frames (leading frames, mask 0).
#[test]
fn fifteen_seconds_of_vace_are_chained_windows_that_join_without_a_jump() {
    fifteen_seconds("vace", ModelId::HhR2v, (48, 32), 16, (4, 69, 9));
}

/// TI2V-5B (24 fps, trained on 121 frames): each window starts from a frame of the last as its
/// clean first-frame latent.
#[test]
fn fifteen_seconds_of_ti2v_are_chained_windows_that_join_without_a_jump() {
    fifteen_seconds("ti2v", ModelId::HhI2v, (64, 32), 24, (4, 97, 9));
}

/// Asks the tiny checkpoint `name` for 15 s and checks the windows the engine reports
/// (`count`, `length`, `overlap`), the frame count, the progress, the seams and the bytes.
fn fifteen_seconds(
    name: &str,
    model: ModelId,
    (width, height): (u32, u32),
    fps: u32,
    (count, length, overlap): (usize, usize, usize),
) {
    let image = first_frame();
    let tmp = tempfile::tempdir().unwrap();
    let dump = tmp.path().join("frames.safetensors");
    let engine = engine(name, width, height, Some(dump.clone()));
    assert_eq!(engine.family().fps, fps, "{name}");
    let geometry = Geometry {
        width,
        height,
        fps: 24,
        frames: 15 * 24,
    };
    // The engine's report of how it makes 15 s (what a job's `engine` shows): more than one
    // trained window (5 s).
    let report = engine.run_info(geometry).windows;
    assert_eq!(
        report.map(|w| (w.count, w.frames, w.overlap)),
        Some((count, length, overlap)),
        "{name}: {report:?}"
    );
    let windows = engine.windows(geometry);
    assert!(windows.length <= engine.family().trained_frames());
    let request = request(model, 15);
    let (frames, progress) = run(&engine, &request, std::slice::from_ref(&image), geometry);
    assert_eq!(frames.len(), 360, "{name}");
    // Progress counts every window's steps and decoding, and the run does what it reported.
    let total = (count * (STEPS + 1)) as u32;
    assert!(
        progress.iter().all(|p| p.total == total),
        "{name}: {progress:?}"
    );
    let steps: Vec<u32> = progress.iter().map(|p| p.step).collect();
    assert_eq!(steps, (1..=total).collect::<Vec<_>>(), "{name}");

    let (seam, typical) = seam_and_typical(&frames, windows, fps);
    let largest = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let cut = cut_step(&dump, windows);
    println!(
        "{name}: {count} windows of {length} sharing {overlap}; steps across seams: mean \
         {:.2}, largest {:.2} levels; elsewhere: mean {:.2}, largest {:.2}; a cut between \
         windows would step {cut:.2}",
        mean(&seam),
        largest(&seam),
        mean(&typical),
        largest(&typical)
    );
    assert!(
        largest(&seam) <= largest(&typical) && mean(&seam) <= 1.1 * mean(&typical),
        "{name}: steps across seams (mean {:.2}, largest {:.2} levels) exceed the \
         frame-to-frame steps elsewhere (mean {:.2}, largest {:.2})",
        mean(&seam),
        largest(&seam),
        mean(&typical),
        largest(&typical)
    );
    if fps == 16 {
        for (i, pair) in frames.windows(2).enumerate() {
            assert_ne!(
                pair[0],
                pair[1],
                "{name}: output frames {i} and {} repeat",
                i + 1
            );
        }
    }
    let (again, _) = run(&engine, &request, std::slice::from_ref(&image), geometry);
    assert!(
        frames == again,
        "{name}: the same seed must give the same bytes"
    );
    save_for_eyes(&frames, &format!("chained_{name}"));
}

/// Cancel reaches a window after the first: set during the second window's first step, the
/// run stops before its next step, having sent only frames of the first window.
#[test]
fn cancel_stops_a_later_window_between_steps() {
    let engine = engine("i2v21", 48, 32, None);
    let geometry = Geometry {
        width: 48,
        height: 32,
        fps: 24,
        frames: 15 * 24,
    };
    let request = request(ModelId::HhI2v, 15);
    let images = [first_frame()];
    let input = EngineInput {
        request: &request,
        images: &images,
        geometry,
        seed: 11,
    };
    let cancel = AtomicBool::new(false);
    let mut sent = 0;
    let mut last = 0;
    let result = {
        let mut on_progress = |p: Progress| {
            last = p.step;
            // Window 0 is STEPS steps and a decode; this is window 1's first step.
            if p.step as usize == STEPS + 2 {
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        };
        let mut sink = |_: RgbImage| -> Result<(), String> {
            sent += 1;
            Ok(())
        };
        let mut ctx = RunContext::new(&mut on_progress, &cancel, &mut sink);
        engine.generate(&input, &mut ctx)
    };
    assert!(
        matches!(result, Err(gallop_engine::EngineError::Cancelled)),
        "{result:?}"
    );
    assert_eq!(last as usize, STEPS + 2, "no step after the cancel");
    // Only the first window's frames before its held tail (native 0-59): 24 fps frames up to
    // source time 59, the 90th (59.33) waiting for frame 60.
    assert_eq!(sent, 89);
}

/// A scene for the output stage: a red square moving at constant sub-pixel speed over a grey
/// texture (grey everywhere, so redness marks the square alone).
const SIDE: f32 = 12.0;
const START: (f32, f32) = (6.0, 8.0);
/// Pixels per frame at 16 fps.
const SPEED: (f32, f32) = (1.75, 0.5);

fn square_frame(time: f32) -> RgbImage {
    let corner = (START.0 + SPEED.0 * time, START.1 + SPEED.1 * time);
    // Each pixel's share of the square, so its sub-pixel position shows in the edges.
    let cover =
        |p: u32, lo: f32| ((p as f32 + 1.0).min(lo + SIDE) - (p as f32).max(lo)).clamp(0.0, 1.0);
    RgbImage::from_fn(96, 48, |x, y| {
        let grey = 90.0 + 25.0 * ((x as f32 * 0.7).sin() + (y as f32 * 0.55).cos());
        let share = cover(x, corner.0) * cover(y, corner.1);
        let mix = |square: f32| (grey * (1.0 - share) + square * share).round() as u8;
        Rgb([mix(230.0), mix(30.0), mix(30.0)])
    })
}

/// The square's top-left corner: the centroid of redness, less half a side.
fn square_corner(frame: &RgbImage) -> (f32, f32) {
    let (mut total, mut sx, mut sy) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y, p) in frame.enumerate_pixels() {
        let red = (p[0] as f64 - (p[1] as f64 + p[2] as f64) / 2.0).max(0.0);
        total += red;
        sx += red * (x as f64 + 0.5);
        sy += red * (y as f64 + 0.5);
    }
    let half = SIDE as f64 / 2.0;
    ((sx / total - half) as f32, (sy / total - half) as f32)
}

/// The engine's output stage (join, 16 -> 24 fps, fit) on a known motion in two windows that
/// agree where they overlap: every output frame shows the square where its motion puts it.
#[test]
fn sixteen_fps_windows_interpolate_a_moving_square_to_where_its_motion_puts_it() {
    let windows = Windows::plan(41, 33, 9, 4);
    assert_eq!((windows.count, windows.length), (2, 25));
    let geometry = Geometry {
        width: 96,
        height: 48,
        fps: 24,
        frames: 60,
    };
    let mut output = Output::new(windows, 16, geometry).unwrap();
    let mut frames = Vec::new();
    for k in 0..windows.count {
        for i in 0..windows.length {
            let time = (windows.start(k) + i) as f32;
            frames.extend(output.push(square_frame(time)).unwrap());
        }
        output.end_window().unwrap();
    }
    output.finish().unwrap();
    assert_eq!(frames.len(), 60);
    let mut largest: f32 = 0.0;
    for (i, frame) in frames.iter().enumerate() {
        let time = i as f32 * 16.0 / 24.0;
        // Measured the same way on the scene drawn at that time, so the measure's bias cancels.
        let expected = square_corner(&square_frame(time));
        let got = square_corner(frame);
        let error = (got.0 - expected.0).hypot(got.1 - expected.1);
        largest = largest.max(error);
        assert!(
            error < 1.0,
            "output frame {i} (source time {time:.2}): square at {got:?}, its motion puts it at \
             {expected:?}: {error:.2} px off"
        );
    }
    println!(
        "largest position error {largest:.3} px over {} frames",
        frames.len()
    );
    for (i, pair) in frames.windows(2).enumerate() {
        assert_ne!(pair[0], pair[1], "output frames {i} and {} repeat", i + 1);
    }
    save_for_eyes(&frames, "interpolated_square");
}

/// Writes frames as an MP4 for a person to pull frames from and look at.
fn save_for_eyes(frames: &[RgbImage], name: &str) {
    let (width, height) = frames[0].dimensions();
    let mut encoder = gallop_media::Mp4Encoder::new(width, height, 24).unwrap();
    for frame in frames {
        encoder.push(frame).unwrap();
    }
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.mp4"));
    std::fs::write(path, encoder.finish().unwrap()).unwrap();
}
