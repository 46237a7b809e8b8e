//! `gallop generate` end to end: the real binary on the seeds' examples with real images written
//! here, the MP4 it writes read back frame by frame.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gallop_media::{decode_mp4, psnr, top_level_boxes};
use image::{Rgb, RgbImage};
use serde_json::{Value, json};

const I2V: &str = "alibaba/hh1-i2v";
const R2V: &str = "alibaba/hh1.1-r2v";

/// A photo-like scene: sky gradient, sun, a lit skyline, a figure and light grain, drawn at twice
/// the size and downscaled so edges are anti-aliased as in a photograph. `hue` tells scenes apart.
fn photo(width: u32, height: u32, hue: [f32; 3]) -> RgbImage {
    let big = scene(width * 2, height * 2, hue);
    gallop_media::fit_and_crop(&big, width, height)
}

fn scene(width: u32, height: u32, hue: [f32; 3]) -> RgbImage {
    let (w, h) = (width as f32, height as f32);
    // Sizes in the scene scale with its height, as a photo's content would.
    let unit = (h / 360.0).max(1.0);
    RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32 / w, y as f32 / h);
        let mut c = if fy < 0.6 {
            // Sky with soft cloud banks.
            let cloud = 20.0 * ((fx * 9.0 + fy * 3.0).sin() * (fy * 14.0).cos()).max(0.0);
            [
                90.0 + 120.0 * fy + cloud,
                140.0 + 90.0 * fy + cloud,
                230.0 - 60.0 * fy,
            ]
        } else {
            [
                70.0 + 40.0 * fx,
                90.0 + 10.0 * (fx * 30.0).sin(),
                50.0 + 30.0 * fy,
            ]
        };
        // Sun.
        if (fx - 0.8).powi(2) * (w / h).powi(2) + (fy - 0.2).powi(2) < 0.006 {
            c = [255.0, 230.0, 150.0];
        }
        // Skyline: blocks of varying height with lit windows.
        let block = (fx * 12.0) as u32;
        let top = 0.35 + 0.2 * (((block * 7919) % 13) as f32 / 13.0);
        if fy > top && fy < 0.6 {
            let (wx, wy) = ((x as f32 / unit) as u32, (y as f32 / unit) as u32);
            let window = (wx / 8 + wy / 12) % 3 == 0 && (wx % 8) < 4;
            c = if window {
                [240.0, 210.0, 120.0]
            } else {
                [40.0, 45.0, 60.0]
            };
        }
        // A figure: head and body.
        let head = (fx - 0.35).powi(2) * (w / h).powi(2) + (fy - 0.55).powi(2) < 0.002;
        let body = (fx - 0.35).abs() * w / h < 0.06 && fy > 0.6 && fy < 0.9;
        if head {
            c = [225.0, 180.0, 150.0];
        } else if body {
            c = [180.0, 30.0, 40.0];
        }
        // Light sensor grain, deterministic.
        let grain = (((x.wrapping_mul(73856093) ^ y.wrapping_mul(19349663)) % 5) as f32) - 2.0;
        Rgb(std::array::from_fn(|i| {
            (c[i] * hue[i] + grain).clamp(0.0, 255.0) as u8
        }))
    })
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("gallop-generate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes a photo-like image (PNG or JPEG by extension) and returns its path as a string.
    fn image(&self, name: &str, width: u32, height: u32, hue: [f32; 3]) -> String {
        let path = self.path(name);
        photo(width, height, hue).save(&path).unwrap();
        path.display().to_string()
    }

    fn input(&self, name: &str, input: &Value) -> String {
        let path = self.path(name);
        std::fs::write(&path, serde_json::to_vec_pretty(input).unwrap()).unwrap();
        path.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn gallop(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gallop"))
        .arg("generate")
        .args(args)
        .output()
        .expect("run gallop")
}

/// Runs a generation that must succeed; returns its stdout and the MP4's bytes.
fn generate_ok(args: &[&str], out: &Path) -> (String, Vec<u8>) {
    let mut all: Vec<&str> = args.to_vec();
    let out_str = out.display().to_string();
    all.extend(["-o", &out_str]);
    let result = gallop(&all);
    let stdout = String::from_utf8_lossy(&result.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&result.stderr).into_owned();
    assert!(
        result.status.success(),
        "gallop failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    (stdout, std::fs::read(out).unwrap())
}

fn generate_err(args: &[&str]) -> String {
    let result = gallop(args);
    assert!(
        !result.status.success(),
        "gallop should have failed for {args:?}"
    );
    String::from_utf8_lossy(&result.stderr).into_owned()
}

/// Faststart MP4 with `frames` frames of `width` x `height`; returns the decoded frames.
fn check_video(mp4: &[u8], width: u32, height: u32, frames: usize) -> Vec<RgbImage> {
    let boxes = top_level_boxes(mp4);
    assert_eq!(boxes.first().map(String::as_str), Some("ftyp"), "{boxes:?}");
    let moov = boxes.iter().position(|b| b == "moov").expect("moov box");
    let mdat = boxes.iter().position(|b| b == "mdat").expect("mdat box");
    assert!(moov < mdat, "moov must come before mdat: {boxes:?}");
    let video = decode_mp4(mp4).unwrap();
    assert_eq!((video.width, video.height), (width, height));
    assert!((video.fps - 24.0).abs() < 1e-6, "fps {}", video.fps);
    assert_eq!(video.frames.len(), frames);
    for f in &video.frames {
        assert_eq!(f.dimensions(), (width, height));
    }
    video.frames
}

fn read_dumped(dir: &Path, count: usize) -> Vec<RgbImage> {
    (0..count)
        .map(|i| {
            image::open(dir.join(format!("frame_{i:05}.png")))
                .unwrap()
                .to_rgb8()
        })
        .collect()
}

/// The i2v seed's "Reproducible Output" example exactly as written (8 s, 720P, seed 42), with a
/// local image in place of the URL: every frame decodes and matches what was encoded.
#[test]
fn i2v_seed_example_in_full() {
    let dir = TempDir::new("full");
    let image = dir.image("rap.png", 1280, 720, [1.0, 0.9, 0.8]);
    let input = dir.input(
        "input.json",
        &json!({
            "image": image,
            "prompt": "Camera orbits slowly around the subject under streetlamp light",
            "duration": 8,
            "resolution": "720P",
            "seed": 42
        }),
    );
    let out = dir.path("out.mp4");
    let frames_dir = dir.path("frames");
    let (stdout, mp4) = generate_ok(
        &[
            "--model",
            I2V,
            "--input",
            &input,
            "--dump-frames",
            frames_dir.to_str().unwrap(),
        ],
        &out,
    );
    let decoded = check_video(&mp4, 1280, 720, 192);
    let encoded = read_dumped(&frames_dir, 192);
    assert!(!frames_dir.join("frame_00192.png").exists());
    for (i, (d, e)) in decoded.iter().zip(&encoded).enumerate() {
        let p = psnr(d, e);
        assert!(p >= 35.0, "frame {i}: PSNR {p:.1} dB");
    }
    // The camera moved: the last frame is not the first.
    assert!(psnr(&encoded[0], &encoded[191]) < 30.0);

    assert!(
        stdout.contains(&format!("wrote {}", out.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("size: {} bytes", mp4.len())),
        "{stdout}"
    );
    assert!(
        stdout.contains("192 frames, 1280x720, 24 fps, 8.0 s"),
        "{stdout}"
    );
    assert!(
        stdout.contains("engine: preview (motion preview, not the neural model)"),
        "{stdout}"
    );
    assert!(stdout.contains("seed: 42"), "{stdout}");
}

/// The other i2v seed examples, shortened to 3 s; sizes follow the image's aspect.
#[test]
fn i2v_seed_examples_shortened() {
    let dir = TempDir::new("i2v");
    // Example 1: defaults (720P), a portrait JPEG -> 3:4 -> 832x1088.
    dir.image("portrait.jpg", 600, 800, [1.0, 1.0, 1.0]);
    let input = dir.input(
        "push.json",
        &json!({
            // Relative to the input file.
            "image": "portrait.jpg",
            "prompt": "A gentle camera push-in on the scene with soft ambient lighting"
        }),
    );
    let (stdout, mp4) = generate_ok(
        &["--model", I2V, "--input", &input, "--duration", "3"],
        &dir.path("push.mp4"),
    );
    check_video(&mp4, 832, 1088, 72);
    // No seed given: one is picked and reported.
    let seed_line = stdout.lines().find(|l| l.starts_with("seed: ")).unwrap();
    let seed: u32 = seed_line["seed: ".len()..].parse().unwrap();
    assert!(seed <= 2_147_483_647);

    // Example 2: 10 s 1080P, here 3 s; a landscape PNG -> 16:9 -> 1920x1080.
    let landscape = dir.image("rap.png", 1000, 562, [0.9, 0.8, 1.0]);
    let input = dir.input(
        "rap.json",
        &json!({
            "image": landscape,
            "prompt": "Subject begins rapping confidently to the beat, head bobbing",
            "duration": 10,
            "resolution": "1080P"
        }),
    );
    let (_, mp4) = generate_ok(
        &["--model", I2V, "--input", &input, "--duration", "3"],
        &dir.path("rap.mp4"),
    );
    check_video(&mp4, 1920, 1080, 72);
}

/// The r2v seed example (three references named in the prompt), shortened to 3 s at 720P.
#[test]
fn r2v_seed_example_shortened() {
    let dir = TempDir::new("r2v");
    let person1 = dir.image("portrait-photo-0.jpeg", 600, 800, [1.4, 0.5, 0.4]);
    let city = dir.image("futuristic-city.png", 1200, 675, [0.5, 0.7, 1.4]);
    let person3 = dir.image("high-resolution-portrait.jpg", 640, 800, [0.5, 1.4, 0.5]);
    let input = dir.input(
        "r2v.json",
        &json!({
            "prompt": "The person in image 1 walks through the futuristic city in image 2 and meets the person in image 3.",
            "images": [person1, city, person3],
            "duration": 8,
            "ratio": "16:9",
            "resolution": "1080P"
        }),
    );
    let frames_dir = dir.path("frames");
    let (stdout, mp4) = generate_ok(
        &[
            "--model",
            R2V,
            "--input",
            &input,
            "--duration",
            "3",
            "--resolution",
            "720P",
            "--seed",
            "5",
            "--dump-frames",
            frames_dir.to_str().unwrap(),
        ],
        &dir.path("r2v.mp4"),
    );
    let decoded = check_video(&mp4, 1280, 720, 72);
    let encoded = read_dumped(&frames_dir, 72);
    for (i, (d, e)) in decoded.iter().zip(&encoded).enumerate() {
        let p = psnr(d, e);
        assert!(p >= 35.0, "frame {i}: PSNR {p:.1} dB");
    }
    // Shots in the prompt's order: red-tinted person, blue-tinted city, green-tinted person.
    let mean = |f: &RgbImage| {
        let mut s = [0f64; 3];
        for p in f.pixels() {
            for c in 0..3 {
                s[c] += p[c] as f64;
            }
        }
        s
    };
    let (a, b, c) = (mean(&encoded[8]), mean(&encoded[36]), mean(&encoded[64]));
    assert!(a[0] > a[1] && a[0] > a[2], "shot 1 is not image 1: {a:?}");
    assert!(b[2] > b[0] && b[2] > b[1], "shot 2 is not image 2: {b:?}");
    assert!(c[1] > c[0] && c[1] > c[2], "shot 3 is not image 3: {c:?}");
    assert!(stdout.contains("seed: 5"), "{stdout}");
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let dir = TempDir::new("seed");
    let image = dir.image("scene.png", 800, 450, [1.0, 1.0, 1.0]);
    let args = |seed: &'static str| {
        vec![
            "--model".to_string(),
            I2V.to_string(),
            "--image".to_string(),
            image.clone(),
            "--duration".to_string(),
            "3".to_string(),
            "--seed".to_string(),
            seed.to_string(),
        ]
    };
    let run = |seed: &'static str, name: &str| {
        let a = args(seed);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        generate_ok(&a, &dir.path(name)).1
    };
    let first = run("7", "a.mp4");
    let again = run("7", "b.mp4");
    let other = run("8", "c.mp4");
    assert!(first == again, "same seed gave different bytes");
    assert!(first != other, "another seed gave the same bytes");
}

#[test]
fn watermark_changes_only_the_bottom_right() {
    let dir = TempDir::new("mark");
    let image = dir.image("scene.png", 800, 450, [1.0, 1.0, 1.0]);
    let run = |extra: &[&str], name: &str| {
        let frames = dir.path(name);
        let mut args = vec![
            "--model",
            I2V,
            "--image",
            &image,
            "--duration",
            "3",
            "--seed",
            "3",
            "--dump-frames",
            frames.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        generate_ok(&args, &dir.path(&format!("{name}.mp4")));
        read_dumped(&frames, 72)
    };
    let marked = run(&["--watermark", "true"], "marked");
    let clean = run(&["--watermark", "false"], "clean");
    let custom = run(&["--watermark-text", "studio preview"], "custom");
    // Another text is another mark, in the same corner.
    assert!(custom[0] != marked[0] && custom[0] != clean[0]);
    let (cl, ct, _, _) = gallop_media::Watermark::new("studio preview", 1280, 720).region();
    for (x, y, p) in custom[0].enumerate_pixels() {
        if p != clean[0].get_pixel(x, y) {
            assert!(x >= cl && y >= ct, "custom mark touched ({x}, {y})");
        }
    }
    let (left, top, width, height) =
        gallop_media::Watermark::new(gallop_media::DEFAULT_WATERMARK, 1280, 720).region();
    assert!(
        left >= 1280 / 2 && top >= 720 * 3 / 4,
        "mark is not bottom-right"
    );
    for (i, (m, c)) in marked.iter().zip(&clean).enumerate() {
        let mut changed = 0;
        for (x, y, p) in m.enumerate_pixels() {
            if p != c.get_pixel(x, y) {
                changed += 1;
                assert!(
                    x >= left && x < left + width && y >= top && y < top + height,
                    "frame {i}: watermark touched ({x}, {y}) outside its bottom-right region"
                );
            }
        }
        assert!(
            changed > 500,
            "frame {i}: watermark changed only {changed} pixels"
        );
    }
}

#[test]
fn images_from_flags_data_uris_and_http() {
    let dir = TempDir::new("uris");
    let path = dir.image("scene.png", 640, 480, [1.0, 1.0, 1.0]);
    let bytes = std::fs::read(&path).unwrap();

    // A data: URI.
    use base64::Engine as _;
    let data = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&bytes)
    );
    // Too long for a command line: it goes in the --input file, as an API client would send it.
    let input = dir.input(
        "data.json",
        &json!({ "image": data, "duration": 3, "seed": 1 }),
    );
    let (_, from_data) = generate_ok(&["--model", I2V, "--input", &input], &dir.path("data.mp4"));

    // http:// from a one-shot server on loopback.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/scene.png", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request).unwrap();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            bytes.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&bytes).unwrap();
    });
    let (_, from_http) = generate_ok(
        &[
            "--model",
            I2V,
            "--image",
            &url,
            "--duration",
            "3",
            "--seed",
            "1",
        ],
        &dir.path("http.mp4"),
    );
    server.join().unwrap();

    // A plain path (with a space and a '%', which file:// uris escape): all three name the same
    // image, so the videos are identical.
    let odd = dir.path("my scene 100%.png");
    std::fs::copy(&path, &odd).unwrap();
    let (_, from_path) = generate_ok(
        &[
            "--model",
            I2V,
            "--image",
            odd.to_str().unwrap(),
            "--duration",
            "3",
            "--seed",
            "1",
        ],
        &dir.path("path.mp4"),
    );
    assert!(from_data == from_path && from_http == from_path);
    check_video(&from_path, 1088, 832, 72);
}

#[test]
fn bad_input_fails_with_the_validation_message() {
    let dir = TempDir::new("bad");
    let image = dir.image("scene.png", 800, 450, [1.0, 1.0, 1.0]);
    let small = dir.image("small.png", 200, 200, [1.0, 1.0, 1.0]);
    let short = dir.image("short.png", 500, 350, [1.0, 1.0, 1.0]);
    let out = dir.path("out.mp4");
    let out = out.to_str().unwrap();

    let err = generate_err(&[
        "--model",
        I2V,
        "--image",
        &image,
        "--duration",
        "20",
        "-o",
        out,
    ]);
    assert!(err.contains("--duration must be 3..15"), "{err}");

    let err = generate_err(&["--model", I2V, "--image", &image, "--seed", "-1", "-o", out]);
    assert!(err.contains("--seed must be 0..2147483647"), "{err}");

    let err = generate_err(&[
        "--model",
        I2V,
        "--image",
        &image,
        "--resolution",
        "4K",
        "-o",
        out,
    ]);
    assert!(err.contains("--resolution must be one of"), "{err}");

    let err = generate_err(&["--model", R2V, "--image", &image, "-o", out]);
    assert!(
        err.contains("--prompt is required for alibaba/hh1.1-r2v"),
        "{err}"
    );

    let err = generate_err(&["--model", I2V, "--image", &small, "-o", out]);
    assert!(
        err.contains(&format!("--image {small}: image is 200x200 px")),
        "{err}"
    );

    let err = generate_err(&[
        "--model",
        R2V,
        "--prompt",
        "image 2 waves",
        "--image",
        &image,
        "--image",
        &short,
        "-o",
        out,
    ]);
    assert!(
        err.contains(&format!("--image #2 ({short}): image is 500x350 px")),
        "{err}"
    );

    let missing = dir.path("missing.png");
    let err = generate_err(&[
        "--model",
        I2V,
        "--image",
        missing.to_str().unwrap(),
        "-o",
        out,
    ]);
    assert!(
        err.contains("--image ") && err.contains("missing.png"),
        "{err}"
    );

    let err = generate_err(&["--model", "alibaba/hh9", "--image", &image, "-o", out]);
    assert!(
        err.contains("--model") && err.contains("alibaba/hh9"),
        "{err}"
    );

    assert!(
        !Path::new(out).exists(),
        "a failed run must not write the output"
    );
}

/// `--encoder ffmpeg` makes the same video contract through the system's ffmpeg (x264's
/// stream), and says so; bad values name the flag and the rule.
#[test]
fn encoder_flag_chooses_ffmpeg_and_bad_values_name_the_flag() {
    let dir = TempDir::new("encoder");
    let image = dir.image("scene.png", 800, 450, [1.0, 0.9, 0.8]);
    let out = dir.path("ffmpeg.mp4");
    let args = [
        "--model",
        I2V,
        "--image",
        &image,
        "--duration",
        "3",
        "--seed",
        "7",
    ];
    let with_ffmpeg: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--encoder", "ffmpeg"])
        .collect();
    let (stdout, mp4) = generate_ok(&with_ffmpeg, &out);
    assert!(
        stdout.contains("encoder: ffmpeg ffmpeg (libx264 CRF "),
        "{stdout}"
    );
    assert!(mp4.windows(5).any(|w| w == b"x264 "), "not x264's stream");
    check_video(&mp4, 1280, 720, 72);
    let (stdout, built_in) = generate_ok(&args, &dir.path("openh264.mp4"));
    assert!(stdout.contains("encoder: openh264 (built in"), "{stdout}");
    assert!(!built_in.windows(5).any(|w| w == b"x264 "));

    let o = out.to_str().unwrap();
    let err = generate_err(&[&args[..], &["--encoder", "x264", "-o", o]].concat());
    assert!(
        err.contains("'--encoder <ENCODER>'")
            && err.contains("[possible values: openh264, ffmpeg]"),
        "{err}"
    );
    let err = generate_err(&[&args[..], &["--ffmpeg", "/usr/bin/ffmpeg", "-o", o]].concat());
    assert!(
        err.contains("--ffmpeg only applies with --encoder ffmpeg"),
        "{err}"
    );
    let missing = [
        "--encoder",
        "ffmpeg",
        "--ffmpeg",
        "/nonexistent/ffmpeg",
        "-o",
        o,
    ];
    let err = generate_err(&[&args[..], &missing].concat());
    assert!(
        err.contains("--ffmpeg /nonexistent/ffmpeg: cannot run ffmpeg /nonexistent/ffmpeg"),
        "{err}"
    );
}
