//! H.264 through the operator's own `ffmpeg` with libx264, run as a separate program: the same
//! YUV 4:2:0 planes the built-in encoder takes go to its stdin, and it writes the MP4 (moov
//! before mdat) into a private temporary folder, read back when the video ends. On the benchmark
//! clips it gives 2-4 dB more PSNR than openh264 in 16-23% fewer bytes, with no ghosting beside
//! moving saturated edges (BENCHMARKS.md, "Encoder quality"). gallop links nothing of ffmpeg's:
//! it is an optional program the operator installs (and licenses) for their deployment.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread::JoinHandle;

use crate::MediaError;

/// x264's constant rate factor: quality-driven rate control, lower is better. 17.5 brings the
/// benchmark's pan, zoom and orbit to the worst-block and mean targets at under twice
/// the bytes x264 needs at CRF 20 with B-frames (BENCHMARKS.md, "Encoder quality").
pub const DEFAULT_CRF: f32 = 17.5;
/// x264's speed/size trade-off; slower presets find better motion vectors and partitions.
pub const PRESET: &str = "medium";
/// A keyframe every this many seconds at most, as the built-in encoder, so players can seek.
const KEYFRAME_SECONDS: u32 = 2;
/// Bytes of ffmpeg's error output kept for a message.
const MAX_STDERR: usize = 4096;

/// An `ffmpeg` program that runs and has the libx264 encoder, checked by [`Ffmpeg::probe`].
#[derive(Debug, Clone, PartialEq)]
pub struct Ffmpeg {
    program: PathBuf,
    version: String,
    crf: f32,
}

impl Ffmpeg {
    /// Runs `program -encoders` (a path, or a name looked up on PATH) and checks that libx264
    /// is among them: cheap, so callers probe once at startup rather than at the first video.
    pub fn probe(program: impl Into<PathBuf>) -> Result<Self, MediaError> {
        let program = program.into();
        let unavailable = |reason: String| MediaError::FfmpegUnavailable {
            program: program.display().to_string(),
            reason,
        };
        let out = Command::new(&program)
            .args(["-hide_banner", "-nostdin", "-encoders"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| unavailable(e.to_string()))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(unavailable(format!(
                "`-encoders` failed ({}): {}",
                out.status,
                stderr.trim()
            )));
        }
        // Lines look like ` V....D libx264              libx264 H.264 / AVC / ...`.
        let listing = String::from_utf8_lossy(&out.stdout);
        let has_x264 = listing
            .lines()
            .any(|line| line.split_whitespace().nth(1) == Some("libx264"));
        if !has_x264 {
            return Err(MediaError::FfmpegWithoutX264 {
                program: program.display().to_string(),
            });
        }
        let version = Command::new(&program)
            .args(["-hide_banner", "-nostdin", "-version"])
            .stdin(Stdio::null())
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(str::to_string)
            })
            .unwrap_or_default();
        Ok(Self {
            program,
            version,
            crf: DEFAULT_CRF,
        })
    }

    /// The same program at another constant rate factor (0-51; the benchmark's sweep).
    pub fn with_crf(self, crf: f32) -> Self {
        Self {
            crf: crf.clamp(0.0, 51.0),
            ..self
        }
    }

    /// The program as given (a path, or a name looked up on PATH).
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The first line of `ffmpeg -version`, for startup lines.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// x264's constant rate factor in use.
    pub fn crf(&self) -> f32 {
        self.crf
    }

    /// How it encodes, for startup lines and results: `libx264 CRF 17.5, preset medium`.
    pub fn describe(&self) -> String {
        format!("libx264 CRF {}, preset {PRESET}", self.crf)
    }
}

/// One video being encoded by a running ffmpeg.
pub(crate) struct FfmpegStream {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Drains ffmpeg's stderr so a chatty ffmpeg never blocks on a full pipe.
    stderr: Option<JoinHandle<String>>,
    /// Private folder of the output file, held so it lives as long as the stream and is
    /// removed with it.
    _dir: tempfile::TempDir,
    output: PathBuf,
}

impl FfmpegStream {
    /// Starts ffmpeg for `width` x `height` YUV 4:2:0 frames (BT.601 limited range) at `fps`.
    pub(crate) fn start(
        ffmpeg: &Ffmpeg,
        width: u32,
        height: u32,
        fps: u32,
    ) -> Result<Self, MediaError> {
        let failed = |what: &str, e: std::io::Error| MediaError::Ffmpeg(format!("{what}: {e}"));
        let dir = tempfile::Builder::new()
            .prefix("gallop-ffmpeg-")
            .tempdir()
            .map_err(|e| failed("cannot make a temporary folder", e))?;
        let output = dir.path().join("video.mp4");
        let mut child = Command::new(ffmpeg.program())
            .args(arguments(width, height, fps, ffmpeg.crf))
            .arg(&output)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(&format!("cannot run {}", ffmpeg.program().display()), e))?;
        let stdin = child.stdin.take();
        let stderr = child.stderr.take().map(|mut pipe| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                let _ = pipe.read_to_end(&mut text);
                let start = text.len().saturating_sub(MAX_STDERR);
                String::from_utf8_lossy(&text[start..]).trim().to_string()
            })
        });
        Ok(Self {
            child,
            stdin,
            stderr,
            _dir: dir,
            output,
        })
    }

    /// Hands one frame's planes to ffmpeg.
    pub(crate) fn push(&mut self, planes: &[u8]) -> Result<(), MediaError> {
        let stdin = self.stdin.as_mut().expect("stdin is open until finish");
        if let Err(e) = stdin.write_all(planes) {
            // ffmpeg quit: its own words say why better than a broken pipe.
            let _ = self.child.wait();
            return Err(MediaError::Ffmpeg(format!(
                "it stopped taking frames ({e}): {}",
                self.stderr_text()
            )));
        }
        Ok(())
    }

    /// Closes ffmpeg's input, waits for it to write the file, and returns the file.
    pub(crate) fn finish(mut self) -> Result<Vec<u8>, MediaError> {
        drop(self.stdin.take());
        let status = self
            .child
            .wait()
            .map_err(|e| MediaError::Ffmpeg(format!("waiting for it: {e}")))?;
        if !status.success() {
            return Err(MediaError::Ffmpeg(format!(
                "it exited with {status}: {}",
                self.stderr_text()
            )));
        }
        std::fs::read(&self.output).map_err(|e| {
            MediaError::Ffmpeg(format!(
                "cannot read its output {}: {e}",
                self.output.display()
            ))
        })
    }

    fn stderr_text(&mut self) -> String {
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "(no message)".to_string())
    }
}

impl Drop for FfmpegStream {
    /// An abandoned video (cancelled job, failed frame) must not leave ffmpeg running.
    fn drop(&mut self) {
        drop(self.stdin.take());
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// ffmpeg's command line up to the output path.
fn arguments(width: u32, height: u32, fps: u32, crf: f32) -> Vec<String> {
    let keyint = (fps * KEYFRAME_SECONDS).to_string();
    let fixed: &[&str] = &[
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        // Input: raw planes exactly as the built-in encoder gets them.
        "-f",
        "rawvideo",
        "-pix_fmt",
        "yuv420p",
        "-video_size",
        &format!("{width}x{height}"),
        "-framerate",
        &fps.to_string(),
        "-i",
        "pipe:0",
        "-an",
        "-c:v",
        "libx264",
        "-preset",
        PRESET,
        "-crf",
        &crf.to_string(),
        "-pix_fmt",
        "yuv420p",
        // The planes are BT.601 limited range (yuv.rs); say so, or players shift the colours.
        "-color_range",
        "tv",
        "-colorspace",
        "smpte170m",
        "-color_primaries",
        "smpte170m",
        "-color_trc",
        "smpte170m",
        "-g",
        &keyint,
        // No in-loop deblocking: its strong filter at intra macroblock edges pulls a hard edge
        // up to 3 px into a flat neighbour (a 1 px grey column, 42 levels off, at any CRF: the
        // pan's worst block, 26.4 dB; 28.6 dB without it at the same bytes). At these quantisers
        // there is little blocking for it to hide.
        "-x264-params",
        "no-deblock=1",
        // No B-frames: openh264's decoder, which `decode_mp4` and `gallop debug` read every
        // video with, refuses them (x264's High profile without them it reads).
        "-bf",
        "0",
        // No clocks or version strings in the container: same frames, same bytes.
        "-map_metadata",
        "-1",
        "-fflags",
        "+bitexact",
        "-flags:v",
        "+bitexact",
        // moov before mdat, as the built-in path: players start before the download ends.
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
        "-y",
    ];
    fixed.iter().map(|s| s.to_string()).collect()
}
