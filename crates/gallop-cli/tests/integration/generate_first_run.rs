//! What a newcomer meets on a first `gallop generate` (#13): the output path checked before any
//! work, errors naming the flag they typed (and the other model when the images fit it),
//! `--no-watermark`, progress lines when stderr is not a terminal, and the Wan settings in
//! `--help` as ordinary settings. The real binary, stderr to a pipe as in a log or CI.

use std::path::Path;
use std::process::{Command, Output};

use gallop_media::decode_mp4;

use crate::support::*;

const I2V: &str = "alibaba/hh1-i2v";
const R2V: &str = "alibaba/hh1.1-r2v";

fn gallop(args: &[&str]) -> Output {
    Command::new(GALLOP)
        .arg("generate")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run gallop")
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A run that must fail; its stderr.
fn refused(args: &[&str]) -> String {
    let out = gallop(args);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?} should fail: {stderr}");
    stderr
}

/// A run that must succeed; its stderr.
fn succeeds(args: &[&str]) -> String {
    let out = gallop(args);
    let stderr = stderr_of(&out);
    assert!(out.status.success(), "{args:?} failed: {stderr}");
    stderr
}

/// A textured image of `w` x `h` written as PNG; its path.
fn image(dir: &Path, name: &str, w: u32, h: u32) -> String {
    let path = dir.join(name);
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 3) as u8, (y * 5) as u8, ((x ^ y) * 7) as u8])
    })
    .save(&path)
    .unwrap();
    path.display().to_string()
}

fn progress_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("progress: "))
        .collect()
}

/// An unusable output is refused before anything renders: no frame is dumped, no progress shown.
#[test]
fn output_path_is_checked_before_any_work() {
    let dir = TempDir::new("first-run-output");
    let img = image(&dir.0, "in.png", 480, 360);
    let frames = dir.0.join("frames");
    let frames_arg = frames.display().to_string();
    // A regular file where the output's folder would have to be created.
    std::fs::write(dir.0.join("blocker"), b"not a folder").unwrap();
    let folder_taken = dir.0.join("blocker/videos/out.mp4").display().to_string();
    let not_mp4 = dir.0.join("out.mov").display().to_string();
    let a_folder = dir.0.join("looks-like.mp4");
    std::fs::create_dir(&a_folder).unwrap();
    let a_folder = a_folder.display().to_string();

    for (output, says) in [
        (&folder_taken, "cannot create the folder"),
        (&not_mp4, "must end in .mp4"),
        (&a_folder, "is a folder"),
    ] {
        let stderr = refused(&[
            "--model",
            I2V,
            "--image",
            &img,
            "--duration",
            "3",
            "--dump-frames",
            &frames_arg,
            "-o",
            output,
        ]);
        assert!(
            stderr.contains("error: -o/--output: ") && stderr.contains(says),
            "{output}: {stderr}"
        );
        assert!(stderr.contains(output.as_str()), "names the path: {stderr}");
        // Refused before the render: it never started.
        assert!(!frames.exists(), "{output}: frames were rendered first");
        assert!(progress_lines(&stderr).is_empty(), "{stderr}");
    }
    assert!(!dir.0.join("out.mov").exists());
}

/// A missing folder is made; the video lands there whole, with nothing else left beside it, and
/// with stderr on a pipe the progress comes as plain lines ending at the total.
#[test]
fn output_folder_is_created_and_progress_comes_as_lines() {
    let dir = TempDir::new("first-run-folder");
    let img = image(&dir.0, "in.png", 480, 360);
    let out = dir.0.join("missing/dir/out.mp4");
    let stderr = succeeds(&[
        "--model",
        I2V,
        "--image",
        &img,
        "--duration",
        "3",
        "--seed",
        "1",
        "-o",
        out.to_str().unwrap(),
    ]);
    let video = decode_mp4(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(video.frames.len(), 72);
    let beside: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, ["out.mp4"], "only the video is left in its folder");

    // `progress: 30/72 steps (41%), 2 s elapsed, ...`: the first report, one every few seconds,
    // and the total at the end; no bar redraws or colour codes in a log.
    let lines = progress_lines(&stderr);
    assert!(lines.len() >= 2, "progress lines: {stderr}");
    let counts: Vec<(u32, u32)> = lines
        .iter()
        .map(|l| {
            let count = l["progress: ".len()..].split(' ').next().unwrap();
            let (done, total) = count.split_once('/').unwrap();
            (done.parse().unwrap(), total.parse().unwrap())
        })
        .collect();
    assert!(counts.windows(2).all(|w| w[0].0 < w[1].0), "{counts:?}");
    let (done, total) = *counts.last().unwrap();
    assert!(total > 0 && done == total, "{counts:?}");
    assert!(lines.last().unwrap().contains("(100%)"), "{lines:?}");
    assert!(
        !stderr.contains('\r') && !stderr.contains('\u{1b}'),
        "{stderr:?}"
    );
}

#[test]
fn extension_check_ignores_case() {
    // `OUT.MP4` is an MP4 name too; refused only for what follows (no image), not the name.
    let dir = TempDir::new("first-run-case");
    let out = dir.0.join("OUT.MP4").display().to_string();
    let stderr = refused(&["--model", I2V, "-o", &out]);
    assert!(!stderr.contains("-o/--output"), "{stderr}");
    assert!(
        stderr.contains("--image is required for alibaba/hh1-i2v"),
        "{stderr}"
    );
}

/// Every error a flag can cause names that flag, never the API path it becomes.
#[test]
fn errors_name_the_flag_typed() {
    let dir = TempDir::new("first-run-flags");
    let img = image(&dir.0, "in.png", 640, 480);
    let tiny = image(&dir.0, "tiny.png", 64, 32);
    let short = image(&dir.0, "short.png", 500, 350);
    let missing = dir.0.join("missing.png").display().to_string();
    let out = dir.0.join("out.mp4").display().to_string();
    let o = ["-o", out.as_str()];
    let i2v = |extra: &[&str]| {
        let mut args = vec!["--model", I2V];
        args.extend_from_slice(extra);
        args.extend_from_slice(&o);
        refused(&args)
    };
    let r2v = |extra: &[&str]| {
        let mut args = vec!["--model", R2V];
        args.extend_from_slice(extra);
        args.extend_from_slice(&o);
        refused(&args)
    };

    let cases: Vec<(String, String)> = vec![
        (
            i2v(&["--image", &tiny]),
            format!("error: --image {tiny}: image is 64x32 px"),
        ),
        (
            i2v(&["--image", &missing]),
            format!("error: --image {missing}: cannot read {missing}"),
        ),
        (
            i2v(&["--prompt", "a walk"]),
            "error: --image is required for alibaba/hh1-i2v".into(),
        ),
        (
            r2v(&["--prompt", "image 1 waves"]),
            "error: --image is required for alibaba/hh1.1-r2v".into(),
        ),
        (
            i2v(&["--image", &img, "--duration", "20"]),
            "error: --duration must be 3..15".into(),
        ),
        (
            i2v(&["--image", &img, "--duration", "2"]),
            "error: --duration must be 3..15".into(),
        ),
        (
            i2v(&["--image", &img, "--seed", "-1"]),
            "error: --seed must be 0..2147483647".into(),
        ),
        (
            i2v(&["--image", &img, "--resolution", "4K"]),
            "error: --resolution must be one of 720P, 1080P".into(),
        ),
        (
            r2v(&["--image", &img]),
            "error: --prompt is required for alibaba/hh1.1-r2v".into(),
        ),
        (
            r2v(&[
                "--prompt",
                "image 2 waves",
                "--image",
                &img,
                "--image",
                &short,
            ]),
            format!("error: --image #2 ({short}): image is 500x350 px"),
        ),
        (
            i2v(&["--image", &img, "--prompt", &"x".repeat(2501)]),
            "error: --prompt must have at most 2500 characters".into(),
        ),
    ];
    for (stderr, expected) in &cases {
        assert!(
            stderr.contains(expected.as_str()),
            "want {expected:?}: {stderr}"
        );
        assert!(!stderr.contains("/input/"), "an API path: {stderr}");
    }
    assert!(!Path::new(&out).exists(), "a refused run wrote the output");
}

/// A value written in the `--input` file is named where the user wrote it: the file and its
/// field; a flag laid over the file is named as the flag.
#[test]
fn errors_from_the_input_file_name_the_file() {
    let dir = TempDir::new("first-run-input");
    let img = image(&dir.0, "in.png", 480, 360);
    let input = dir.0.join("job.json");
    let body = serde_json::json!({ "image": img, "duration": 20 });
    std::fs::write(&input, body.to_string()).unwrap();
    let input = input.display().to_string();
    let out = dir.0.join("out.mp4").display().to_string();

    let stderr = refused(&["--model", I2V, "--input", &input, "-o", &out]);
    assert!(
        stderr.contains(&format!(
            "error: --input {input}: /input/duration must be <= 15"
        )),
        "{stderr}"
    );
    let stderr = refused(&[
        "--model",
        I2V,
        "--input",
        &input,
        "--duration",
        "16",
        "-o",
        &out,
    ]);
    assert!(
        stderr.contains("error: --duration must be 3..15"),
        "{stderr}"
    );
}

/// When the images given fit the other model, the error says which.
#[test]
fn the_other_model_is_suggested_when_the_images_fit_it() {
    let dir = TempDir::new("first-run-model");
    let img = image(&dir.0, "in.png", 480, 360);
    let out = dir.0.join("out.mp4").display().to_string();
    let with_images = |model: &str, n: usize, extra: &[&str]| {
        let mut args = vec!["--model", model, "--prompt", "image 1 waves"];
        for _ in 0..n {
            args.extend(["--image", img.as_str()]);
        }
        args.extend_from_slice(extra);
        args.extend(["-o", out.as_str()]);
        refused(&args)
    };

    let stderr = with_images(I2V, 3, &[]);
    assert!(
        stderr.contains(
            "error: --image was given 3 times; alibaba/hh1-i2v takes one image; \
             did you mean --model alibaba/hh1.1-r2v?"
        ),
        "{stderr}"
    );
    // r2v takes at most 9: ten fit neither model.
    let stderr = with_images(I2V, 10, &[]);
    assert!(
        stderr.contains("--image was given 10 times; alibaba/hh1-i2v takes one image"),
        "{stderr}"
    );
    assert!(!stderr.contains("did you mean"), "{stderr}");
    let stderr = with_images(R2V, 10, &[]);
    assert!(
        stderr.contains("error: --image must have at most 9 items"),
        "{stderr}"
    );
    assert!(!stderr.contains("did you mean"), "{stderr}");
    // A setting only the other model has, with images it takes.
    let stderr = with_images(I2V, 1, &["--ratio", "1:1"]);
    assert!(
        stderr.contains(
            "error: --ratio is not allowed for alibaba/hh1-i2v; did you mean --model alibaba/hh1.1-r2v?"
        ),
        "{stderr}"
    );
    let stderr = with_images(R2V, 1, &["--negative-prompt", "blur"]);
    assert!(
        stderr.contains(
            "error: --negative-prompt is not allowed for alibaba/hh1.1-r2v; did you mean --model alibaba/hh1-i2v?"
        ),
        "{stderr}"
    );
    let stderr = with_images(R2V, 2, &["--negative-prompt", "blur"]);
    assert!(!stderr.contains("did you mean"), "{stderr}");
}

/// `--no-watermark` drops the mark: the frames differ from a marked run's only in the
/// bottom-right corner, and it is the same video as `--watermark false`.
#[test]
fn no_watermark_leaves_the_mark_out() {
    let dir = TempDir::new("first-run-mark");
    let img = image(&dir.0, "in.png", 480, 360);
    let run = |extra: &[&str], name: &str| {
        let out = dir.0.join(name);
        let mut args = vec!["--model", I2V, "--image", &img, "--duration", "3"];
        args.extend(["--seed", "4", "-o", out.to_str().unwrap()]);
        args.extend_from_slice(extra);
        succeeds(&args);
        std::fs::read(&out).unwrap()
    };
    let marked = run(&[], "marked.mp4");
    let clean = run(&["--no-watermark"], "clean.mp4");
    let (marked, clean) = (decode_mp4(&marked).unwrap(), decode_mp4(&clean).unwrap());
    assert_eq!(marked.frames.len(), clean.frames.len());
    let (w, h) = (marked.width, marked.height);
    let (left, top, _, _) =
        gallop_media::Watermark::new(gallop_media::DEFAULT_WATERMARK, w, h).region();
    for (i, (m, c)) in marked.frames.iter().zip(&clean.frames).enumerate() {
        let mut changed = 0;
        for (x, y, p) in m.enumerate_pixels() {
            let q = c.get_pixel(x, y);
            let far = (0..3).any(|k| p[k].abs_diff(q[k]) > 40);
            if far {
                changed += 1;
                // Encoding spreads a little; the mark itself stays in its corner.
                assert!(
                    x + 16 >= left && y + 16 >= top,
                    "frame {i}: differs at ({x}, {y})"
                );
            }
        }
        assert!(changed > 100, "frame {i}: only {changed} pixels differ");
    }

    let stderr = refused(&[
        "--model",
        I2V,
        "--image",
        &img,
        "--no-watermark",
        "--watermark",
        "true",
        "-o",
        dir.0.join("both.mp4").to_str().unwrap(),
    ]);
    assert!(
        stderr.contains("--no-watermark") && stderr.contains("--watermark"),
        "{stderr}"
    );
}

/// The Wan settings are ordinary, documented settings with their defaults, not "Debug".
#[test]
fn help_shows_the_wan_settings_with_their_defaults() {
    let out = Command::new(GALLOP)
        .args(["generate", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(!help.contains("Debug"), "{help}");
    let heading = help
        .find("Wan checkpoint")
        .unwrap_or_else(|| panic!("no Wan heading: {help}"));
    assert!(
        help.find("  --model-dir").is_some_and(|at| at > heading),
        "{help}"
    );
    for flag in ["--steps", "--guidance", "--guidance-2", "--shift"] {
        let entry = help_entry(&help, flag);
        assert!(
            help.find(&entry).is_some_and(|at| at > heading),
            "{flag} is not under the Wan heading: {help}"
        );
        assert!(
            entry.contains("[default: "),
            "{flag} has no default: {entry}"
        );
    }
    for flag in ["--no-watermark", "-o, --output", "--duration"] {
        assert!(help.contains(flag), "{flag} missing: {help}");
    }
}

/// The lines of `--help` that describe `flag`: its own line and those up to the next flag.
fn help_entry(help: &str, flag: &str) -> String {
    let mut lines = help.lines().skip_while(|l| {
        let l = l.trim_start();
        !(l.starts_with(&format!("{flag} ")) || l.ends_with(flag) && l.starts_with('-'))
    });
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("{flag} missing: {help}"));
    let rest = lines.take_while(|l| !l.trim_start().starts_with('-') && l.starts_with(' '));
    std::iter::once(first)
        .chain(rest)
        .collect::<Vec<_>>()
        .join("\n")
}
