//! The README's worked session, run as written: its marked shell block, pasted into bash against
//! a real `gallop serve` on loopback, with a `photo.jpg` in the working directory. It uploads
//! once, runs i2v and r2v in Cloudflare's and gallop's own shapes, polls, follows the events and
//! downloads two videos, which must decode.

use std::process::Command;

use crate::support::*;

const README: &str = include_str!("../../../../README.md");
const MARKER: &str = "<!-- worked-session:";

/// The shell block right after the marker comment.
fn worked_session() -> &'static str {
    let after = &README[README
        .find(MARKER)
        .expect("README marks its worked session")..];
    let start = after
        .find("```sh\n")
        .expect("a sh block follows the marker")
        + "```sh\n".len();
    let block = &after[start..];
    &block[..block.find("\n```").expect("the block ends")]
}

#[test]
fn the_readme_worked_session_runs_as_written() {
    let dir = TempDir::new("readme");
    let addr = free_addr();
    let server = Server::start(&dir.0.join("data"), &addr, &["--workers", "2"]);
    let token = token_from(&server.startup_lines());
    let work = dir.0.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let photo = image::RgbImage::from_fn(640, 480, |x, y| {
        image::Rgb([(x / 3) as u8, (y / 2) as u8, ((x + y) / 5) as u8])
    });
    photo.save(work.join("photo.jpg")).unwrap();

    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", worked_session()])
        .current_dir(&work)
        .env("GALLOP", format!("http://{addr}"))
        .env("GALLOP_TOKEN", &token)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");

    let upload = json(&std::fs::read_to_string(work.join("upload.json")).unwrap());
    assert_eq!(
        upload["models"],
        serde_json::json!(["alibaba/hh1-i2v", "alibaba/hh1.1-r2v"])
    );
    assert!(upload["expires_at"].as_u64().is_some(), "{upload}");
    assert_eq!(
        stdout.matches(r#""state":"Completed""#).count(),
        2,
        "both Cloudflare runs complete: {stdout}"
    );
    assert!(
        stdout.contains(r#""status":"#),
        "the poll printed the job: {stdout}"
    );
    assert!(
        stdout.contains("event: end"),
        "the events stream ran to the end: {stdout}"
    );
    for name in ["i2v.mp4", "r2v.mp4"] {
        let mp4 = std::fs::read(work.join(name)).unwrap();
        let video = gallop_media::decode_mp4(&mp4).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(video.frames.len(), 72, "{name}: 3 s at 24 fps");
    }
    drop(server);
}
