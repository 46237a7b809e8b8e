//! Encoder quality on moving test clips: pan, zoom and orbit over sharp saturated edges and fine
//! texture at 720P (`tests/integration/common`). Per clip: bytes, per-frame PSNR (mean, min) and
//! the worst 16x16 block of any frame, decoded frames against what YUV 4:2:0 holds of the frames
//! (every 4:2:0 encoder starts from that; the line `4:2:0 itself` shows what subsampling alone
//! costs against the RGB frames).
//! When `ffmpeg` with libx264 is on the PATH, the clips also go through gallop's optional ffmpeg
//! encoder (`--encoder ffmpeg`, at its CRF or at each of `--crf LIST`), and the same frames (the
//! same YUV 4:2:0 planes gallop encodes) through x264 at CRF 20 by a plain ffmpeg command, the
//! issue's yardstick. gallop's files are decoded by gallop's own decoder and by ffmpeg, the
//! yardstick by ffmpeg; every decoded frame becomes RGB through the same code.
//! Run: `cargo bench -p gallop-media --bench quality -- [FRAMES] [--crf 16,17,18]`

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use gallop_media::{
    Ffmpeg, Mp4Encoder, VideoEncoder, psnr, rgb_to_yuv420, worst_block_psnr, yuv420_to_rgb,
};
use image::RgbImage;

#[path = "../tests/integration/common/mod.rs"]
mod common;

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 720;

struct Score {
    bytes: usize,
    mean: f64,
    min: f64,
    worst_block: f64,
}

impl std::fmt::Display for Score {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>9} bytes, PSNR mean {:.2} dB, min {:.2} dB, worst 16x16 block {:.2} dB",
            self.bytes, self.mean, self.min, self.worst_block
        )
    }
}

fn score(decoded: &[RgbImage], original: &[RgbImage], bytes: usize) -> Score {
    assert_eq!(decoded.len(), original.len(), "every frame decodes");
    let frames: Vec<f64> = decoded
        .iter()
        .zip(original)
        .map(|(d, o)| psnr(d, o))
        .collect();
    Score {
        bytes,
        mean: frames.iter().sum::<f64>() / frames.len() as f64,
        min: frames.iter().cloned().fold(f64::INFINITY, f64::min),
        worst_block: decoded
            .iter()
            .zip(original)
            .map(|(d, o)| worst_block_psnr(d, o, 16))
            .fold(f64::INFINITY, f64::min),
    }
}

/// Raw YUV 4:2:0 planes of every frame, as gallop hands them to its encoder.
fn raw_yuv(frames: &[RgbImage]) -> Vec<u8> {
    frames.iter().flat_map(rgb_to_yuv420).collect()
}

/// ffmpeg decodes `input` (any container or raw H.264) to YUV 4:2:0 frames, made RGB here.
fn ffmpeg_decode(input: &std::path::Path) -> Vec<RgbImage> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(input)
        .args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frame_len = (WIDTH * HEIGHT * 3 / 2) as usize;
    out.stdout
        .chunks_exact(frame_len)
        .map(|planes| yuv420_to_rgb(planes, WIDTH, HEIGHT))
        .collect()
}

fn x264_crf20(frames: &[RgbImage], held: &[RgbImage], dir: &std::path::Path) -> Option<Score> {
    let path = dir.join("x264.mp4");
    let mut child = Command::new("ffmpeg")
        .args([
            "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s",
        ])
        .arg(format!("{WIDTH}x{HEIGHT}"))
        .args([
            "-r", "24", "-i", "-", "-c:v", "libx264", "-crf", "20", "-preset", "medium",
        ])
        .arg(&path)
        .stdin(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(&raw_yuv(frames)).ok()?;
    child.wait().ok()?.success().then_some(())?;
    let bytes = std::fs::metadata(&path).ok()?.len() as usize;
    Some(score(&ffmpeg_decode(&path), held, bytes))
}

/// The frames as YUV 4:2:0 holds them, back in RGB: the best any 4:2:0 encoder can return.
fn held_by_420(frames: &[RgbImage]) -> Vec<RgbImage> {
    frames
        .iter()
        .map(|f| yuv420_to_rgb(&rgb_to_yuv420(f), f.width(), f.height()))
        .collect()
}

/// Encodes `frames` with `encoder` and scores the file decoded by gallop (and by ffmpeg when
/// there is one), against what 4:2:0 holds of the frames.
fn gallop_rows(
    label: &str,
    encoder: &VideoEncoder,
    frames: &[RgbImage],
    held: &[RgbImage],
    dir: &std::path::Path,
) -> usize {
    let start = Instant::now();
    let mut mp4 = Mp4Encoder::with_encoder(encoder, WIDTH, HEIGHT, 24).unwrap();
    for frame in frames {
        mp4.push(frame).unwrap();
    }
    let mp4 = mp4.finish().unwrap();
    let fps = frames.len() as f64 / start.elapsed().as_secs_f64();
    let ours = score(
        &gallop_media::decode_mp4(&mp4).unwrap().frames,
        held,
        mp4.len(),
    );
    println!("{label}: {ours}; encode {fps:.1} fps");
    if has_ffmpeg() {
        let path = dir.join("gallop.mp4");
        std::fs::write(&path, &mp4).unwrap();
        println!(
            "{label}, decoded by ffmpeg: {}",
            score(&ffmpeg_decode(&path), held, mp4.len())
        );
    }
    mp4.len()
}

fn has_ffmpeg() -> bool {
    Command::new("ffmpeg").arg("-version").output().is_ok()
}

/// `[FRAMES] [--crf LIST]`.
fn arguments() -> (u32, Option<Vec<f32>>) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let crfs = args.iter().position(|a| a == "--crf").map(|i| {
        args.get(i + 1)
            .expect("--crf needs a list: --crf 16,17,18")
            .split(',')
            .map(|c| c.parse().expect("--crf takes numbers 0-51 (17.5 too)"))
            .collect()
    });
    let frames = args
        .iter()
        .enumerate()
        .find(|(i, a)| !a.starts_with('-') && (*i == 0 || args[i - 1] != "--crf"))
        .map_or(72, |(_, a)| a.parse().expect("FRAMES must be a number"));
    (frames, crfs)
}

fn main() {
    let (frames_per_clip, crfs) = arguments();
    let dir = std::env::temp_dir().join(format!("gallop-quality-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ffmpeg = Ffmpeg::probe("ffmpeg").ok();
    for camera in common::CameraMove::ALL {
        let name = camera.name();
        let frames: Vec<_> = (0..frames_per_clip)
            .map(|i| common::camera_frame(camera, WIDTH, HEIGHT, i))
            .collect();
        let held = held_by_420(&frames);
        println!("{name:5} 4:2:0 itself vs RGB: {}", score(&held, &frames, 0));
        let label = format!("{name:5} gallop (openh264)");
        let bytes = gallop_rows(&label, &VideoEncoder::OpenH264, &frames, &held, &dir);
        let mut sizes = vec![(label, bytes)];
        let Some(ffmpeg) = &ffmpeg else {
            println!("{name:5} ffmpeg with libx264 not found: no ffmpeg rows");
            continue;
        };
        for crf in crfs.clone().unwrap_or_else(|| vec![ffmpeg.crf()]) {
            let at_crf = ffmpeg.clone().with_crf(crf);
            let label = format!("{name:5} gallop (ffmpeg, {})", at_crf.describe());
            let bytes = gallop_rows(&label, &VideoEncoder::Ffmpeg(at_crf), &frames, &held, &dir);
            sizes.push((label, bytes));
        }
        let x264 = x264_crf20(&frames, &held, &dir).expect("ffmpeg encodes with libx264");
        println!("{name:5} x264 CRF 20 (yardstick): {x264}");
        for (label, bytes) in sizes {
            println!(
                "{label}: bytes vs x264 CRF 20 {:.2}x",
                bytes as f64 / x264.bytes as f64
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
