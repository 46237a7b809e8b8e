//! What a user sees on stderr when it is not a terminal (a log file, a CI job): no library noise
//! (openh264's encoder warning goes to gallop's logging at debug level) and no ANSI colour codes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

const ESC: char = '\u{1b}';

#[test]
fn generate_prints_no_library_noise_when_stderr_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("in.png");
    image::RgbImage::from_fn(480, 360, |x, y| image::Rgb([x as u8, y as u8, 90]))
        .save(&image)
        .unwrap();
    let out = Command::new(GALLOP)
        .args([
            "generate",
            "--model",
            "alibaba/hh1-i2v",
            "--duration",
            "3",
            "--image",
        ])
        .arg(&image)
        .arg("-o")
        .arg(dir.path().join("out.mp4"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("OpenH264"),
        "library noise on stderr: {stderr}"
    );
    assert!(!stderr.contains(ESC), "colour codes on stderr: {stderr:?}");

    // Asked for, the encoder's messages come through gallop's logging at debug level.
    let out = Command::new(GALLOP)
        .args([
            "generate",
            "--model",
            "alibaba/hh1-i2v",
            "--duration",
            "3",
            "--image",
        ])
        .arg(&image)
        .arg("-o")
        .arg(dir.path().join("out2.mp4"))
        .env("RUST_LOG", "openh264=debug")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("bEnableFrameSkip"))
        .unwrap_or_else(|| panic!("the encoder's warning at debug level: {stderr}"));
    assert!(
        line.contains("DEBUG") && line.contains("openh264"),
        "{line}"
    );
    assert!(!stderr.contains(ESC), "colour codes on stderr: {stderr:?}");
}

#[test]
fn serve_logs_without_colour_codes_when_stderr_is_a_pipe() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(GALLOP)
        .args(["serve", "--addr", &free_addr(), "--data-dir"])
        .arg(data.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a log line saying gallop serves");
        if line.contains("gallop serving") {
            break line;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("INFO"), "{line}");
    assert!(!line.contains(ESC), "colour codes in the log: {line:?}");
}
