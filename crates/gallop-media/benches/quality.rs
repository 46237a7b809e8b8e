//! Encoder quality on moving test clips: pan, zoom and orbit over sharp saturated edges and fine
//! texture at 720P (`tests/integration/common`). Per clip: bytes, per-frame PSNR (mean, min) and
//! the worst 16x16 block of any frame, decoded frames against what YUV 4:2:0 holds of the frames
//! (every 4:2:0 encoder starts from that; the line `4:2:0 itself` shows what subsampling alone
//! costs against the RGB frames).
//! When `ffmpeg` with libx264 is on the PATH, the same frames (the same YUV 4:2:0 planes gallop
//! encodes) go through x264 at CRF 20 as a yardstick; ffmpeg is a measuring tool here only.
//! Both are decoded by ffmpeg to YUV 4:2:0 and turned into RGB by the same code.
//! Run: `cargo bench -p gallop-media --bench quality [FRAMES]`

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use gallop_media::{Mp4Encoder, psnr, rgb_to_yuv420, worst_block_psnr, yuv420_to_rgb};
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

fn main() {
    let frames_per_clip: u32 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map_or(72, |a| a.parse().expect("FRAMES must be a number"));
    let dir = std::env::temp_dir().join(format!("gallop-quality-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for camera in common::CameraMove::ALL {
        let frames: Vec<_> = (0..frames_per_clip)
            .map(|i| common::camera_frame(camera, WIDTH, HEIGHT, i))
            .collect();
        let held = held_by_420(&frames);
        println!(
            "{:5} 4:2:0 itself vs RGB: {}",
            camera.name(),
            score(&held, &frames, 0)
        );
        let start = Instant::now();
        let mut encoder = Mp4Encoder::new(WIDTH, HEIGHT, 24).unwrap();
        for frame in &frames {
            encoder.push(frame).unwrap();
        }
        let mp4 = encoder.finish().unwrap();
        let fps = frames.len() as f64 / start.elapsed().as_secs_f64();
        let ours = score(
            &gallop_media::decode_mp4(&mp4).unwrap().frames,
            &held,
            mp4.len(),
        );
        println!(
            "{:5} gallop (openh264): {ours}; encode {fps:.1} fps",
            camera.name()
        );
        let path = dir.join("gallop.mp4");
        std::fs::write(&path, &mp4).unwrap();
        if Command::new("ffmpeg").arg("-version").output().is_ok() {
            let same_path = score(&ffmpeg_decode(&path), &held, mp4.len());
            println!("{:5} gallop, decoded by ffmpeg: {same_path}", camera.name());
            match x264_crf20(&frames, &held, &dir) {
                Some(x264) => println!(
                    "{:5} x264 CRF 20 (yardstick): {x264}; gallop/x264 bytes {:.2}x",
                    camera.name(),
                    mp4.len() as f64 / x264.bytes as f64
                ),
                None => println!("{:5} x264: ffmpeg without libx264, skipped", camera.name()),
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
