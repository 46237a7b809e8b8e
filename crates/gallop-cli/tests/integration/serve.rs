//! `gallop serve` and `gallop token create` as a user runs them: the real binary on a loopback
//! port. The first start prints a token once; `token create` prints a token as its last line;
//! accepted jobs survive `kill -9` and a restart.

use crate::support;

use support::*;

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn first_start_prints_a_token_once_and_token_create_prints_one_last() {
    let dir = TempDir::new("tokens");
    let addr = free_addr();
    let server = Server::start(&dir.0, &addr, &[]);
    let lines = server.startup_lines();
    assert!(
        lines.iter().any(|l| l.contains("account \"local\"")),
        "{lines:?}"
    );
    let token = token_from(&lines);
    let (status, body) = http(&addr, "GET", "/v1/models", &token, "application/json", b"");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["models"][0]["engine"], "preview");
    let (status, _) = http(&addr, "GET", "/v1/models", "wrong", "application/json", b"");
    assert_eq!(status, 401);

    // A token for another account, made while the server runs, works at once.
    let out = Command::new(GALLOP)
        .args(["token", "create", "--account", "acme", "--data-dir"])
        .arg(&dir.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let acme = stdout.lines().last().unwrap().trim().to_string();
    assert!(acme.len() >= 32, "{stdout}");
    let (status, body) = http(
        &addr,
        "POST",
        "/client/v4/accounts/acme/ai/run",
        &acme,
        "application/json",
        br#"{"request_id": "none"}"#,
    );
    assert_eq!(status, 404, "authenticated, and no such job: {body}");
    let (status, _) = http(
        &addr,
        "POST",
        "/client/v4/accounts/local/ai/run",
        &acme,
        "application/json",
        b"{}",
    );
    assert_eq!(status, 401, "acme's token is not valid for account local");

    // A restart with tokens in the store prints none; the old ones still work.
    drop(server);
    let server = Server::start(&dir.0, &addr, &[]);
    let lines = server.startup_lines();
    assert!(
        lines.iter().all(|l| !l.contains("GALLOP_TOKEN")),
        "{lines:?}"
    );
    let (status, _) = http(&addr, "GET", "/v1/jobs", &token, "application/json", b"");
    assert_eq!(status, 200);

    let out = Command::new(GALLOP)
        .args(["token", "create", "--account", "no spaces", "--data-dir"])
        .arg(&dir.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--account"));
}

#[test]
fn accepted_jobs_survive_kill_9_and_complete_after_restart() {
    let dir = TempDir::new("durable");
    let addr = free_addr();
    let mut server = Server::start(&dir.0, &addr, &["--workers", "1"]);
    let token = token_from(&server.startup_lines());

    const N: usize = 3;
    let mut ids = Vec::new();
    for _ in 0..N {
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
            "input": {"image": uri, "duration": 3}
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
        ids.push(json(&body)["id"].as_str().unwrap().to_string());
    }
    // Kill the server mid-job, without warning.
    let start = Instant::now();
    loop {
        let (_, body) = http(
            &addr,
            "GET",
            &format!("/v1/jobs/{}", ids[0]),
            &token,
            "application/json",
            b"",
        );
        let job = json(&body);
        if job["status"] == "running" {
            break;
        }
        assert_eq!(job["status"], "queued", "{job}");
        assert!(start.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill9();

    let server = Server::start(&dir.0, &addr, &["--workers", "1"]);
    server.startup_lines();
    // The interrupted job waits out its lease (about a minute), then runs again.
    let deadline = Instant::now() + Duration::from_secs(400);
    for id in &ids {
        loop {
            let (status, body) = http(
                &addr,
                "GET",
                &format!("/v1/jobs/{id}"),
                &token,
                "application/json",
                b"",
            );
            assert_eq!(status, 200, "{body}");
            let job = json(&body);
            if job["status"] == "completed" {
                break;
            }
            assert!(
                ["queued", "running"].contains(&job["status"].as_str().unwrap()),
                "{job}"
            );
            assert!(Instant::now() < deadline, "{job}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let (_, body) = http(
        &addr,
        "GET",
        &format!("/v1/jobs/{}", ids[0]),
        &token,
        "application/json",
        b"",
    );
    assert!(
        json(&body)["attempt"].as_u64().unwrap() >= 2,
        "the interrupted job ran again: {body}"
    );
    drop(server);
}

/// `--encoder ffmpeg`: the startup lines name the encoder, and a job's video is x264's (its
/// version SEI is in the stream), served as the same faststart MP4 gallop's reader decodes.
/// A missing ffmpeg stops the server at startup, naming the flag.
#[test]
fn serve_encodes_through_ffmpeg_when_the_operator_asks() {
    let (code, stderr) = serve_exit(&["--encoder", "ffmpeg", "--ffmpeg", "/nonexistent/ffmpeg"]);
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("--ffmpeg /nonexistent/ffmpeg: cannot run ffmpeg"),
        "{stderr}"
    );
    let (code, stderr) = serve_exit(&["--encoder", "x264"]);
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("'--encoder <ENCODER>'") && stderr.contains("openh264, ffmpeg"),
        "{stderr}"
    );

    let dir = TempDir::new("ffmpeg");
    let addr = free_addr();
    let server = Server::start(&dir.0, &addr, &["--encoder", "ffmpeg"]);
    let lines = server.startup_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("encoder: ffmpeg ffmpeg (libx264 CRF ")),
        "{lines:?}"
    );
    let token = token_from(&lines);
    let image = upload(&addr, &token, &png(480, 360));
    let job = serde_json::json!({
        "model": "alibaba/hh1-i2v",
        "input": {"image": image, "duration": 3}
    });
    let body = job.to_string();
    let (status, body) = http(
        &addr,
        "POST",
        "/v1/jobs",
        &token,
        "application/json",
        body.as_bytes(),
    );
    assert_eq!(status, 202, "{body}");
    let id = json(&body)["id"].as_str().unwrap().to_string();
    let done = wait_completed(&addr, &token, &id, Duration::from_secs(300));
    let url = done["result"]["video"].as_str().unwrap();
    let mp4 = get_bytes(&addr, &url[url.find("/v1/files/").unwrap()..]);
    assert!(mp4.windows(5).any(|w| w == b"x264 "), "not x264's stream");
    let boxes = gallop_media::top_level_boxes(&mp4);
    let at = |name: &str| boxes.iter().position(|b| b == name);
    assert!(at("moov") < at("mdat") && at("moov").is_some(), "{boxes:?}");
    let video = gallop_media::decode_mp4(&mp4).unwrap();
    assert_eq!(video.frames.len(), 72);
    assert!((video.fps - 24.0).abs() < 0.01, "fps {}", video.fps);
}
