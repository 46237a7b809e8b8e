//! `gallop debug frames`: the real binary writes an MP4's frames as PNG files equal to what the
//! decoder returns, every Nth; a file that is not an MP4 is refused naming `--video`.

use std::process::Command;

use gallop_media::{Mp4Encoder, decode_mp4};
use image::{Rgb, RgbImage};

fn gallop(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gallop"))
        .args(args)
        .output()
        .expect("run gallop")
}

#[test]
fn writes_every_nth_frame_as_the_decoder_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    // Ten frames whose brightness rises, so frames cannot be confused with one another.
    let mut encoder = Mp4Encoder::new(320, 240, 24).unwrap();
    for i in 0..10u8 {
        let frame = RgbImage::from_fn(320, 240, |x, _| Rgb([20 * i, (x % 256) as u8, 100]));
        encoder.push(&frame).unwrap();
    }
    let mp4 = encoder.finish().unwrap();
    let video = dir.path().join("in.mp4");
    std::fs::write(&video, &mp4).unwrap();
    let out = dir.path().join("frames");

    let run = gallop(&[
        "debug",
        "frames",
        "--video",
        video.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--every",
        "4",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let decoded = decode_mp4(&mp4).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["frame_00000.png", "frame_00004.png", "frame_00008.png"]
    );
    for (name, index) in names.iter().zip([0, 4, 8]) {
        let png = image::open(out.join(name)).unwrap().to_rgb8();
        assert!(
            png == decoded.frames[index],
            "{name} differs from decoded frame {index}"
        );
    }
}

#[test]
fn a_file_that_is_not_an_mp4_is_refused_naming_video() {
    let dir = tempfile::tempdir().unwrap();
    let not_video = dir.path().join("notes.mp4");
    std::fs::write(&not_video, b"not a video").unwrap();
    let out = dir.path().join("frames");
    let run = gallop(&[
        "debug",
        "frames",
        "--video",
        not_video.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("--video"), "{stderr}");
    assert!(!out.exists(), "no output folder for a refused input");
}
