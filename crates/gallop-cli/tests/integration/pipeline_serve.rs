//! `gallop serve --model-dir` with a tiny Wan checkpoint saved by diffusers: the real binary on a
//! loopback port; `/v1/models` names the Wan engine and checkpoint, and a job completes with a
//! decodable video and reports the engine that served it.

use crate::support;

use support::*;

use std::path::Path;
use std::time::Duration;

fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 128])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn serve_with_model_dir_completes_a_job_on_the_wan_engine() {
    let data = tempfile::tempdir().unwrap();
    let model_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../gallop-wan/tests/fixtures/pipelines/ti2v/model");
    let addr = free_addr();
    let model_arg = model_dir.display().to_string();
    // One step without guidance keeps the tiny model quick at the public 720P geometry.
    let server = Server::start(
        data.path(),
        &addr,
        &["--model-dir", &model_arg, "--steps", "1", "--guidance", "1"],
    );
    let token = token_from(&server.startup_lines());

    let (status, body) = http(&addr, "GET", "/v1/models", &token, "application/json", b"");
    assert_eq!(status, 200, "{body}");
    let models = json(&body);
    let i2v = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m.to_string().contains("alibaba/hh1-i2v"))
        .unwrap_or_else(|| panic!("no i2v model in {body}"));
    assert_eq!(i2v["engine"], "wan", "{body}");
    assert!(
        body.contains(&model_arg),
        "the checkpoint must be named: {body}"
    );

    let (status, body) = http(
        &addr,
        "POST",
        "/v1/uploads",
        &token,
        "image/png",
        &png(480, 360),
    );
    assert_eq!(status, 201, "{body}");
    let uri = json(&body)["uri"].as_str().unwrap().to_string();
    let job = serde_json::json!({
        "model": "alibaba/hh1-i2v",
        "input": {"image": uri, "prompt": "a horse on the beach", "duration": 3, "seed": 5}
    });
    let (status, body) = http(
        &addr,
        "POST",
        "/v1/jobs",
        &token,
        "application/json",
        job.to_string().as_bytes(),
    );
    assert_eq!(status, 202, "{body}");
    let id = json(&body)["id"].as_str().unwrap().to_string();
    let job = wait_completed(&addr, &token, &id, Duration::from_secs(600));
    let text = job.to_string();
    assert!(
        text.contains("\"wan\""),
        "the result must name the Wan engine: {text}"
    );
    assert!(
        text.contains(&model_arg),
        "the result must name the checkpoint: {text}"
    );
    // 3 s fits the checkpoint's trained window: one window, nothing shared.
    let windows = &job["engine"]["windows"];
    assert_eq!(
        (&windows["count"], &windows["overlap"]),
        (&serde_json::json!(1), &serde_json::json!(0)),
        "the job must report how the engine made it: {text}"
    );
}
